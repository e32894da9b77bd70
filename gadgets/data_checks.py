"""Checks on raw data where it enters the chain: sample values, idx counters, buffer sizes.

A line with a non-finite sample (NaN, Inf) or an absurd one (a real or imaginary part above
:data:`MAX_SAMPLE_MAGNITUDE`, e.g. 3e38, which overflows float32 sums of squares in coil
compression) is *treated as not acquired*: it is dropped (or zeroed, with its header slot reset,
when it already sits in a ReconData buffer), never allowed to poison its slice. An acquisition
whose idx counters lie outside the header's encoding limits is dropped. Each kind of problem is
logged once, as a warning naming the field, the value, the limit and the acquisition's counters
(:class:`DropLog`); later ones of the same kind are only counted.

The counts travel with the data to the reconstruction, through a wire format Gadgetron passes
unchanged (ReconData has no meta attributes): every acquisition header of a ReconData's data
buffer gets the user flag ``ACQ_USER8`` and ``user_int[5:8]`` = the stream's cumulative counts
of (non-finite, absurd-magnitude, outside-limits) acquisitions (:func:`mark_headers`,
:func:`read_marks`). Only streams with drops are marked. ``CardioMMRecon`` reads them, adds what it
finds itself and writes them into every image's meta (:meth:`DropCounts.to_meta`), where the
replay summary reads them (:func:`dropped_in_images`).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ismrmrd
import numpy as np

logger = logging.getLogger(__name__)

#: Largest |real| or |imag| part of a raw sample that is accepted. Squares of such samples summed
#: over a whole scan (1e8 elements) stay far below the float32 maximum (3.4e38).
MAX_SAMPLE_MAGNITUDE = 1e12
#: Idx counters the buffer uses, with the encoding-limit field that bounds each.
COUNTER_LIMITS: tuple[tuple[str, str], ...] = (
    ("kspace_encode_step_1", "kspace_encoding_step_1"),
    ("kspace_encode_step_2", "kspace_encoding_step_2"),
    ("average", "average"),
    ("slice", "slice"),
    ("contrast", "contrast"),
    ("phase", "phase"),
    ("repetition", "repetition"),
    ("set", "set"),
    ("segment", "segment"),
)
#: Flag and user_int slots of the drop marks (see the module docstring).
MARK_FLAG = ismrmrd.ACQ_USER8
_MARK_SLOTS = (5, 6, 7)
#: Image meta attributes of the counts.
META_DROPPED = "CardioMM.DroppedAcquisitions"
META_NON_FINITE = "CardioMM.Dropped.NonFinite"
META_MAGNITUDE = "CardioMM.Dropped.Magnitude"
META_OUTSIDE_LIMITS = "CardioMM.Dropped.OutsideLimits"

NON_FINITE = "non_finite"
MAGNITUDE = "magnitude"
OUTSIDE_LIMITS = "outside_limits"


@dataclass
class DropCounts:
    """Acquisitions dropped (or lines zeroed) so far, by reason."""

    non_finite: int = 0
    magnitude: int = 0
    outside_limits: int = 0

    @property
    def total(self) -> int:
        return self.non_finite + self.magnitude + self.outside_limits

    def __add__(self, other: DropCounts) -> DropCounts:
        return DropCounts(self.non_finite + other.non_finite, self.magnitude + other.magnitude,
                          self.outside_limits + other.outside_limits)

    def add(self, kind: str, n: int = 1) -> None:
        """Count ``n`` more of ``kind`` (NON_FINITE, MAGNITUDE or OUTSIDE_LIMITS)."""
        if kind not in (NON_FINITE, MAGNITUDE, OUTSIDE_LIMITS):
            raise ValueError(f"unknown drop kind {kind!r}")
        setattr(self, kind, getattr(self, kind) + int(n))

    def describe(self) -> str:
        """'3 (non-finite 2, absurd magnitude 0, outside encoding limits 1)'."""
        return (f"{self.total} (non-finite samples {self.non_finite}, absurd sample magnitude {self.magnitude}, "
                f"counters outside the encoding limits {self.outside_limits})")

    def to_meta(self, meta: Any) -> None:
        """Write the counts into an ``ismrmrd.Meta`` (all four attributes, zeros included)."""
        meta[META_DROPPED] = str(self.total)
        meta[META_NON_FINITE] = str(self.non_finite)
        meta[META_MAGNITUDE] = str(self.magnitude)
        meta[META_OUTSIDE_LIMITS] = str(self.outside_limits)

    @classmethod
    def from_meta(cls, meta: Any) -> DropCounts:
        """Counts from image meta attributes (zeros where absent or unreadable)."""
        values = []
        for key in (META_NON_FINITE, META_MAGNITUDE, META_OUTSIDE_LIMITS):
            try:
                raw = meta.get(key) if hasattr(meta, "get") else None
                values.append(int(raw) if raw is not None else 0)
            except (TypeError, ValueError):
                values.append(0)
        return cls(*values)

    @staticmethod
    def maximum(counts: Iterable[DropCounts]) -> DropCounts:
        """Field-wise maximum (the counts are cumulative over a stream)."""
        result = DropCounts()
        for item in counts:
            result = DropCounts(max(result.non_finite, item.non_finite), max(result.magnitude, item.magnitude),
                                max(result.outside_limits, item.outside_limits))
        return result


# --------------------------------------------------------------------------- sample values


def sample_problem(data: np.ndarray, limit: float = MAX_SAMPLE_MAGNITUDE) -> tuple[str, str] | None:
    """``(kind, text)`` when ``data`` (any shape, complex or real) holds a non-finite sample or a
    real/imaginary part above ``limit`` in magnitude, else None."""
    array = np.asarray(data)
    if array.size == 0:
        return None
    if array.dtype in _SCREENED and array.flags.c_contiguous:
        # one reduction screens the common case: a finite sum of squares below (limit / 2)^2 means
        # every part is finite and below limit (the float32 rounding of the sum is far below 4x)
        parts = array.view(np.float32).reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):  # inf or NaN: not below, checked below
            total = float(np.dot(parts, parts))
        if total < 0.25 * limit * limit:
            return None
    finite = np.isfinite(array)
    if not finite.all():
        n_bad = int(array.size - np.count_nonzero(finite))
        return NON_FINITE, f"{n_bad} non-finite sample(s) (NaN or Inf)"
    largest = float(max(np.abs(array.real).max(), np.abs(array.imag).max())) if np.iscomplexobj(array) \
        else float(np.abs(array).max())
    if largest > limit:
        return MAGNITUDE, f"a sample part of magnitude {largest:.3g}, above the limit {limit:.3g}"
    return None


_SCREENED = (np.dtype(np.complex64), np.dtype(np.float32))


def bad_lines(data: np.ndarray, limit: float = MAX_SAMPLE_MAGNITUDE) -> tuple[np.ndarray, np.ndarray]:
    """Lines of a buffer ``data [E0, E1, E2, CHA, N, S, LOC]`` with a non-finite sample, and those
    (finite) with a part above ``limit``: two bool arrays ``[E1, E2, N, S, LOC]``."""
    array = np.asarray(data)
    if array.ndim != 7:
        raise ValueError(f"buffer data must have 7 dimensions [E0, E1, E2, CHA, N, S, LOC], got {array.shape}")
    finite = np.isfinite(array)
    non_finite = ~finite.all(axis=(0, 3))
    with np.errstate(invalid="ignore"):
        parts = np.maximum(np.abs(array.real), np.abs(array.imag)) if np.iscomplexobj(array) else np.abs(array)
        too_large = np.where(finite, parts, 0) > limit
    magnitude = too_large.any(axis=(0, 3)) & ~non_finite
    return non_finite, magnitude


# --------------------------------------------------------------------------- counters


def counters_text(head: ismrmrd.AcquisitionHeader | ismrmrd.Acquisition) -> str:
    """'scan_counter 12 (e1 3, e2 0, slice 1, phase 2, ...)' of an acquisition header (or of an
    acquisition: the same fields)."""
    idx = head.idx
    parts = ", ".join(f"{name} {int(getattr(idx, name))}" for name, _ in COUNTER_LIMITS)
    return f"scan_counter {int(head.scan_counter)} ({parts})"


def _limit_range(limit: Any) -> tuple[int, int] | None:
    if limit is None:
        return None
    low = getattr(limit, "minimum", None)
    high = getattr(limit, "maximum", None)
    if low is None or high is None:
        return None
    return int(low), int(high)


#: The idx counters of COUNTER_LIMITS, in that order, from the start of ``EncodingCounters``.
_COUNTERS = struct.Struct("<9H")
if [name for name, _ in COUNTER_LIMITS] != [name for name, _ in ismrmrd.EncodingCounters._fields_[:9]]:
    raise RuntimeError("ismrmrd.EncodingCounters does not start with the counters of COUNTER_LIMITS")


def counter_bounds(encoding: Any) -> tuple[tuple[int, str, int, int], ...]:
    """The limits ``encoding.encodingLimits`` gives for COUNTER_LIMITS: ``(position in
    COUNTER_LIMITS, counter, minimum, maximum)`` each (what :func:`limit_violation` checks)."""
    limits = getattr(encoding, "encodingLimits", None)
    if limits is None:
        return ()
    found = []
    for position, (name, limit_name) in enumerate(COUNTER_LIMITS):
        bounds = _limit_range(getattr(limits, limit_name, None))
        if bounds is not None:
            found.append((position, name, bounds[0], bounds[1]))
    return tuple(found)


def limit_violation(head: ismrmrd.AcquisitionHeader | ismrmrd.Acquisition, encoding: Any,
                    bounds: Sequence[tuple[int, str, int, int]] | None = None) -> tuple[str, int, tuple[int, int]] | None:
    """The first idx counter of ``head`` (a header or an acquisition) outside
    ``encoding.encodingLimits``: ``(field, value, (minimum, maximum))``, or None. Counters whose
    limit the header does not give are not checked. ``bounds``: ``counter_bounds(encoding)``, when
    the caller has it already."""
    values = _COUNTERS.unpack_from(head.idx)
    for position, name, low, high in counter_bounds(encoding) if bounds is None else bounds:
        value = values[position]
        if not low <= value <= high:
            return name, value, (low, high)
    return None


class DropLog:
    """Counts dropped acquisitions and warns once per kind (per field for counters)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.counts = DropCounts()
        self._warned: set[str] = set()

    def drop(self, kind: str, key: str, message: str) -> None:
        """Count one of ``kind``; warn with ``message`` the first time ``key`` is seen."""
        self.counts.add(kind)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s: %s; the acquisition is treated as not acquired (further ones like it are "
                           "dropped without a warning and counted)", self.owner, message)

    def summary(self) -> None:
        """Log the totals at the end of a stream (nothing when nothing was dropped)."""
        if self.counts.total:
            logger.warning("%s: dropped %s acquisitions", self.owner, self.counts.describe())


def check_acquisition(acq: ismrmrd.Acquisition, encoding: Any | None, log: DropLog,
                      limit: float = MAX_SAMPLE_MAGNITUDE,
                      bounds: Sequence[tuple[int, str, int, int]] | None = None) -> bool:
    """Whether ``acq`` is usable; if not, it is counted and (once per kind) logged in ``log``.

    Checks the idx counters against ``encoding``'s limits (when given; ``bounds``:
    ``counter_bounds(encoding)`` when the caller has it already) and the samples for non-finite or
    absurd values. Reads the acquisition's header in place (``getHead()`` would copy it).
    """
    if encoding is not None:
        violation = limit_violation(acq, encoding, bounds)
        if violation is not None:
            name, value, (low, high) = violation
            log.drop(OUTSIDE_LIMITS, f"limit:{name}",
                     f"acquisition {counters_text(acq)} has {name} = {value}, outside the encoding limits "
                     f"[{low}, {high}] (encodingLimits)")
            return False
    problem = sample_problem(acq.data, limit)
    if problem is not None:
        kind, text = problem
        log.drop(kind, kind, f"acquisition {counters_text(acq)} has {text}")
        return False
    return True


# --------------------------------------------------------------------------- buffers


def default_header() -> ismrmrd.AcquisitionHeader:
    """A default-constructed acquisition header (version 1, one channel, no samples)."""
    head = ismrmrd.AcquisitionHeader()
    head.version = 1
    head.available_channels = 1
    head.active_channels = 1
    return head


def sanitize_buffer(buffer: Any, limit: float = MAX_SAMPLE_MAGNITUDE) -> tuple[Any, DropCounts]:
    """``(buffer, counts)`` with every line of ``buffer.data [E0, E1, E2, CHA, N, S, LOC]`` that holds
    a non-finite or absurd sample zeroed and its header slot reset to a default header (so it counts
    as not acquired). The buffer is returned unchanged (same object) when all lines are fine;
    otherwise a new ReconBuffer (the input is not modified)."""
    from gadgetron.types.recon_data import ReconBuffer

    data = np.asarray(buffer.data)
    non_finite, magnitude = bad_lines(data, limit)
    bad = non_finite | magnitude
    counts = DropCounts(non_finite=int(non_finite.sum()), magnitude=int(magnitude.sum()))
    if not bad.any():
        return buffer, counts
    cleaned = np.array(data, dtype=np.complex64, order="F", copy=True)
    _zero_lines(cleaned, bad)
    headers = np.array(buffer.headers, dtype=object, copy=True)
    for position in zip(*np.nonzero(bad)):
        headers[position] = default_header()
    trajectory = buffer.trajectory
    return ReconBuffer(cleaned, trajectory, buffer.density, headers, buffer.sampling), counts


def _zero_lines(data: np.ndarray, bad: np.ndarray) -> None:
    for e1, e2, n, s, loc in zip(*np.nonzero(bad)):
        data[:, e1, e2, :, n, s, loc] = 0


def mark_headers(headers: np.ndarray, counts: DropCounts) -> None:
    """Write ``counts`` into every acquisition header of ``headers`` (object array), in place
    (nothing when ``counts.total`` is 0)."""
    if counts.total == 0:
        return
    bit = 1 << (MARK_FLAG - 1)
    for position in np.ndindex(headers.shape):
        head = headers[position]
        if head is None:
            continue
        head.flags |= bit
        for slot, value in zip(_MARK_SLOTS, (counts.non_finite, counts.magnitude, counts.outside_limits)):
            head.user_int[slot] = int(value)


def read_marks(headers: np.ndarray) -> DropCounts:
    """The largest drop counts marked in ``headers`` (zeros when none is marked)."""
    bit = 1 << (MARK_FLAG - 1)
    found = []
    for head in np.asarray(headers, dtype=object).ravel():
        if head is not None and int(head.flags) & bit:
            found.append(DropCounts(*(int(head.user_int[slot]) for slot in _MARK_SLOTS)))
    return DropCounts.maximum(found)


def is_marked(head: Any) -> bool:
    return head is not None and bool(int(head.flags) & (1 << (MARK_FLAG - 1)))


def dropped_in_images(images: Sequence[Any]) -> DropCounts:
    """Total drops reported by ``images``' meta: the largest counts of each series, summed over series."""
    by_series: dict[int, list[DropCounts]] = {}
    for image in images:
        try:
            meta = image.meta
        except Exception:  # noqa: BLE001 - images from other servers may carry odd meta
            continue
        by_series.setdefault(int(image.image_series_index), []).append(DropCounts.from_meta(meta))
    total = DropCounts()
    for counts in by_series.values():
        total = total + DropCounts.maximum(counts)
    return total


# --------------------------------------------------------------------------- sizes


def check_buffer_size(shape: Sequence[int], sources: Mapping[str, str], max_bytes: int, owner: str,
                      itemsize: int = 8) -> None:
    """ValueError naming the largest dimension's source when a buffer of ``shape`` [E0, E1, E2, CHA,
    N, S, LOC] would need more than ``max_bytes``. ``sources`` maps dimension names to the header
    field or counter they come from."""
    n_bytes = int(np.prod([int(v) for v in shape], dtype=np.float64)) * itemsize
    if n_bytes <= max_bytes:
        return
    names = ("E0", "E1", "E2", "CHA", "N", "S", "LOC")
    dims = ", ".join(f"{name} = {int(size)}" + (f" ({sources[name]})" if name in sources else "")
                     for name, size in zip(names, shape))
    largest = max(zip(names, shape), key=lambda pair: int(pair[1]))
    culprit = sources.get(largest[0], largest[0])
    raise ValueError(f"{owner}: a buffer of {n_bytes / 2**20:.0f} MiB would exceed the ceiling of "
                     f"{max_bytes / 2**20:.0f} MiB (max_buffer_mb); largest dimension {largest[0]} = "
                     f"{int(largest[1])} from {culprit}; buffer [{dims}]")


def check_header_sizes(header: Any, max_matrix: int, max_counter: int, owner: str) -> None:
    """ValueError naming the field when an encoding's matrix size exceeds ``max_matrix`` or an
    encoding limit's maximum exceeds ``max_counter`` (``kspace_encoding_step_*``: ``max_matrix``)."""
    for number, encoding in enumerate(getattr(header, "encoding", None) or ()):
        prefix = f"encoding[{number}]." if number else ""
        for space in ("encodedSpace", "reconSpace"):
            matrix = getattr(getattr(encoding, space, None), "matrixSize", None)
            for axis in ("x", "y", "z"):
                value = getattr(matrix, axis, None)
                if value is not None and int(value) > max_matrix:
                    raise ValueError(f"{owner}: header {prefix}{space}.matrixSize.{axis} = {int(value)} exceeds "
                                     f"the ceiling max_matrix = {max_matrix}")
        limits = getattr(encoding, "encodingLimits", None)
        if limits is None:
            continue
        for _, limit_name in COUNTER_LIMITS:
            bounds = _limit_range(getattr(limits, limit_name, None))
            ceiling = max_matrix if limit_name.startswith("kspace") else max_counter
            if bounds is not None and bounds[1] - min(bounds[0], bounds[1]) + 1 > ceiling:
                raise ValueError(f"{owner}: header {prefix}encodingLimits.{limit_name} = [{bounds[0]}, {bounds[1]}] "
                                 f"spans more than the ceiling of {ceiling} "
                                 f"({'max_matrix' if ceiling == max_matrix else 'max_counter'})")


__all__ = [
    "MAX_SAMPLE_MAGNITUDE", "COUNTER_LIMITS", "MARK_FLAG", "META_DROPPED", "META_NON_FINITE", "META_MAGNITUDE",
    "META_OUTSIDE_LIMITS", "NON_FINITE", "MAGNITUDE", "OUTSIDE_LIMITS", "DropCounts", "DropLog", "sample_problem",
    "bad_lines", "counters_text", "counter_bounds", "limit_violation", "check_acquisition", "default_header", "sanitize_buffer",
    "mark_headers", "read_marks", "is_marked", "dropped_in_images", "check_buffer_size", "check_header_sizes",
]

"""AcquisitionBuffer: acquisitions -> ReconData, as AcquisitionAccumulateTrigger + BucketToBuffer hand it over.

Reproduces Gadgetron 4.x's ``AcquisitionAccumulateTriggerGadget`` followed by
``BucketToBufferGadget`` (gadgetron/gadgetron ``gadgets/mri_core``), so a Python gadget after it
receives the same ``gadgetron.types.ReconData`` as after the native pair:

Accumulate/trigger
    Noise measurements are dropped. Acquisitions go into buckets keyed by ``sorting_dimension``;
    when the ``trigger_dimension`` index of an acquisition differs from the previous one's
    (``slice`` by default; ``none`` waits for the end of the stream) every bucket is emitted, in
    key order, *before* that acquisition is added. At the end of the stream whatever is pending is
    emitted. A bucket's data are all acquisitions except ``ACQ_IS_PARALLEL_CALIBRATION`` and
    ``ACQ_IS_PHASECORR_DATA``; its reference (``ref``) are those flagged
    ``ACQ_IS_PARALLEL_CALIBRATION`` or ``..._AND_IMAGING``.

Bucket to buffer
    Acquisitions are grouped by (average, slice, contrast, phase, repetition, set, segment) with the
    ``N_dimension`` and ``S_dimension`` counters cleared, the slice cleared unless
    ``split_slices``, the segment cleared if ``ignore_segment``; each group becomes one ReconData
    with one ReconBit per encoding space. Buffer ``data [E0, E1, E2, CHA, N, S, LOC]`` complex64
    (Fortran order, like gadgetron-python's reader), ``headers [E1, E2, N, S, LOC]``, trajectory
    ``[TRAJ, E0, E1, E2, N, S, LOC]`` when present, and a ``SamplingDescription``:

    * E0 = samples (with parallel imaging in the header) or samples - discard_pre - discard_post;
      a line lands at ``offset = discard_pre`` when ``center_sample == samples / 2``, else at
      ``samples/2 - center_sample`` (asymmetric echo).
    * E1 (Cartesian/EPI) = encoded ``matrixSize.y`` with parallel imaging, else the encoding-limit
      range; a line goes to ``e1 = kspace_encode_step_1 + matrixSize.y/2 - limits.e1.center`` (so
      k-space centre sits at ``matrixSize.y/2``). For a ``separate``/``external`` calibration the
      ref buffer spans only the received lines, indexed from the smallest. E2 likewise.
    * N and S sizes are the range (max - min + 1) of the counters received in the bucket; a line's
      position is its counter value clipped to that size (as the native gadget does).
    * LOC = 1 with ``split_slices`` or a per-slice trigger, else the slice range.
    * ``SamplingDescription``: encoded/recon FOV and matrix from the header, the encoded readout
      replaced by the recon one for Cartesian scans (oversampling assumed removed); sampling
      limits as above (E1 centre = encoded ``matrixSize.y/2``).

Checks where the data enter (:mod:`gadgets.data_checks`), before anything is allocated: the
header's matrix sizes and encoding limits against the ``max_matrix``/``max_counter`` ceilings at
the start of the stream, every buffer's size against ``max_buffer_mb`` before it is allocated, and
the acquisitions held so far against the same ceiling (ValueError naming the field). An
acquisition whose idx counters (kspace_encode_step_1/2, average, slice, contrast, phase, repetition,
set, segment) lie outside the header's encoding limits, whose ``encoding_space_ref`` names no
encoding, or that holds a non-finite or absurd sample, is dropped: one warning per kind naming the
field, the value and the limit with the acquisition's counters, then only counted. The counts are
marked in the headers of every ReconData emitted after them (:func:`gadgets.data_checks.mark_headers`)
so that the images report them. A stream whose imaging acquisitions were all dropped fails with a
ValueError saying so.

Interleaved acquisitions: with a trigger dimension (``slice`` by default) the native gadget emits
whenever the counter changes, which for interleaved slices (0, 1, 0, 1, ...) gives one-line
buckets. Here the acquisitions are held per trigger value (as the native gadget holds them per
``sorting_dimension`` value): when the counter changes, the previous value's buckets are emitted
only if their last acquisition carried that dimension's ``ACQ_LAST_IN_...`` flag (a complete slice);
otherwise they stay open, collect the lines that come back to them, and are emitted at the end of
the stream, in trigger-value order. Sequential data with the flags (what scanners write) is
emitted exactly when the native gadget emits it. So that a long stream without the flags (many
repetitions, say) cannot pile up, once the held acquisitions pass half of ``max_buffer_mb`` every
open value but the current one is emitted (with a warning, once).

Deviations from the native pair, on purpose: navigator, phase-correction, RT-feedback,
HP-feedback and dummy-scan acquisitions are dropped instead of buffered; reversed lines
(``ACQ_IS_REVERSE``) are flipped along the readout and the flag cleared; a line outside the
buffer's slice range, or with a different channel count, raises ValueError instead of corrupting
memory. Unfilled header slots are default headers (``version`` 1, one channel,
``number_of_samples`` 0), like a default-constructed ``ISMRMRD::AcquisitionHeader``.

Cost per acquisition (:mod:`gadgets.buffer_lines`): each header is read once, in place, into a
``LineFields`` tuple (ismrmrd-python's ``getHead()`` deep-copies it); each line's header is copied
once, into the buffer's slots. What remains is mostly the memory of the dense ReconData buffers
(see ``benchmarks/buffer_rate.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

from . import data_checks
from .buffer_lines import Bucket, BucketStats, HeaderSlots, LineFields, flag_bit, header_view, read_fields
from .data_checks import DropLog
from .protocol.params import Param
from .protocol.stream import Gadget

logger = logging.getLogger(__name__)

#: Trigger and sorting dimensions (AcquisitionAccumulateTriggerGadget's names).
TRIGGER_DIMENSIONS = (
    "none", "kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast", "phase",
    "repetition", "set", "segment", "user_0", "user_1", "user_2", "user_3", "user_4", "user_5",
    "user_6", "user_7",
)
#: N and S dimensions (BucketToBufferGadget's names).
BUFFER_DIMENSIONS = ("none", "average", "contrast", "phase", "repetition", "set", "segment", "slice")

#: Acquisitions that are not image data and are dropped.
IGNORED_FLAGS = (
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
)

#: The ``ACQ_LAST_IN_...`` flag that closes a trigger value of each dimension (None: none does).
LAST_IN_FLAGS: dict[str, int] = {
    "kspace_encode_step_1": ismrmrd.ACQ_LAST_IN_ENCODE_STEP1,
    "kspace_encode_step_2": ismrmrd.ACQ_LAST_IN_ENCODE_STEP2,
    "average": ismrmrd.ACQ_LAST_IN_AVERAGE,
    "slice": ismrmrd.ACQ_LAST_IN_SLICE,
    "contrast": ismrmrd.ACQ_LAST_IN_CONTRAST,
    "phase": ismrmrd.ACQ_LAST_IN_PHASE,
    "repetition": ismrmrd.ACQ_LAST_IN_REPETITION,
    "set": ismrmrd.ACQ_LAST_IN_SET,
    "segment": ismrmrd.ACQ_LAST_IN_SEGMENT,
}
#: Default ceilings (parameters max_buffer_mb, max_matrix, max_counter).
DEFAULT_MAX_BUFFER_MB = 2048
DEFAULT_MAX_MATRIX = 2048
DEFAULT_MAX_COUNTER = 1024

_KEY_FIELDS = ("average", "slice", "contrast", "phase", "repetition", "set", "segment")


#: Counters that can hold a scan's series of frames, in the order they are preferred.
FRAME_DIMENSIONS = ("phase", "contrast", "set", "repetition")


def series_extents(header: ismrmrd.xsd.ismrmrdHeader) -> dict[str, int]:
    """How many values each of FRAME_DIMENSIONS takes in the first encoding space's limits
    (``maximum - minimum + 1``; 1 where the header gives no limit)."""
    extents = {name: 1 for name in FRAME_DIMENSIONS}
    encodings = getattr(header, "encoding", None) or []
    limits = getattr(encodings[0], "encodingLimits", None) if encodings else None
    for name in FRAME_DIMENSIONS:
        limit = getattr(limits, name, None) if limits is not None else None
        if limit is not None and limit.maximum is not None:
            extents[name] = max(1, int(limit.maximum) - int(limit.minimum or 0) + 1)
    return extents


def frames_dimension(header: ismrmrd.xsd.ismrmrdHeader) -> str:
    """The counter that holds the scan's series of frames, from the header's encoding limits: the
    first of FRAME_DIMENSIONS that takes more than one value (cine phases; mapping contrasts, i.e.
    inversion or T2-preparation times; sets; repetitions), "phase" when none does."""
    extents = series_extents(header)
    for name in FRAME_DIMENSIONS:
        if extents[name] > 1:
            return name
    return "phase"


_NOISE = flag_bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
_IGNORED = sum(flag_bit(flag) for flag in IGNORED_FLAGS)
_REVERSE = flag_bit(ismrmrd.ACQ_IS_REVERSE)


def _mode(encoding: Any) -> str:
    """Parallel-imaging calibration mode ('' when the header has no parallel imaging)."""
    pi = getattr(encoding, "parallelImaging", None)
    if pi is None or pi.calibrationMode is None:
        return ""
    return str(getattr(pi.calibrationMode, "value", pi.calibrationMode))


def _trajectory(encoding: Any) -> str:
    return str(getattr(encoding.trajectory, "value", encoding.trajectory))


@dataclass
class _Target:
    """One buffer being filled, with what places a line in it, worked out once per buffer: the
    readout centre, the E1/E2 shifts, ``n_name``/``s_name`` (the counters of N and S, None for
    position 0), ``one_loc`` (every line at LOC 0)."""

    buffer: ReconBuffer
    slots: HeaderSlots
    encoding: Any
    forref: bool
    cartesian: bool
    centre: int
    shifts: tuple[int, int]
    n_name: str | None
    s_name: str | None
    one_loc: bool


class _Converter:
    """BucketToBufferGadget for one ISMRMRD header and one set of N/S/slice/segment settings."""

    def __init__(self, header: ismrmrd.xsd.ismrmrdHeader, n_dim: str, s_dim: str,
                 split_slices: bool, ignore_segment: bool, max_bytes: int = DEFAULT_MAX_BUFFER_MB * 2**20,
                 max_matrix: int = DEFAULT_MAX_MATRIX, max_counter: int = DEFAULT_MAX_COUNTER) -> None:
        self.header = header
        self.max_bytes = int(max_bytes)
        self.max_matrix = int(max_matrix)
        self.max_counter = int(max_counter)
        self.n_dim = n_dim
        self.s_dim = s_dim
        self.split_slices = split_slices
        self.ignore_segment = ignore_segment
        cleared = {dim for dim in (n_dim, s_dim) if dim != "slice"}
        cleared |= set() if split_slices else {"slice"}
        cleared |= {"segment"} if ignore_segment else set()
        self._key_names = tuple(None if name in cleared else name for name in _KEY_FIELDS)

    # -- keys and sizes ----------------------------------------------------------------------
    def key(self, fields: LineFields) -> tuple[int, ...]:
        return tuple(0 if name is None else getattr(fields, name) for name in self._key_names)

    @staticmethod
    def _size(dimension: str, stats: BucketStats) -> int:
        if dimension == "none":
            return 1
        if dimension == "segment":  # BucketToBufferGadget falls through to the average counter here
            return stats.span("average")
        return stats.span(dimension)

    def _encoding(self, space: int) -> Any:
        if space >= len(self.header.encoding):
            raise ValueError(f"acquisition refers to encoding space {space}, the header has "
                             f"{len(self.header.encoding)}")
        return self.header.encoding[space]

    @staticmethod
    def _cartesian_or_epi(encoding: Any) -> bool:
        return _trajectory(encoding) in ("cartesian", "epi")

    def _n_e(self, encoding: Any, stats: BucketStats, forref: bool, step: str, matrix: int) -> int:
        limits = getattr(encoding.encodingLimits, f"kspace_encoding_step_{step}")
        stat = f"kspace_encode_step_{step}"
        if self._cartesian_or_epi(encoding):
            if encoding.parallelImaging is not None:
                if forref and _mode(encoding) in ("separate", "external"):
                    if step == "1":
                        return stats.span(stat)
                    return limits.maximum - limits.minimum + 1 if limits is not None else stats.span(stat)
                return matrix
            if limits is not None:
                return limits.maximum - limits.minimum + 1
            return matrix
        if limits is not None:
            return limits.maximum - limits.minimum + 1
        return stats.span(stat)

    def _n_loc(self, encoding: Any, stats: BucketStats) -> int:
        if self.split_slices:
            return 1
        limits = encoding.encodingLimits.slice
        n_loc = limits.maximum - limits.minimum + 1 if limits is not None else 1
        return min(n_loc, stats.span("slice"))

    def _offsets(self, encoding: Any) -> tuple[int, int]:
        matrix = encoding.encodedSpace.matrixSize
        limits = encoding.encodingLimits
        off1 = matrix.y // 2 - limits.kspace_encoding_step_1.center if limits.kspace_encoding_step_1 is not None else 0
        off2 = 0
        if limits.kspace_encoding_step_2 is not None and matrix.z > 1:
            off2 = matrix.z // 2 - limits.kspace_encoding_step_2.center
        return int(off1), int(off2)

    def _centred(self, encoding: Any, forref: bool) -> bool:
        """Whether E1/E2 indices are shifted so that the k-space centre sits at matrix/2."""
        trajectory = _trajectory(encoding)
        embedded = _mode(encoding) in ("embedded", "")
        return (trajectory == "cartesian" and (not forref or embedded)) or (trajectory == "epi" and not forref)

    def sampling(self, encoding: Any, stats: BucketStats, head: LineFields, forref: bool) -> SamplingDescription:
        sampling = SamplingDescription()
        enc, rec = encoding.encodedSpace, encoding.reconSpace
        sampling.encoded_FOV[:] = [enc.fieldOfView_mm.x, enc.fieldOfView_mm.y, enc.fieldOfView_mm.z]
        sampling.encoded_matrix[:] = [enc.matrixSize.x, enc.matrixSize.y, enc.matrixSize.z]
        sampling.recon_FOV[:] = [rec.fieldOfView_mm.x, rec.fieldOfView_mm.y, rec.fieldOfView_mm.z]
        sampling.recon_matrix[:] = [rec.matrixSize.x, rec.matrixSize.y, rec.matrixSize.z]
        if _trajectory(encoding) == "cartesian":
            sampling.encoded_FOV[0] = rec.fieldOfView_mm.x
            sampling.encoded_matrix[0] = rec.matrixSize.x
        limits = sampling.sampling_limits
        if self._cartesian_or_epi(encoding):
            limits[0].min = head.discard_pre
            limits[0].max = head.number_of_samples - head.discard_post - 1
            limits[0].center = head.number_of_samples // 2
        else:
            limits[0].min, limits[0].max, limits[0].center = 0, enc.matrixSize.x - 1, enc.matrixSize.x // 2
        e1 = encoding.encodingLimits.kspace_encoding_step_1 or ismrmrd.xsd.limitType()
        e2 = encoding.encodingLimits.kspace_encoding_step_2 or ismrmrd.xsd.limitType()
        if self._centred(encoding, forref):
            off1, off2 = self._offsets(encoding)
            lo, hi, centre = e1.minimum + off1, e1.maximum + off1, sampling.encoded_matrix[1] // 2
            if not (lo < enc.matrixSize.y and hi >= lo and lo <= centre <= hi):
                raise ValueError(
                    f"E1 sampling limits [{lo}, {hi}] (centre {centre}) do not fit the encoded matrix "
                    f"of {enc.matrixSize.y} lines (encodingLimits.kspace_encoding_step_1 {e1})"
                )
            limits[1].min, limits[1].max, limits[1].center = lo, hi, centre
            limits[2].min, limits[2].max = e2.minimum + off2, e2.maximum + off2
            limits[2].center = sampling.encoded_matrix[2] // 2
        else:
            limits[1].min, limits[1].max, limits[1].center = e1.minimum, e1.maximum, e1.center
            limits[2].min, limits[2].max, limits[2].center = e2.minimum, e2.maximum, e2.center
        return sampling

    # -- buffers -----------------------------------------------------------------------------
    def make_target(self, head: LineFields, encoding: Any, stats: BucketStats, forref: bool) -> _Target:
        """An empty buffer for the lines like ``head`` (sizes checked against the ceilings first)."""
        if self._cartesian_or_epi(encoding) and encoding.parallelImaging is not None:
            n_e0 = head.number_of_samples
        else:
            n_e0 = head.number_of_samples - head.discard_pre - head.discard_post
        matrix = encoding.encodedSpace.matrixSize
        n_e1 = self._n_e(encoding, stats, forref, "1", matrix.y)
        n_e2 = self._n_e(encoding, stats, forref, "2", matrix.z)
        n_n = self._size(self.n_dim, stats)
        n_s = self._size(self.s_dim, stats)
        n_loc = self._n_loc(encoding, stats)
        shape = (n_e0, n_e1, n_e2, head.active_channels, n_n, n_s, n_loc)
        owner = "AcquisitionBuffer" + (" (reference)" if forref else "")
        sources = self._sources(encoding, forref)
        for name, size in zip(("E0", "E1", "E2", "CHA", "N", "S", "LOC"), shape):
            ceiling, label = (self.max_matrix, "max_matrix") if name.startswith("E") else \
                (self.max_counter, "max_counter")
            if size > ceiling:
                raise ValueError(f"{owner}: buffer dimension {name} = {size} from {sources.get(name, name)} exceeds "
                                 f"the ceiling {label} = {ceiling}; nothing was allocated")
        data_checks.check_buffer_size(shape, sources, self.max_bytes, owner,
                                      itemsize=8 + 4 * int(head.trajectory_dimensions))
        logger.debug("buffer%s [E0 E1 E2 CHA N S LOC] = %s", " (ref)" if forref else "", shape)
        data = np.zeros(shape, dtype=np.complex64, order="F")
        slots = HeaderSlots((n_e1, n_e2, n_n, n_s, n_loc))
        trajectory = None
        if head.trajectory_dimensions > 0:
            trajectory = np.zeros((head.trajectory_dimensions,) + shape[:3] + shape[4:], dtype=np.float32, order="F")
        buffer = ReconBuffer(data, trajectory, None, slots.headers, self.sampling(encoding, stats, head, forref))
        cartesian = self._cartesian_or_epi(encoding)
        shifts = [0, 0]
        if cartesian and (not forref or _mode(encoding) in ("embedded", "")):
            shifts = list(self._offsets(encoding))
        if cartesian and forref and _mode(encoding) in ("separate", "external"):
            for axis, name in enumerate(("kspace_encode_step_1", "kspace_encode_step_2")):
                shifts[axis] = -stats.minimum(name) if stats.minimum(name) > 0 else 0
        counters = [None if dim in ("none", "slice") else dim for dim in (self.n_dim, self.s_dim)]
        return _Target(buffer, slots, encoding, forref, cartesian, int(buffer.sampling.sampling_limits[0].center),
                       (shifts[0], shifts[1]), counters[0], counters[1], self.split_slices or n_loc == 1)

    def _sources(self, encoding: Any, forref: bool) -> dict[str, str]:
        """Where each buffer dimension's size comes from (for size errors)."""
        pi = self._cartesian_or_epi(encoding) and encoding.parallelImaging is not None
        sources = {
            "E0": "acquisition number_of_samples",
            "E1": "encodedSpace.matrixSize.y" if pi else "encodingLimits.kspace_encoding_step_1",
            "E2": "encodedSpace.matrixSize.z" if pi else "encodingLimits.kspace_encoding_step_2",
            "CHA": "acquisition active_channels",
            "LOC": "the slice counters received (encodingLimits.slice)",
        }
        for name, dim in (("N", self.n_dim), ("S", self.s_dim)):
            if dim != "none":
                sources[name] = f"the {dim} counters received (encodingLimits.{dim})"
        return sources

    def add(self, target: _Target, acq: ismrmrd.Acquisition, head: LineFields) -> None:
        """Copy one line (its samples, trajectory and header) into ``target``'s buffer, or raise
        ValueError when it does not fit (a line inside the encoding limits but outside the encoded
        matrix is dropped with a warning)."""
        buffer = target.buffer
        n_e0, n_e1, n_e2, n_cha, n_n, n_s, n_loc = buffer.data.shape
        if head.active_channels != n_cha:
            raise ValueError(f"acquisition {head.scan_counter} has {head.active_channels} channels, "
                             f"its buffer {n_cha}")
        loc = 0 if target.one_loc else head.slice
        if loc >= n_loc:
            raise ValueError(f"acquisition {head.scan_counter} has slice {head.slice}, outside the buffer's "
                             f"{n_loc} slices (encodingLimits.slice)")
        pre, samples = head.discard_pre, head.number_of_samples
        n_copy = samples - pre - head.discard_post
        offset = 0
        if target.cartesian:
            offset = pre if samples == n_e0 and head.center_sample == samples // 2 else \
                target.centre - head.center_sample
        if offset < 0 or n_e0 - n_copy - offset < 0:
            raise ValueError(f"acquisition {head.scan_counter} ({samples} samples, centre "
                             f"{head.center_sample}) does not fit into the {'reference' if target.forref else 'data'} "
                             f"buffer of {n_e0} samples")
        n_pos = 0 if target.n_name is None else min(getattr(head, target.n_name), n_n - 1)
        s_pos = 0 if target.s_name is None else min(getattr(head, target.s_name), n_s - 1)
        e1 = head.kspace_encode_step_1 + target.shifts[0]
        e2 = head.kspace_encode_step_2 + target.shifts[1]
        if target.cartesian and not (0 <= e1 < n_e1 and 0 <= e2 < n_e2):
            for name, value, size, step in (("kspace_encode_step_1", e1, n_e1, "1"),
                                            ("kspace_encode_step_2", e2, n_e2, "2")):
                if not 0 <= value < size:
                    limits = getattr(target.encoding.encodingLimits, f"kspace_encoding_step_{step}")
                    raw = getattr(head, name)
                    if limits is not None and not limits.minimum <= raw <= limits.maximum:
                        raise ValueError(f"acquisition {head.scan_counter} has {name} {raw} outside the "
                                         f"encoding limits [{limits.minimum}, {limits.maximum}]")
                    logger.warning("acquisition %d is inside the encoding limits but outside the encoded matrix "
                                   "for %s: %d of %d; dropped", head.scan_counter, name, value, size)
                    return
        buffer.data[offset:offset + n_copy, e1, e2, :, n_pos, s_pos, loc] = acq.data[:, pre:pre + n_copy].T
        target.slots.put((e1, e2, n_pos, s_pos, loc), header_view(acq))
        if head.trajectory_dimensions > 0 and buffer.trajectory is not None:
            buffer.trajectory[:, offset:offset + n_copy, e1, e2, n_pos, s_pos, loc] = acq.traj[pre:pre + n_copy, :].T

    def convert(self, bucket: Bucket) -> Iterator[ReconData]:
        """BucketToBufferGadget::process for one bucket: one ReconData per key, in key order."""
        groups: dict[tuple[int, ...], dict[int, list[_Target | None]]] = {}
        for lines, forref in ((bucket.ref, True), (bucket.data, False)):
            slot = 1 if forref else 0
            by_space: dict[int, list[LineFields]] = {}
            for _, head in lines:
                by_space.setdefault(head.encoding_space_ref, []).append(head)
            stats = {space: BucketStats(heads) for space, heads in by_space.items()}
            for acq, head in lines:
                space = head.encoding_space_ref
                bit = groups.setdefault(self.key(head), {}).setdefault(space, [None, None])
                target = bit[slot]
                if target is None:  # the first line of a (key, space): its encoding space is checked here
                    target = bit[slot] = self.make_target(head, self._encoding(space), stats[space], forref)
                self.add(target, acq, head)
        for key in sorted(groups):
            bits = []
            for space in sorted(groups[key]):
                data, ref = groups[key][space]
                if data is None:
                    logger.warning("bucket key %s, encoding space %d has reference data but no image data; "
                                   "not sent", key, space)
                    continue
                bits.append(ReconBit(data.buffer, None if ref is None else ref.buffer))
            if bits:
                yield ReconData(bits)


def flip_reversed(acq: ismrmrd.Acquisition) -> ismrmrd.Acquisition:
    """A copy of a reversed readout (``ACQ_IS_REVERSE``) in forward order, with the flag cleared."""
    head = acq.getHead()
    head.flags &= ~(1 << (ismrmrd.ACQ_IS_REVERSE - 1))
    data = np.ascontiguousarray(np.asarray(acq.data)[:, ::-1], dtype=np.complex64)
    traj = np.ascontiguousarray(np.asarray(acq.traj)[::-1, :], dtype=np.float32)
    return ismrmrd.Acquisition(head, data, traj)


class AcquisitionBuffer(Gadget):
    """Acquisition -> ReconData (AcquisitionAccumulateTrigger + BucketToBuffer in one gadget)."""

    PARAMETERS = (
        Param("trigger_dimension", str, "slice", choices=TRIGGER_DIMENSIONS,
              doc="emit the buffers when this counter changes (none: at the end of the stream)"),
        Param("sorting_dimension", str, "none", choices=TRIGGER_DIMENSIONS,
              doc="separate buckets per value of this counter"),
        Param("N_dimension", str, "auto", choices=("auto",) + BUFFER_DIMENSIONS,
              doc="counter that fills the buffer's N axis, the frames the model sees together; auto: the one "
                  "that holds the scan's series by the header's encoding limits (cine phases, mapping contrasts)"),
        Param("S_dimension", str, "set", choices=BUFFER_DIMENSIONS,
              doc="counter that fills the buffer's S axis (sets or contrasts)"),
        Param("split_slices", bool, False, doc="one ReconData per slice instead of a LOC axis"),
        Param("ignore_segment", bool, False, doc="merge segments into one buffer"),
        Param("max_buffer_mb", int, DEFAULT_MAX_BUFFER_MB, low=1,
              doc="ceiling (MiB) for one buffer and for the acquisitions held at once; checked before allocating"),
        Param("max_matrix", int, DEFAULT_MAX_MATRIX, low=1,
              doc="ceiling for the header's matrix sizes and kspace_encoding_step limit ranges"),
        Param("max_counter", int, DEFAULT_MAX_COUNTER, low=1,
              doc="ceiling for the header's slice/phase/contrast/... limit ranges"),
    )

    def start(self, header: ismrmrd.xsd.ismrmrdHeader) -> None:
        data_checks.check_header_sizes(header, self.params.max_matrix, self.params.max_counter, self.gadget_name())
        self._header = header
        n_dim, s_dim = self.params.N_dimension, self.params.S_dimension
        if n_dim == "auto":
            n_dim = frames_dimension(header)
            logger.info("AcquisitionBuffer: frames (N) follow the scan's %s counter (%d values in the header)",
                        n_dim, series_extents(header).get(n_dim, 1))
            if s_dim == n_dim:
                s_dim = "none"
        self._converter = _Converter(header, n_dim, s_dim, self.params.split_slices, self.params.ignore_segment,
                                     max_bytes=self.params.max_buffer_mb * 2**20, max_matrix=self.params.max_matrix,
                                     max_counter=self.params.max_counter)
        #: trigger value -> sorting value -> bucket, and whether the trigger value is complete
        self._pending: dict[int, dict[int, Bucket]] = {}
        self._complete: set[int] = set()
        self._held_bytes = 0
        self._held_by_trigger: dict[int, int] = {}
        self._previous: int | None = None
        self._ignored = 0
        self._imaging = 0
        self._emitted = 0
        self._interleaved_logged = False
        self._soft_flush_logged = False
        self._log = DropLog(self.gadget_name())
        self._bounds = [data_checks.counter_bounds(encoding) for encoding in header.encoding or []]
        last = LAST_IN_FLAGS.get(self.params.trigger_dimension)
        self._last_bit = 0 if last is None else flag_bit(last)
        self._dimensions = (self.params.trigger_dimension, self.params.sorting_dimension)
        self._max_held = self.params.max_buffer_mb * 2**20

    def accepts(self, item: Any) -> bool:
        return isinstance(item, ismrmrd.Acquisition)

    def _flush(self, triggers: Iterable[int] | None = None) -> list[ReconData]:
        """ReconData of the buckets of ``triggers`` (default: all pending), in key order, marked with
        the drop counts so far."""
        outputs: list[ReconData] = []
        for trigger in sorted(self._pending if triggers is None else triggers):
            buckets = self._pending.pop(trigger)
            self._complete.discard(trigger)
            self._held_bytes -= self._held_by_trigger.pop(trigger, 0)
            for index in sorted(buckets):
                outputs.extend(self._converter.convert(buckets[index]))
        for recon_data in outputs:
            for bit in recon_data.bits:
                data_checks.mark_headers(bit.data.headers, self._log.counts)
        self._emitted += len(outputs)
        return outputs

    def _usable(self, item: ismrmrd.Acquisition, head: LineFields) -> bool:
        space = head.encoding_space_ref
        encodings = self._header.encoding or []
        if space >= len(encodings):
            self._log.drop(data_checks.OUTSIDE_LIMITS, "limit:encoding_space_ref",
                           f"acquisition {data_checks.counters_text(item)} has encoding_space_ref = {space}, "
                           f"outside the header's encodings [0, {len(encodings) - 1}]")
            return False
        return data_checks.check_acquisition(item, encodings[space], self._log, bounds=self._bounds[space])

    def process(self, item: ismrmrd.Acquisition) -> Iterable[Any]:
        head = read_fields(header_view(item))
        if head.flags & _NOISE:
            return ()
        if head.flags & _IGNORED:
            self._ignored += 1
            if self._ignored == 1:
                logger.info("AcquisitionBuffer: dropping navigator/phase-correction/feedback acquisitions")
            return ()
        self._imaging += 1
        if not self._usable(item, head):
            return ()
        outputs: list[ReconData] = []
        dimension, sorting = self._dimensions
        trigger = 0 if dimension == "none" else getattr(head, dimension)
        if dimension != "none":
            if self._previous is not None and trigger != self._previous:
                if self._previous in self._complete:
                    outputs = self._flush([self._previous])
                elif trigger in self._pending and not self._interleaved_logged:
                    self._interleaved_logged = True
                    logger.info("AcquisitionBuffer: %s %d comes back after %s %d (interleaved acquisition); "
                                "holding each %s's lines until it is complete", dimension, trigger, dimension,
                                self._previous, dimension)
            self._previous = trigger
        if head.flags & _REVERSE:
            item = flip_reversed(item)
            head = read_fields(header_view(item))
        n_bytes = int(item.data.nbytes)
        self._held_bytes += n_bytes
        self._held_by_trigger[trigger] = self._held_by_trigger.get(trigger, 0) + n_bytes
        if self._held_bytes > self._max_held:
            raise ValueError(f"AcquisitionBuffer: the acquisitions held for buffering exceed the ceiling of "
                             f"{self.params.max_buffer_mb} MiB (max_buffer_mb) at {data_checks.counters_text(item)}")
        buckets = self._pending.setdefault(trigger, {})
        buckets.setdefault(0 if sorting == "none" else getattr(head, sorting), Bucket()).add(item, head)
        if head.flags & self._last_bit:
            self._complete.add(trigger)
        if 2 * self._held_bytes > self._max_held and len(self._pending) > 1:
            if not self._soft_flush_logged:
                self._soft_flush_logged = True
                logger.warning("AcquisitionBuffer: acquisitions held for %d %s values without ACQ_LAST_IN_ flags "
                               "exceed half of max_buffer_mb (%d MiB); emitting all but the current one",
                               len(self._pending), dimension, self.params.max_buffer_mb)
            outputs = outputs + self._flush([value for value in self._pending if value != trigger])
        return outputs

    def finish(self) -> Iterable[Any]:
        if self._ignored:
            logger.info("AcquisitionBuffer: dropped %d non-imaging acquisitions", self._ignored)
        self._log.summary()
        outputs = self._flush()
        if self._imaging and not self._emitted:
            raise ValueError(f"AcquisitionBuffer: no valid imaging acquisition is left: {self._log.counts.total} "
                             f"of {self._imaging} were dropped ({self._log.counts.describe()})")
        return outputs

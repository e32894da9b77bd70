"""Limits on what a peer may make this process allocate: lengths read from the wire are untrusted.

Every message of the external-gadget protocol carries its own lengths (uint32 CONFIG/HEADER
lengths, uint64 ERROR/attribute lengths, array dimensions, header fields such as
``number_of_samples`` x ``active_channels``). gadgetron-python reads them and allocates what they
claim *before* the data arrive, so a 34-byte message can commit a GiB. Here:

* :func:`message_limit` derives, from the scan's ISMRMRD header (matrix x coils x encoding
  limits), how many bytes the largest legitimate message of that scan can need, capped by a
  configurable ceiling (:func:`ceiling_bytes`: ``CARDIOMM_MAX_MESSAGE_MB``, default
  :data:`DEFAULT_CEILING_MB`);
* :class:`MessageBudget` counts the bytes of the message being read; a read that would exceed
  what is left raises :class:`MessageTooLarge` before anything is allocated (the socket readers
  in :mod:`gadgets.protocol.stream` read large bodies incrementally, so memory follows the bytes that
  actually arrived, never the bytes claimed);
* :func:`read_acquisition`, :func:`read_waveform` and :func:`read_image` replace
  gadgetron-python's readers, which construct the ismrmrd object (allocating data arrays of the
  size the header claims) before reading the data: these check the claimed size first.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import struct
from typing import Any
from xml.etree import ElementTree

import ismrmrd
import numpy as np

from cardiomm_guard import CHUNK_BYTES  # noqa: F401  (one value with the spin guard; gadgets.tools.worker imports it from here)

logger = logging.getLogger(__name__)

#: Environment variable: the ceiling of any one message, in MiB.
CEILING_VARIABLE = "CARDIOMM_MAX_MESSAGE_MB"
#: Default ceiling of one message (MiB): a 256 x 256 cine with 32 coils and 30 phases needs 0.5 GiB.
DEFAULT_CEILING_MB = 2048
#: Ceiling of the CONFIG and HEADER texts together (they are XML of a few kB).
HANDSHAKE_LIMIT_BYTES = 16 * 2**20
#: Ceiling of an ERROR or TEXT message's text.
TEXT_LIMIT_BYTES = 1 * 2**20
#: Coils assumed when the header does not say (``acquisitionSystemInformation.receiverChannels``).
DEFAULT_COILS = 128
#: Coils assumed at least, even when the header says fewer (headers that understate them exist).
MIN_COILS = 32
#: Added to every derived limit (small messages, headers of the ReconData, meta XML).
SLACK_BYTES = 4 * 2**20
#: Reads above this size are done in pieces, so memory grows only as the data arrive: CHUNK_BYTES,
#: one value with the spin guard's reader (cardiomm_guard), which every child's socket reads go through.

_ACQ_HEADER_BYTES = ctypes.sizeof(ismrmrd.AcquisitionHeader)
_IMAGE_HEADER_BYTES = ctypes.sizeof(ismrmrd.ImageHeader)
_WAVEFORM_HEADER_BYTES = ctypes.sizeof(ismrmrd.WaveformHeader)
_U64 = struct.Struct("<Q")
# Element sizes of ISMRMRD image data types (as the C++ library defines them).
IMAGE_WIRE_DTYPES: dict[int, np.dtype[Any]] = {
    ismrmrd.DATATYPE_USHORT: np.dtype("<u2"), ismrmrd.DATATYPE_SHORT: np.dtype("<i2"),
    ismrmrd.DATATYPE_UINT: np.dtype("<u4"), ismrmrd.DATATYPE_INT: np.dtype("<i4"),
    ismrmrd.DATATYPE_FLOAT: np.dtype("<f4"), ismrmrd.DATATYPE_DOUBLE: np.dtype("<f8"),
    ismrmrd.DATATYPE_CXFLOAT: np.dtype("<c8"), ismrmrd.DATATYPE_CXDOUBLE: np.dtype("<c16"),
}


class MessageTooLarge(ValueError):
    """A message claims more bytes than the limit of this connection; nothing was allocated."""


def ceiling_bytes(value_mb: float | None = None) -> int:
    """The ceiling of one message in bytes: ``value_mb`` MiB, else ``$CARDIOMM_MAX_MESSAGE_MB``,
    else :data:`DEFAULT_CEILING_MB`. ValueError for a value that is not a positive number."""
    source = "max_message_mb"
    if value_mb is None:
        text = os.environ.get(CEILING_VARIABLE, "").strip()
        if not text:
            return DEFAULT_CEILING_MB * 2**20
        source = CEILING_VARIABLE
        try:
            value_mb = float(text)
        except ValueError:
            raise ValueError(f"{CEILING_VARIABLE} must be a number of MiB, got {text!r}") from None
    if not (isinstance(value_mb, (int, float)) and np.isfinite(value_mb) and value_mb > 0):
        raise ValueError(f"{source} must be a positive number of MiB, got {value_mb!r}")
    return max(1, int(value_mb * 2**20))


def _count(limit: Any) -> int:
    """``maximum + 1`` of an ISMRMRD limit (1 when absent), never below 1."""
    if limit is None or getattr(limit, "maximum", None) is None:
        return 1
    return max(1, int(limit.maximum) + 1)


def header_elements(header: Any) -> tuple[int, int, str]:
    """(complex samples of the largest scan the header describes, its readout length, a description).

    Per encoding: 2 x encoded matrix x (readouts longer than the matrix exist) * max(matrix y, E1
    limit) * max(matrix z, E2 limit) * coils (the header's ``receiverChannels``, at least
    :data:`MIN_COILS`; :data:`DEFAULT_COILS` when absent) * slices * phases * sets * contrasts *
    repetitions * averages; the largest encoding counts. Generous on purpose: the limit stops
    absurd claims (GiB for a scan of MiB), not legitimate data.
    """
    coils = DEFAULT_COILS
    system = getattr(header, "acquisitionSystemInformation", None)
    if system is not None and getattr(system, "receiverChannels", None):
        coils = max(MIN_COILS, int(system.receiverChannels))
    best, readout, description = 0, 1, "no encoding"
    for encoding in getattr(header, "encoding", None) or ():
        matrix = encoding.encodedSpace.matrixSize
        limits = encoding.encodingLimits
        x = 2 * max(1, int(matrix.x))
        y = max(1, int(matrix.y), _count(getattr(limits, "kspace_encoding_step_1", None)))
        z = max(1, int(matrix.z), _count(getattr(limits, "kspace_encoding_step_2", None)))
        counts = {name: _count(getattr(limits, name, None))
                  for name in ("slice", "phase", "set", "contrast", "repetition", "average")}
        elements = x * y * z * coils * math.prod(counts.values())
        if elements > best:
            best, readout = elements, x
            description = (f"matrix {x}x{y}x{z}, {coils} coils, "
                           + ", ".join(f"{n} {name}s" for name, n in counts.items()))
    return best, readout, description


def message_limit(header: Any, ceiling: int | None = None) -> tuple[int, str]:
    """(bytes, why): the most one message of the scan described by ``header`` may hold.

    ``header``: an ``ismrmrd.xsd.ismrmrdHeader`` (None: only the ceiling). The derived size is
    twice (data and reference buffer) the complex64 samples plus as much again for trajectory and
    density, plus one acquisition header per line, plus :data:`SLACK_BYTES`; never more than
    ``ceiling`` (default :func:`ceiling_bytes`).
    """
    ceiling = ceiling_bytes() if ceiling is None else int(ceiling)
    if header is None:
        return ceiling, f"the ceiling of {ceiling} bytes ({CEILING_VARIABLE})"
    elements, readout, description = header_elements(header)
    if elements == 0:
        return ceiling, f"the ceiling of {ceiling} bytes ({CEILING_VARIABLE}; the header has no encoding)"
    lines = elements // readout
    derived = 2 * (elements * 16 + lines * _ACQ_HEADER_BYTES) + SLACK_BYTES
    if derived >= ceiling:
        return ceiling, f"the ceiling of {ceiling} bytes ({CEILING_VARIABLE}; the header allows {derived})"
    return derived, f"{derived} bytes, what the header allows ({description})"


class MessageBudget:
    """Bytes left for the message being read; ``charge(n)`` before reading ``n`` bytes."""

    def __init__(self, limit: int, why: str = "") -> None:
        self.limit = int(limit)
        self.why = why or f"{self.limit} bytes"
        self.left = self.limit
        self.what = "message"

    def begin(self, what: str = "message") -> None:
        """A new message starts: the whole limit is available again."""
        self.left = self.limit
        self.what = what

    def check(self, nbytes: int, what: str = "") -> None:
        """MessageTooLarge if ``nbytes`` more would exceed the limit (nothing is charged)."""
        nbytes = int(nbytes)
        if nbytes < 0:
            raise MessageTooLarge(f"{what or self.what} claims a negative length ({nbytes})")
        if nbytes > self.left:
            used = self.limit - self.left
            raise MessageTooLarge(
                f"{what or self.what} claims {nbytes} more bytes after {used}, over the limit of this "
                f"connection: {self.why} (raise it with {CEILING_VARIABLE} or --max-message-mb)")

    def charge(self, nbytes: int, what: str = "") -> None:
        """Account for ``nbytes`` about to be read; MessageTooLarge (nothing charged) if over the limit."""
        self.check(nbytes, what)
        self.left -= int(nbytes)


def check(source: Any, nbytes: int, what: str) -> None:
    """Raise :class:`MessageTooLarge` when ``source.budget`` (if any) has less than ``nbytes`` left.

    Readers call this with the total a header claims before allocating; the source's ``read``
    charges the bytes as they are read.
    """
    budget = getattr(source, "budget", None)
    if budget is not None:
        budget.check(nbytes, what)


def read_acquisition(source: Any) -> ismrmrd.Acquisition:
    """An acquisition (1008) whose claimed data size is checked before anything is allocated."""
    head = ismrmrd.AcquisitionHeader.from_buffer_copy(source.read(_ACQ_HEADER_BYTES))
    n_samples, n_channels, n_traj = int(head.number_of_samples), int(head.active_channels), \
        int(head.trajectory_dimensions)
    traj_bytes, data_bytes = n_samples * n_traj * 4, n_samples * n_channels * 8
    check(source, traj_bytes + data_bytes, f"acquisition ({n_samples} samples x {n_channels} channels)")
    trajectory = np.frombuffer(source.read(traj_bytes), dtype=np.float32).reshape(n_samples, n_traj)
    data = np.frombuffer(source.read(data_bytes), dtype=np.complex64).reshape(n_channels, n_samples)
    return ismrmrd.Acquisition(head, data, trajectory)


def read_waveform(source: Any) -> ismrmrd.Waveform:
    """A waveform (1026) whose claimed size is checked before anything is allocated."""
    head_bytes = source.read(_WAVEFORM_HEADER_BYTES)
    head = ismrmrd.WaveformHeader.from_buffer_copy(head_bytes)
    nbytes = int(head.channels) * int(head.number_of_samples) * 4
    check(source, nbytes, f"waveform ({head.channels} channels x {head.number_of_samples} samples)")
    data = np.frombuffer(source.read(nbytes), dtype=np.uint32).reshape(int(head.channels), int(head.number_of_samples))
    return ismrmrd.Waveform(head, data)


def read_image(source: Any) -> ismrmrd.Image:
    """An image (1022) whose claimed attribute and data sizes are checked before anything is allocated."""
    header_bytes = source.read(_IMAGE_HEADER_BYTES)
    head = ismrmrd.ImageHeader.from_buffer_copy(header_bytes)
    (attribute_length,) = _U64.unpack(source.read(8))
    dtype = IMAGE_WIRE_DTYPES.get(int(head.data_type))
    if dtype is None:
        raise ValueError(f"image with unknown data_type {head.data_type}")
    x, y, z = (int(v) for v in head.matrix_size)
    nbytes = int(head.channels) * x * y * z * dtype.itemsize
    check(source, attribute_length + nbytes,
           f"image ({head.channels} channels x {x}x{y}x{z}, attributes {attribute_length} bytes)")
    attributes = bytes(source.read(attribute_length)).rstrip(b"\0").decode("utf-8", "replace")
    data_bytes = source.read(nbytes)
    try:
        image = ismrmrd.Image(head=header_bytes, attribute_string=attributes)
    except (ElementTree.ParseError, AssertionError, ValueError) as exc:  # malformed meta XML
        logger.warning("image attributes are not valid ISMRMRD meta XML (%s); ignored", exc)
        image = ismrmrd.Image(head=header_bytes)
    image.data[...] = np.frombuffer(data_bytes, dtype=dtype).reshape(int(head.channels), z, y, x)
    return image


_QUOTED_PATH = re.compile(r"(['\"])((?:[A-Za-z]:)?[/\\][^'\"\n]*)\1")
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][^\s'\"`:;,()\[\]{}<>]+)+")


def redact_paths(text: str) -> str:
    """``text`` with every absolute file path replaced by its last component (for what is sent to a
    peer: ``'/srv/models/m1.safetensors'`` -> ``'m1.safetensors'``; no host directories)."""
    def last_part(match: re.Match[str]) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group()) if p]
        return parts[-1] if parts and not parts[-1].endswith(":") else "<path>"

    def quoted(match: re.Match[str]) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group(2)) if p]
        return match.group(1) + (parts[-1] if parts else "<path>") + match.group(1)

    return _PATH.sub(last_part, _QUOTED_PATH.sub(quoted, str(text)))

"""The lines that :class:`gadgets.buffer.AcquisitionBuffer` holds: headers read without copies, buckets, slots.

ismrmrd-python's ``Acquisition.getHead()`` deep-copies the ctypes header on every call (about 5 us,
``copy.deepcopy`` through pickling); called several times per acquisition it was half of the
buffer's time. Here an acquisition's header is read once, in one ``struct`` call on the
acquisition's own header (:func:`header_view`, no copy), into a :class:`LineFields` tuple of the
fields the buffer uses. The one copy a ReconData keeps per line (its ``headers`` slot) is a copy
of the header's 340 bytes into a ctypes array that holds all of a buffer's slots
(:class:`HeaderSlots`); the ReconBuffer's ``headers`` object array holds ``AcquisitionHeader``
views of that array's elements, default headers where no line arrived. A :class:`Bucket` holds
the acquisitions of one trigger/sorting value with their LineFields, and :class:`BucketStats` the
counter ranges that size a buffer.
"""

from __future__ import annotations

import ctypes
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import ismrmrd
import numpy as np

from .data_checks import default_header

Header = ismrmrd.AcquisitionHeader


class LineFields(NamedTuple):
    """The acquisition header fields the buffer reads, with the ``idx`` counters flattened (the
    ``user`` counters as ``user_0`` ... ``user_7``, the trigger dimensions' names)."""

    flags: int
    scan_counter: int
    number_of_samples: int
    active_channels: int
    discard_pre: int
    discard_post: int
    center_sample: int
    encoding_space_ref: int
    trajectory_dimensions: int
    kspace_encode_step_1: int
    kspace_encode_step_2: int
    average: int
    slice: int
    contrast: int
    phase: int
    repetition: int
    set: int
    segment: int
    user_0: int
    user_1: int
    user_2: int
    user_3: int
    user_4: int
    user_5: int
    user_6: int
    user_7: int


def _fields_struct() -> struct.Struct:
    """A little-endian ``struct`` that reads LineFields from an AcquisitionHeader's bytes, laid out
    from the ctypes field offsets (so a changed header layout fails here, at import)."""
    counters_type = dict(Header._fields_)["idx"]
    places: list[tuple[int, int, str]] = []
    for name in LineFields._fields[:9]:
        ctype = dict(Header._fields_)[name]
        places.append((getattr(Header, name).offset, ctypes.sizeof(ctype), name))
    base = Header.idx.offset
    for name in LineFields._fields[9:18]:
        places.append((base + getattr(counters_type, name).offset, 2, name))
    for number in range(8):
        places.append((base + counters_type.user.offset + 2 * number, 2, f"user_{number}"))
    codes = {1: "B", 2: "H", 4: "I", 8: "Q"}
    layout, position = "<", 0
    for offset, size, name in places:
        if offset < position or size not in codes:
            raise RuntimeError(f"ismrmrd.AcquisitionHeader.{name} is not laid out as gadgets.buffer_lines expects")
        layout += "x" * (offset - position) + codes[size]
        position = offset + size
    return struct.Struct(layout)


_FIELDS = _fields_struct()


def header_view(acq: ismrmrd.Acquisition) -> ismrmrd.AcquisitionHeader:
    """``acq``'s own header, not a copy: to be read, never changed. ismrmrd-python keeps it as the
    attribute ``_head`` (what ``getHead()`` deep-copies); any other kind of acquisition gets
    ``getHead()``."""
    head = getattr(acq, "_head", None)
    return head if type(head) is Header else acq.getHead()


def read_fields(head: ismrmrd.AcquisitionHeader) -> LineFields:
    """The fields of an ``AcquisitionHeader`` (one ``struct`` call, no copy of the header)."""
    return LineFields._make(_FIELDS.unpack_from(head))


class HeaderSlots:
    """The header slots of one buffer, ``headers [E1, E2, N, S, LOC]`` (an object array of
    ``AcquisitionHeader``), all default headers (version 1, one channel, no samples) until
    :meth:`put` copies a line's header into one. The headers share one ctypes array."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(size) for size in shape)
        count = math.prod(self.shape)
        self._array = (Header * count).from_buffer_copy(bytes(default_header()) * count)
        self.headers: np.ndarray = np.fromiter(self._array, dtype=object, count=count).reshape(self.shape)

    def put(self, position: tuple[int, int, int, int, int], head: Any) -> None:
        """Copy ``head`` (an AcquisitionHeader) into the slot at ``position`` (e1, e2, n, s, loc)."""
        flat = 0
        for index, size in zip(position, self.shape):
            flat = flat * size + index
        self._array[flat] = head


def flag_bit(flag: int) -> int:
    """The bit of an ISMRMRD acquisition flag (``ismrmrd.ACQ_...``, numbered from 1) in ``flags``."""
    return 1 << (flag - 1)


#: Lines that go to a bucket's reference, and lines that do not go to its data.
_REF = flag_bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) | flag_bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
_NOT_DATA = flag_bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) | flag_bit(ismrmrd.ACQ_IS_PHASECORR_DATA)
#: The counters whose ranges BucketStats keeps, with their place in LineFields.
STAT_FIELDS = ("kspace_encode_step_1", "kspace_encode_step_2", "slice", "contrast", "phase", "repetition", "set",
               "segment", "average")
_STAT_INDEX = tuple((name, LineFields._fields.index(name)) for name in STAT_FIELDS)

#: One acquisition held in a bucket, with its header fields read once.
Line = tuple[ismrmrd.Acquisition, LineFields]


class BucketStats:
    """Smallest and largest values of STAT_FIELDS over a bucket's lines of one encoding space
    (Gadgetron's AcquisitionBucketStats)."""

    def __init__(self, lines: Sequence[LineFields]) -> None:
        columns = list(zip(*lines))
        self.low = {name: min(columns[index]) for name, index in _STAT_INDEX}
        self.high = {name: max(columns[index]) for name, index in _STAT_INDEX}

    def span(self, name: str) -> int:
        """``maximum - minimum + 1`` of the counter ``name``."""
        return self.high[name] - self.low[name] + 1

    def minimum(self, name: str) -> int:
        return self.low[name]


@dataclass
class Bucket:
    """Acquisitions of one trigger and sorting value (AcquisitionBucket): ``data`` all but
    ``ACQ_IS_PARALLEL_CALIBRATION`` and ``ACQ_IS_PHASECORR_DATA`` lines, ``ref`` the
    ``ACQ_IS_PARALLEL_CALIBRATION`` and ``..._AND_IMAGING`` lines, in arrival order."""

    data: list[Line] = field(default_factory=list)
    ref: list[Line] = field(default_factory=list)

    def add(self, acq: ismrmrd.Acquisition, fields: LineFields) -> None:
        if fields.flags & _REF:
            self.ref.append((acq, fields))
        if not fields.flags & _NOT_DATA:
            self.data.append((acq, fields))

    def __bool__(self) -> bool:
        return bool(self.data or self.ref)


__all__ = ["LineFields", "header_view", "read_fields", "HeaderSlots", "flag_bit", "STAT_FIELDS", "Line",
           "BucketStats", "Bucket"]

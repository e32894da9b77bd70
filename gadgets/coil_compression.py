"""CoilCompression: ReconData -> ReconData with fewer (virtual) coils.

For each ReconData the SVD compression is computed from the calibration (``ref``) buffer of its
first bit, or from that bit's data when it has no ref (or an all-zero one), and the same matrix is
applied to the data and ref buffers of every bit (coil axis 3 of ``[E0, E1, E2, CHA, N, S, LOC]``).
``n_coils`` keeps that many virtual coils (clamped to the number of physical coils); ``energy``
keeps the fewest whose share of the calibration energy reaches it; without either, 8 coils. When
no compression is needed (as many or fewer coils than asked) the ReconData passes unchanged. The
headers of filled lines get ``active_channels`` = the number of virtual coils. The numerics are
``cardiomm_core.coils.coil_compression``.

Before anything is computed, lines holding a NaN, Inf or absurd sample (which a native
BucketToBuffer passes on, and which would overflow or poison the SVD) are zeroed and treated as
not acquired (:func:`gadgets.data_checks.sanitize_buffer`); their count is added to the drop marks
of the headers so that the images report it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData

from cardiomm_core.coils import SvdCoilCompression as Compression
from cardiomm_core.coils import coil_compression

from . import data_checks
from .protocol.params import Param
from .protocol.stream import Gadget

logger = logging.getLogger(__name__)

#: Virtual coils kept when neither n_coils nor energy is given.
DEFAULT_N_COILS = 8
_COIL_AXIS = 3


def _energy_check(value: float) -> str | None:
    return None if 0 < value <= 1 else "a fraction with 0 < energy <= 1"


def compress_buffer(buffer: ReconBuffer, compression: Compression) -> ReconBuffer:
    """``buffer`` with its data ``[E0, E1, E2, CHA, N, S, LOC]`` compressed along CHA (a new buffer)."""
    data = compression.apply(np.asarray(buffer.data), coil_axis=_COIL_AXIS)
    headers = np.empty(buffer.headers.shape, dtype=object)
    for position in np.ndindex(headers.shape):
        original = buffer.headers[position]
        head = type(original).from_buffer_copy(bytes(memoryview(original)))
        if head.number_of_samples > 0:
            head.active_channels = compression.n_virtual
        headers[position] = head
    return ReconBuffer(np.asfortranarray(data, dtype=np.complex64), buffer.trajectory, buffer.density,
                       headers, buffer.sampling)


class CoilCompression(Gadget):
    """ReconData -> ReconData with ``n_coils`` virtual coils (or those keeping ``energy``)."""

    PARAMETERS = (
        Param("n_coils", int, None, low=1, doc=f"virtual coils to keep (default {DEFAULT_N_COILS})"),
        Param("energy", float, None, check=_energy_check,
              doc="keep the fewest virtual coils holding this fraction of the calibration energy"),
    )

    def configure(self) -> None:
        if self.params.n_coils is not None and self.params.energy is not None:
            raise ValueError(f"{self.gadget_name()}: give n_coils ({self.params.n_coils!r}) or energy "
                             f"({self.params.energy!r}), not both")

    def start(self, header: Any) -> None:
        self._found = data_checks.DropCounts()

    def accepts(self, item: Any) -> bool:
        return isinstance(item, ReconData)

    def sanitize(self, item: ReconData) -> ReconData:
        """``item`` with bad lines zeroed (see the module docstring) and the drop marks updated."""
        bits = []
        found = data_checks.DropCounts()
        for bit in item.bits:
            data, counts = data_checks.sanitize_buffer(bit.data)
            ref = None if bit.ref is None else data_checks.sanitize_buffer(bit.ref)[0]
            found = found + counts
            bits.append(ReconBit(data, ref))
        if found.total:
            logger.warning("CoilCompression: %d buffer line(s) with NaN/Inf or absurd samples treated as not acquired",
                           found.total)
        self._found = getattr(self, "_found", data_checks.DropCounts()) + found
        if not self._found.total:
            return item  # nothing found in this stream: the very same ReconData
        if self._found.total:
            for bit in bits:
                headers = np.asarray(bit.data.headers, dtype=object)
                data_checks.mark_headers(headers, data_checks.read_marks(headers) + self._found)
                bit.data.headers = headers
        return ReconData(bits)

    def compression_for(self, recon_data: ReconData) -> Compression | None:
        """The compression for ``recon_data`` (from its first bit), or None when none is needed."""
        if not recon_data.bits:
            raise ValueError("ReconData has no bits")
        first = recon_data.bits[0]
        data = np.asarray(first.data.data)
        if data.ndim != 7:
            raise ValueError(f"ReconData buffer must have 7 dimensions [E0, E1, E2, CHA, N, S, LOC], got {data.shape}")
        n_physical = data.shape[_COIL_AXIS]
        calib = data
        if first.ref is not None and np.any(np.asarray(first.ref.data) != 0):
            calib = np.asarray(first.ref.data)
        if self.params.energy is not None:
            return coil_compression(calib, _COIL_AXIS, energy=self.params.energy)
        wanted = self.params.n_coils if self.params.n_coils is not None else DEFAULT_N_COILS
        if wanted >= n_physical:
            return None
        return coil_compression(calib, _COIL_AXIS, n_virtual=wanted)

    def process(self, item: ReconData) -> Iterable[Any]:
        item = self.sanitize(item)
        compression = self.compression_for(item)
        if compression is None:
            logger.debug("CoilCompression: no more coils than asked for; ReconData passes unchanged")
            return (item,)
        logger.info("CoilCompression: %d -> %d coils (%.4f of the calibration energy)",
                    compression.n_coils, compression.n_virtual, compression.energy_kept)
        bits = []
        for bit in item.bits:
            ref = None if bit.ref is None else compress_buffer(bit.ref, compression)
            bits.append(ReconBit(compress_buffer(bit.data, compression), ref))
        return (ReconData(bits),)

"""RemoveOversampling: crop the readout to the recon field of view (Gadgetron's RemoveROOversamplingGadget).

Per acquisition, as the native gadget does it (the numerics:
:func:`cardiomm_core.readout.remove_readout_oversampling`): centred orthonormal inverse FFT along the readout,
keep the central ``round(samples / ratio)`` samples (``ratio = encoded matrix x / recon matrix x``),
centred orthonormal FFT back; then
``number_of_samples``, ``center_sample``, ``discard_pre`` and ``discard_post`` are divided by the
ratio (truncated). It works only when the encoded readout matrix is larger than the recon one.
The ratio comes from the matrix sizes, not the fields of view: FOVs written with rounding (e.g.
200.001 / 100.0 = 2.0000059) would otherwise keep 63 of 64 columns.
Deviation: a trajectory, if present, is cropped to the same samples (the native gadget leaves it
at its old length, which no longer matches the header).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import ismrmrd
import numpy as np

from cardiomm_core.readout import remove_readout_oversampling

from .data_checks import sample_problem
from .protocol.stream import Gadget

logger = logging.getLogger(__name__)


def oversampling_ratio(header: ismrmrd.xsd.ismrmrdHeader) -> float | None:
    """Readout oversampling ratio of the first encoding, or None when there is nothing to remove."""
    if not header.encoding:
        raise ValueError("RemoveOversampling needs an encoding in the ISMRMRD header")
    encoding = header.encoding[0]
    encoded_nx = int(encoding.encodedSpace.matrixSize.x)
    recon_nx = int(encoding.reconSpace.matrixSize.x)
    if encoded_nx <= recon_nx:
        return None
    if recon_nx <= 0:
        raise ValueError(f"RemoveOversampling: reconSpace.matrixSize.x must be positive, got {recon_nx}")
    encoded_fov = float(encoding.encodedSpace.fieldOfView_mm.x or 0.0)
    recon_fov = float(encoding.reconSpace.fieldOfView_mm.x or 0.0)
    ratio = encoded_nx / recon_nx
    if encoded_fov > 0 and recon_fov > 0 and abs(encoded_fov / recon_fov - ratio) > 1e-3 * ratio:
        logger.warning("RemoveOversampling: FOV ratio %.6f differs from the matrix ratio %d/%d; using the matrix "
                       "sizes", encoded_fov / recon_fov, encoded_nx, recon_nx)
    return ratio


class RemoveOversampling(Gadget):
    """Acquisition -> Acquisition with the readout oversampling removed."""

    def start(self, header: ismrmrd.xsd.ismrmrdHeader) -> None:
        self._ratio = oversampling_ratio(header)
        if self._ratio is None:
            logger.info("RemoveOversampling: encoded readout is not larger than recon readout; passing data unchanged")
        else:
            logger.info("RemoveOversampling: readout oversampling ratio %.4f", self._ratio)

    def accepts(self, item: Any) -> bool:
        return isinstance(item, ismrmrd.Acquisition) and self._ratio is not None

    def process(self, item: ismrmrd.Acquisition) -> Iterable[Any]:
        ratio = float(self._ratio or 1.0)
        head = item.getHead()
        if sample_problem(np.asarray(item.data)) is not None:
            return (item,)  # NaN/Inf/absurd samples: not transformed (an FFT would spread them); the buffer drops it
        n_keep = int(round(head.number_of_samples / ratio))
        if n_keep < 1:
            raise ValueError(f"acquisition {head.scan_counter} has too few samples ({head.number_of_samples}) to crop")
        data, start = remove_readout_oversampling(np.asarray(item.data), n_keep)
        traj = np.asarray(item.traj)[start:start + n_keep]
        head.number_of_samples = n_keep
        head.center_sample = int(head.center_sample / ratio)
        head.discard_pre = int(head.discard_pre / ratio)
        head.discard_post = int(head.discard_post / ratio)
        return (ismrmrd.Acquisition(head, data, np.ascontiguousarray(traj, dtype=np.float32)),)

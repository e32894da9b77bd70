"""NoiseAdjust: noise prewhitening of acquisitions, as Gadgetron's NoiseAdjustGadget does it.

Noise-measurement acquisitions (``ACQ_IS_NOISE_MEASUREMENT``) are consumed (never passed on) and
accumulated into a channel covariance. At the first imaging acquisition the prewhitening matrix
is computed, scaled by the noise-bandwidth factor
``sqrt(2 * acquisition dwell / noise dwell * relativeReceiverNoiseBandwidth)`` (header
``acquisitionSystemInformation.relativeReceiverNoiseBandwidth``, default 0.793; dwell times are
the ``sample_time_us`` of the first noise and first imaging acquisition), and applied to every
following acquisition. Without a noise scan the acquisitions pass unchanged (logged once).
Unlike the native gadget this one needs no storage server. The numerics are
``cardiomm_core.noise``.

Bad samples (:mod:`gadgets.data_checks`): a noise acquisition with a non-finite or absurd sample
would poison the covariance and with it every prewhitened line, so it is left out of the noise
statistics (one warning naming it, then counted); an imaging acquisition with such samples is
passed on unchanged, not prewhitened (prewhitening mixes the channels and would spread a NaN to all
of them), for the buffer to drop and count it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import ismrmrd
import numpy as np

from cardiomm_core.noise import (
    DEFAULT_RECEIVER_NOISE_BANDWIDTH,
    NoiseAccumulator,
    noise_bandwidth_scale,
    prewhiten,
    prewhitening_matrix,
)

from . import data_checks
from .protocol.params import Param
from .protocol.stream import Gadget

logger = logging.getLogger(__name__)


def _positive(value: float) -> str | None:
    return None if value > 0 else "a positive number"


def header_noise_bandwidth(header: ismrmrd.xsd.ismrmrdHeader | None) -> float | None:
    """``acquisitionSystemInformation.relativeReceiverNoiseBandwidth`` of ``header``, or None."""
    info = getattr(header, "acquisitionSystemInformation", None)
    value = getattr(info, "relativeReceiverNoiseBandwidth", None)
    return None if value is None else float(value)


class NoiseAdjust(Gadget):
    """Consumes noise scans, prewhitens every later acquisition (Acquisition -> Acquisition)."""

    PARAMETERS = (
        Param("receiver_noise_bandwidth", float, None, check=_positive,
              doc="overrides the header's relativeReceiverNoiseBandwidth (default: header, else 0.793)"),
        Param("pass_nonconformant_data", bool, True,
              doc="pass acquisitions whose channel count differs from the noise scan unchanged "
                  "(false: fail the stream)"),
    )

    def start(self, header: ismrmrd.xsd.ismrmrdHeader) -> None:
        self._noise = NoiseAccumulator()
        self._matrix: np.ndarray | None = None
        self._warned_no_noise = False
        self._warned_channels = False
        bandwidth = self.params.receiver_noise_bandwidth
        if bandwidth is None:
            bandwidth = header_noise_bandwidth(header)
        if bandwidth is None or bandwidth <= 0:
            bandwidth = DEFAULT_RECEIVER_NOISE_BANDWIDTH
        self._bandwidth = float(bandwidth)
        self._log = data_checks.DropLog(f"{self.gadget_name()} (noise scan)")

    def finish(self) -> Iterable[Any]:
        self._log.summary()
        return ()

    def accepts(self, item: Any) -> bool:
        return isinstance(item, ismrmrd.Acquisition)

    def process(self, item: ismrmrd.Acquisition) -> Iterable[Any]:
        if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            if not data_checks.check_acquisition(item, None, self._log):
                return ()
            self._noise.add(np.asarray(item.data), float(item.sample_time_us))
            self._matrix = None
            return ()
        if self._noise.n_samples == 0:
            if not self._warned_no_noise:
                logger.info("NoiseAdjust: no noise scan before the first acquisition; passing data unchanged")
                self._warned_no_noise = True
            return (item,)
        if self._matrix is None:
            scale = noise_bandwidth_scale(self._noise.dwell_time_us, float(item.sample_time_us), self._bandwidth)
            self._matrix = prewhitening_matrix(self._noise.covariance, scale)
            logger.info("NoiseAdjust: prewhitener from %d noise samples, %d coils, scale %.4f",
                        self._noise.n_samples, self._noise.n_coils, scale)
        if data_checks.sample_problem(np.asarray(item.data)) is not None:
            return (item,)  # not prewhitened: the buffer drops and counts it
        if item.data.shape[0] != self._matrix.shape[1]:
            message = (f"acquisition {item.scan_counter} has {item.data.shape[0]} channels, "
                       f"the noise scan had {self._matrix.shape[1]}")
            if not self.params.pass_nonconformant_data:
                raise ValueError(message)
            if not self._warned_channels:
                logger.warning("NoiseAdjust: %s; passing such acquisitions unchanged", message)
                self._warned_channels = True
            return (item,)
        data = prewhiten(np.asarray(item.data), self._matrix, coil_axis=0)
        return (ismrmrd.Acquisition(item.getHead(), np.ascontiguousarray(data, dtype=np.complex64),
                                    np.array(item.traj, dtype=np.float32)),)

"""Synthetic multi-coil cardiac scans generated on the fly (``cardiomm_core.phantom``).

``SyntheticCardiacDataset(n_subjects, ...)`` has ``n_subjects * n_slices`` items: item ``i`` is
slice ``i % n_slices`` of subject ``i // n_slices``. Each subject is one phantom seed derived from
``(seed, subject)``, with a modality (cycling through ``modalities``) and a scanner (cycling
through ``scanners``) fixed by the subject index, so an item is the same array on every call, in
every process and after a resumed run. The last simulated subject is kept, so reading the slices
of a subject in order simulates it once.

What the model sees can be made what a Gadgetron chain hands it: ``prewhiten=True`` applies the
noise prewhitening of ``NoiseAdjust`` (``cardiomm_core.noise.prewhitening_matrix`` of the scan's
noise covariance, so the noise is white with unit variance), and ``compress_coils=N`` the SVD coil
compression of ``CoilCompression`` to N virtual coils (``cardiomm_core.coils.coil_compression``;
calibrated here on the fully sampled k-space, where the gadget uses the sampled lines).
``target="noise_free"`` gives each sample a ``reference``: the root-sum-of-squares of the
noise-free coil images after the same coil mixing, ``|x| * ||M s||`` (object ``x``, maps ``s``,
mixing ``M``), which training and evaluation then score against instead of the noisy RSS.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.coils import coil_compression
from cardiomm_core.noise import prewhitening_matrix
from cardiomm_core.phantom import PhantomScan, noise_free_rss, simulate_cardiac_scan

from .sample import KspaceSample

logger = logging.getLogger(__name__)

#: Phantom modalities.
SYNTHETIC_MODALITIES = ("cine", "t1map", "t2map")
#: What samples are scored against: the RSS of the noisy k-space, or the noise-free RSS.
SYNTHETIC_TARGETS = ("rss", "noise_free")
#: Default scanner list: (field strength T, vendor, model).
DEFAULT_SCANNERS: tuple[tuple[float, str, str], ...] = ((3.0, "Siemens", "Vida"),)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class SyntheticCardiacDataset(Dataset):
    """Phantom slices as :class:`KspaceSample`, deterministic per index.

    ``n_subjects`` subjects x ``n_slices`` slices; ``matrix`` is the recon ``(nx readout, ny phase)``;
    the readout is encoded ``readout_oversampling`` times longer (``KspaceSample.recon_nx = nx``
    then). ``modalities``: phantom modalities ("cine", "t1map", "t2map"), assigned to subjects in
    turn; ``scanners``: ``(field T, vendor, model)`` triples, assigned in turn. Items give
    ``kspace (C, T, ky, nx * readout_oversampling)`` and the complex ground truth
    ``target (T, ny, nx)`` (coil-free object, max magnitude 1). ``prewhiten``, ``compress_coils``
    and ``target`` ("rss" or "noise_free"): see the module docstring; with them ``kspace`` has
    ``compress_coils`` coils and ``reference (T, ny, nx)`` float32 is set for "noise_free".
    """

    def __init__(
        self,
        n_subjects: int,
        *,
        seed: int = 0,
        n_frames: int = 12,
        n_coils: int = 8,
        matrix: tuple[int, int] = (128, 112),
        modalities: Sequence[str] = SYNTHETIC_MODALITIES,
        n_slices: int = 1,
        noise_level: float = 0.01,
        readout_oversampling: int = 2,
        scanners: Sequence[tuple[float, str, str]] = DEFAULT_SCANNERS,
        prewhiten: bool = False,
        compress_coils: int | None = None,
        target: str = "rss",
    ) -> None:
        self.n_subjects = _check_int("n_subjects", n_subjects, 1)
        self.seed = _check_int("seed", seed, 0)
        self.n_frames = _check_int("n_frames", n_frames, 1)
        self.n_coils = _check_int("n_coils", n_coils, 1)
        self.n_slices = _check_int("n_slices", n_slices, 1)
        self.readout_oversampling = _check_int("readout_oversampling", readout_oversampling, 1)
        if not isinstance(matrix, (tuple, list)) or len(matrix) != 2:
            raise ValueError(f"matrix must be (nx readout, ny phase), got {matrix!r}")
        self.matrix = (_check_int("matrix[0] (nx)", matrix[0], 8), _check_int("matrix[1] (ny)", matrix[1], 8))
        if isinstance(modalities, str) or not modalities:
            raise ValueError(f"modalities must be a non-empty sequence of {SYNTHETIC_MODALITIES}, got {modalities!r}")
        for modality in modalities:
            if modality not in SYNTHETIC_MODALITIES:
                raise ValueError(f"modalities must contain only {SYNTHETIC_MODALITIES}, got {modality!r}")
        self.modalities = tuple(modalities)
        if not scanners:
            raise ValueError("scanners must name at least one (field strength, vendor, model)")
        self.scanners = tuple((float(f), str(v), str(m)) for f, v, m in scanners)
        if isinstance(noise_level, bool) or not np.isfinite(noise_level) or noise_level < 0:
            raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
        self.noise_level = float(noise_level)
        if not isinstance(prewhiten, (bool, np.bool_)):
            raise ValueError(f"prewhiten must be true or false, got {prewhiten!r}")
        if prewhiten and self.noise_level == 0:
            raise ValueError("prewhiten needs noise (noise_level > 0): a noise-free scan has no noise covariance")
        self.prewhiten = bool(prewhiten)
        self.compress_coils = None if compress_coils is None else _check_int("compress_coils", compress_coils, 1)
        if self.compress_coils is not None and self.compress_coils > self.n_coils:
            raise ValueError(f"compress_coils ({self.compress_coils}) must not exceed n_coils ({self.n_coils})")
        if target not in SYNTHETIC_TARGETS:
            raise ValueError(f"target must be one of {SYNTHETIC_TARGETS}, got {target!r}")
        self.target = target
        self._cache: tuple[int, PhantomScan] | None = None

    def __len__(self) -> int:
        return self.n_subjects * self.n_slices

    def subject_seed(self, subject: int) -> int:
        """The phantom seed of ``subject`` (a function of the data set's seed and the subject only)."""
        return int(np.random.SeedSequence([self.seed, int(subject)]).generate_state(1, dtype=np.uint32)[0])

    def subject_modality(self, subject: int) -> str:
        return self.modalities[subject % len(self.modalities)]

    def _scan(self, subject: int) -> PhantomScan:
        if self._cache is not None and self._cache[0] == subject:
            return self._cache[1]
        field, vendor, model = self.scanners[subject % len(self.scanners)]
        scan = simulate_cardiac_scan(
            seed=self.subject_seed(subject), n_slices=self.n_slices, n_frames=self.n_frames, n_coils=self.n_coils,
            matrix=self.matrix, readout_oversampling=self.readout_oversampling,
            modality=self.subject_modality(subject), noise_level=self.noise_level,
            field_strength_t=field, vendor=vendor, scanner_model=model,
        )
        self._cache = (subject, scan)
        return scan

    def __getitem__(self, index: int) -> KspaceSample:
        n_items = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n_items <= index < n_items:
            raise IndexError(f"index {index!r} out of range for {n_items} items")
        index = int(index) % n_items
        subject, slice_index = divmod(index, self.n_slices)
        scan = self._scan(subject)
        kspace = np.array(scan.kspace[slice_index], dtype=np.complex64, copy=True)       # (C, T, ky, kx_enc)
        images = scan.images[slice_index]                                                 # (T, ny, nx)
        mixing = self.coil_mixing(scan, slice_index)
        if mixing is not None:
            kspace = np.tensordot(mixing, kspace, axes=([1], [0])).astype(np.complex64)
        reference = None
        if self.target == "noise_free":
            reference = torch.from_numpy(noise_free_rss(images, scan.sensitivities[slice_index], mixing))
        identifier = (f"synthetic/seed{self.seed}/subject{subject:05d}/{self.subject_modality(subject)}"
                      f"@slice{slice_index}")
        recon_nx = self.matrix[0] if self.readout_oversampling > 1 else None
        target = torch.from_numpy(np.array(images, dtype=np.complex64, copy=True))
        return KspaceSample(torch.from_numpy(kspace), scan.context, identifier, target, recon_nx, reference)

    def coil_mixing(self, scan: PhantomScan, slice_index: int) -> np.ndarray | None:
        """The coil mixing ``(C_out, C)`` complex64 applied to slice ``slice_index`` of ``scan``
        (prewhitening, then coil compression), or None when neither is asked for."""
        mixing = prewhitening_matrix(scan.noise_covariance) if self.prewhiten else None
        if self.compress_coils is None or self.compress_coils >= self.n_coils:
            return mixing
        calib = scan.kspace[slice_index]
        if mixing is not None:
            calib = np.tensordot(mixing, calib, axes=([1], [0]))
        compression = coil_compression(calib, 0, n_virtual=self.compress_coils).matrix
        return compression if mixing is None else (compression @ mixing).astype(np.complex64)

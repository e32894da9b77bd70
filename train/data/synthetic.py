"""Synthetic multi-coil cardiac scans generated on the fly (``cardiomm_core.phantom``).

``SyntheticCardiacDataset(n_subjects, ...)`` has ``n_subjects * n_slices`` items: item ``i`` is
slice ``i % n_slices`` of subject ``i // n_slices``. Each subject is one phantom seed derived from
``(seed, subject)``, with a modality (cycling through ``modalities``) and a scanner (cycling
through ``scanners``) fixed by the subject index, so an item is the same array on every call, in
every process and after a resumed run. The last simulated subject is kept, so reading the slices
of a subject in order simulates it once.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.phantom import PhantomScan, simulate_cardiac_scan

from .sample import KspaceSample

logger = logging.getLogger(__name__)

#: Phantom modalities.
SYNTHETIC_MODALITIES = ("cine", "t1map", "t2map")
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
    ``target (T, ny, nx)`` (coil-free object, max magnitude 1).
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
        kspace = torch.from_numpy(np.array(scan.kspace[slice_index], dtype=np.complex64, copy=True))
        target = torch.from_numpy(np.array(scan.images[slice_index], dtype=np.complex64, copy=True))
        identifier = (f"synthetic/seed{self.seed}/subject{subject:05d}/{self.subject_modality(subject)}"
                      f"@slice{slice_index}")
        recon_nx = self.matrix[0] if self.readout_oversampling > 1 else None
        return KspaceSample(kspace, scan.context, identifier, target, recon_nx)

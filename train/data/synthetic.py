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

**Varied acquisitions** (all off by default: the fixed geometry of the arguments ``matrix``,
``n_frames``, ``n_coils``, ``noise_level`` and scanners in turn, bit for bit as before). Each
range makes that parameter vary per subject, drawn from ``(seed, subject)`` alone
(:meth:`SyntheticCardiacDataset.subject_params`, no simulation needed to know it):
``nx_range`` / ``ny_range`` (recon readout / phase matrix, inclusive integer ranges, odd sizes
included), ``coils_range`` (receive coils before compression; ``compress_coils`` then compresses
to ``min(compress_coils, coils)``), ``frames_by_modality`` (``{"cine": (8, 30), "t1map": (9, 9),
"t2map": (3, 3)}``: inclusive ranges per modality; a modality not named keeps ``n_frames``),
``noise_range`` (noise level, log-uniform), ``scanner_choice="random"`` (a scanner of
``scanners`` drawn per subject instead of taken in turn; ``VARIED_SCANNERS`` lists several
1.5 T / 3 T systems of four vendors).

**Cache** (``cache_dir``): a simulated slice is written there once (``.npz``, no pickle, written
atomically) under a folder named by a fingerprint of the data set's parameters, and read back on
later visits (later epochs, resumed runs, other loader workers): an item is a pure function of its
index, so the cache changes nothing but the time; new masks are still drawn per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.checks import check_int, check_int_range
from cardiomm_core.coils import coil_compression
from cardiomm_core.context import ScanContext
from cardiomm_core.files import write_atomically
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
#: Several real systems, 1.5 T and 3 T, four vendors (model names as their DICOM headers write them).
VARIED_SCANNERS: tuple[tuple[float, str, str], ...] = (
    (3.0, "Siemens", "Vida"),
    (1.5, "Siemens", "Aera"),
    (3.0, "Siemens", "Prisma"),
    (1.5, "Siemens", "Avanto fit"),
    (1.5, "GE", "SIGNA Artist"),
    (3.0, "GE", "SIGNA Premier"),
    (3.0, "GE", "Discovery MR750"),
    (1.5, "Philips", "Ingenia"),
    (3.0, "Philips", "Ingenia Elition X"),
    (3.0, "Philips", "Achieva"),
    (1.5, "United Imaging", "uMR 680"),
    (3.0, "United Imaging", "uMR 790"),
)
#: How a subject's scanner is chosen: in turn (subject index modulo the list) or drawn from (seed, subject).
SCANNER_CHOICES = ("cycle", "random")
#: Frames per modality that match CMRxRecon (cine 8..30 phases, MOLLI's 9 T1 weightings, 3 T2 preparations).
CMRXRECON_FRAMES: dict[str, tuple[int, int]] = {"cine": (8, 30), "t1map": (9, 9), "t2map": (3, 3)}


@dataclass(frozen=True)
class SubjectParams:
    """What one synthetic subject's acquisition is: recon ``matrix`` (nx readout, ny phase),
    receive ``n_coils`` before compression, ``n_frames``, ``noise_level``, ``modality`` and
    ``scanner`` (field T, vendor, model)."""

    matrix: tuple[int, int]
    n_coils: int
    n_frames: int
    noise_level: float
    modality: str
    scanner: tuple[float, str, str]

    def context(self) -> ScanContext:
        """The fully sampled ScanContext a scan of these parameters has (as ``simulate_cardiac_scan`` writes it)."""
        from cardiomm_core.phantom import CONTEXT_MODALITY

        field_t, vendor, model = self.scanner
        return ScanContext(field_strength_t=float(field_t), vendor=vendor, scanner_model=model,
                           modality=CONTEXT_MODALITY[self.modality], view="short-axis", acceleration=1.0,
                           pattern="full")


def _draw_int(u: float, bounds: tuple[int, int]) -> int:
    """An integer of the inclusive range from one uniform number in [0, 1)."""
    low, high = bounds
    return min(high, low + int(math.floor(u * (high - low + 1))))


def gram_coil_compression(calib: np.ndarray, n_virtual: int, pre: np.ndarray | None = None) -> np.ndarray:
    """SVD coil compression ``(n_virtual, C')`` complex64 of ``pre @ calib`` (``calib (C, ...)``,
    ``pre (C', C)`` or None) from the coils' Gram matrix: the ``n_virtual`` leading eigenvectors of
    ``P X X^H P^H`` are the leading left singular vectors of ``P X``
    (``cardiomm_core.coils.coil_compression``'s virtual coils, up to one phase per virtual coil), at
    a fraction of the cost: 0.3 s instead of 35 s for 32 coils x 30 frames x 256 x 256. The first
    coil's weight of each virtual coil is made real and >= 0 (a fixed phase convention)."""
    n_coils = int(calib.shape[0])
    x = torch.from_numpy(np.ascontiguousarray(calib, dtype=np.complex64).reshape(n_coils, -1))
    gram = (x @ x.mH).to(torch.complex128)
    if pre is not None:
        p = torch.from_numpy(np.asarray(pre)).to(torch.complex128)
        gram = p @ gram @ p.mH
        n_coils = int(p.shape[0])
    if not 1 <= n_virtual <= n_coils:
        raise ValueError(f"n_virtual must lie in 1..{n_coils}, got {n_virtual}")
    gram = 0.5 * (gram + gram.mH)
    _, vectors = torch.linalg.eigh(gram)                     # ascending eigenvalues
    leading = vectors[:, torch.arange(n_coils - 1, n_coils - 1 - n_virtual, -1)]   # (C, n_virtual)
    first = leading[0]
    phase = torch.where(first.abs() > 0, first.abs() / torch.where(first.abs() > 0, first, torch.ones_like(first)),
                        torch.ones_like(first))
    leading = leading * phase[None]
    return leading.conj().T.resolve_conj().numpy().astype(np.complex64)


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
        nx_range: Sequence[int] | None = None,
        ny_range: Sequence[int] | None = None,
        coils_range: Sequence[int] | None = None,
        frames_by_modality: Mapping[str, Sequence[int]] | None = None,
        noise_range: Sequence[float] | None = None,
        scanner_choice: str = "cycle",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.n_subjects = check_int("n_subjects", n_subjects, 1)
        self.seed = check_int("seed", seed, 0)
        self.n_frames = check_int("n_frames", n_frames, 1)
        self.n_coils = check_int("n_coils", n_coils, 1)
        self.n_slices = check_int("n_slices", n_slices, 1)
        self.readout_oversampling = check_int("readout_oversampling", readout_oversampling, 1)
        if not isinstance(matrix, (tuple, list)) or len(matrix) != 2:
            raise ValueError(f"matrix must be (nx readout, ny phase), got {matrix!r}")
        self.matrix = (check_int("matrix[0] (nx)", matrix[0], 8), check_int("matrix[1] (ny)", matrix[1], 8))
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
        self.nx_range = check_int_range("nx_range", nx_range, 8)
        self.ny_range = check_int_range("ny_range", ny_range, 8)
        self.coils_range = check_int_range("coils_range", coils_range, 1)
        frames: dict[str, tuple[int, int]] = {}
        if frames_by_modality is not None:
            if not isinstance(frames_by_modality, Mapping):
                raise ValueError(f"frames_by_modality must map modalities to [low, high], got {frames_by_modality!r}")
            for modality, bounds in frames_by_modality.items():
                if modality not in SYNTHETIC_MODALITIES:
                    raise ValueError(f"frames_by_modality keys must be in {SYNTHETIC_MODALITIES}, got {modality!r}")
                checked = check_int_range(f"frames_by_modality[{modality!r}]", bounds, 1)
                if checked is None:
                    raise ValueError(f"frames_by_modality[{modality!r}] must be [low, high], got None")
                frames[modality] = checked
        self.frames_by_modality = frames
        self.noise_range: tuple[float, float] | None = None
        if noise_range is not None:
            if isinstance(noise_range, (str, bytes)) or not isinstance(noise_range, (tuple, list)) \
                    or len(noise_range) != 2 or not all(isinstance(v, (int, float, np.floating))
                                                        and not isinstance(v, bool) and np.isfinite(v) and v > 0
                                                        for v in noise_range) or noise_range[1] < noise_range[0]:
                raise ValueError(f"noise_range must be [low, high] with 0 < low <= high, got {noise_range!r}")
            self.noise_range = (float(noise_range[0]), float(noise_range[1]))
        if scanner_choice not in SCANNER_CHOICES:
            raise ValueError(f"scanner_choice must be one of {SCANNER_CHOICES}, got {scanner_choice!r}")
        self.scanner_choice = scanner_choice
        self.compress_coils = None if compress_coils is None else check_int("compress_coils", compress_coils, 1)
        if self.compress_coils is not None and self.coils_range is None and self.compress_coils > self.n_coils:
            raise ValueError(f"compress_coils ({self.compress_coils}) must not exceed n_coils ({self.n_coils})")
        if target not in SYNTHETIC_TARGETS:
            raise ValueError(f"target must be one of {SYNTHETIC_TARGETS}, got {target!r}")
        self.target = target
        self._cache: tuple[int, PhantomScan] | None = None
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / self.fingerprint()

    def __len__(self) -> int:
        return self.n_subjects * self.n_slices

    def subject_seed(self, subject: int) -> int:
        """The phantom seed of ``subject`` (a function of the data set's seed and the subject only)."""
        return int(np.random.SeedSequence([self.seed, int(subject)]).generate_state(1, dtype=np.uint32)[0])

    def subject_modality(self, subject: int) -> str:
        return self.modalities[subject % len(self.modalities)]

    @property
    def varied(self) -> bool:
        """Whether any acquisition parameter varies per subject."""
        return bool(self.nx_range or self.ny_range or self.coils_range or self.frames_by_modality
                    or self.noise_range or self.scanner_choice != "cycle")

    def subject_params(self, subject: int) -> SubjectParams:
        """The acquisition of ``subject``: a pure function of (seed, subject) and the ranges.

        Six uniform numbers are drawn from ``SeedSequence([seed, subject, 0x7A41])`` in a fixed
        order (nx, ny, coils, frames, noise, scanner), whichever ranges are set, so setting one
        range does not change what another draws. Without ranges: the fixed arguments.
        """
        subject = int(subject)
        modality = self.subject_modality(subject)
        u = np.random.default_rng(np.random.SeedSequence([self.seed, subject, 0x7A41])).random(6)
        nx = _draw_int(u[0], self.nx_range) if self.nx_range else self.matrix[0]
        ny = _draw_int(u[1], self.ny_range) if self.ny_range else self.matrix[1]
        n_coils = _draw_int(u[2], self.coils_range) if self.coils_range else self.n_coils
        frames = self.frames_by_modality.get(modality)
        n_frames = _draw_int(u[3], frames) if frames else self.n_frames
        if self.noise_range:
            low, high = self.noise_range
            noise = float(math.exp(math.log(low) + u[4] * (math.log(high) - math.log(low))))
        else:
            noise = self.noise_level
        if self.scanner_choice == "random":
            scanner = self.scanners[_draw_int(u[5], (0, len(self.scanners) - 1))]
        else:
            scanner = self.scanners[subject % len(self.scanners)]
        return SubjectParams((nx, ny), n_coils, n_frames, noise, modality, scanner)

    def item_shape(self, index: int) -> tuple[int, int, int, int]:
        """``(coils, frames, ky, kx)`` of item ``index``'s k-space, without simulating it."""
        params = self.subject_params(int(index) // self.n_slices)
        coils = params.n_coils if self.compress_coils is None else min(self.compress_coils, params.n_coils)
        return coils, params.n_frames, params.matrix[1], params.matrix[0] * self.readout_oversampling

    def fingerprint(self) -> str:
        """A short hash of every parameter that shapes an item (names the cache folder)."""
        values: dict[str, Any] = {
            "version": 1, "seed": self.seed, "n_subjects": self.n_subjects, "n_frames": self.n_frames,
            "n_coils": self.n_coils, "matrix": list(self.matrix), "modalities": list(self.modalities),
            "n_slices": self.n_slices, "noise_level": self.noise_level,
            "readout_oversampling": self.readout_oversampling, "scanners": [list(s) for s in self.scanners],
            "prewhiten": self.prewhiten, "compress_coils": self.compress_coils, "target": self.target,
            "nx_range": self.nx_range, "ny_range": self.ny_range, "coils_range": self.coils_range,
            "frames_by_modality": {k: list(v) for k, v in sorted(self.frames_by_modality.items())},
            "noise_range": self.noise_range, "scanner_choice": self.scanner_choice,
        }
        text = json.dumps(values, sort_keys=True)
        return f"synthetic-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"

    def _scan(self, subject: int) -> PhantomScan:
        if self._cache is not None and self._cache[0] == subject:
            return self._cache[1]
        params = self.subject_params(subject)
        field, vendor, model = params.scanner
        scan = simulate_cardiac_scan(
            seed=self.subject_seed(subject), n_slices=self.n_slices, n_frames=params.n_frames,
            n_coils=params.n_coils, matrix=params.matrix, readout_oversampling=self.readout_oversampling,
            modality=params.modality, noise_level=params.noise_level,
            field_strength_t=field, vendor=vendor, scanner_model=model,
        )
        self._cache = (subject, scan)
        return scan

    def _cache_path(self, index: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"item{index:07d}.npz"

    def _read_cached(self, index: int) -> KspaceSample | None:
        path = self._cache_path(index)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                kspace = torch.from_numpy(np.array(data["kspace"], dtype=np.complex64))
                target = torch.from_numpy(np.array(data["target"], dtype=np.complex64))
                reference = torch.from_numpy(np.array(data["reference"], dtype=np.float32)) \
                    if "reference" in data.files else None
            return KspaceSample(kspace, ScanContext.from_dict(header["context"]), header["identifier"], target,
                                header["recon_nx"], reference)
        except (OSError, ValueError, KeyError, EOFError) as error:
            logger.warning("unreadable simulation cache entry %s (%s); simulating it again", path, error)
            return None

    def _write_cached(self, index: int, sample: KspaceSample) -> None:
        path = self._cache_path(index)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            header = json.dumps({"context": sample.context.to_dict(), "identifier": sample.identifier,
                                 "recon_nx": sample.recon_nx})
            arrays = {"header": np.array(header), "kspace": sample.kspace.numpy(),
                      "target": sample.target.numpy() if sample.target is not None else np.zeros(0, np.complex64)}
            if sample.reference is not None:
                arrays["reference"] = sample.reference.numpy()
            write_atomically(path, lambda handle: np.savez(handle, **arrays))
        except OSError as error:
            logger.warning("cannot write the simulation cache under %s (%s); continuing without it",
                           self.cache_dir, error)
            self.cache_dir = None

    def __getitem__(self, index: int) -> KspaceSample:
        n_items = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n_items <= index < n_items:
            raise IndexError(f"index {index!r} out of range for {n_items} items")
        index = int(index) % n_items
        cached = self._read_cached(index)
        if cached is not None:
            return cached
        sample = self._simulate(index)
        self._write_cached(index, sample)
        return sample

    def _simulate(self, index: int) -> KspaceSample:
        subject, slice_index = divmod(index, self.n_slices)
        scan = self._scan(subject)
        raw = scan.kspace[slice_index]                                                    # (C, T, ky, kx_enc)
        images = scan.images[slice_index]                                                 # (T, ny, nx)
        mixing = self.coil_mixing(scan, slice_index)
        if mixing is None:
            kspace = np.array(raw, dtype=np.complex64, copy=True)
        elif self.varied:  # one matrix product (C_out x C) @ (C x samples), no copy of the raw k-space
            flat = torch.from_numpy(raw.reshape(raw.shape[0], -1))
            kspace = (torch.from_numpy(mixing) @ flat).numpy().reshape((mixing.shape[0],) + raw.shape[1:])
        else:
            kspace = np.tensordot(mixing, np.array(raw, dtype=np.complex64, copy=True),
                                  axes=([1], [0])).astype(np.complex64)
        reference = None
        if self.target == "noise_free":
            reference = torch.from_numpy(noise_free_rss(images, scan.sensitivities[slice_index], mixing))
        identifier = (f"synthetic/seed{self.seed}/subject{subject:05d}/{self.subject_modality(subject)}"
                      f"@slice{slice_index}")
        recon_nx = int(scan.images.shape[-1]) if self.readout_oversampling > 1 else None
        target = torch.from_numpy(np.array(images, dtype=np.complex64, copy=True))
        return KspaceSample(torch.from_numpy(kspace), scan.context, identifier, target, recon_nx, reference)

    def coil_mixing(self, scan: PhantomScan, slice_index: int) -> np.ndarray | None:
        """The coil mixing ``(C_out, C)`` complex64 applied to slice ``slice_index`` of ``scan``
        (prewhitening, then coil compression), or None when neither is asked for."""
        mixing = prewhitening_matrix(scan.noise_covariance) if self.prewhiten else None
        n_coils = int(scan.kspace.shape[1])
        if self.compress_coils is None or self.compress_coils >= n_coils:
            return mixing
        calib = scan.kspace[slice_index]
        if self.varied:  # the Gram matrix of the raw coils, prewhitened as a 32 x 32 product
            compression = gram_coil_compression(calib, self.compress_coils, mixing)
            return compression if mixing is None else (compression @ mixing).astype(np.complex64)
        if mixing is not None:  # the fixed geometry keeps the SVD it always used (bit for bit)
            calib = np.tensordot(mixing, calib, axes=([1], [0]))
        compression = coil_compression(calib, 0, n_virtual=self.compress_coils).matrix
        return compression if mixing is None else (compression @ mixing).astype(np.complex64)

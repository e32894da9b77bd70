"""Retrospective undersampling on the fly with the CMRxRecon mask families.

``UndersampledDataset(base, spec, seed)`` turns each :class:`KspaceSample` of ``base`` into a
:class:`TrainingExample`: a pattern and a nominal acceleration are drawn from
:class:`UndersamplingSpec` (pattern by ``pattern_weights``, then an acceleration among that
pattern's list), a mask is built with ``cardiomm_core.masks.make_mask`` and applied
(``masked_kspace = kspace * mask``, exactly zero where the mask is zero), the target is the
root-sum-of-squares of the fully sampled k-space on the recon FOV (or the sample's ``reference``,
e.g. the noise-free RSS of a phantom), and the context says the pattern and acceleration as
``cardiomm_core.prompting.describe_sampling`` describes the mask with its nominal R declared: the
same description the gadgets and ``cardiomm-eval`` give the same mask, so a model reads inline
what it read in training. ``UndersamplingSpec.convention`` chooses the mask generators: the
project's (default) or the official CardioMM recipes (``cardiomm_core.masks``, 20 ACS lines).

Determinism: every draw (pattern, acceleration, ktGaussian seed) comes from
``numpy.random.SeedSequence([seed, epoch, index])``, so a resumed run that sets the same epoch
sees the same masks. Call ``set_epoch(epoch)`` at the start of every epoch; with DataLoader
workers do so before the loader creates its workers (the default ``persistent_workers=False``
copies the data set, with its epoch, into fresh workers every epoch). ``fixed=True`` (validation)
ignores the epoch: the same mask for an item in every epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.masks import MASK_CONVENTIONS, MASK_PATTERNS, SamplingMask, make_mask
from cardiomm_core.prompting import describe_sampling

from .sample import KspaceSample, TrainingExample

logger = logging.getLogger(__name__)

#: The challenge's own accelerations for the Uniform family (CMRxRecon 2023, 2024 task 1).
UNIFORM_ACCELERATIONS = (4.0, 8.0, 10.0)


def _positive_numbers(name: str, values: Sequence[float]) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers, got {values!r}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value):
            raise ValueError(f"{name} must contain finite numbers, got {value!r}")
        out.append(float(value))
    return tuple(out)


def _weights(name: str, weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    values = np.asarray(_positive_numbers(name, weights), dtype=np.float64)
    if values.size != n or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(f"{name} must be {n} non-negative numbers with a positive sum, got {tuple(weights)}")
    return values / values.sum()


@dataclass(frozen=True)
class UndersamplingSpec:
    """Which masks to draw, and how often.

    ``patterns``: CMRxRecon families (``MASK_PATTERNS``), drawn with ``pattern_weights`` (equal by
    default). ``accelerations``: nominal accelerations (>= 1; ktRadial >= 2) for every pattern
    not in ``pattern_accelerations``; ``acceleration_weights`` align with them (equal by default).
    ``pattern_accelerations``: per-pattern lists, drawn with equal weights; by default Uniform uses
    the challenge's 4, 8 and 10 (pass ``{}`` to give Uniform the general list). ``n_acs``: ACS
    lines (ktRadial: side of the ACS square), None for each family's default (24 Uniform, 16 kt;
    official convention: 20). ``convention``: "project" or "official" mask generators
    (``cardiomm_core.masks.make_mask``).
    """

    patterns: tuple[str, ...] = ("ktUniform", "ktGaussian", "ktRadial", "Uniform")
    accelerations: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0, 20.0, 24.0)
    n_acs: int | None = None
    pattern_weights: tuple[float, ...] | None = None
    acceleration_weights: tuple[float, ...] | None = None
    pattern_accelerations: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {"Uniform": UNIFORM_ACCELERATIONS})
    convention: str = "project"

    def __post_init__(self) -> None:
        if self.convention not in MASK_CONVENTIONS:
            raise ValueError(f"convention must be one of {MASK_CONVENTIONS}, got {self.convention!r}")
        if isinstance(self.patterns, str) or not self.patterns:
            raise ValueError(f"patterns must be a non-empty sequence of {MASK_PATTERNS}, got {self.patterns!r}")
        for pattern in self.patterns:
            if pattern not in MASK_PATTERNS:
                raise ValueError(f"patterns must contain only {MASK_PATTERNS}, got {pattern!r}")
        if len(set(self.patterns)) != len(self.patterns):
            raise ValueError(f"patterns must not repeat, got {self.patterns!r}")
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "accelerations", _positive_numbers("accelerations", self.accelerations))
        _weights("pattern_weights", self.pattern_weights, len(self.patterns))
        _weights("acceleration_weights", self.acceleration_weights, len(self.accelerations))
        per_pattern = {}
        for pattern, values in dict(self.pattern_accelerations).items():
            if pattern not in MASK_PATTERNS:
                raise ValueError(f"pattern_accelerations keys must be in {MASK_PATTERNS}, got {pattern!r}")
            per_pattern[pattern] = _positive_numbers(f"pattern_accelerations[{pattern!r}]", values)
        object.__setattr__(self, "pattern_accelerations", per_pattern)
        for pattern in self.patterns:
            minimum = 2.0 if pattern == "ktRadial" else 1.0
            for value in self.accelerations_of(pattern):
                if value < minimum:
                    raise ValueError(f"accelerations of {pattern} must be >= {minimum:g}, got {value:g}")
        if self.n_acs is not None and (isinstance(self.n_acs, bool) or not isinstance(self.n_acs, int)
                                       or self.n_acs < 0):
            raise ValueError(f"n_acs must be an integer >= 0 or None, got {self.n_acs!r}")

    def accelerations_of(self, pattern: str) -> tuple[float, ...]:
        """The accelerations drawn for ``pattern``."""
        return tuple(self.pattern_accelerations.get(pattern, self.accelerations))

    def probabilities(self) -> dict[tuple[str, float], float]:
        """Probability of every (pattern, acceleration) pair (they sum to 1)."""
        pattern_p = _weights("pattern_weights", self.pattern_weights, len(self.patterns))
        table: dict[tuple[str, float], float] = {}
        for pattern, p in zip(self.patterns, pattern_p):
            accelerations = self.accelerations_of(pattern)
            if pattern in self.pattern_accelerations:
                acc_p = np.full(len(accelerations), 1.0 / len(accelerations))
            else:
                acc_p = _weights("acceleration_weights", self.acceleration_weights, len(accelerations))
            for acceleration, q in zip(accelerations, acc_p):
                table[(pattern, acceleration)] = table.get((pattern, acceleration), 0.0) + float(p * q)
        return table

    def draw(self, rng: np.random.Generator) -> tuple[str, float]:
        """One (pattern, nominal acceleration) drawn from ``rng``."""
        pattern_p = _weights("pattern_weights", self.pattern_weights, len(self.patterns))
        pattern = self.patterns[int(rng.choice(len(self.patterns), p=pattern_p))]
        accelerations = self.accelerations_of(pattern)
        if pattern in self.pattern_accelerations:
            acc_p = np.full(len(accelerations), 1.0 / len(accelerations))
        else:
            acc_p = _weights("acceleration_weights", self.acceleration_weights, len(accelerations))
        return pattern, accelerations[int(rng.choice(len(accelerations), p=acc_p))]


def draw_sampling(spec: UndersamplingSpec, *, seed: int, epoch: int, index: int) -> tuple[str, float, int]:
    """``(pattern, nominal acceleration, mask seed)`` of item ``index`` in ``epoch``, run seed ``seed``.

    A pure function of its arguments (``numpy.random.SeedSequence([seed, epoch, index])``).
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))
    pattern, acceleration = spec.draw(rng)
    return pattern, acceleration, int(rng.integers(0, 2**31 - 1))


def draw_mask(spec: UndersamplingSpec, n_frames: int, n_ky: int, n_kx: int, *, seed: int, epoch: int,
              index: int) -> SamplingMask:
    """The mask of item ``index`` in ``epoch`` for a data set seeded with ``seed``.

    Deterministic in (seed, epoch, index) and the shape ``(n_frames, n_ky, n_kx)``
    (:func:`draw_sampling`, then ``make_mask``). Returns a SamplingMask (``mask (frames, ky, kx|1)``).
    Raises ValueError naming the draw when the pattern/acceleration cannot be realised on that grid.
    """
    pattern, acceleration, mask_seed = draw_sampling(spec, seed=seed, epoch=epoch, index=index)
    try:
        return make_mask(pattern, acceleration, n_frames, n_ky, n_kx, n_acs=spec.n_acs, seed=mask_seed,
                         convention=spec.convention)
    except ValueError as error:
        raise ValueError(f"cannot draw a {pattern} R={acceleration:g} mask for (frames, ky, kx) = "
                         f"({n_frames}, {n_ky}, {n_kx}) (item {index}, epoch {epoch}): {error}") from error


def undersample(sample: KspaceSample, mask: SamplingMask, convention: str = "project") -> TrainingExample:
    """Apply ``mask`` to a fully sampled sample -> TrainingExample.

    ``sample.kspace (C, T, ky, kx)``; ``mask.mask (T, ky, kx|1)``. The context gets the pattern and
    acceleration ``describe_sampling(mask, declared_acceleration=mask.acceleration, convention=)``
    gives (the nominal R when it fits the mask, as it does for the generators' own masks); the target
    is ``sample.scoring_target()`` (the sample's ``reference`` if it has one, else
    :func:`rss_target` of the full k-space).
    """
    if not isinstance(sample, KspaceSample):
        raise ValueError(f"sample must be a KspaceSample, got {type(sample).__name__}")
    if not isinstance(mask, SamplingMask):
        raise ValueError(f"mask must be a SamplingMask, got {type(mask).__name__}")
    _, n_frames, n_ky, n_kx = sample.kspace.shape
    if mask.mask.shape[:2] != (n_frames, n_ky) or mask.mask.shape[2] not in (1, n_kx):
        raise ValueError(f"mask shape {mask.mask.shape} does not fit kspace {tuple(sample.kspace.shape)}")
    core_mask = torch.from_numpy(np.array(mask.mask, dtype=np.float32, copy=True))[None]   # (1, T, ky, kx|1)
    masked = sample.kspace * core_mask.to(sample.kspace.dtype)
    acceleration, pattern = describe_sampling(mask.mask, declared_acceleration=mask.acceleration,
                                              convention=convention)
    context = sample.context.with_sampling(acceleration, pattern)
    return TrainingExample(masked, core_mask, sample.scoring_target(), context,
                           sample.identifier, int(mask.n_acs))


class UndersampledDataset(Dataset):
    """A data set of :class:`KspaceSample` -> :class:`TrainingExample` with masks drawn per item.

    ``base``: any Dataset of KspaceSample (CMRxReconDataset, SyntheticCardiacDataset,
    IsmrmrdRawDataset). ``spec``: what to draw. ``seed``: the run's seed. ``fixed``: the same
    mask for an item in every epoch (validation). See the module docstring for determinism.
    """

    def __init__(self, base: Dataset, spec: UndersamplingSpec | None = None, seed: int = 0, *,
                 fixed: bool = False) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.base = base
        self.spec = spec if spec is not None else UndersamplingSpec()
        if not isinstance(self.spec, UndersamplingSpec):
            raise ValueError(f"spec must be an UndersamplingSpec, got {type(self.spec).__name__}")
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the masks of ``epoch`` (ignored when ``fixed``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def mask_for(self, index: int, n_frames: int, n_ky: int, n_kx: int) -> SamplingMask:
        """The mask item ``index`` gets in the current epoch, for a k-space grid of that shape."""
        epoch = 0 if self.fixed else self.epoch
        return draw_mask(self.spec, n_frames, n_ky, n_kx, seed=self.seed, epoch=epoch, index=int(index))

    def __getitem__(self, index: int) -> TrainingExample:
        n_items = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n_items <= index < n_items:
            raise IndexError(f"index {index!r} out of range for {n_items} items")
        index = int(index) % n_items
        sample = self.base[index]
        if not isinstance(sample, KspaceSample):
            raise ValueError(f"base[{index}] must be a KspaceSample, got {type(sample).__name__}")
        _, n_frames, n_ky, n_kx = sample.kspace.shape
        return undersample(sample, self.mask_for(index, n_frames, n_ky, n_kx), self.spec.convention)

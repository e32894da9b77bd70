"""What the model is told: one owner for the sentences, the sampling description and the input.

A checkpoint records, in the ``"prompt"`` section of its JSON sidecar, how its model was spoken
to in training (:class:`PromptSpec`)::

    "prompt": {"style": "project", "mask_convention": "project", "acceleration": "nominal"}

* ``style``: how a :class:`~cardiomm_core.context.ScanContext` becomes the two sentences:
  ``"project"`` (this project's wording, what the packaged model was trained with) or
  ``"official"`` (the wording of the authors' CardioMM code, e.g.
  ``'Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, short-axis.'``
  and ``'Undersampling: 16x random.'``).
* ``mask_convention``: which mask generator the model was trained with (``cardiomm_core.masks``):
  ``"project"`` (acceleration steered to the nominal R outside the calibration region, 24/16 ACS
  lines) or ``"official"`` (the authors' fixed line/spoke counts, 20 ACS lines for every family).
* ``acceleration``: which number the undersampling sentence carries. ``"nominal"``: the mask
  generator's nominal R (what both the project's trainer and the official code write), never a
  rate measured from the mask.

A sidecar without the section (every checkpoint written before it existed) means the project's
defaults, ``PromptSpec()``.

**The sampling description** (:func:`describe_sampling`): the trainer, ``cardiomm-eval``, the
gadgets and the tests all turn a mask into (nominal acceleration, pattern family) with this one
function, so a model reads inline exactly the sentence it read in training. The acceleration is
the *nominal* R of the mask's generator, recovered from the mask itself:

* lattice families (Uniform, ktUniform): the lattice spacing outside the calibration region;
* ktGaussian and ktRadial: the integer R whose generator (of the ``convention`` the model was
  trained with) samples as many locations outside the calibration region as the mask does (the
  nearest count, within half a spoke for the project's ktRadial and three standard deviations
  for the official ktGaussian, whose counts are not exact); when several R fit, a value the
  project or the authors train with (``TRAINED_ACCELERATIONS``) is preferred, then the one
  closest to the measured rate. The official ktRadial's R is found from its spoke count
  (floor(180 / (0.6 R)), so R = 19 and 20 give the same mask: a trained R, else the smallest).

A *declared* acceleration (the trainer's nominal R, or an ISMRMRD header's
``encoding.parallelImaging.accelerationFactor``) is used when it is consistent with the mask:
for a lattice it must equal the spacing (within 5 %); for the random and radial families the
``convention``'s generator at the declared R must sample as many locations outside the
calibration region as the mask, within ``DECLARED_TOLERANCE`` (10 %) plus one (the official
ktGaussian, whose count is random: three standard deviations if that is more; a rate compared
with R itself would not do: the official ktRadial's rate is about half its R on a 246 x 128
grid). An inconsistent declaration is logged (a warning naming the evidence) and the mask wins.

**The model input** (:func:`prepare_model_input`) and **the forward pass**
(:func:`model_forward`) are shared by ``InferenceEngine``, the trainer and the evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checks import dataclass_fields_from
from .context import SENTENCE_STYLES, ScanContext
from .masks import (
    MASK_CONVENTIONS,
    default_n_acs,
    make_mask,
    official_radial_mask,
    official_radial_spokes,
    round_half_up,
)

logger = logging.getLogger(__name__)

#: Sentence styles a checkpoint can ask for.
PROMPT_STYLES: tuple[str, ...] = SENTENCE_STYLES
#: How the acceleration in the undersampling sentence is chosen.
ACCELERATION_MODES: tuple[str, ...] = ("nominal",)


@dataclass(frozen=True)
class PromptSpec:
    """How a model is spoken to: sentence style, mask convention, acceleration mode (see module doc)."""

    style: str = "project"
    mask_convention: str = "project"
    acceleration: str = "nominal"

    def __post_init__(self) -> None:
        for name, allowed in (("style", PROMPT_STYLES), ("mask_convention", MASK_CONVENTIONS),
                              ("acceleration", ACCELERATION_MODES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"prompt {name} must be one of {list(allowed)}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: PromptSpec | Mapping[str, Any] | None) -> PromptSpec:
        """Build from a checkpoint's ``"prompt"`` section; None or {} give the project defaults.

        Raises ValueError for a value that is not a mapping, an unknown key or an unknown value.
        """
        if values is None:
            return cls()
        if isinstance(values, PromptSpec):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"prompt must be a JSON object, got {type(values).__name__}")
        return cls(**dataclass_fields_from(cls, values, "prompt", may_be_missing=None))


# --------------------------------------------------------------------------- the sampling description

#: Accelerations the models are trained with, preferred when a mask fits several (project first:
#: CMRxRecon's 4..24 in steps of 4 and Uniform's 10; official: 4, 8, 16, 24).
TRAINED_ACCELERATIONS: dict[str, tuple[int, ...]] = {
    "project": (4, 8, 10, 12, 16, 20, 24),
    "official": (4, 8, 16, 24),
}
#: A declared acceleration fits a random or radial mask when the generator at that R samples within
#: this fraction (plus one location) of the mask's count outside the calibration region.
DECLARED_TOLERANCE = 0.1
#: Largest nominal acceleration searched for.
MAX_ACCELERATION = 64


def _as_bool_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """``mask (..., frames, ky, kx|1)`` -> bool numpy ``(B, frames, ky, kx|1)``."""
    if isinstance(mask, torch.Tensor):
        if mask.is_complex():
            raise ValueError(f"mask must be real or bool, got dtype {mask.dtype}")
        array = (mask.detach() != 0).cpu().numpy()
    elif isinstance(mask, np.ndarray):
        if np.iscomplexobj(mask):
            raise ValueError(f"mask must be real or bool, got dtype {mask.dtype}")
        array = np.asarray(mask) != 0
    else:
        raise ValueError(f"mask must be a numpy array or torch.Tensor, got {type(mask).__name__}")
    if array.ndim < 3:
        raise ValueError(f"mask must have at least 3 dimensions (..., frames, ky, kx|1), got shape {array.shape}")
    if min(array.shape) < 1:
        raise ValueError(f"mask has an empty axis: shape {array.shape}")
    return array.reshape((-1,) + array.shape[-3:])


def _segments(rows: np.ndarray, acs: slice | None) -> list[np.ndarray]:
    if acs is None:
        return [rows]
    return [rows[rows < acs.start], rows[rows >= acs.stop]]


def _line_family(lines: np.ndarray, acs: slice | None) -> str:
    """Family of one batch entry's ``lines (frames, ky)`` bool.

    A lattice (Uniform, ktUniform) has one step between consecutive sampled lines outside the
    calibration region, in every frame (steps differing by at most 1: a non-integer R), with at
    least as many steps as frames as evidence; a mask too sparse for that is "Uniform" when every
    frame samples the same lines, else "ktGaussian".
    """
    outside = lines.copy()
    if acs is not None:
        outside[:, acs] = False
    same = bool((outside == outside[:1]).all())
    steps = [np.diff(segment) for frame in outside for segment in _segments(np.flatnonzero(frame), acs)
             if segment.size > 1]
    joined = np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)
    if joined.size >= outside.shape[0] and int(joined.max()) - int(joined.min()) <= 1:
        return "Uniform" if same else "ktUniform"
    return "Uniform" if same and joined.size == 0 else "ktGaussian"


def _lattice_spacing(lines: np.ndarray, acs: slice | None) -> tuple[float | None, int]:
    """(mean step between consecutive sampled lines outside ``acs`` over ``lines (B, T, ky)``, the
    number of steps per batch entry)."""
    span = steps = 0
    for entry in lines:
        for frame in entry:
            for segment in _segments(np.flatnonzero(frame), acs):
                if segment.size > 1:
                    span += int(segment[-1] - segment[0])
                    steps += segment.size - 1
    return (span / steps if steps else None), steps // max(lines.shape[0], 1)


@dataclass(frozen=True)
class _Measured:
    pattern: str
    realised: float          # non-ACS locations / sampled non-ACS locations (>= 1)
    n_frames: int
    n_ky: int
    n_kx: int                # 1 for line masks
    region: tuple[int, int, int, int]  # detected calibration block (ky start, ky stop, kx start, kx stop)
    n_sampled: float         # sampled locations outside the block, per batch entry
    spacing: float | None    # lattice families: the lattice step
    n_steps: int             # lattice families: steps the spacing was measured on, per batch entry
    generator_acs: int | None = None  # the ACS a generator is run with (None: _generation_acs decides)


def _measure(sampled: np.ndarray) -> _Measured:
    """Family, calibration block and counts of a bool mask ``(B, T, ky, kx|1)`` that is not fully sampled."""
    from .coils import find_acs

    n_b, n_t, n_ky, n_kx_mask = sampled.shape
    line_mask = n_kx_mask == 1 or bool((sampled == sampled[..., :1]).all())
    if line_mask:
        lines = sampled[..., 0]
        try:
            ky_acs, _ = find_acs(lines[..., None], min_size=2)
        except ValueError:
            ky_acs = None
        outside = np.ones(n_ky, dtype=bool)
        if ky_acs is not None:
            outside[ky_acs] = False
        n_outside = int(outside.sum()) * n_b * n_t
        n_sampled = int(lines[..., outside].sum())
        families = {name: 0 for name in ("Uniform", "ktUniform", "ktGaussian")}
        for entry in lines:
            families[_line_family(entry, ky_acs)] += 1
        order = ("Uniform", "ktUniform", "ktGaussian")
        pattern = max(order, key=lambda name: (families[name], -order.index(name)))
        spacing, n_steps = _lattice_spacing(lines, ky_acs) if pattern != "ktGaussian" else (None, 0)
        region = (0, 0, 0, 1) if ky_acs is None else (ky_acs.start, ky_acs.stop, 0, 1)
        n_kx = 1
    else:
        try:
            ky_acs, kx_acs = find_acs(sampled, min_size=2)
        except ValueError:
            ky_acs, kx_acs = None, None
        outside2d = np.ones((n_ky, n_kx_mask), dtype=bool)
        if ky_acs is not None:
            outside2d[ky_acs, kx_acs] = False
        n_outside = int(outside2d.sum()) * n_b * n_t
        n_sampled = int(sampled[..., outside2d].sum())
        pattern, spacing, n_steps, n_kx = "ktRadial", None, 0, n_kx_mask
        region = (0, 0, 0, 0) if ky_acs is None or kx_acs is None else (ky_acs.start, ky_acs.stop, kx_acs.start,
                                                                           kx_acs.stop)
    realised = max(1.0, n_outside / max(n_sampled, 1)) if n_outside else 1.0
    return _Measured(pattern, float(realised), n_t, n_ky, n_kx, region, n_sampled / n_b, spacing, n_steps)


@functools.lru_cache(maxsize=256)
def _generated(pattern: str, acceleration: float, n_frames: int, n_ky: int, n_kx: int, n_acs: int,
               convention: str) -> np.ndarray | None:
    """The ``convention``'s mask (seed 0) as bool ``(T, ky, kx|1)``, or None when it cannot be made."""
    try:
        mask = make_mask(pattern, float(acceleration), n_frames, n_ky, n_kx, n_acs=n_acs, seed=0,
                         convention=convention)
    except ValueError:
        return None
    return mask.mask > 0


@functools.lru_cache(maxsize=32)
def _official_radial(n_spokes: int, n_frames: int, n_ky: int, n_kx: int, n_acs: int) -> np.ndarray:
    return official_radial_mask(n_spokes, n_frames, n_ky, n_kx, n_acs)


def _detected_acs(measured: _Measured) -> int:
    k0, k1, x0, x1 = measured.region
    return k1 - k0 if measured.pattern != "ktRadial" else min(k1 - k0, x1 - x0)


def _generation_acs(measured: _Measured, convention: str) -> int:
    if measured.generator_acs is not None:
        return measured.generator_acs
    detected = _detected_acs(measured)
    default = default_n_acs(measured.pattern, convention)
    # a block a few lines wider than the generator's own: sampled lines next to it in every frame
    return default if default <= detected <= default + 4 else detected


def _readings(measured: _Measured, convention: str) -> list[_Measured]:
    """The mask with the generator's default ACS (when the detected block may be it plus sampled
    neighbours) and with the detected block as the ACS."""
    readings = [measured]
    if _generation_acs(measured, convention) != _detected_acs(measured):
        readings.append(dataclasses.replace(measured, generator_acs=_detected_acs(measured)))
    return readings


def _fits(measured: _Measured, acceleration: float, convention: str) -> bool:
    """Whether the ``convention``'s generator at ``acceleration`` samples as many locations as the
    mask (within DECLARED_TOLERANCE, or the recipe's own slack), under any ACS reading."""
    for reading in _readings(measured, convention):
        count = _generated_count(reading, acceleration, convention)
        observed = _observed_count(reading, convention)
        slack = max(DECLARED_TOLERANCE * observed + 1.0, _count_slack(reading, acceleration, convention))
        if count is not None and abs(count - observed) <= slack:
            return True
    return False


def _outside_count(mask: np.ndarray, region: tuple[int, int, int, int]) -> float:
    k0, k1, x0, x1 = region
    return float(mask.sum() - mask[:, k0:k1, x0:x1].sum())


def _official_radial_count(measured: _Measured, n_spokes: int) -> float:
    mask = _official_radial(n_spokes, measured.n_frames, measured.n_ky, measured.n_kx,
                            _generation_acs(measured, "official"))
    return _outside_count(mask, measured.region)


def _official_radial_nominal(measured: _Measured) -> int | None:
    """Nominal R of an official ktRadial mask: the spoke count whose mask samples the nearest
    number of locations (bisection; the count grows with the spokes), then a trained R with that
    many spokes, else the R closest to it."""
    low, high = 1, official_radial_spokes(2)
    while low < high:
        middle = (low + high) // 2
        if _official_radial_count(measured, middle) >= measured.n_sampled:
            high = middle
        else:
            low = middle + 1
    spokes = min({max(low - 1, 1), low},
                 key=lambda n: (abs(_official_radial_count(measured, n) - measured.n_sampled), n))
    candidates = [r for r in range(2, MAX_ACCELERATION + 1) if official_radial_spokes(r) == spokes]
    if not candidates:
        return min(range(2, MAX_ACCELERATION + 1), key=lambda r: (abs(official_radial_spokes(r) - spokes), r))
    trained = TRAINED_ACCELERATIONS["official"]
    return min(candidates, key=lambda r: (r not in trained, r))


def _generated_count(measured: _Measured, acceleration: float, convention: str) -> float | None:
    """Sampled locations outside the mask's calibration block that the ``convention``'s generator
    gives at ``acceleration`` (None: impossible on this grid).

    The project's ktGaussian and the official ktRadial are generated (their counts do not depend on
    the seed); the project's ktRadial steers its count to (non-ACS locations) x frames / R, which is
    used as it is; the official ktGaussian's count depends on how many draws land in the block, so
    its expectation is used (lines drawn per frame times the density's mass outside the block).
    """
    k0, k1, x0, x1 = measured.region
    n_acs = _generation_acs(measured, convention)
    if measured.pattern == "ktRadial" and convention == "official":
        n_spokes = official_radial_spokes(acceleration)
        return None if n_spokes < 1 else _official_radial_count(measured, n_spokes)
    if measured.pattern == "ktRadial" and convention == "project":
        # the project's ktRadial steers its spoke counts (error diffusion over the frames) to this
        return measured.n_frames * (measured.n_ky * measured.n_kx - n_acs * n_acs) / acceleration
    # line masks: counted outside the generator's own ACS (the observed count is brought there
    # by _observed_count), so a sampled line next to the ACS does not shift the comparison
    start = measured.n_ky // 2 - n_acs // 2
    if measured.pattern == "ktGaussian" and convention == "official":
        per_frame = int(round_half_up(measured.n_ky / acceleration))
        offsets = np.arange(measured.n_ky, dtype=np.float64) - measured.n_ky // 2
        density = 0.1 + 0.25 * np.exp(-(offsets ** 2) / (measured.n_ky / 5) ** 2)
        return measured.n_frames * per_frame * (1.0 - density[start:start + n_acs].sum() / density.sum())
    mask = _generated(measured.pattern, float(acceleration), measured.n_frames, measured.n_ky, measured.n_kx, n_acs,
                      convention)
    if mask is None:
        return None
    return _outside_count(mask, (start, start + n_acs, 0, 1))


def _observed_count(measured: _Measured, convention: str) -> float:
    """The mask's sampled locations outside the calibration region, counted as
    :func:`_generated_count` counts them (line masks: outside the generator's ACS, i.e. plus the
    lines of a detected block wider than that ACS, which are sampled in every frame)."""
    if measured.pattern == "ktRadial":
        return measured.n_sampled
    k0, k1, _, _ = measured.region
    extra = max(0, (k1 - k0) - _generation_acs(measured, convention))
    return measured.n_sampled + extra * measured.n_frames


def _count_slack(measured: _Measured, acceleration: float, convention: str) -> float:
    """How far a generator's count may miss the mask's and still fit: none for exact recipes; half
    a spoke for the project's ktRadial (its error diffusion leaves at most that over the frames);
    three standard deviations of the draws landing in the block for the official ktGaussian."""
    if measured.pattern == "ktRadial" and convention == "project":
        return max(measured.n_ky, measured.n_kx) / 2.0
    if measured.pattern == "ktGaussian" and convention == "official":
        k0, k1, _, _ = measured.region
        per_frame = int(round_half_up(measured.n_ky / acceleration))
        offsets = np.arange(measured.n_ky, dtype=np.float64) - measured.n_ky // 2
        density = 0.1 + 0.25 * np.exp(-(offsets ** 2) / (measured.n_ky / 5) ** 2)
        inside = density[k0:k1].sum() / density.sum()
        return 3.0 * math.sqrt(measured.n_frames * per_frame * inside * (1.0 - inside)) + 1.0
    return 1e-9


def _nominal_from_counts(measured: _Measured, convention: str) -> int | None:
    """The integer R whose generator samples as many locations outside the calibration block as the
    mask does (the nearest count over the ACS readings; ties within the recipe's slack: a trained
    R, then the one closest to the measured rate)."""
    if measured.pattern == "ktRadial" and convention == "official":
        return _official_radial_nominal(measured)
    low = max(2 if measured.pattern == "ktRadial" else 1, int(math.floor(measured.realised / 1.6)))
    high = min(MAX_ACCELERATION, int(math.ceil(measured.realised * 1.6)) + 1)
    best: tuple[float, list[int]] | None = None
    for reading in _readings(measured, convention):
        observed = _observed_count(reading, convention)
        scored: list[tuple[float, int]] = []
        for candidate in range(low, high + 1):
            count = _generated_count(reading, candidate, convention)
            if count is not None:
                scored.append((abs(count - observed), candidate))
        if not scored:
            continue
        error = min(e for e, _ in scored)
        fitting = [c for e, c in scored if e <= error + _count_slack(reading, c, convention)]
        if best is None or error < best[0]:
            best = (error, fitting)
    if best is None:
        return None
    trained = TRAINED_ACCELERATIONS[convention]
    return min(best[1], key=lambda c: (c not in trained, abs(c - measured.realised), c))


def _snap(value: float) -> float:
    """An acceleration as the sentence writes it: an integer when within 0.05 of one, else 0.1 steps."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < 0.05 else round(value, 1)


def describe_sampling(
    mask: np.ndarray | torch.Tensor,
    *,
    declared_acceleration: float | None = None,
    convention: str = "project",
) -> tuple[float, str]:
    """(nominal acceleration, pattern family) of a sampling ``mask (..., frames, ky, kx|1)``.

    What the model is told about the sampling, for the trainer, the evaluation and the gadgets
    alike (see the module docstring for how R is recovered and when ``declared_acceleration`` is
    used). ``convention``: the mask convention the model was trained with ("project" or
    "official"; its generators are the ones matched). The family is ``"full"`` (acceleration 1)
    when every location is sampled; else for line masks (kx = 1, or the same in every column)
    outside the calibration region: ``"Uniform"`` when every frame samples the same equispaced
    lines, ``"ktUniform"`` when each frame's lines are equispaced but the frames differ,
    ``"ktGaussian"`` otherwise; masks that vary along kx are ``"ktRadial"``. The calibration
    region is the largest block around the k-space centre sampled in every frame and batch entry
    (``cardiomm_core.coils.find_acs``, at least 2 lines).

    Raises ValueError for a mask that is not real/bool with >= 3 non-empty axes, an unknown
    convention, or a declared acceleration that is not a finite number >= 1.
    """
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    if declared_acceleration is not None:
        if isinstance(declared_acceleration, bool) or not isinstance(declared_acceleration, (int, float, np.number)) \
                or not math.isfinite(float(declared_acceleration)) or float(declared_acceleration) < 1:
            raise ValueError(f"declared_acceleration must be a finite number >= 1 or None, got {declared_acceleration!r}")
        declared_acceleration = float(declared_acceleration)
    sampled = _as_bool_mask(mask)
    if bool(sampled.all()):
        return 1.0, "full"
    measured = _measure(sampled)

    def from_mask() -> float:
        if measured.spacing is not None:
            return max(1.0, _snap(measured.spacing))
        from_counts = _nominal_from_counts(measured, convention)
        return float(from_counts) if from_counts is not None else max(1.0, _snap(measured.realised))

    if declared_acceleration is None:
        return from_mask(), measured.pattern
    if measured.spacing is not None:
        consistent = abs(declared_acceleration - measured.spacing) < 0.05 * declared_acceleration
        evidence = f"lattice spacing {measured.spacing:.2f}"
    else:
        consistent = _fits(measured, declared_acceleration, convention)
        evidence = (f"{measured.n_sampled:.0f} locations sampled outside the calibration region, "
                    f"realised rate {measured.realised:.2f}")
    if not consistent and measured.pattern in ("Uniform", "ktUniform") and measured.n_steps <= 2:
        # a sparse random mask can look like a lattice (a few lines, one frame, at most two steps):
        # if it fits the declared R as a random mask, it is one
        as_random = dataclasses.replace(measured, pattern="ktGaussian", spacing=None)
        if _fits(as_random, declared_acceleration, convention):
            return _snap(declared_acceleration), "ktGaussian"
    if consistent:
        return _snap(declared_acceleration), measured.pattern
    told = from_mask()
    logger.warning(
        "declared acceleration %g does not fit the %s mask (%s, %s convention); the model is told the mask's R = %g",
        declared_acceleration, measured.pattern, evidence, convention, told,
    )
    return told, measured.pattern


def sampling_context(context: ScanContext, mask: np.ndarray | torch.Tensor, *,
                     declared_acceleration: float | None = None, convention: str = "project") -> ScanContext:
    """``context`` with the acceleration and pattern :func:`describe_sampling` gives for ``mask``."""
    acceleration, pattern = describe_sampling(mask, declared_acceleration=declared_acceleration,
                                              convention=convention)
    return context.with_sampling(acceleration, pattern)


# --------------------------------------------------------------------------- the model input


def context_sentences(context: ScanContext, style: str = "project") -> tuple[str, str]:
    """(metadata, undersampling) sentences of ``context`` in ``style``: the text the encoder embeds."""
    if not isinstance(context, ScanContext):
        raise ValueError(f"context must be a ScanContext, got {type(context).__name__}")
    return context.sentences(style)


def encode_sentences(encoder: Any, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed (metadata, undersampling) sentences in one call -> two ``(dim,)`` float32 CPU tensors."""
    emb = encoder.encode(list(sentences))
    if tuple(emb.shape) != (2, encoder.dim):
        raise ValueError(f"encoder {encoder.name!r} returned shape {tuple(emb.shape)}, expected (2, {encoder.dim})")
    return emb[0], emb[1]


@dataclass
class ModelInput:
    """What the network is given: scaled ``kspace (B, C, T, ky, kx)`` complex64, ``mask (B, 1, T,
    ky, kx|1)`` float32, the calibration region ``acs (B, 1, 1, ky, kx|1)``, the per-slice
    intensity ``scale (B,)`` the k-space was multiplied by, and the frozen text embeddings of the
    metadata and undersampling sentences ``metadata_emb`` / ``sampling_emb (B, D)``."""

    kspace: torch.Tensor
    mask: torch.Tensor
    acs: torch.Tensor
    scale: torch.Tensor
    metadata_emb: torch.Tensor
    sampling_emb: torch.Tensor


def prepare_model_input(kspace: torch.Tensor, mask: torch.Tensor, metadata_emb: torch.Tensor,
                        sampling_emb: torch.Tensor, normalisation: Mapping[str, Any] | None) -> ModelInput:
    """Calibration region, intensity scale and embeddings for one network call.

    ``kspace (B, C, T, ky, kx)`` complex, ``mask (B, 1, T, ky, kx|1)``, on the device the network
    runs on; ``metadata_emb`` / ``sampling_emb`` ``(1|B, D)`` embeddings (expanded to B). The k-space is multiplied by
    ``cardiomm_core.engine.normalisation_scale`` (``normalisation``: a checkpoint's section).
    """
    from .coils import acs_region_mask
    from .engine import normalisation_scale

    acs = acs_region_mask(mask)
    scale = normalisation_scale(kspace, mask, normalisation, acs=acs)
    n_b = kspace.shape[0]
    return ModelInput(kspace * scale.view(-1, 1, 1, 1, 1), mask, acs, scale,
                      metadata_emb.expand(n_b, -1), sampling_emb.expand(n_b, -1))


def model_forward(model: torch.nn.Module, inputs: ModelInput, *, amp: bool) -> torch.Tensor:
    """The network on prepared inputs -> images ``(B, T, y, x)`` in the *scaled* intensity (bf16
    autocast when ``amp``); divide by ``inputs.scale`` for the input's own intensity."""
    device_type = inputs.kspace.device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bool(amp)):
        return model(inputs.kspace, inputs.mask, inputs.metadata_emb, inputs.sampling_emb, inputs.acs)


__all__ = [
    "ACCELERATION_MODES",
    "DECLARED_TOLERANCE",
    "MASK_CONVENTIONS",
    "PROMPT_STYLES",
    "TRAINED_ACCELERATIONS",
    "ModelInput",
    "PromptSpec",
    "context_sentences",
    "describe_sampling",
    "encode_sentences",
    "model_forward",
    "prepare_model_input",
    "sampling_context",
]

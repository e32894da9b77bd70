"""Evaluate a checkpoint against references: CardioMM, CG-SENSE and zero-filling, per modality,
sampling pattern and acceleration, scored as the CMRxRecon challenges score.

For every fully sampled slice of a data set and every (pattern, acceleration) asked for, a
CMRxRecon mask is drawn (``cardiomm_core.masks.make_mask``, a fixed seed per slice and setting, so
all methods see the same mask and reruns the same numbers; ``masks="official"`` draws the official
CardioMM recipes with 20 calibration lines, the paper's protocol being Uniform / ktGaussian /
ktRadial at R 8, 16, 24), applied, and reconstructed by

- ``cardiomm``: ``cardiomm_core.engine.InferenceEngine`` with the checkpoint (its normalisation,
  its text encoder, its sentence style, and the ScanContext with the pattern and acceleration
  ``cardiomm_core.prompting.describe_sampling`` gives the mask with its nominal R declared, in the
  checkpoint's mask convention: what the gadgets tell the model inline);
- ``cg_sense`` and ``zero_filled``: ``cardiomm_core.conventional.conventional_recon`` (its defaults).

The reference is what the trainer learns from the same sample
(``KspaceSample.scoring_target``): the root-sum-of-squares of the fully sampled coil images on
the recon field of view (``train.data.sample.rss_target``, what the challenges score against), or
the sample's noise-free reference when its source provides one (synthetic sources with
``target=noise_free``). Scores: ``cardiomm_core.metrics.evaluate`` (magnitude, the challenges' central crop
unless ``crop=False``, per-image normalisation of the chosen ``convention`` "2023"/"2024"/"2025",
PSNR / SSIM / NMSE per 2D image, averaged per slice and then over slices).

Outputs in ``out_dir``: ``per_slice.csv`` (every slice, method, setting), ``metrics.csv`` (means
per method, modality, pattern, acceleration; modality "all" pools the modalities),
``metrics.md`` (a markdown table per modality) and ``metrics.png`` (PSNR and SSIM against the
acceleration, one line per method, pooled over modalities and patterns; drawn with pillow).

Data (``load_eval_data``): a training YAML config (its ``data.val`` sources, else ``data.train``),
a YAML file with a ``sources:`` list, or a one-line spec: ``synthetic:n_subjects=4,seed=1000,
matrix=128x112,n_frames=12,n_coils=8``, ``cmrxrecon:ROOT[,year=2024,split=val]``,
``ismrmrd:FILE[,FILE...]``.

ISMRMRD files written by ``cardiomm-simulate`` carry their ground truth (``/cardiomm_truth``):
slices are scored against its noise-free RSS (``train.data.ismrmrd_raw.truth_reference``). A
prospectively undersampled file (header ``accelerationFactor`` > 1, or lines missing) is
reconstructed from the lines it has, once per slice, at its own pattern and acceleration (as the
inline gadget derives them from the lines), and scored against that truth; one without a ground
truth is refused before any work (``check_raw_sources``).

The CLI (``train.cli.eval_main``) checks the output folder and the data before any work, writes
``per_slice.csv`` row by row as the slices are scored (``RowWriter``; a stopped run leaves its
rows and a partial report) and a progress line per slice with the time left (ETA) to stderr.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from cardiomm_core.conventional import conventional_recon
from cardiomm_core.engine import InferenceEngine
from cardiomm_core.masks import MASK_CONVENTIONS, MASK_PATTERNS, make_mask
from cardiomm_core.metrics import CONVENTIONS, evaluate
from cardiomm_core.prompting import describe_sampling

from .config import SOURCE_KINDS
from .config_io import config_from_dict, source_from_dict
from .data.sample import KspaceSample, crop_to_recon_fov

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ACCELERATIONS",
    "DEFAULT_PATTERNS",
    "METHODS",
    "DEFAULT_METHODS",
    "EvalRow",
    "aggregate",
    "evaluate_checkpoint",
    "load_eval_data",
    "write_figure",
    "write_markdown",
]

#: The accelerations of the packaged model's table.
DEFAULT_ACCELERATIONS = (8.0, 12.0, 16.0, 24.0)
#: Default sampling patterns.
DEFAULT_PATTERNS = ("ktGaussian", "ktUniform", "Uniform")
#: Methods, in table order.
METHODS = ("cardiomm", "cg_sense", "cg_sense_plain", "zero_filled")
#: Methods scored unless asked otherwise (``cg_sense_plain`` is the textbook baseline, on request).
DEFAULT_METHODS = ("cardiomm", "cg_sense", "zero_filled")
METHOD_LABELS = {"cardiomm": "CardioMM", "cg_sense": "CG-SENSE", "cg_sense_plain": "Plain CG-SENSE",
                 "zero_filled": "Zero-filled"}
METRICS = ("psnr", "ssim", "nmse")
#: Seconds after which a progress line also reports the settings done within a slice.
SETTING_PROGRESS_S = 30.0
#: What the columns are (first lines of metrics.md).
METHODS_NOTE = (
    "CG-SENSE: `cardiomm_core.conventional.conventional_recon` with its defaults, the gadgets' conventional "
    "fallback (CG-SENSE regularised towards the time-averaged image for kt patterns, towards the "
    "low-resolution calibration image for Uniform). Plain CG-SENSE: the textbook per-frame CG-SENSE "
    "(Tikhonov 1e-3, same maps, no temporal or prior regularisation). Zero-filled: SENSE combination "
    "of the zero-filled k-space. Reference: root-sum-of-squares of the fully sampled coil images "
    "(of the noise-free coil images when the title says noise-free target)."
)


@dataclass
class EvalRow:
    """Scores of one slice, method, pattern and acceleration."""

    method: str
    modality: str
    pattern: str
    acceleration: float
    identifier: str
    psnr: float
    ssim: float
    nmse: float


# --------------------------------------------------------------------------- data


def _spec_value(text: str) -> Any:
    if "x" in text and all(part.isdigit() for part in text.split("x")):
        return [int(part) for part in text.split("x")]
    value = yaml.safe_load(text)
    return value


def _parse_spec(spec: str) -> list[dict[str, Any]]:
    kind, _, rest = spec.partition(":")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"data spec {spec!r}: start with one of {sorted(SOURCE_KINDS)} followed by ':'")
    values: dict[str, Any] = {"kind": kind}
    positional: list[str] = []
    for part in [p for p in rest.split(",") if p.strip()]:
        if "=" in part:
            key, raw = part.split("=", 1)
            value = _spec_value(raw.strip())
            if key.strip() == "modalities" and isinstance(value, str):
                value = value.split("+")
            values[key.strip()] = value
        else:
            positional.append(part.strip())
    if kind == "cmrxrecon" and positional:
        values.setdefault("root", positional[0])
    if kind == "ismrmrd" and positional:
        values.setdefault("paths", positional)
    if kind == "synthetic" and positional:
        raise ValueError(f"data spec {spec!r}: synthetic takes key=value settings only, got {positional}")
    return [values]


def load_eval_data(spec: str | os.PathLike[str]) -> tuple[Dataset, str]:
    """(data set of KspaceSample, description) for ``spec`` (see the module docstring)."""
    from .data.sources import concat_sources, describe_sources

    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a YAML mapping")
        if "sources" in values:
            unknown = sorted(set(values) - {"sources"})
            if unknown:
                raise ValueError(f"{path}: unknown key(s) {unknown} beside 'sources'")
            sources = [source_from_dict(s, f"sources[{i}]") for i, s in enumerate(values["sources"] or [])]
        else:
            cfg = config_from_dict(values)
            sources = list(cfg.data.val) or list(cfg.data.train)
    else:
        sources = [source_from_dict(s, f"data spec {text!r}") for s in _parse_spec(text)]
    if not sources:
        raise ValueError(f"{text}: no data sources")
    check_raw_sources(sources)
    dataset = concat_sources(sources)
    for part in getattr(dataset, "datasets", [dataset]):
        if hasattr(part, "ground_truth"):  # IsmrmrdRawDataset: score against the stored ground truth
            part.ground_truth = True
    if len(dataset) == 0:  # type: ignore[arg-type]
        skipped = [f"{path}: {why}" for part in getattr(dataset, "datasets", [dataset])
                   for path, why in getattr(part, "skipped", [])]
        raise ValueError(f"{text}: no slices to evaluate" + (f" (skipped {'; '.join(skipped)})" if skipped else ""))
    description = describe_sources(sources)
    if any(hasattr(part, "ground_truth") for part in getattr(dataset, "datasets", [dataset])):
        description += " (noise-free target: the ground truth stored beside the raw data, where present)"
    return dataset, description


def check_raw_sources(sources: Sequence[Any]) -> None:
    """Before any work, for ISMRMRD sources: every file exists and is ISMRMRD raw data, and a
    prospectively undersampled file (header ``accelerationFactor`` > 1) has the ground truth that
    ``gadgets.io.simulated_scan`` stores beside the raw data (ValueError with one line otherwise)."""
    from gadgets.header_context import declared_acceleration
    from gadgets.io.ismrmrd_io import read_header

    from .config import IsmrmrdSource
    from .data.ismrmrd_raw import has_ground_truth

    for source in sources:
        if not isinstance(source, IsmrmrdSource):
            continue
        if not source.paths:
            raise ValueError("ismrmrd data: no files given (ismrmrd:FILE[,FILE...])")
        for name in source.paths:
            path = Path(name)
            if not path.is_file():
                raise ValueError(f"ISMRMRD file {name!r} does not exist" if not path.exists()
                                 else f"ISMRMRD file {name!r} is not a file")
            try:
                header, _ = read_header(path, source.group)
            except (OSError, ValueError, KeyError) as exc:
                raise ValueError(f"{name!r} is not readable ISMRMRD raw data: {exc}") from None
            factor = declared_acceleration(header) or 1.0
            if factor > 1 and not has_ground_truth(path):
                raise ValueError(f"{name!r} is undersampled (accelerationFactor {factor:g}) and holds no ground "
                                 "truth beside the raw data (cardiomm-simulate's /cardiomm_truth); cardiomm-eval "
                                 "needs fully sampled data or such a ground truth")


# --------------------------------------------------------------------------- evaluation


def mask_seed(seed: int, index: int, pattern: str, acceleration: float) -> int:
    ss = np.random.SeedSequence([int(seed), int(index), MASK_PATTERNS.index(pattern), int(round(acceleration * 100))])
    return int(ss.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1))


def _magnitude(images: Any, recon_nx: int | None) -> np.ndarray:
    tensor = torch.as_tensor(images)
    return crop_to_recon_fov(tensor.abs().float(), recon_nx).numpy()


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    dataset: Dataset,
    *,
    accelerations: Sequence[float] = DEFAULT_ACCELERATIONS,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    methods: Sequence[str] = DEFAULT_METHODS,
    convention: str = "2024",
    crop: bool = True,
    n_acs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    max_items: int | None = None,
    progress: bool = False,
    masks: str | None = None,
    on_row: Callable[[EvalRow], None] | None = None,
) -> list[EvalRow]:
    """Score ``methods`` on every slice of ``dataset`` at every pattern x acceleration (see the
    module docstring). ``checkpoint`` may be None when "cardiomm" is not among ``methods``.
    ``masks``: the mask convention drawn ("project" or "official"; None: the checkpoint's
    ``prompt.mask_convention``, "project" without a checkpoint).

    A slice whose k-space is already undersampled (prospectively, lines missing: an undersampled
    ISMRMRD file) is reconstructed from the lines it has, told the sampling the inline gadget
    derives from them (``gadgets.header_context.sampling_from_mask``), and scored against its stored
    reference (``KspaceSample.reference``, the ground truth beside the raw data), once, under that
    pattern and acceleration; without a reference it is refused (ValueError). ``on_row`` is called
    with each row as soon as it is scored (e.g. to append it to a CSV file); ``progress`` writes a
    line per slice with the time per slice and the estimated time left to stderr.
    """
    if masks is not None and masks not in MASK_CONVENTIONS:
        raise ValueError(f"masks must be one of {MASK_CONVENTIONS}, got {masks!r}")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods must be among {METHODS}, got {method!r}")
    for pattern in patterns:
        if pattern not in MASK_PATTERNS:
            raise ValueError(f"patterns must be among {MASK_PATTERNS}, got {pattern!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if not accelerations or any(not math.isfinite(a) or a < 1 for a in accelerations):
        raise ValueError(f"accelerations must be numbers >= 1, got {list(accelerations)}")
    engine = None
    if "cardiomm" in methods:
        if checkpoint is None:
            raise ValueError("checkpoint is required to evaluate 'cardiomm'")
        from cardiomm_core.checkpoint import read_checkpoint_meta

        from .model_setup import make_encoder

        meta = read_checkpoint_meta(checkpoint)
        encoder = make_encoder(meta.text_encoder_name, None)
        engine = InferenceEngine.from_checkpoint(checkpoint, device=device, text_encoder=encoder)
    model_convention = engine.prompt.mask_convention if engine is not None else "project"
    mask_convention = masks if masks is not None else model_convention
    n_items = len(dataset) if max_items is None else min(max_items, len(dataset))  # type: ignore[arg-type]
    rows: list[EvalRow] = []
    started = time.time()
    if progress:
        sys.stderr.write(f"[cardiomm-eval] {n_items} slices x {len(patterns) * len(accelerations)} pattern x R settings "
                         f"(undersampled data: its own sampling) x {len(methods)} methods ({', '.join(methods)})\n")
        sys.stderr.flush()
    last_line = time.time()
    for index in range(n_items):
        sample = dataset[index]
        if not isinstance(sample, KspaceSample):
            raise ValueError(f"dataset[{index}] must be a KspaceSample, got {type(sample).__name__}")
        target = sample.scoring_target().numpy()
        n_coils, n_frames, n_ky, n_kx = sample.kspace.shape
        acquired = _acquired_sampling(sample, model_convention)  # None unless the data are already undersampled
        n_done = 0
        for pattern in (patterns if acquired is None else [acquired.pattern]):
            for acceleration in (accelerations if acquired is None else [acquired.table_acceleration]):
                mask = make_mask(pattern, float(acceleration), n_frames, n_ky, n_kx, n_acs=n_acs,
                                 seed=mask_seed(seed, index, pattern, float(acceleration)),
                                 convention=mask_convention) if acquired is None else acquired
                core_mask = torch.from_numpy(np.array(mask.mask, dtype=np.float32))[None, None]  # (1,1,T,ky,kx|1)
                kspace = (sample.kspace * core_mask[0].to(torch.complex64))[None]             # (1,C,T,ky,kx)
                context = sample.context.with_sampling(*describe_sampling(
                    core_mask, declared_acceleration=mask.acceleration, convention=model_convention))
                for method in methods:
                    if method == "cardiomm" and engine is not None:
                        images = engine.reconstruct(kspace, core_mask, context)
                    elif method == "cg_sense_plain":
                        images = conventional_recon(kspace, core_mask, temporal_weight=0.0, prior_weight=0.0).images
                    else:
                        images = conventional_recon(kspace, core_mask, method=method).images
                    recon = _magnitude(images, sample.recon_nx)[0]
                    scores = evaluate(recon, target, convention=convention, crop=crop)
                    row = EvalRow(method, sample.context.modality, pattern, float(acceleration),
                                  sample.identifier, scores["psnr"], scores["ssim"], scores["nmse"])
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
                n_done += 1
                if progress and time.time() - last_line > SETTING_PROGRESS_S:  # slow slices: say where it is
                    last_line = time.time()
                    n_settings = 1 if acquired is not None else len(patterns) * len(accelerations)
                    sys.stderr.write(f"[cardiomm-eval] slice {index + 1}/{n_items}: {n_done}/{n_settings} settings "
                                     f"done ({pattern} R {float(acceleration):g}), "
                                     f"{format_duration(last_line - started)} so far\n")
                    sys.stderr.flush()
        if progress:
            last_line = time.time()
            elapsed = time.time() - started
            per_slice = elapsed / (index + 1)
            sys.stderr.write(f"[cardiomm-eval] slice {index + 1}/{n_items} ({sample.identifier}) done: "
                             f"{per_slice:.1f} s/slice, {format_duration(elapsed)} so far, "
                             f"ETA {format_duration(per_slice * (n_items - index - 1))}\n")
            sys.stderr.flush()
    return rows


def format_duration(seconds: float) -> str:
    """``75`` -> "1 min 15 s"; ``4000`` -> "1 h 06 min"."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class AcquiredMask(NamedTuple):
    """The sampling of already undersampled data, shaped like ``cardiomm_core.masks.SamplingMask``
    where the evaluation reads it: ``mask (T, ky, 1)`` float32 (the lines that hold data),
    ``pattern`` and ``acceleration`` as the inline gadget derives them from those lines (what the
    model is told), ``table_acceleration`` that acceleration rounded to 0.1 for the tables."""

    mask: np.ndarray
    pattern: str
    acceleration: float
    table_acceleration: float


def _acquired_sampling(sample: KspaceSample, convention: str = "project") -> AcquiredMask | None:
    """The sampling of a sample whose k-space lines are not all there (prospectively undersampled),
    None for a fully sampled sample. Without a reference, a sample missing at most half its lines
    counts as fully sampled (zero-padded lines, e.g. partial Fourier, as before) and one missing
    more is refused (ValueError): zero-filling would be scored against itself. ``convention``: the
    mask convention of the model (``cardiomm_core.prompting.describe_sampling``)."""
    lines = sample.kspace.abs().sum(dim=(0, 3)) > 0                                          # (T, ky)
    if bool(lines.all()):
        return None
    if sample.reference is None and float(lines.float().mean()) >= 0.5:
        return None
    if sample.reference is None:
        raise ValueError(f"{sample.identifier}: the k-space is undersampled ({int(lines.sum())} of {lines.numel()} "
                         "lines) and no ground truth is stored beside it; cardiomm-eval needs fully sampled data "
                         "or a ground truth (cardiomm-simulate's /cardiomm_truth)")
    from gadgets.header_context import sampling_from_mask

    mask = lines.numpy().astype(np.float32)[:, :, None]                                      # (T, ky, 1)
    told, pattern = sampling_from_mask(mask[None, None], convention=convention)
    return AcquiredMask(mask, pattern, float(told), round(float(told), 1))


def aggregate(rows: Iterable[EvalRow]) -> list[dict[str, Any]]:
    """Means per (method, modality, pattern, acceleration), plus modality "all" pooling modalities."""
    groups: dict[tuple[str, str, str, float], list[EvalRow]] = defaultdict(list)
    rows = list(rows)
    for row in rows:
        groups[(row.method, row.modality, row.pattern, row.acceleration)].append(row)
        groups[(row.method, "all", row.pattern, row.acceleration)].append(row)
    modalities = sorted({r.modality for r in rows})
    if len(modalities) == 1:  # "all" would repeat the only modality
        groups = {k: v for k, v in groups.items() if k[1] != "all"}
    out = []
    for (method, modality, pattern, acceleration), members in groups.items():
        out.append({"method": method, "modality": modality, "pattern": pattern, "acceleration": acceleration,
                    "n": len(members), **{m: float(np.mean([getattr(r, m) for r in members])) for m in METRICS}})

    def order(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (entry["modality"] == "all", entry["modality"], entry["pattern"], entry["acceleration"],
                METHODS.index(entry["method"]))

    return sorted(out, key=order)


# --------------------------------------------------------------------------- outputs


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_markdown(path: Path, table: list[dict[str, Any]], title: str = "") -> None:
    """A markdown table per modality: one row per pattern x acceleration, PSNR / SSIM / NMSE per method."""
    methods = [m for m in METHODS if any(r["method"] == m for r in table)]
    delta = "cardiomm" in methods and "cg_sense" in methods
    lines = [f"# {title}" if title else "# CardioMM evaluation", "", METHODS_NOTE, ""]
    for modality in dict.fromkeys(r["modality"] for r in table):
        lines += [f"## {modality if modality != 'all' else 'All modalities'}", ""]
        header = ["Pattern", "R"] + [f"{METHOD_LABELS[m]} {k}" for k in ("PSNR", "SSIM", "NMSE") for m in methods]
        header += ["PSNR gain over CG-SENSE (dB)"] if delta else []
        header += ["n"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        settings = dict.fromkeys((r["pattern"], r["acceleration"]) for r in table if r["modality"] == modality)
        for pattern, acceleration in settings:
            cells = {r["method"]: r for r in table if r["modality"] == modality and r["pattern"] == pattern
                     and r["acceleration"] == acceleration}
            values = [pattern, f"{acceleration:g}"]
            for key, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.4f}"), ("nmse", "{:.4f}")):
                values += [fmt.format(cells[m][key]) if m in cells else "" for m in methods]
            if delta:
                both = "cardiomm" in cells and "cg_sense" in cells
                values.append(f"{cells['cardiomm']['psnr'] - cells['cg_sense']['psnr']:+.2f}" if both else "")
            values.append(str(max(c["n"] for c in cells.values())))
            lines.append("| " + " | ".join(values) + " |")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


_COLOURS = {"cardiomm": (214, 39, 40), "cg_sense": (31, 119, 180), "cg_sense_plain": (44, 160, 44),
            "zero_filled": (127, 127, 127)}


def _plot_xy(index: int, value: float, n_points: int, box: tuple[float, float, float, float],
             value_range: tuple[float, float]) -> tuple[float, float]:
    """Pixel (x, y) of point ``index`` of ``n_points`` at ``value`` in a panel ``box`` = (left, top,
    right, bottom) whose y axis spans ``value_range`` = (lo, hi)."""
    left, top, right, bottom = box
    lo, hi = value_range
    span = max(n_points - 1, 1)
    x = left + 20 + (right - left - 40) * (index / span if n_points > 1 else 0.5)
    y = bottom - (bottom - top) * (value - lo) / (hi - lo)
    return x, y


def write_figure(path: Path, table: list[dict[str, Any]], title: str = "") -> None:
    """PNG: PSNR and SSIM against the acceleration, a line per method (pooled over modalities and
    patterns), drawn with pillow."""
    from PIL import Image, ImageDraw, ImageFont

    pooled: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    modalities = {r["modality"] for r in table}
    source = [r for r in table if r["modality"] == "all"] if "all" in modalities else table
    for row in source:
        pooled[(row["method"], row["acceleration"])].append(row)
    methods = [m for m in METHODS if any(k[0] == m for k in pooled)]
    accelerations = sorted({k[1] for k in pooled})
    font = ImageFont.load_default()
    width, height = 960, 420
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 8), title or "CardioMM evaluation (mean over modalities and patterns)", fill="black", font=font)
    panels = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    for p, (key, label) in enumerate(panels):
        left, top, right, bottom = 70 + p * 470, 40, 70 + p * 470 + 380, height - 70
        values = {(m, a): float(np.mean([r[key] for r in pooled[(m, a)]])) for (m, a) in pooled}
        lo, hi = min(values.values()), max(values.values())
        pad = (hi - lo) * 0.1 or 0.5 * max(abs(hi), 1e-3)
        lo, hi = lo - pad, hi + pad
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, bottom + 30), f"{label} vs acceleration R", fill="black", font=font)
        xy = functools.partial(_plot_xy, n_points=len(accelerations), box=(left, top, right, bottom),
                               value_range=(lo, hi))
        for t in range(5):
            value = lo + (hi - lo) * t / 4
            _, y = xy(0, value)
            draw.line([left - 4, y, left, y], fill="black")
            draw.text((left - 60, y - 6), f"{value:.3f}" if key == "ssim" else f"{value:.1f}", fill="black", font=font)
        for i, acceleration in enumerate(accelerations):
            x, _ = xy(i, lo)
            draw.line([x, bottom, x, bottom + 4], fill="black")
            draw.text((x - 8, bottom + 8), f"{acceleration:g}", fill="black", font=font)
        for method in methods:
            points = [xy(i, values[(method, a)]) for i, a in enumerate(accelerations) if (method, a) in values]
            colour = _COLOURS[method]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3)
            for x, y in points:
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    for i, method in enumerate(methods):
        x = 70 + i * 150
        draw.rectangle([x, height - 22, x + 14, height - 10], fill=_COLOURS[method])
        draw.text((x + 20, height - 22), METHOD_LABELS[method], fill="black", font=font)
    image.save(path)


#: The files write_report writes into its folder.
REPORT_FILES = {"per_slice": "per_slice.csv", "csv": "metrics.csv", "markdown": "metrics.md", "figure": "metrics.png"}


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Before any work: make sure the report can be written into ``out_dir`` (created later, with
    its parents, when missing); ValueError with one line otherwise (a file in the way, a folder
    that cannot be written). Nothing is created here."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {str(out)!r} is an existing file, not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the output folder {str(out)!r}: {str(existing)!r} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write into the output folder {str(out)!r} ({str(existing)!r}: "
                         f"{exc.strerror or exc})") from None
    for name in REPORT_FILES.values():
        if (out / name).is_dir():
            raise ValueError(f"{str(out / name)!r} is a folder; the report writes a file of that name")
    return out


class RowWriter:
    """``per_slice.csv`` written as the rows come: the header at once, each row appended and
    flushed, so a stopped evaluation leaves what it scored. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=list(EvalRow.__dataclass_fields__))
        self._writer.writeheader()
        self._handle.flush()

    def __call__(self, row: EvalRow) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in vars(row).items()})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_report(out_dir: str | os.PathLike[str], rows: list[EvalRow], title: str = "") -> dict[str, Path]:
    """Write per_slice.csv, metrics.csv, metrics.md and metrics.png into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    _write_csv(paths["per_slice"], [vars(r) for r in rows], list(EvalRow.__dataclass_fields__))
    _write_csv(paths["csv"], table, ["method", "modality", "pattern", "acceleration", "n", *METRICS])
    write_markdown(paths["markdown"], table, title)
    write_figure(paths["figure"], table, title)
    return paths

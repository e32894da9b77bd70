"""The held-out evaluation grid of issue 11: CardioMM against the chain's fallback, cell by cell.

```
.venv/bin/python benchmarks/eval_grid.py --jobs 2 --out benchmarks/results/eval_grid.md
.venv/bin/python benchmarks/eval_grid.py --quick --out /tmp/grid_quick.md            # a subset, minutes
.venv/bin/python benchmarks/eval_grid.py --checkpoint packaged --checkpoint new=/path/model.safetensors ...
```

Cells: matrix (recon readout x phase, as the demo's ``--matrix``: 128x112, 192x156, 256x208) x
modality (cine 12 phases, T1 mapping 9 weightings, T2 mapping 3) x family (ktGaussian, ktUniform,
Uniform) x R (8, 12, 16, 24): 108 cells. Each cell is the mean over ``--subjects`` held-out
synthetic subjects (default 1; one slice each; ``GRID_SEED``, seeds no training config or earlier
table used).

Data are prepared as the default chain prepares them, by the code that already does it:
``train.data.synthetic.SyntheticCardiacDataset`` (10 receive coils, readout oversampled 2x, noise
prewhitening as NoiseAdjust, SVD compression to 8 virtual coils as CoilCompression, the noise-free
RSS of the mixed coils as the reference), then the readout oversampling is removed as
RemoveOversampling does it (centred FFT along the readout, keep the central half, FFT back), so
every method sees ``(8, frames, ky, nx)`` k-space as CardioMMRecon receives it. Masks, the sampling
sentence, the methods and the scores are those of ``cardiomm-eval`` (``train.evaluate.
evaluate_checkpoint``: ``cardiomm_core.masks.make_mask``, ``describe_sampling``, the
``InferenceEngine``, ``cardiomm_core.conventional.conventional_recon`` for CG-SENSE (the gadgets' fallback)
and zero-filling, ``cardiomm_core.metrics.evaluate`` with the CMRxRecon 2024 convention); every
method of a slice sees the same mask.

Work is split into one job per (matrix, modality, pattern, subject), run by ``--jobs`` processes with
``--threads`` torch threads each; a progress line with the time left (ETA) goes to stderr after
each job; finished jobs are appended to ``<out>.partial.jsonl`` (``--resume`` skips them).

Outputs: ``<out>`` (markdown: command, date, machine, versions, a summary per candidate, one row per
cell with each method's PSNR / SSIM, the differences to CG-SENSE and the winner) and ``<out>`` with
``.json`` (the same, plus every slice's scores).

Also in the report, on request (they need ``ismrmrd``, i.e. the project's full install):

- ``--mapping``: a T1 mapping scan (and a T2 one) written by ``cardiomm-simulate --modality
  mapping|t2map`` and replayed with the local runner through ``chains/cardiomm_mapping_python.xml``
  (one forward per slice with every weighting, checked from CardioMMRecon's log), scored against
  the ground truth the simulator stores beside the raw data, against the same chain with
  ``checkpoint=none`` (the fallback) and zero-filling (the scoring of ``gadgets.demo``).
- ``--readme-example``: runs the README's Tools example (``python -m gadgets.demo --slices 3
  --coils 10 --matrix 192x156 --seed 7``) and records which method it prints ahead.

GPU machine: ``--device cuda`` needs only torch, numpy, h5py, pyyaml and safetensors. A checkpoint
with the MiniLM text encoder then reads its sentence embeddings from ``$CARDIOMM_CACHE_DIR``: write
them here first with ``--precompute-embeddings`` (same grid options, same cache folder), carry the
folder along and set ``CARDIOMM_CACHE_DIR`` there.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import datetime
import json
import logging
import math
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from train.evaluate import format_duration, mask_seed  # noqa: E402

logger = logging.getLogger("eval_grid")

#: The grid of issue 11's acceptance.
GRID_MATRICES: tuple[tuple[int, int], ...] = ((128, 112), (192, 156), (256, 208))
#: Modalities and their frames (cine phases; CMRxRecon's MOLLI T1 mapping 9 weightings; T2 mapping 3).
GRID_MODALITIES: dict[str, int] = {"cine": 12, "t1map": 9, "t2map": 3}
MODALITY_LABELS = {"cine": "Cine", "t1map": "T1 mapping", "t2map": "T2 mapping"}
GRID_PATTERNS: tuple[str, ...] = ("ktGaussian", "ktUniform", "Uniform")
GRID_ACCELERATIONS: tuple[float, ...] = (8.0, 12.0, 16.0, 24.0)
#: Held-out seeds: the training configs use 0, 1, 2, 900001, 900002, the earlier tables 424242.
GRID_SEED = 611_000
#: How the data are prepared (the default chain: 10 coils -> prewhitened -> 8 virtual coils).
N_COILS = 10
VIRTUAL_COILS = 8
READOUT_OVERSAMPLING = 2
NOISE_LEVEL = 0.01
#: The --quick subset.
QUICK = {"matrices": ((128, 112), (256, 208)), "patterns": ("ktGaussian", "Uniform"), "accelerations": (8.0, 24.0),
         "subjects": 1}
#: The conventional methods every cell has.
CONVENTIONAL = ("cg_sense", "zero_filled")
LABELS = {"cg_sense": "CG-SENSE", "zero_filled": "Zero-filled"}
#: Margin the issue targets at R = 8.
TARGET_MARGIN_DB = 2.0
README_EXAMPLE = ["--slices", "3", "--coils", "10", "--matrix", "192x156", "--seed", "7"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Job:
    """One slice of the grid: all patterns x accelerations x methods of one (matrix, modality, subject)."""

    matrix: tuple[int, int]
    modality: str
    subject: int
    n_subjects: int
    data_seed: int
    pattern: str

    @property
    def key(self) -> str:
        return f"{matrix_text(self.matrix)}/{self.modality}/{self.pattern}/subject{self.subject}"

    @property
    def mask_seed(self) -> int:
        """The seed ``evaluate_checkpoint`` draws this slice's masks from (its own per subject)."""
        return self.data_seed + 1000 * self.subject

    @property
    def weight(self) -> float:
        """Relative cost (pixels x frames), for the ETA."""
        return float(self.matrix[0] * self.matrix[1] * GRID_MODALITIES.get(self.modality, 12))


def matrix_text(matrix: Sequence[int]) -> str:
    return f"{int(matrix[0])}x{int(matrix[1])}"


def parse_matrix(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"matrix must be READOUTxPHASE such as 192x156, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def grid_jobs(matrices: Sequence[tuple[int, int]], modalities: Sequence[str], n_subjects: int,
              seed: int = GRID_SEED, patterns: Sequence[str] = GRID_PATTERNS,
              largest_first: bool = False) -> list[Job]:
    """The jobs of a grid: one per (matrix, modality, pattern, subject), cheapest first (a stopped
    or --report-only run then has whole small matrices) or, with ``largest_first``, most
    expensive first (the pool then finishes evenly). Masks and data do not depend on the order."""
    jobs = []
    for m, matrix in enumerate(matrices):
        for modality in modalities:
            index = list(GRID_MODALITIES).index(modality)
            for subject in range(n_subjects):
                for pattern in patterns:
                    jobs.append(Job(tuple(matrix), modality, subject, n_subjects, seed + 100 * m + 10 * index, pattern))
    return sorted(jobs, key=lambda j: -j.weight if largest_first else j.weight)


def remove_readout_oversampling(kspace: torch.Tensor, nx: int) -> torch.Tensor:
    """What RemoveOversampling does per readout line, on a whole slice: ``kspace (..., kx_enc)``
    complex -> ``(..., nx)``: centred orthonormal inverse FFT along the readout, keep the central
    ``nx`` samples (from ``(kx_enc - nx) // 2``), centred orthonormal FFT back."""
    n_enc = int(kspace.shape[-1])
    if not 1 <= nx <= n_enc:
        raise ValueError(f"nx must be in 1..{n_enc} (the encoded readout), got {nx}")
    if nx == n_enc:
        return kspace
    start = (n_enc - nx) // 2
    image = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(kspace, dim=-1), dim=-1, norm="ortho"), dim=-1)
    kept = image[..., start:start + nx]
    out = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(kept, dim=-1), dim=-1, norm="ortho"), dim=-1)
    return out.to(torch.complex64).contiguous()


class PreparedSlice(Dataset):
    """One grid slice as the chain hands it to CardioMMRecon: a one-item data set of
    ``KspaceSample`` with ``kspace (8, frames, ky, nx)`` (readout oversampling removed) and the
    noise-free reference ``(frames, ny, nx)``."""

    def __init__(self, job: Job) -> None:
        from train.data.synthetic import SyntheticCardiacDataset

        self.job = job
        self.source = SyntheticCardiacDataset(
            job.n_subjects, seed=job.data_seed, n_frames=GRID_MODALITIES[job.modality], n_coils=N_COILS,
            matrix=job.matrix, modalities=(job.modality,), noise_level=NOISE_LEVEL,
            readout_oversampling=READOUT_OVERSAMPLING, prewhiten=True, compress_coils=VIRTUAL_COILS,
            target="noise_free")
        self._sample: Any = None

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Any:
        if index not in (0, -1):
            raise IndexError(f"index {index!r} out of range for 1 item")
        if self._sample is None:
            from train.data.sample import KspaceSample

            raw = self.source[self.job.subject]
            kspace = remove_readout_oversampling(raw.kspace, self.job.matrix[0])
            self._sample = KspaceSample(kspace, raw.context, raw.identifier, None, None, raw.reference)
        return self._sample


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    name: str
    path: str
    encoder: str
    style: str
    mask_convention: str
    sha256: str


def parse_candidate(text: str) -> tuple[str, str]:
    """``packaged`` | ``PATH`` | ``NAME=PATH`` -> (name, path text)."""
    name, sep, rest = text.partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9_.+-]+", name) and not Path(text).exists():
        return name, rest
    if text.strip().lower() == "packaged":
        return "packaged", "packaged"
    return Path(text).stem, text


def load_candidates(values: Sequence[str]) -> list[Candidate]:
    """Resolve and check every checkpoint before any work (ValueError with one line)."""
    from cardiomm_core.checkpoint import read_checkpoint_meta
    from cardiomm_core.packaged import resolve_checkpoint

    out: list[Candidate] = []
    for value in values or ["packaged"]:
        name, text = parse_candidate(value)
        if name in CONVENTIONAL or name in {c.name for c in out}:
            raise ValueError(f"checkpoint name {name!r} is taken; give it another with NAME=PATH")
        if text.strip().lower() == "packaged":
            path = resolve_checkpoint("packaged")
            if path is None:
                raise ValueError("no packaged model is installed (cardiomm_core/models); give --checkpoint PATH")
        else:
            path = Path(text)
            if not path.exists():
                raise ValueError(f"checkpoint {text!r} does not exist")
        try:
            meta = read_checkpoint_meta(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"checkpoint {str(path)!r}: {exc}") from None
        prompt = dict(meta.prompt or {})
        sha = ""
        sidecar = Path(path).with_suffix(".json")
        if sidecar.is_file():
            sha = str(json.loads(sidecar.read_text(encoding="utf-8")).get("weights_sha256", ""))
        out.append(Candidate(name, str(path), meta.text_encoder_name, str(prompt.get("style", "project")),
                             str(prompt.get("mask_convention", "project")), sha))
    conventions = {c.mask_convention for c in out}
    if len(conventions) > 1:
        raise ValueError(f"the checkpoints were trained with different mask conventions {sorted(conventions)}; "
                         "compare them in separate runs (every method of a cell must see the same mask)")
    return out


# --------------------------------------------------------------------------- one job


def _row_dict(row: Any, method: str, job: Job) -> dict[str, Any]:
    return {"method": method, "matrix": matrix_text(job.matrix), "modality": job.modality, "pattern": row.pattern,
            "acceleration": float(row.acceleration), "identifier": row.identifier,
            "psnr": float(row.psnr), "ssim": float(row.ssim), "nmse": float(row.nmse)}


def run_job(job: Job, candidates: Sequence[Candidate], accelerations: Sequence[float], device: str,
            threads: int) -> dict[str, Any]:
    """Score the conventional methods and every candidate on one slice; returns
    ``{"key", "rows": [per-slice row dicts], "seconds": {method: s}}``."""
    from train.evaluate import evaluate_checkpoint

    torch.set_num_threads(max(1, int(threads)))
    started = time.perf_counter()
    data = PreparedSlice(job)
    data[0]
    seconds = {"simulate": time.perf_counter() - started}
    masks = candidates[0].mask_convention if candidates else "project"
    common = dict(accelerations=accelerations, patterns=[job.pattern], convention="2024", seed=job.mask_seed,
                  masks=masks)
    rows: list[dict[str, Any]] = []
    tic = time.perf_counter()
    for row in evaluate_checkpoint(None, data, methods=CONVENTIONAL, device="cpu", **common):
        rows.append(_row_dict(row, row.method, job))
    seconds["conventional"] = time.perf_counter() - tic
    for candidate in candidates:
        tic = time.perf_counter()
        for row in evaluate_checkpoint(candidate.path, data, methods=("cardiomm",), device=device, **common):
            rows.append(_row_dict(row, candidate.name, job))
        seconds[candidate.name] = time.perf_counter() - tic
    bad = [r for r in rows if not (math.isfinite(r["psnr"]) and math.isfinite(r["ssim"]))]
    if bad:
        logger.warning("%s: non-finite scores in %d rows", job.key, len(bad))
    return {"key": job.key, "rows": rows, "seconds": seconds}


def job_sentences(job: Job, candidates: Sequence[Candidate], accelerations: Sequence[float]) -> dict[str, set[str]]:
    """The sentences each text encoder is asked for on this slice, as ``evaluate_checkpoint``
    builds them (``{encoder name: {sentence, ...}}``), from the subject's parameters and the masks
    alone (no simulation)."""
    from cardiomm_core.masks import make_mask
    from cardiomm_core.prompting import context_sentences, describe_sampling

    source = PreparedSlice(job).source
    params = source.subject_params(job.subject)  # the scan's context and shape, without simulating it
    base_context = params.context()
    n_frames, n_ky, n_kx = params.n_frames, params.matrix[1], params.matrix[0]  # readout oversampling removed
    out: dict[str, set[str]] = {}
    pattern = job.pattern
    for acceleration in accelerations:
        for candidate in candidates:
            mask = make_mask(pattern, float(acceleration), n_frames, n_ky, n_kx,
                             seed=mask_seed(job.mask_seed, 0, pattern, float(acceleration)),
                             convention=candidate.mask_convention)
            core_mask = torch.from_numpy(np.array(mask.mask, dtype=np.float32))[None, None]
            context = base_context.with_sampling(*describe_sampling(
                core_mask, declared_acceleration=mask.acceleration, convention=candidate.mask_convention))
            out.setdefault(candidate.encoder, set()).update(context_sentences(context, candidate.style))
    return out


def _worker(kind: str, job: Job, candidates: Sequence[Candidate], accelerations: Sequence[float], device: str,
            threads: int) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if kind == "sentences":
        torch.set_num_threads(max(1, int(threads)))
        return {"key": job.key, "sentences": {k: sorted(v) for k, v in
                                              job_sentences(job, candidates, accelerations).items()}}
    return run_job(job, candidates, accelerations, device, threads)


def run_pool(kind: str, jobs: Sequence[Job], candidates: Sequence[Candidate], accelerations: Sequence[float],
             device: str, n_jobs: int, threads: int,
             on_done: Any = None) -> list[dict[str, Any]]:
    """Run ``jobs`` in ``n_jobs`` processes (in this process when 1), a progress line with the ETA
    to stderr after each. ``on_done(result)`` is called as each finishes."""
    results: list[dict[str, Any]] = []
    total = sum(j.weight for j in jobs) or 1.0
    done_weight = 0.0
    started = time.perf_counter()

    def finished(job: Job, result: dict[str, Any]) -> None:
        nonlocal done_weight
        done_weight += job.weight
        results.append(result)
        if on_done is not None:
            on_done(result)
        elapsed = time.perf_counter() - started
        eta = elapsed / done_weight * (total - done_weight)
        sys.stderr.write(f"[eval_grid] {len(results)}/{len(jobs)} jobs: {job.key} done; {format_duration(elapsed)} so far, "
                         f"ETA {format_duration(eta)}\n")
        sys.stderr.flush()

    if not jobs:
        return results
    sys.stderr.write(f"[eval_grid] {len(jobs)} jobs ({kind}) on {n_jobs} process(es) x {threads} torch thread(s)\n")
    sys.stderr.flush()
    if n_jobs <= 1:
        for job in jobs:
            finished(job, _worker(kind, job, candidates, accelerations, device, threads))
        return results
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=n_jobs, mp_context=context) as pool:
        pending = {pool.submit(_worker, kind, job, candidates, accelerations, device, threads): job
                   for job in jobs}
        try:
            for future in futures.as_completed(pending):
                finished(pending[future], future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


# --------------------------------------------------------------------------- tables


def cell_table(rows: Sequence[dict[str, Any]], candidates: Sequence[str]) -> list[dict[str, Any]]:
    """Means per cell (matrix, modality, pattern, R) and method, the differences of each candidate
    to CG-SENSE and the winner (the best method in PSNR and in SSIM)."""
    groups: dict[tuple[str, str, str, float], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (row["matrix"], row["modality"], row["pattern"], float(row["acceleration"]))
        groups.setdefault(key, {}).setdefault(row["method"], []).append(row)
    matrices = list(dict.fromkeys(r["matrix"] for r in rows))
    order = {m: i for i, m in enumerate(sorted(matrices, key=lambda t: [int(v) for v in t.split("x")]))}
    cells = []
    for key in sorted(groups, key=lambda k: (order[k[0]], list(GRID_MODALITIES).index(k[1]) if k[1] in GRID_MODALITIES
                                             else 99, GRID_PATTERNS.index(k[2]) if k[2] in GRID_PATTERNS else 99,
                                             k[3])):
        by_method = groups[key]
        methods = {m: {"psnr": float(np.mean([r["psnr"] for r in rs])), "ssim": float(np.mean([r["ssim"] for r in rs])),
                       "nmse": float(np.mean([r["nmse"] for r in rs])), "n": len(rs)}
                   for m, rs in by_method.items()}
        delta = {}
        for name in candidates:
            if name in methods and "cg_sense" in methods:
                delta[name] = {"psnr": methods[name]["psnr"] - methods["cg_sense"]["psnr"],
                               "ssim": methods[name]["ssim"] - methods["cg_sense"]["ssim"]}
        best_psnr = max(methods, key=lambda m: methods[m]["psnr"])
        best_ssim = max(methods, key=lambda m: methods[m]["ssim"])
        winner = best_psnr if best_psnr == best_ssim else f"PSNR: {best_psnr}, SSIM: {best_ssim}"
        cells.append({"matrix": key[0], "modality": key[1], "pattern": key[2], "acceleration": key[3],
                      "n": max(v["n"] for v in methods.values()), "methods": methods, "delta": delta,
                      "winner": winner})
    return cells


def summarise(cells: Sequence[dict[str, Any]], candidates: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per candidate: cells won against CG-SENSE (PSNR and SSIM both higher; and each alone),
    min / mean PSNR and SSIM margins, and the R = 8 cells reaching +2 dB."""
    out = {}
    for name in candidates:
        deltas = [c["delta"][name] for c in cells if name in c["delta"]]
        r8 = [c["delta"][name] for c in cells if name in c["delta"] and c["acceleration"] == 8.0]
        if not deltas:
            continue
        out[name] = {
            "cells": len(deltas),
            "won": sum(d["psnr"] > 0 and d["ssim"] > 0 for d in deltas),
            "won_psnr": sum(d["psnr"] > 0 for d in deltas),
            "won_ssim": sum(d["ssim"] > 0 for d in deltas),
            "min_psnr_margin": min(d["psnr"] for d in deltas),
            "mean_psnr_margin": float(np.mean([d["psnr"] for d in deltas])),
            "min_ssim_margin": min(d["ssim"] for d in deltas),
            "mean_ssim_margin": float(np.mean([d["ssim"] for d in deltas])),
            "r8_cells": len(r8),
            "r8_at_target": sum(d["psnr"] >= TARGET_MARGIN_DB for d in r8),
        }
    return out


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__, "numpy": np.__version__, "device": device}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        from cardiomm_core import __version__ as version

        info["cardiomm"] = version
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _fmt_delta(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def _timing(report: dict[str, Any]) -> str:
    """How long the report's parts took, in words."""
    parts = []
    if report["cells"]:
        kind = ("grid time (sum of the finished jobs' times / processes; --report-only)"
                if report["settings"].get("report_only") else "grid wall time")
        parts.append(f"{kind} {format_duration(report['wall_s'])} ({report['settings']['jobs']} process(es) x "
                     f"{report['settings']['threads']} torch thread(s))")
    if "mapping_s" in report:
        parts.append(f"mapping scans {format_duration(report['mapping_s'])}")
    if "readme_example" in report:
        parts.append(f"README example {format_duration(report['readme_example']['seconds'])}")
    return "; ".join(parts)


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    """The report as markdown (see the module docstring)."""
    names = [c["name"] for c in report["candidates"]]
    lines = ["# Held-out evaluation grid (issue 11)", ""]
    labels = []
    for c in report["candidates"]:
        what = "the current packaged model" if c.get("packaged") else "candidate"
        labels.append(f"- `{c['name']}`: {what}, `{c['path_display']}` (weights sha256 {c['sha256'][:12] or '?'}, "
                      f"text encoder {c['encoder']}, prompt style {c['style']}, masks {c['mask_convention']})")
    lines += ["Models:", "", *labels, ""]
    if report.get("missing_jobs"):
        lines += [f"**PARTIAL: {len(report['missing_jobs'])} job(s) not finished when this report was written "
                  f"(--report-only); their cells are missing: {', '.join(report['missing_jobs'])}.**", ""]
    lines += [f"- command: `{report['command']}`",
              f"- date: {report['date']}; {_timing(report)}",
              f"- machine: {report['machine'].get('cpu', report['machine']['machine'])}, "
              f"{report['machine']['cpus']} CPUs" + (f", GPU {report['machine']['gpu']}" if 'gpu' in report['machine']
                                                     else "") + f"; device {report['machine']['device']}",
              f"- versions: Python {report['machine']['python']}, torch {report['machine']['torch']}, numpy "
              f"{report['machine']['numpy']}, cardiomm {report['machine'].get('cardiomm', '?')} "
              f"(commit {report['machine'].get('git_commit', '?')})",
              *([f"- data: {report['data']}", f"- methods: {report['methods_note']}"] if report["cells"] else []),
              ""]
    if not report["cells"]:  # --no-grid: only the mapping scans / the README example
        lines += [*(mapping_markdown(report["mapping"]) if report.get("mapping") else []),
                  *(readme_markdown(report["readme_example"]) if report.get("readme_example") else [])]
        path.write_text("\n".join(lines), encoding="utf-8")
        return
    lines += ["## Summary (each candidate against CG-SENSE, the chain's fallback)", "",
              "| model | cells won (PSNR and SSIM) | won in PSNR | won in SSIM | PSNR margin min / mean (dB) | "
              f"SSIM margin min / mean | R = 8 cells at +{TARGET_MARGIN_DB:g} dB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['won']} / {s['cells']} | {s['won_psnr']} / {s['cells']} | {s['won_ssim']} / "
                     f"{s['cells']} | {s['min_psnr_margin']:+.2f} / {s['mean_psnr_margin']:+.2f} | "
                     f"{s['min_ssim_margin']:+.4f} / {s['mean_ssim_margin']:+.4f} | {s['r8_at_target']} / "
                     f"{s['r8_cells']} |")
    lines += ["", "## Cells", "",
              "PSNR (dB) / SSIM: mean over the cell's slices (n). Delta: model minus CG-SENSE. Winner: the best "
              "method in PSNR and SSIM (named per metric when they differ).", ""]
    header = ["matrix", "modality", "pattern", "R"]
    for name in names:
        header += [f"{name} PSNR", f"{name} SSIM"]
    header += ["CG-SENSE PSNR", "CG-SENSE SSIM", "zero-filled PSNR", "zero-filled SSIM"]
    for name in names:
        header += [f"Δ PSNR {name}", f"Δ SSIM {name}"]
    header += ["winner", "n"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 6)
                                                               + ["---", "---:"]) + "|"]
    for cell in report["cells"]:
        m = cell["methods"]
        values = [cell["matrix"], MODALITY_LABELS.get(cell["modality"], cell["modality"]), cell["pattern"],
                  f"{cell['acceleration']:g}"]
        for name in [*names, *CONVENTIONAL]:
            values += [f"{m[name]['psnr']:.2f}", f"{m[name]['ssim']:.4f}"] if name in m else ["", ""]
        for name in names:
            d = cell["delta"].get(name)
            values += [_fmt_delta(d["psnr"], 2), _fmt_delta(d["ssim"], 4)] if d else ["", ""]
        winner = cell["winner"]
        for key, label in LABELS.items():
            winner = winner.replace(key, label)
        values += [winner, str(cell["n"])]
        lines.append("| " + " | ".join(values) + " |")
    lines.append("")
    if report.get("mapping"):
        lines += mapping_markdown(report["mapping"])
    if report.get("readme_example"):
        lines += readme_markdown(report["readme_example"])
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- mapping acceptance


#: The mapping scans of the acceptance: (simulator modality, weightings).
MAPPING_SCANS = (("mapping", 9), ("t2map", 3))
MAPPING_CHAIN = ROOT / "chains" / "cardiomm_mapping_python.xml"
MAPPING_SETTINGS = {"slices": 2, "coils": N_COILS, "matrix": (192, 156), "accel": 8.0, "pattern": "ktGaussian",
                    "seed": GRID_SEED + 7}


class _ForwardLog(logging.Handler):
    """Collects CardioMMRecon's per-forward log lines ("CardioMMRecon: k-space (...), ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.shapes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("CardioMMRecon: k-space"):
            self.shapes.append(message.split("k-space", 1)[1].split(")", 1)[0].strip() + ")")
        if record.levelno >= logging.WARNING:  # warnings still reach the user's log
            logging.getLogger().handle(record)


def _replay_chain(chain: Any, scan: Path) -> tuple[list[Any], list[str]]:
    import ismrmrd

    from gadgets.chain import run_chain
    from gadgets.ismrmrd_io import RawFile

    handler = _ForwardLog()
    recon_logger = logging.getLogger("gadgets.recon")
    level, propagate = recon_logger.level, recon_logger.propagate
    recon_logger.addHandler(handler)
    recon_logger.setLevel(logging.INFO)
    recon_logger.propagate = False  # its INFO lines are collected here, not printed
    try:
        with RawFile(scan) as raw:
            images = [item for item in run_chain(chain, raw.xml, raw.acquisitions()) if isinstance(item, ismrmrd.Image)]
    finally:
        recon_logger.removeHandler(handler)
        recon_logger.setLevel(level)
        recon_logger.propagate = propagate
    return images, handler.shapes


def mapping_rows(candidates: Sequence[Candidate], device: str, workdir: Path, *,
                 matrix: tuple[int, int] = MAPPING_SETTINGS["matrix"],
                 slices: int = MAPPING_SETTINGS["slices"]) -> list[dict[str, Any]]:
    """The mapping acceptance: each MAPPING_SCANS scan simulated by ``cardiomm-simulate`` and replayed
    through the mapping chain per candidate and with ``checkpoint=none``; scores against the stored
    ground truth (``gadgets.demo``'s reference and zero-filled images)."""
    from cardiomm_core.metrics import evaluate
    from gadgets.chain import load_chain
    from gadgets.demo import images_to_array, reference_images, zero_filled_rss
    from gadgets.simulate import main as simulate_main
    from gadgets.simulate import read_ground_truth

    rows = []
    workdir.mkdir(parents=True, exist_ok=True)
    s = {**MAPPING_SETTINGS, "matrix": tuple(matrix), "slices": int(slices)}
    for modality, n_frames in MAPPING_SCANS:
        scan = workdir / f"grid_{modality}.h5"
        argv = [str(scan), "--modality", modality, "--phases", str(n_frames), "--slices", str(s["slices"]),
                "--coils", str(s["coils"]), "--matrix", matrix_text(s["matrix"]), "--accel", f"{s['accel']:g}",
                "--pattern", s["pattern"], "--seed", str(s["seed"]), "--quiet"]
        if simulate_main(argv) != 0:
            raise RuntimeError(f"cardiomm-simulate {' '.join(argv)} failed")
        truth = reference_images(read_ground_truth(scan))
        n_slices = truth.shape[0]
        chain = load_chain(MAPPING_CHAIN)
        scored: dict[str, dict[str, Any]] = {}
        for name, checkpoint in [*((c.name, c.path) for c in candidates), ("cg_sense", "none")]:
            tic = time.perf_counter()
            images, shapes = _replay_chain(chain.with_properties("CardioMMRecon", checkpoint=checkpoint,
                                                                 device=device if checkpoint != "none" else "cpu"),
                                           scan)
            array = images_to_array(images, n_slices, n_frames, "contrast")
            methods = sorted({str(i.meta.get("CardioMM.Method", "?")) for i in images})
            fallback = any(i.meta.get("CardioMM.Fallback") == "true" for i in images)
            scored[name] = {**evaluate(array, truth), "forwards": shapes, "method": ",".join(methods),
                            "fallback": fallback, "seconds": time.perf_counter() - tic}
        scored["zero_filled"] = {**evaluate(zero_filled_rss(scan), truth), "forwards": [], "method": "zero-filled RSS",
                                 "fallback": False, "seconds": 0.0}
        rows.append({"scan": modality, "weightings": n_frames, "slices": n_slices,
                     "simulate": "cardiomm-simulate " + " ".join(a if a != str(scan) else "SCAN.h5" for a in argv),
                     "replay": f"cardiomm-replay SCAN.h5 --chain chains/{MAPPING_CHAIN.name} --checkpoint CKPT|none -o OUT",
                     "methods": scored})
    return rows


def mapping_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Mapping scans through the mapping chain", "",
             f"Each scan: written by `cardiomm-simulate` ({N_COILS} coils, readout oversampled, a noise "
             f"scan first, ground truth stored beside the raw data), replayed with the local runner through "
             f"`chains/{MAPPING_CHAIN.name}` (NoiseAdjust -> RemoveOversampling -> AcquisitionBuffer with N = contrast "
             "-> CoilCompression to 8 -> CardioMMRecon), once per model and once with `checkpoint=none` (the "
             "fallback, CG-SENSE); scored against the noise-free RSS of the prewhitened coil images from the stored "
             "ground truth (CMRxRecon 2024 convention, as `gadgets.demo` scores). Forwards: the k-space CardioMMRecon "
             "reconstructed, one entry per call (frames are the third axis).", ""]
    for row in rows:
        lines += [f"### {row['scan']} ({row['weightings']} weightings, {row['slices']} slices)", "",
                  f"`{row['simulate']}`, then `{row['replay']}`", "",
                  "| method | PSNR (dB) | SSIM | Δ PSNR vs fallback | Δ SSIM vs fallback | forwards | images made by |",
                  "|---|---:|---:|---:|---:|---|---|"]
        base = row["methods"]["cg_sense"]
        for name, m in row["methods"].items():
            label = LABELS.get(name, name) + (" (fallback, checkpoint=none)" if name == "cg_sense" else "")
            forwards = (f"{len(m['forwards'])} x {m['forwards'][0]}" if m["forwards"] and len(set(m["forwards"])) == 1
                        else ", ".join(m["forwards"]) or "-")
            dp = "" if name == "cg_sense" else f"{m['psnr'] - base['psnr']:+.2f}"
            ds = "" if name == "cg_sense" else f"{m['ssim'] - base['ssim']:+.4f}"
            lines.append(f"| {label} | {m['psnr']:.2f} | {m['ssim']:.4f} | {dp} | {ds} | {forwards} | "
                         f"{m['method']}{' (fallback)' if m['fallback'] and name != 'cg_sense' else ''} |")
        lines.append("")
    return lines


# --------------------------------------------------------------------------- README example


_DEMO_LINE = re.compile(r"^\s{2}(?P<label>\S.*?)\s+PSNR\s+(?P<psnr>[-\d.]+) dB\s+SSIM (?P<ssim>[-\d.]+)\s+NMSE (?P<nmse>[-\d.]+)")


def parse_demo_output(text: str) -> list[dict[str, Any]]:
    """The step-4 score lines of ``gadgets.demo``'s output: [{"label", "psnr", "ssim", "nmse"}, ...]."""
    rows = []
    for line in text.splitlines():
        match = _DEMO_LINE.match(line)
        if match:
            rows.append({"label": match.group("label").strip(), "psnr": float(match.group("psnr")),
                         "ssim": float(match.group("ssim")), "nmse": float(match.group("nmse"))})
    return rows


def readme_example(workdir: Path, checkpoint: str = "packaged", device: str = "auto") -> dict[str, Any]:
    """Run the README's Tools example and say which method it prints ahead."""
    argv = [sys.executable, "-m", "gadgets.demo", *README_EXAMPLE, "--out", str(workdir),
            "--checkpoint", checkpoint, "--device", device]
    tic = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    rows = parse_demo_output(done.stdout)
    model = next((r for r in rows if r["label"] == "CardioMM"), None)
    fallback = next((r for r in rows if "(fallback)" in r["label"]), None)
    ahead = None
    if model and fallback:
        ahead = model["psnr"] > fallback["psnr"] and model["ssim"] > fallback["ssim"]
    return {"command": "python -m gadgets.demo " + " ".join(README_EXAMPLE), "checkpoint": checkpoint,
            "returncode": done.returncode, "rows": rows, "cardiomm_ahead": ahead,
            "seconds": time.perf_counter() - tic, "stdout_tail": done.stdout[-3000:], "stderr_tail": done.stderr[-2000:]}


def readme_markdown(result: dict[str, Any]) -> list[str]:
    verdict = {True: "CardioMM is ahead (PSNR and SSIM)", False: "CardioMM is NOT ahead in PSNR and SSIM",
               None: "no CardioMM vs fallback comparison was printed"}[result["cardiomm_ahead"]]
    lines = ["## The README's Tools example", "", f"`{result['command']}` (checkpoint {result['checkpoint']}, exit "
             f"status {result['returncode']}, {result['seconds']:.0f} s): {verdict}.", "",
             "| printed | PSNR (dB) | SSIM | NMSE |", "|---|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['nmse']:.4f} |" for r in result["rows"]]
    return lines + [""]


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/eval_grid.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  benchmarks/eval_grid.py --jobs 2 --out benchmarks/results/eval_grid.md\n"
               "  benchmarks/eval_grid.py --quick --out /tmp/grid.md\n"
               "  benchmarks/eval_grid.py --checkpoint packaged --checkpoint new=runs/x/model.safetensors\n"
               "  CARDIOMM_CACHE_DIR=cache benchmarks/eval_grid.py --precompute-embeddings --checkpoint M.safetensors\n"
               "  CARDIOMM_CACHE_DIR=cache benchmarks/eval_grid.py --device cuda --jobs 8 --checkpoint M.safetensors")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="[NAME=]PATH|packaged",
                        help="a model to score (repeatable; default: the packaged model); any cardiomm-export output")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_grid.md",
                        help="markdown report (the JSON goes beside it; default benchmarks/results/eval_grid.md)")
    parser.add_argument("--matrices", type=parse_matrix, nargs="+", default=None, metavar="RxP",
                        help="recon matrices, readout x phase (default 128x112 192x156 256x208)")
    parser.add_argument("--modalities", nargs="+", choices=tuple(GRID_MODALITIES), default=None)
    parser.add_argument("--patterns", nargs="+", choices=GRID_PATTERNS, default=None)
    parser.add_argument("--accelerations", type=float, nargs="+", default=None)
    parser.add_argument("--subjects", type=int, default=None, help="slices (subjects) per cell (default 1; 4 on a GPU gives tighter means)")
    parser.add_argument("--seed", type=int, default=GRID_SEED, help=f"data seed (default {GRID_SEED}, held out)")
    parser.add_argument("--quick", action="store_true",
                        help="a subset: 128x112 and 256x208, ktGaussian and Uniform, R 8 and 24, 1 subject "
                             "(explicit options override it)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default CPUs / jobs)")
    parser.add_argument("--device", default="cpu", help="device of the models (cpu, cuda, auto; default cpu)")
    parser.add_argument("--grid", action=argparse.BooleanOptionalAction, default=True,
                        help="score the grid (default); --no-grid with --mapping / --readme-example writes only those")
    parser.add_argument("--mapping", action="store_true",
                        help="also the mapping scans through chains/cardiomm_mapping_python.xml (needs ismrmrd)")
    parser.add_argument("--readme-example", action="store_true",
                        help="also run the README's Tools example (python -m gadgets.demo --slices 3 --coils 10 "
                             "--matrix 192x156 --seed 7) and record which method it prints ahead")
    parser.add_argument("--mapping-matrix", type=parse_matrix, default=MAPPING_SETTINGS["matrix"], metavar="RxP",
                        help=f"matrix of the mapping scans (default {matrix_text(MAPPING_SETTINGS['matrix'])})")
    parser.add_argument("--mapping-slices", type=int, default=MAPPING_SETTINGS["slices"],
                        help=f"slices of each mapping scan (default {MAPPING_SETTINGS['slices']})")
    parser.add_argument("--precompute-embeddings", action="store_true",
                        help="only write the grid's sentence embeddings into the cache ($CARDIOMM_CACHE_DIR or "
                             "--cache-dir) for a machine without the text encoder, then stop")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder (sets CARDIOMM_CACHE_DIR)")
    parser.add_argument("--largest-first", action="store_true",
                        help="run the most expensive jobs first (even finish on many processes; default: cheapest "
                             "first, so a stopped run has whole small matrices)")
    parser.add_argument("--resume", action="store_true", help="skip the jobs already in <out>.partial.jsonl")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the report from the jobs in <out>.partial.jsonl (a run still going "
                             "or stopped), marked partial when jobs are missing")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.cache_dir is not None:
        os.environ["CARDIOMM_CACHE_DIR"] = str(args.cache_dir.resolve())  # inherited by the workers
    quick = QUICK if args.quick else {}
    matrices = args.matrices or list(quick.get("matrices", GRID_MATRICES))
    modalities = args.modalities or list(GRID_MODALITIES)
    patterns = args.patterns or list(quick.get("patterns", GRID_PATTERNS))
    accelerations = args.accelerations or list(quick.get("accelerations", GRID_ACCELERATIONS))
    subjects = args.subjects if args.subjects is not None else int(quick.get("subjects", 1))
    if subjects < 1 or args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--subjects, --jobs and --threads must be >= 1")
    if any(not math.isfinite(a) or a < 1 for a in accelerations):
        parser.error(f"accelerations must be numbers >= 1, got {accelerations}")
    if not args.grid and not (args.mapping or args.readme_example):
        parser.error("--no-grid needs --mapping or --readme-example")
    if args.mapping_slices < 1:
        parser.error("--mapping-slices must be >= 1")
    if any(min(m) < 16 for m in matrices):
        parser.error("matrices must be at least 16 x 16")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    try:
        candidates = load_candidates(args.checkpoint)
    except ValueError as error:
        print(f"eval_grid: {error}", file=sys.stderr)
        return 2
    jobs = grid_jobs(matrices, modalities, subjects, args.seed, patterns, largest_first=args.largest_first)
    command = "python benchmarks/eval_grid.py " + " ".join(sys.argv[1:] if argv is None else argv)

    if args.precompute_embeddings:
        from cardiomm_core.embedding_cache import default_cache_dir
        from train.embeddings import cache_sentences

        results = run_pool("sentences", jobs, candidates, accelerations, "cpu", args.jobs, threads)
        for encoder_name in sorted({c.encoder for c in candidates}):
            if encoder_name.startswith("hashing"):
                continue
            sentences = sorted({s for r in results for s in r["sentences"].get(encoder_name, [])})
            cache_sentences(encoder_name, sentences, None)
            print(f"{len(sentences)} sentences of {encoder_name} cached under {default_cache_dir()}")
        return 0

    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.jsonl")
    done: dict[str, dict[str, Any]] = {}
    if args.report_only and not partial.is_file():
        print(f"eval_grid: --report-only: no {partial} to report from", file=sys.stderr)
        return 2
    if (args.resume or args.report_only) and partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            if line.strip():
                result = json.loads(line)
                done[result["key"]] = result
    elif partial.exists():
        partial.unlink()
    todo = [j for j in jobs if j.key not in done] if args.grid and not args.report_only else []
    missing = [j.key for j in jobs if j.key not in done] if args.report_only else []
    if done:
        n_done = sum(j.key in done for j in jobs)
        sys.stderr.write(f"[eval_grid] {'reporting' if args.report_only else 'resuming'}: {n_done} of {len(jobs)} "
                         "jobs done\n")

    def keep(result: dict[str, Any]) -> None:
        with open(partial, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")

    started = time.perf_counter()
    try:
        results = [*done.values(), *run_pool("grid", todo, candidates, accelerations, args.device,
                                             args.jobs, threads, keep)]
    except KeyboardInterrupt:
        print(f"eval_grid: stopped; finished jobs are in {partial} (--resume continues)", file=sys.stderr)
        return 130
    except Exception as error:  # a worker's failure: one line (the traceback at debug level)
        logger.debug("grid job failed", exc_info=True)
        print(f"eval_grid: a job failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    grid_seconds = time.perf_counter() - started
    if args.report_only:  # the run's own time: the jobs' seconds are all that is known
        grid_seconds = float(sum(sum(r["seconds"].values()) for r in results)) / max(1, args.jobs)
    rows = [row for result in results for row in result["rows"]]
    names = [c.name for c in candidates]
    cells = cell_table(rows, names)
    from cardiomm_core.packaged import packaged_model_path

    packaged = packaged_model_path()
    report: dict[str, Any] = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": grid_seconds,
        "machine": machine_info(args.device),
        "settings": {"matrices": [matrix_text(m) for m in matrices], "modalities": modalities, "patterns": patterns,
                     "accelerations": accelerations, "subjects": subjects, "seed": args.seed, "jobs": args.jobs,
                     "threads": threads, "quick": bool(args.quick), "report_only": bool(args.report_only), "n_coils": N_COILS, "virtual_coils": VIRTUAL_COILS,
                     "readout_oversampling": READOUT_OVERSAMPLING, "noise_level": NOISE_LEVEL,
                     "frames": {m: GRID_MODALITIES[m] for m in modalities}, "convention": "2024"},
        "data": (f"synthetic phantoms (train.data.synthetic), {subjects} held-out subject(s) per matrix x modality "
                 f"(seed {args.seed}), one slice each; {N_COILS} coils, readout oversampled {READOUT_OVERSAMPLING}x, "
                 f"noise {NOISE_LEVEL}; prewhitened, compressed to {VIRTUAL_COILS} virtual coils, readout oversampling "
                 "removed (what CardioMMRecon receives); frames: "
                 + ", ".join(f"{MODALITY_LABELS[m]} {GRID_MODALITIES[m]}" for m in modalities)
                 + "; reference: the noise-free RSS of the prewhitened, compressed coil images"),
        "methods_note": ("CG-SENSE = `cardiomm_core.conventional.conventional_recon` defaults (the gadgets' fallback); "
                         "zero-filled = SENSE combination of the zero-filled k-space; masks "
                         "`cardiomm_core.masks.make_mask` (the model's mask convention), the same for every method; "
                         "scores `cardiomm_core.metrics.evaluate`, CMRxRecon 2024 convention (magnitude, central "
                         "crop, per-image normalisation)"),
        "candidates": [{**asdict(c), "packaged": packaged is not None and Path(c.path).resolve() == packaged.resolve(),
                        "path_display": _display_path(c.path)} for c in candidates],
        "summary": summarise(cells, names),
        "cells": cells,
        "job_seconds": {r["key"]: r["seconds"] for r in results},
        "missing_jobs": missing,
        "per_slice": rows,
    }
    with tempfile.TemporaryDirectory(prefix="eval_grid_") as work:
        if args.mapping:
            tic = time.perf_counter()
            report["mapping"] = mapping_rows(candidates, args.device, Path(work) / "mapping",
                                             matrix=args.mapping_matrix, slices=args.mapping_slices)
            report["mapping_s"] = time.perf_counter() - tic
        if args.readme_example:
            report["readme_example"] = readme_example(Path(work) / "readme_example")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    write_markdown(out, report)
    if partial.exists() and not missing:
        partial.unlink()
    for name, s in report["summary"].items():
        print(f"{name}: wins {s['won']}/{s['cells']} cells against CG-SENSE (PSNR and SSIM); PSNR margin min "
              f"{s['min_psnr_margin']:+.2f} mean {s['mean_psnr_margin']:+.2f} dB; R=8 cells at +{TARGET_MARGIN_DB:g} "
              f"dB: {s['r8_at_target']}/{s['r8_cells']}")
    print(f"wrote {out} and {out.with_suffix('.json')} (grid {format_duration(grid_seconds)})")
    return 0


def _display_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())

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
table used). A one-slice phantom is cut at 40 % of the ventricle's length (mid-ventricular);
``--stack N`` makes each subject an N-slice short-axis stack from base (8 %) to apex (88 %), as
the demo's ``--slices N`` does, scores every slice and adds a table per slice position.

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
  ``checkpoint=none`` (the fallback) and zero-filling (the scoring of ``gadgets.tools.demo``).
- ``--readme-example``: runs the README's Tools example (``python -m gadgets.tools.demo --slices 3
  --coils 10 --matrix 192x156 --seed 7``) and records which method it prints ahead.

Code: this script runs the jobs and writes the report; the grid's cells and settings are in
``benchmarks/eval_grid_cells.py``, the tables and markdown in ``benchmarks/eval_grid_report.py``,
``--mapping`` and ``--readme-example`` in ``benchmarks/eval_grid_acceptance.py``.

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
import re
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

from benchmarks.eval_grid_acceptance import MAPPING_SETTINGS, mapping_rows, readme_example  # noqa: E402
from benchmarks.eval_grid_cells import (  # noqa: E402
    CONVENTIONAL,
    GRID_ACCELERATIONS,
    GRID_MATRICES,
    GRID_MODALITIES,
    GRID_PATTERNS,
    GRID_SEED,
    MODALITY_LABELS,
    N_COILS,
    NOISE_LEVEL,
    QUICK,
    READOUT_OVERSAMPLING,
    TARGET_MARGIN_DB,
    VIRTUAL_COILS,
    matrix_text,
    parse_matrix,
)
from benchmarks.eval_grid_report import cell_table, machine_info, slice_table, summarise, write_markdown  # noqa: E402
from train.evaluate import format_duration, mask_seed  # noqa: E402

logger = logging.getLogger(__name__)


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
    n_slices: int = 1      # slices of the subject's stack (1: the one-slice phantom)
    slice_index: int = 0   # which of them this job scores (0 = base)

    @property
    def key(self) -> str:
        key = f"{matrix_text(self.matrix)}/{self.modality}/{self.pattern}/subject{self.subject}"
        return key if self.n_slices == 1 else f"{key}/stack{self.n_slices}/slice{self.slice_index}"

    @property
    def mask_seed(self) -> int:
        """The seed ``evaluate_checkpoint`` draws this slice's masks from (its own per subject and slice;
        a one-slice subject's as before stacks existed)."""
        return self.data_seed + 1000 * self.subject + self.slice_index

    @property
    def weight(self) -> float:
        """Relative cost (pixels x frames), for the ETA."""
        return float(self.matrix[0] * self.matrix[1] * GRID_MODALITIES.get(self.modality, 12))


def matrix_seed_index(matrix: Sequence[int]) -> int:
    """Which data seed offset a matrix has: its place in GRID_MATRICES, so that a cell's subject is
    the same in the full grid and in any subset run (--matrices, --quick), and a matrix outside the
    grid gets an offset of its own from its size."""
    key = (int(matrix[0]), int(matrix[1]))
    if key in GRID_MATRICES:
        return GRID_MATRICES.index(key)
    return len(GRID_MATRICES) + key[0] * 1000 + key[1]


def grid_jobs(matrices: Sequence[tuple[int, int]], modalities: Sequence[str], n_subjects: int,
              seed: int = GRID_SEED, patterns: Sequence[str] = GRID_PATTERNS,
              largest_first: bool = False, n_slices: int = 1) -> list[Job]:
    """The jobs of a grid: one per (matrix, modality, pattern, subject, slice of an ``n_slices``
    stack), cheapest first (a stopped or --report-only run then has whole small matrices) or, with
    ``largest_first``, most expensive first (the pool then finishes evenly). Masks and data do not
    depend on the order."""
    jobs = []
    for matrix in matrices:
        m = matrix_seed_index(matrix)
        for modality in modalities:
            index = list(GRID_MODALITIES).index(modality)
            for subject in range(n_subjects):
                for pattern in patterns:
                    for slice_index in range(n_slices):
                        jobs.append(Job(tuple(matrix), modality, subject, n_subjects, seed + 100 * m + 10 * index,
                                        pattern, n_slices, slice_index))
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
            target="noise_free", n_slices=job.n_slices)
        self._sample: Any = None

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Any:
        if index not in (0, -1):
            raise IndexError(f"index {index!r} out of range for 1 item")
        if self._sample is None:
            from train.data.sample import KspaceSample

            raw = self.source[self.job.subject * self.job.n_slices + self.job.slice_index]
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
            "stack": job.n_slices, "slice": job.slice_index,
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
    parser.add_argument("--stack", type=int, default=1, metavar="N",
                        help="each subject an N-slice short-axis stack, base to apex, every slice scored "
                             "(default 1: the one-slice phantom's mid-ventricular slice)")
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
                        help="also run the README's Tools example (python -m gadgets.tools.demo --slices 3 --coils 10 "
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
    if subjects < 1 or args.stack < 1 or args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--subjects, --stack, --jobs and --threads must be >= 1")
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
    jobs = grid_jobs(matrices, modalities, subjects, args.seed, patterns, largest_first=args.largest_first,
                     n_slices=args.stack)
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
                     "accelerations": accelerations, "subjects": subjects, "stack": args.stack, "seed": args.seed, "jobs": args.jobs,
                     "threads": threads, "quick": bool(args.quick), "report_only": bool(args.report_only), "n_coils": N_COILS, "virtual_coils": VIRTUAL_COILS,
                     "readout_oversampling": READOUT_OVERSAMPLING, "noise_level": NOISE_LEVEL,
                     "frames": {m: GRID_MODALITIES[m] for m in modalities}, "convention": "2024"},
        "data": (f"synthetic phantoms (train.data.synthetic), {subjects} held-out subject(s) per matrix x modality "
                 f"(seed {args.seed}), " + ("one mid-ventricular slice each" if args.stack == 1 else
                                            f"every slice of a {args.stack}-slice stack, base to apex")
                 + f"; {N_COILS} coils, readout oversampled {READOUT_OVERSAMPLING}x, "
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
        "by_slice": slice_table(rows, names) if args.stack > 1 else [],
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

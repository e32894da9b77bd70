"""Issue 14, quality: CardioMM against what a user would pick instead, on held-out subjects.

    python -m benchmarks.quality --checkpoint small=runs/bench/small.safetensors \\
        --checkpoint cardiosm=runs/bench/cardiosm.safetensors --checkpoint varnet=runs/bench/varnet.safetensors
    python -m benchmarks.quality --quick --checkpoint small=... --out /tmp/q    # a small table (minutes)
    python -m benchmarks.quality --merge a/quality.json b/quality.json --out benchmarks/results
        # one table from runs that scored different methods on the same subjects (e.g. the learned
        # methods on a GPU machine, CS on a CPU one): the data and masks are functions of the seeds

Data: held-out synthetic subjects (seeds ``HELDOUT_SEED + i`` for matrix i, which no training
config and not the CS tuning use), one per modality and matrix by default (cine with 12 phases,
T1 mapping with 9 weightings, T2 mapping with 3; 128 x 112 and 96 x 80), prepared as the chain prepares them: 10 receive
coils, noise-prewhitened and SVD-compressed to 8 virtual coils (``train.data.synthetic``, the
trainer's own preparation), scored against the noise-free root-sum-of-squares image.

Sampling: Uniform 4/8/10 and ktUniform, ktGaussian, ktRadial 8/12/16/24 (the project's mask
generators, ``cardiomm_core.masks.make_mask``, seeded per subject and setting exactly as
``cardiomm-eval`` seeds them, so every method sees the same mask).

Methods: ``zero_filled`` and ``cg_sense`` (``cardiomm_core.conventional.conventional_recon``: the
gadgets' fallback), ``cs`` (L1-wavelet + temporal TV through sigpy, ``benchmarks/cs.py``, its
weights tuned on a separate seed: ``benchmarks/results/cs_tuning.json``), and every
``--checkpoint NAME=PATH`` through ``cardiomm_core.engine.InferenceEngine`` (its normalisation,
text encoder, sentence style; told the pattern and acceleration the gadgets would tell it).
Known names get table labels: ``small`` CardioMM small, ``cardiosm`` CardioSM (no text context),
``varnet`` E2E-VarNet (fastMRI); others are used as given.

Scores: ``cardiomm_core.metrics.evaluate`` (CMRxRecon normalisation ``--convention``, default
2024, and the challenge's central crop): PSNR / SSIM / NMSE per 2D frame, averaged per slice,
then over subjects. Per cell, the best method is in bold. Outputs in ``--out`` (default
benchmarks/results): ``quality.md``, ``quality.json`` (every row, the means, the command, the
versions, the timings) and ``quality_<modality>.png`` (frames of one subject per modality at
``FIGURE_SETTING``, every method with its error map, ``gadgets.io.preview.save_comparison``).

The tables and figures are written by ``benchmarks/quality_report.py``.

Parallel over processes (``--workers``; each loads the models once), a progress line with the
time left per finished (subject, setting). Each finished (subject, setting) is appended to
``OUT/quality.partial.jsonl`` as it comes; ``--resume`` takes those instead of scoring them again
(a full table takes hours on a loaded 2-core CPU: about 1.5 min per slice for all six methods at
128 x 112, most of it CS and the two CardioMM models).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.quality_report import (  # noqa: E402
    METRICS,
    aggregate,
    label,
    mean_at_high_r,
    ordered_methods,
    write_figures,
    write_markdown,
)
from train.evaluate import format_duration, mask_seed  # noqa: E402

logger = logging.getLogger(__name__)

#: Seed of the held-out subjects of matrix 0 (matrix i uses HELDOUT_SEED + i).
HELDOUT_SEED = 700000
#: Frames of the held-out subjects: cine phases, MOLLI's T1 weightings, T2 preparations (CMRxRecon's).
HELDOUT_FRAMES = {"cine": 12, "t1map": 9, "t2map": 3}
#: Sampling settings of the table (issue 14).
SETTINGS: tuple[tuple[str, float], ...] = (
    ("Uniform", 4.0), ("Uniform", 8.0), ("Uniform", 10.0),
    *((p, r) for p in ("ktUniform", "ktGaussian", "ktRadial") for r in (8.0, 12.0, 16.0, 24.0)),
)
QUICK_SETTINGS: tuple[tuple[str, float], ...] = (("Uniform", 4.0), ("ktGaussian", 8.0), ("ktRadial", 8.0))
#: The setting of the example figures.
FIGURE_SETTING = ("ktGaussian", 12.0)
MATRICES: tuple[tuple[int, int], ...] = ((128, 112), (96, 80))
QUICK_MATRICES: tuple[tuple[int, int], ...] = ((32, 28), (28, 24))
CONVENTIONAL = ("zero_filled", "cg_sense", "cs")


@dataclass(frozen=True)
class Plan:
    """What one run scores (picklable: sent to the worker processes)."""

    matrices: tuple[tuple[int, int], ...]
    n_subjects: int
    n_frames: int
    n_coils: int
    n_virtual: int
    settings: tuple[tuple[str, float], ...]
    methods: tuple[str, ...]
    checkpoints: tuple[tuple[str, str], ...]
    convention: str = "2024"
    device: str = "cpu"
    threads: int = 1
    n_acs: int | None = None
    cs_max_iter: int | None = None
    seed: int = 0

    def dataset(self, matrix_index: int) -> Any:
        from train.data.synthetic import SyntheticCardiacDataset

        frames = None if self.n_frames < max(HELDOUT_FRAMES.values()) else \
            {modality: (n, n) for modality, n in HELDOUT_FRAMES.items()}
        return SyntheticCardiacDataset(self.n_subjects, seed=HELDOUT_SEED + matrix_index,
                                       matrix=self.matrices[matrix_index], n_frames=self.n_frames,
                                       n_coils=self.n_coils, readout_oversampling=1, prewhiten=True,
                                       compress_coils=self.n_virtual, target="noise_free",
                                       frames_by_modality=frames)


# --------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(plan: Plan) -> None:
    import torch

    torch.set_num_threads(max(1, plan.threads))
    logging.getLogger().setLevel(logging.WARNING)
    if plan.n_acs is not None:  # --quick: tiny grids, where the masks' R is approximate (said once per mask)
        logging.getLogger("cardiomm_core.masks").setLevel(logging.ERROR)
    _WORKER.clear()
    _WORKER["plan"] = plan
    _WORKER["datasets"] = {}
    engines = {}
    from cardiomm_core.checkpoint import read_checkpoint_meta
    from cardiomm_core.engine import InferenceEngine
    from train.model_setup import make_encoder

    for name, path in plan.checkpoints:
        meta = read_checkpoint_meta(path)
        engines[name] = InferenceEngine.from_checkpoint(path, device=plan.device,
                                                        text_encoder=make_encoder(meta.text_encoder_name, None))
    _WORKER["engines"] = engines
    if "cs" in plan.methods:
        from benchmarks.cs import CSSettings, load_tuned_settings

        settings, _ = load_tuned_settings()
        if plan.cs_max_iter is not None:
            settings = CSSettings(settings.lamda_wavelet, settings.lamda_tv, plan.cs_max_iter, settings.wave_name)
        _WORKER["cs"] = settings


def _sample(matrix_index: int, subject: int) -> Any:
    datasets = _WORKER["datasets"]
    if matrix_index not in datasets:
        datasets[matrix_index] = _WORKER["plan"].dataset(matrix_index)
    return datasets[matrix_index][subject]


def score_job(job: tuple[int, int, int]) -> dict[str, Any]:
    """Every method on one (matrix, subject, setting): rows, seconds per method, and for the
    figure subjects the magnitudes of two frames."""
    import torch

    from cardiomm_core.conventional import conventional_recon
    from cardiomm_core.masks import make_mask
    from cardiomm_core.metrics import evaluate
    from cardiomm_core.prompting import describe_sampling

    plan: Plan = _WORKER["plan"]
    matrix_index, subject, setting_index = job
    pattern, acceleration = plan.settings[setting_index]
    sample = _sample(matrix_index, subject)
    target = sample.scoring_target().numpy()                                           # (T, y, x)
    n_c, n_t, n_ky, n_kx = sample.kspace.shape
    mask = make_mask(pattern, acceleration, n_t, n_ky, n_kx, n_acs=plan.n_acs,
                     seed=mask_seed(plan.seed + matrix_index, subject, pattern, acceleration))
    core_mask = torch.from_numpy(np.array(mask.mask, dtype=np.float32))[None, None]   # (1,1,T,ky,kx|1)
    kspace = (sample.kspace * core_mask[0].to(torch.complex64))[None]                  # (1,C,T,ky,kx)
    rows, seconds, frames = [], {}, {}
    keep = (matrix_index == 0 and (pattern, acceleration) == plan_figure_setting(plan))
    for method in plan.methods:
        started = time.time()
        if method in ("zero_filled", "cg_sense"):
            images = conventional_recon(kspace, core_mask, method=method).images[0].numpy()
        elif method == "cs":
            from benchmarks.cs import cs_recon

            images = cs_recon(kspace[0], core_mask[0, 0], _WORKER["cs"])
        else:
            engine = _WORKER["engines"][method]
            context = sample.context.with_sampling(*describe_sampling(
                core_mask, declared_acceleration=mask.acceleration, convention=engine.prompt.mask_convention))
            images = engine.reconstruct(kspace, core_mask, context)[0]
        seconds[method] = time.time() - started
        magnitude = np.abs(np.asarray(images)).astype(np.float32)
        scores = evaluate(magnitude, target, convention=plan.convention, crop=True)
        rows.append({"method": method, "matrix": f"{plan.matrices[matrix_index][0]}x{plan.matrices[matrix_index][1]}",
                     "subject": subject, "seed": HELDOUT_SEED + matrix_index, "modality": sample.context.modality,
                     "pattern": pattern, "acceleration": acceleration, "identifier": sample.identifier,
                     **{k: float(scores[k]) for k in METRICS}})
        if keep:
            frames[method] = magnitude[[0, n_t // 2]]
    if keep:
        frames["reference"] = target[[0, n_t // 2]].astype(np.float32)
    return {"job": list(job), "rows": rows, "seconds": seconds, "frames": frames,
            "modality": sample.context.modality}


def prefill_embeddings(plan: Plan, cache_dir: str | os.PathLike[str]) -> int:
    """Write every sentence pair the checkpoints of ``plan`` will be told (held-out contexts x
    settings, in each checkpoint's style and mask convention) into the embedding cache at
    ``cache_dir``, with their real encoders; return how many sentences were written. A machine
    without the text encoder (a bare GPU machine) then scores from that cache
    (``CARDIOMM_CACHE_DIR``). Hashing encoders need no cache and are skipped."""
    import torch

    from cardiomm_core.checkpoint import read_checkpoint_meta
    from cardiomm_core.masks import make_mask
    from cardiomm_core.prompting import PromptSpec, context_sentences, describe_sampling
    from train.embeddings import cache_sentences

    count = 0
    for name, path in plan.checkpoints:
        meta = read_checkpoint_meta(path)
        if meta.text_encoder_name.startswith("hashing"):
            continue
        prompt = PromptSpec.from_dict(meta.prompt)
        sentences: set[str] = set()
        for matrix_index in range(len(plan.matrices)):
            dataset = plan.dataset(matrix_index)
            for subject in range(plan.n_subjects):
                sample = dataset[subject]
                n_c, n_t, n_ky, n_kx = sample.kspace.shape
                for pattern, acceleration in plan.settings:
                    mask = make_mask(pattern, acceleration, n_t, n_ky, n_kx, n_acs=plan.n_acs,
                                     seed=mask_seed(plan.seed + matrix_index, subject, pattern, acceleration))
                    core = torch.from_numpy(np.array(mask.mask, dtype=np.float32))[None, None]
                    context = sample.context.with_sampling(*describe_sampling(
                        core, declared_acceleration=mask.acceleration, convention=prompt.mask_convention))
                    sentences.update(context_sentences(context, prompt.style))
        cache_sentences(meta.text_encoder_name, sorted(sentences), cache_dir)
        count += len(sentences)
        logger.info("%s: %d sentences of %s in %s", name, len(sentences), meta.text_encoder_name, cache_dir)
    return count


def plan_figure_setting(plan: Plan) -> tuple[str, float]:
    return FIGURE_SETTING if FIGURE_SETTING in plan.settings else next(
        (s for s in plan.settings if s[0] != "Uniform"), plan.settings[0])


# --------------------------------------------------------------------------- driver


def _versions() -> str:
    import torch

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for module in ("sigpy", "fastmri"):
        try:
            from importlib.metadata import version

            parts.append(f"{module} {version(module)}")
        except Exception:  # noqa: BLE001 - not installed: not listed
            pass
    return ", ".join(parts)


def _machine(device: str) -> str:
    text = f"{platform.machine()}, {os.cpu_count()} CPUs"
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001
        pass
    return text


def _job_key(plan: Plan, job: tuple[int, int, int]) -> str:
    """A job's identity across runs: matrix, subject, setting and the methods scored."""
    matrix_index, subject, setting_index = job
    pattern, acceleration = plan.settings[setting_index]
    nx, ny = plan.matrices[matrix_index]
    return json.dumps([f"{nx}x{ny}", HELDOUT_SEED + matrix_index, subject, pattern, acceleration, plan.n_frames,
                       sorted(plan.methods), plan.convention])


def run(plan: Plan, workers: int, progress: bool = True, partial: Path | None = None,
        resume: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any], dict]:
    """Score every job; return (rows, mean seconds per method, figure frames per modality).

    ``partial``: a JSON-lines file where each finished job is appended as it comes (a stopped run
    keeps them); with ``resume`` the jobs already there (same matrix, subject, setting, methods)
    are taken from it instead of being scored again (the figure's jobs are always scored: their
    frames are not kept there)."""
    jobs = [(mi, s, si) for mi in range(len(plan.matrices)) for s in range(plan.n_subjects)
            for si in range(len(plan.settings))]
    rows: list[dict[str, Any]] = []
    seconds: dict[str, list[float]] = defaultdict(list)
    figures: dict[str, dict[str, np.ndarray]] = {}
    started = time.time()
    done_before: dict[str, dict[str, Any]] = {}
    if partial is not None and resume and partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a stopped run
            done_before[entry["key"]] = entry
    figure_setting = plan_figure_setting(plan)
    todo = []
    for job in jobs:
        entry = done_before.get(_job_key(plan, job))
        is_figure = job[0] == 0 and plan.settings[job[2]] == figure_setting
        if entry is not None and not is_figure:
            rows.extend(entry["rows"])
            for method, value in entry["seconds"].items():
                seconds[method].append(value)
        else:
            todo.append(job)
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        kept = [json.dumps(e) for k, e in done_before.items()] if resume else []
        partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    if progress:
        sys.stderr.write(f"[quality] {len(todo)} (subject, setting) pairs x {len(plan.methods)} methods "
                         f"({', '.join(plan.methods)}), {workers} worker process(es)"
                         f"{f'; {len(jobs) - len(todo)} taken from {partial}' if len(todo) < len(jobs) else ''}\n")

    def take(job: tuple[int, int, int], result: dict[str, Any], done: int) -> None:
        rows.extend(result["rows"])
        for method, value in result["seconds"].items():
            seconds[method].append(value)
        if result["frames"]:
            figures[result["modality"]] = result["frames"]
        if partial is not None:
            with open(partial, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": _job_key(plan, job), "rows": result["rows"],
                                         "seconds": result["seconds"]}) + "\n")
        if progress:
            elapsed = time.time() - started
            sys.stderr.write(f"[quality] {done}/{len(todo)} done ({format_duration(elapsed)}); "
                             f"ETA {format_duration(elapsed / done * (len(todo) - done))}\n")
            sys.stderr.flush()

    if not todo:
        pass
    elif workers <= 1:
        _init_worker(plan)
        for i, job in enumerate(todo):
            take(job, score_job(job), i + 1)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn" if plan.device.startswith("cuda") else "fork")
        with context.Pool(workers, initializer=_init_worker, initargs=(plan,)) as pool:
            for i, result in enumerate(pool.imap_unordered(score_job, todo, chunksize=1)):
                take(tuple(result["job"]), result, i + 1)  # type: ignore[arg-type]
    return rows, {m: float(np.mean(v)) for m, v in seconds.items()}, figures


def _parse_checkpoints(values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for text in values:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--checkpoint {text!r}: expected NAME=PATH (e.g. small=runs/bench/small.safetensors)")
        if name.strip() in CONVENTIONAL:
            raise ValueError(f"--checkpoint {text!r}: {name!r} names a conventional method")
        if not Path(path.strip()).with_suffix(".json").is_file() and not Path(path.strip() + ".json").is_file():
            raise ValueError(f"--checkpoint {text!r}: no checkpoint sidecar (.json) at {path}")
        out.append((name.strip(), path.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"--checkpoint names must differ, got {names}")
    return out


def _methods_note(checkpoints: Sequence[tuple[str, str]], cs_source: str) -> str:
    note = ("Zero-filled: SENSE combination of the zero-filled k-space. CG-SENSE: the gadgets' fallback "
            "(`cardiomm_core.conventional.conventional_recon`, regularised towards the time-averaged image for kt "
            "patterns, the low-resolution calibration image for Uniform). CS (sigpy): L1-wavelet (db4) in space + "
            f"temporal total variation, sigpy's primal-dual solver, weights from {cs_source}. ")
    for name, path in checkpoints:
        try:
            training = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8")).get("training", {})
            steps = training.get("steps")
            mixed = training.get("interpolation")
            how = (f"WiSE-FT interpolation, alpha {mixed.get('alpha')}" if isinstance(mixed, dict)
                   else f"{steps} training steps")
            note += f"{label(name)}: `{Path(path).name}` ({how}). "
        except (OSError, ValueError):
            note += f"{label(name)}: `{Path(path).name}`. "
    return note.strip()


def write_report(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any],
                 figures: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "quality.md", "json": out / "quality.json"}
    table = aggregate(rows)
    means = [{"method": k[0], "modality": k[1], "pattern": k[2], "acceleration": k[3], **v} for k, v in table.items()]
    summary = {m: mean_at_high_r(rows, m) for m in ordered_methods([r["method"] for r in rows])}
    paths["json"].write_text(json.dumps({**meta, "mean_psnr_r8_plus": summary, "means": means, "rows": rows},
                                        indent=1) + "\n", encoding="utf-8")
    write_markdown(paths["markdown"], rows, meta)
    if figures:
        # the figures' frames travel with the JSON (--merge draws the figures of several runs)
        paths["frames"] = out / "quality_frames.npz"
        np.savez_compressed(paths["frames"], **{f"{modality}|{method}": frames.astype(np.float16)
                                                for modality, by_method in figures.items()
                                                for method, frames in by_method.items()})
        try:
            drawn = write_figures(out, figures, tuple(meta["figure_setting"]))
        except ImportError as error:  # pillow missing (e.g. a bare GPU machine): frames kept, figures later
            logger.warning("no figures (%s); they are drawn by --merge from %s", error, paths["frames"])
            drawn = []
        for i, path in enumerate(drawn):
            paths[f"figure{i}"] = path
    return paths


def read_frames(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The figure frames a run saved (``quality_frames.npz``): modality -> method -> ``(2, y, x)``."""
    figures: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    if path.is_file():
        with np.load(path) as data:
            for key in data.files:
                modality, method = key.split("|", 1)
                figures[modality][method] = data[key].astype(np.float32)
    return dict(figures)


def merge(paths: Sequence[str], out: Path, command: str) -> dict[str, Path]:
    """One report from several quality.json files (rows of the same subjects and settings; a
    (method, matrix, subject, setting) scored twice keeps the last file's)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    metas = []
    figures: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        metas.append(data)
        for modality, by_method in read_frames(Path(path).with_name("quality_frames.npz")).items():
            figures[modality].update(by_method)
        for row in data["rows"]:
            rows[(row["method"], row["matrix"], row["subject"], row["pattern"], row["acceleration"])] = row
    meta = dict(metas[-1])
    for key in ("means", "rows", "mean_psnr_r8_plus"):
        meta.pop(key, None)
    meta["command"] = command
    meta["merged_from"] = [{"file": str(p), "command": m.get("command"), "machine": m.get("machine"),
                            "date": m.get("date")} for p, m in zip(paths, metas)]
    meta["methods_note"] = " ".join(dict.fromkeys(m.get("methods_note", "") for m in metas))
    matrices = sorted({row["matrix"] for row in rows.values()}, key=lambda text: [-int(v) for v in text.split("x")])
    meta["data"] = re.sub(r"matrices [0-9x, ]+?(?=, \d+ / )", "matrices " + ", ".join(matrices), meta.get("data", ""), count=1)
    timing: dict[str, float] = {}
    for m in metas:
        timing.update(m.get("seconds_per_slice") or {})
    meta["seconds_per_slice"] = timing
    return write_report(out, list(rows.values()), meta, dict(figures))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n\n")[0:1]))
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="a learned method: small, cardiosm, varnet (labelled) or any name (repeatable)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset to score (default: zero_filled,cg_sense,cs and every checkpoint)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="tiny matrices, 4 frames, 3 settings, fewer CS iterations: a small table in minutes")
    parser.add_argument("--subjects", type=int, default=3, help="subjects per matrix (cycling cine, T1, T2; default 3)")
    parser.add_argument("--matrices", default=None, help="e.g. 128x112,96x80 (default; --quick: 32x28,28x24)")
    parser.add_argument("--settings", default=None,
                        help="a subset of pattern:R settings, e.g. ktRadial:16,Uniform:8 (default: the issue's 15)")
    parser.add_argument("--convention", default="2024", choices=("2023", "2024", "2025"),
                        help="CMRxRecon normalisation of the scores (default 2024)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", help="device of the learned methods: cpu, cuda, auto")
    parser.add_argument("--resume", action="store_true",
                        help="take the jobs a stopped run left in OUT/quality.partial.jsonl instead of scoring them again")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="merge quality.json files")
    parser.add_argument("--prefill-embeddings", default=None, metavar="DIR",
                        help="only write the sentences the checkpoints will read into the embedding cache DIR "
                             "(run where the text encoder is installed; then CARDIOMM_CACHE_DIR=DIR elsewhere)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    command = "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    try:
        if args.merge:
            paths = merge(args.merge, out, command)
            sys.stderr.write(f"[quality] merged {len(args.merge)} runs -> {paths['markdown']}\n")
            return 0
        checkpoints = _parse_checkpoints(args.checkpoint)
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else \
            [*CONVENTIONAL, *(n for n, _ in checkpoints)]
        unknown = sorted(set(methods) - set(CONVENTIONAL) - {n for n, _ in checkpoints})
        if unknown:
            raise ValueError(f"--methods: {unknown} are neither conventional methods {list(CONVENTIONAL)} nor "
                             "names given by --checkpoint NAME=PATH")
        if args.matrices:
            matrices = tuple(tuple(int(v) for v in m.lower().split("x")) for m in args.matrices.split(","))
        else:
            matrices = QUICK_MATRICES if args.quick else MATRICES
        if any(len(m) != 2 or min(m) < 8 for m in matrices):
            raise ValueError(f"--matrices: expected NXxNY pairs of at least 8, got {args.matrices!r}")
        settings = QUICK_SETTINGS if args.quick else SETTINGS
        if args.settings:
            settings = tuple((p.split(":")[0].strip(), float(p.split(":")[1])) for p in args.settings.split(","))
            from cardiomm_core.masks import MASK_PATTERNS

            bad = [p for p, _ in settings if p not in MASK_PATTERNS]
            if bad:
                raise ValueError(f"--settings: unknown pattern(s) {bad}; known: {list(MASK_PATTERNS)}")
        if args.subjects < 1:
            raise ValueError(f"--subjects must be >= 1, got {args.subjects}")
    except (ValueError, IndexError) as error:
        sys.stderr.write(f"quality: error: {error}\n")
        return 2
    if args.quick:  # tiny grids: the mask generators say each time that R is approximate there
        logging.getLogger("cardiomm_core.masks").setLevel(logging.ERROR)
    plan = Plan(matrices=matrices, n_subjects=args.subjects, n_frames=4 if args.quick else 12,
                n_coils=5 if args.quick else 10, n_virtual=4 if args.quick else 8,
                settings=settings, methods=tuple(methods),
                checkpoints=tuple((n, p) for n, p in checkpoints if n in methods), convention=args.convention,
                device=args.device, threads=args.threads, n_acs=6 if args.quick else None,
                cs_max_iter=20 if args.quick else None)
    if args.prefill_embeddings:
        count = prefill_embeddings(plan, args.prefill_embeddings)
        sys.stderr.write(f"[quality] {count} sentences in the embedding cache {args.prefill_embeddings}\n")
        return 0
    from benchmarks.cs import load_tuned_settings

    cs_settings, cs_source = load_tuned_settings()
    started = time.time()
    rows, seconds, figures = run(plan, max(1, args.workers), partial=out / "quality.partial.jsonl",
                                 resume=args.resume)
    meta = {
        "command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(args.device), "versions": _versions(), "device": args.device,
        "data": (f"held-out synthetic subjects (seeds {HELDOUT_SEED}+, {args.subjects} per matrix, cycling cine / "
                 f"T1 / T2 mapping), matrices {', '.join(f'{a}x{b}' for a, b in matrices)}, "
                 f"{'12 / 9 / 3' if plan.n_frames == 12 else plan.n_frames} frames, "
                 f"{plan.n_coils} coils prewhitened and compressed to {plan.n_virtual} virtual coils (the chain's "
                 "preparation), noise-free RSS reference"),
        "scores": (f"PSNR / SSIM / NMSE per frame after the CMRxRecon {args.convention} normalisation and the "
                   "challenge's central crop (cardiomm_core.metrics.evaluate); best per cell in bold"),
        "methods_note": _methods_note(checkpoints, cs_source), "cs_settings": cs_settings.to_dict(),
        "figure_setting": list(plan_figure_setting(plan)), "seconds_per_slice": seconds,
        "wall_seconds": round(time.time() - started, 1), "quick": bool(args.quick),
    }
    paths = write_report(out, rows, meta, figures)
    sys.stderr.write(f"[quality] {len(rows)} scores in {format_duration(time.time() - started)} -> "
                     f"{', '.join(str(p) for p in paths.values())}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

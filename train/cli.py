"""Console entry points: ``cardiomm-train``, ``cardiomm-export``, ``cardiomm-eval``.

``cardiomm-train --config CONFIG.yaml [--override key=value ...] [--resume [CKPT] | --overwrite]``
    Train (one process, or one per GPU under ``torchrun --nproc_per_node N -m train.cli ...`` /
    ``torchrun ... $(which cardiomm-train) ...``). ``--resume`` without a value continues from the
    run folder's latest checkpoint when there is one. A run folder that holds an earlier run
    (log.csv, checkpoints) is refused without ``--resume`` or ``--overwrite`` (which deletes them).
``cardiomm-export TRAIN_CKPT OUT[.safetensors]``
    Training checkpoint (a ``checkpoints/step_*`` folder or a run folder) -> inference checkpoint.
``cardiomm-eval --checkpoint PATH --data CONFIG_OR_SPEC --out DIR [--accelerations ...] [--patterns ...]``
    CardioMM vs CG-SENSE vs zero-filling, CSV + markdown + PNG (``train.evaluate``).

Configuration and data errors are reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _setup_logging(level: str, rank: int = 0) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO) if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _fail(prog: str, error: Exception) -> int:
    sys.stderr.write(f"{prog}: error: {error}\n")
    return 2


def _parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """An argument parser whose ``epilog`` (the examples) keeps its line breaks."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``cardiomm-train``."""
    parser = _parser(
        "cardiomm-train", "Train CardioMM (plain torch; torchrun for DDP).",
        "examples (a small CPU run, continued later; two GPUs):\n"
        "  cardiomm-train --config train/configs/synthetic_small_cpu.yaml --override train.max_steps=100\n"
        "  cardiomm-train --config train/configs/synthetic_small_cpu.yaml --resume\n"
        "  torchrun --nproc_per_node 2 -m train.cli --config CONFIG.yaml")
    parser.add_argument("--config", required=True, help="YAML config (see train/configs/)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config field, e.g. train.max_steps=100 or data.train.0.n_subjects=8 (repeatable)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                        help="continue from CKPT, or without a value from the run folder's latest checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in a run folder that holds an earlier run (deletes its log.csv, "
                             "tensorboard/ and checkpoints/)")
    parser.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                        help="checkpoint and exit after N optimiser steps in total (the schedule keeps its length)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    from .config_io import load_config
    from .run_dir import check_run_dir
    from .schedule import DistInfo
    from .trainer import Trainer

    info = DistInfo.from_env()
    _setup_logging(args.log_level, info.rank)
    try:
        cfg = load_config(args.config, args.override)
        check_run_dir(cfg.run_dir, args.resume, args.overwrite)  # before the model and the data are built
        trainer = Trainer(cfg, dist_info=info)
    except (ValueError, FileNotFoundError) as error:
        return _fail("cardiomm-train", error)
    import signal

    def _stop(signum: int, frame: object) -> None:  # SIGTERM (timeout, a scheduler): stop cleanly
        sys.stderr.write("cardiomm-train: SIGTERM: stopping after the current step (checkpoint, no validation)\n")
        trainer.request_stop()

    try:
        signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread
        pass
    try:
        result = trainer.fit(resume=args.resume, stop_after_steps=args.stop_after_steps, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as error:
        return _fail("cardiomm-train", error)
    finally:
        trainer.close()
    if info.is_main:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.val_metrics.items())
        sys.stderr.write(f"cardiomm-train: step {result.step}, epoch {result.epoch}, "
                         f"{'finished' if result.finished else 'stopped'}; checkpoint {result.checkpoint}"
                         f"{'; validation ' + metrics if metrics else ''}\n")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """``cardiomm-export``."""
    parser = _parser("cardiomm-export", "Training checkpoint -> CardioMM inference checkpoint.",
                     "example (a run folder's latest checkpoint, then a replay with it):\n"
                     "  cardiomm-export runs/synthetic_small_cpu model.safetensors\n"
                     "  cardiomm-replay scan.h5 --chain chains/cardiomm_cine_python.xml "
                     "--checkpoint model.safetensors -o images.h5")
    parser.add_argument("train_checkpoint", help="a checkpoints/step_* folder, or a run folder (its latest)")
    parser.add_argument("out", help="output stem or .safetensors name (a .json sidecar is written beside it)")
    parser.add_argument("--description", default=None, help="replace the run's description")
    parser.add_argument("--storage-dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="how the weights are kept on disk (half precision halves the file)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    from .export import export_checkpoint

    try:
        path = export_checkpoint(args.train_checkpoint, args.out, description=args.description,
                                 storage_dtype=args.storage_dtype)
    except (ValueError, FileNotFoundError) as error:
        return _fail("cardiomm-export", error)
    sys.stderr.write(f"cardiomm-export: wrote {path} and {path.with_suffix('.json')}\n")
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``cardiomm-eval``."""
    from .evaluate import DEFAULT_ACCELERATIONS, DEFAULT_METHODS, DEFAULT_PATTERNS, METHODS

    parser = _parser("cardiomm-eval", "Score CardioMM against CG-SENSE and zero-filling (CMRxRecon metrics).",
                     "examples (held-out phantoms; a simulated scan, scored against the ground truth stored in it):\n"
                     "  cardiomm-eval --checkpoint packaged --data \"synthetic:n_subjects=6,seed=424242\" -o eval/\n"
                     "  cardiomm-eval --data ismrmrd:scan.h5 -o eval_scan/")
    parser.add_argument("--checkpoint", default="packaged",
                        help="inference checkpoint ('packaged' for the packaged demo model, 'none' for references only)")
    parser.add_argument("--data", required=True,
                        help="training YAML (its data.val), YAML with 'sources:', or a spec such as "
                             "synthetic:n_subjects=6,seed=1000,matrix=128x112")
    parser.add_argument("-o", "--out", required=True,
                        help="output folder (per_slice.csv is written row by row as the slices are scored)")
    parser.add_argument("--accelerations", type=float, nargs="+", default=list(DEFAULT_ACCELERATIONS))
    parser.add_argument("--patterns", nargs="+", default=list(DEFAULT_PATTERNS))
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument("--convention", default="2024", choices=["2023", "2024", "2025"],
                        help="CMRxRecon normalisation of each image before scoring")
    parser.add_argument("--no-crop", action="store_true", help="score whole images, not the challenge's central crop")
    parser.add_argument("--n-acs", type=int, default=None, help="calibration lines (default: each family's)")
    parser.add_argument("--masks", default=None, choices=["project", "official"],
                        help="mask generators: the project's or the official CardioMM recipes (20 calibration lines; "
                             "the paper's protocol: --masks official --patterns Uniform ktGaussian ktRadial "
                             "--accelerations 8 16 24); default: the checkpoint's mask convention")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ktGaussian masks")
    parser.add_argument("--max-items", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--title", default="")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)

    from cardiomm_core.packaged import resolve_checkpoint

    from .evaluate import REPORT_FILES, RowWriter, check_out_dir, evaluate_checkpoint, load_eval_data, write_report

    rows: list[Any] = []
    title = ""
    try:
        out = check_out_dir(args.out)  # before any work: a file in the way or an unwritable folder
        methods = list(args.methods)
        checkpoint = resolve_checkpoint(args.checkpoint)
        if checkpoint is None and "cardiomm" in methods:
            if args.checkpoint.strip().lower() != "none":
                raise ValueError("no packaged CardioMM model is installed; pass --checkpoint PATH or 'none'")
            methods.remove("cardiomm")
        dataset, description = load_eval_data(args.data)
        title = args.title or f"{Path(str(checkpoint)).name if checkpoint else 'references'} on {description}"
        with RowWriter(out / REPORT_FILES["per_slice"]) as per_slice:
            def on_row(row) -> None:  # noqa: ANN001 - EvalRow
                rows.append(row)
                per_slice(row)

            evaluate_checkpoint(checkpoint, dataset, accelerations=args.accelerations, patterns=args.patterns,
                                methods=methods, convention=args.convention, crop=not args.no_crop,
                                n_acs=args.n_acs, seed=args.seed, device=args.device, max_items=args.max_items,
                                progress=True, on_row=on_row, masks=args.masks)
        paths = write_report(out, rows, title)
    except (ValueError, FileNotFoundError) as error:
        return _fail("cardiomm-eval", error)
    except KeyboardInterrupt:
        if rows:
            paths = write_report(args.out, rows, f"{title} (stopped: partial, {len(rows)} rows)")
            sys.stderr.write(f"cardiomm-eval: stopped; the {len(rows)} rows scored so far are in "
                             f"{', '.join(str(p) for p in paths.values())}\n")
        else:
            sys.stderr.write("cardiomm-eval: stopped before the first row was scored\n")
        return 130
    sys.stdout.write(paths["markdown"].read_text(encoding="utf-8"))
    sys.stderr.write(f"cardiomm-eval: wrote {', '.join(str(p) for p in paths.values())}\n")
    return 0


if __name__ == "__main__":  # python -m train.cli (train); torchrun -m train.cli ...
    sys.exit(train_main())

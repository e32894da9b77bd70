"""Export and summarise the runs of ``benchmarks/gpu_train.sh`` (one process, one torch import).

    python benchmarks/gpu_train_report.py --work WORK --out OUT --run NAME:RC:SECONDS [--run ...]

For each run folder ``WORK/NAME`` (a cardiomm-train run): exports its newest checkpoint with
``train.export.export_checkpoint`` (float16 storage) to ``OUT/NAME.safetensors`` + ``.json``, or,
when the pairs would not fit in the 8 files that come back from the device machine (more than 3
runs), to one ``OUT/NAME.tar`` holding both; an export over 16 MiB is moved to ``WORK`` and
reported. Then writes ``OUT/summary.md`` (the table printed last) and appends it to
``OUT/train_log.txt``. A run that failed or left no checkpoint is a row that says so; nothing here
stops the other runs' exports.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_FILES = 8


def _read_log(run_dir: Path) -> dict[str, Any]:
    """Steps, samples/s and the last validation of a run's log.csv."""
    facts: dict[str, Any] = {"step": None, "samples_per_s": None, "val_psnr": None, "val_ssim": None,
                             "val_step": None, "first_val_psnr": None, "first_val_ssim": None}
    path = run_dir / "log.csv"
    if not path.is_file():
        return facts
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    train = [r for r in rows if r.get("kind") == "train" and r.get("step")]
    val = [r for r in rows if r.get("kind") == "val" and r.get("psnr")]
    if train:
        facts["step"] = int(train[-1]["step"])
        per_step = [float(r["sec_per_step"]) for r in train if r.get("sec_per_step")]
        steps = [int(r["step"]) for r in train]
        if per_step and len(per_step) == len(steps):
            # the log's windows: steps between rows x seconds per step in that window
            spans = [steps[0]] + [b - a for a, b in zip(steps, steps[1:])]
            seconds = sum(n * s for n, s in zip(spans, per_step))
            facts["seconds_per_step"] = seconds / max(sum(spans), 1)
            waits = [float(r["data_wait"]) if r.get("data_wait") else None for r in train]
            if all(w is not None for w in waits):
                facts["data_wait_share"] = sum(n * w for n, w in zip(spans, waits)) / max(seconds, 1e-9)
    if val:
        facts["val_psnr"] = float(val[-1]["psnr"])
        facts["val_ssim"] = float(val[-1]["ssim"])
        facts["val_step"] = int(val[-1]["step"])
        facts["first_val_psnr"] = float(val[0]["psnr"])
        facts["first_val_ssim"] = float(val[0]["ssim"])
    return facts


def _checkpoint_facts(run_dir: Path) -> tuple[int | None, int]:
    """(step of the newest checkpoint or None, examples per optimiser step)."""
    latest = run_dir / "checkpoints" / "latest"
    try:
        name = latest.read_text(encoding="utf-8").strip()
        meta = json.loads((run_dir / "checkpoints" / name / "state.json").read_text(encoding="utf-8"))
        sampler = meta.get("sampler", {})
        per_step = int(sampler.get("batch_size", 1)) * int(sampler.get("grad_accum", 1)) * \
            int(sampler.get("world_size", 1))
        return int(meta["step"]), per_step
    except (OSError, ValueError, KeyError):
        return None, 1


def _export(run_dir: Path, name: str, out: Path, work: Path, as_tar: bool) -> tuple[str, str]:
    """(files written, note)."""
    from train.checkpointing import find_latest
    from train.export import export_checkpoint

    latest = find_latest(run_dir)
    if latest is None:
        return "", "no checkpoint"
    staging = out if not as_tar else work / f"{name}_export"
    staging.mkdir(parents=True, exist_ok=True)
    weights = export_checkpoint(latest, staging / f"{name}.safetensors", storage_dtype="float16")
    sidecar = weights.with_suffix(".json")
    if as_tar:
        archive = out / f"{name}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(weights, arcname=weights.name)
            tar.add(sidecar, arcname=sidecar.name)
        files = [archive]
    else:
        files = [weights, sidecar]
    too_big = [f for f in files if f.stat().st_size >= MAX_FILE_BYTES]
    if too_big:
        for f in files:
            shutil.move(str(f), str(work / f.name))
        sizes = ", ".join(f"{f.name} {f.stat().st_size / 2**20:.1f} MiB" for f in too_big)
        return "", f"export over 16 MiB kept on the machine ({sizes})"
    return " ".join(f.name for f in files), f"from {latest.name}"


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run", action="append", default=[], metavar="NAME:RC:SECONDS")
    parser.add_argument("--budget", type=float, default=None, help="train.max_seconds every run was given")
    parser.add_argument("--device", default="")
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    runs = []
    for text in args.run:
        name, rc, seconds = text.rsplit(":", 2)
        runs.append((name, int(rc), float(seconds)))
    as_tar = 2 + 2 * len(runs) > MAX_FILES
    rows = []
    for name, rc, seconds in runs:
        run_dir = work / name
        facts = _read_log(run_dir)
        try:
            files, note = _export(run_dir, name, out, work, as_tar)
        except Exception as error:  # one run's export must not stop the others'
            traceback.print_exc(file=sys.stderr)
            files, note = "", f"export failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        per_step = facts.get("seconds_per_step")
        checkpoint_step, examples = _checkpoint_facts(run_dir)
        samples = examples / per_step if per_step else None
        step = checkpoint_step if checkpoint_step is not None else facts["step"]
        wait = facts.get("data_wait_share")
        status = "ok" if rc == 0 else ("killed (timeout)" if rc in (124, 137) else f"exit {rc}")
        rows.append((name, status, step, samples, wait, facts["first_val_psnr"], facts["val_psnr"],
                     facts["first_val_ssim"], facts["val_ssim"], seconds, files or "-", note))
    budget = f"{args.budget:g} s each" if args.budget else "as configured"
    notes = ["", "steps: of the newest checkpoint (exported); samples/s and data wait (the share of the "
             "training time spent waiting for the loader: phantoms not simulated fast enough) from log.csv."]
    lines = [f"# gpu_train summary ({time.strftime('%Y-%m-%d %H:%M:%S')}, device {args.device or '?'}, "
             f"train.max_seconds {budget})", "",
             "| run | status | steps | samples/s | data wait | val PSNR first -> final | val SSIM first -> final "
             "| wall s | files | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, status, step, samples, wait, p0, p1, s0, s1, seconds, files, note in rows:
        waiting = f"{100 * wait:.0f} %" if wait is not None else "-"
        lines.append(f"| {name} | {status} | {_fmt(step, 'd')} | {_fmt(samples, '.2f')} | {waiting} | "
                     f"{_fmt(p0, '.2f')} -> {_fmt(p1, '.2f')} | {_fmt(s0, '.4f')} -> {_fmt(s1, '.4f')} | "
                     f"{seconds:.0f} | {files} | {note} |")
    lines += notes
    if as_tar:
        lines += ["", "Each NAME.tar holds NAME.safetensors + NAME.json (tar xf NAME.tar)."]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text, encoding="utf-8")
    with open(out / "train_log.txt", "a", encoding="utf-8") as handle:
        handle.write("\n" + text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

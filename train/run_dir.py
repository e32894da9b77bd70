"""A training run's folder: what an earlier run left there, and the log a run writes into it.

``cardiomm-train`` refuses to write a fresh run over an earlier one (:func:`check_run_dir`) unless
told ``--resume`` or ``--overwrite`` (:func:`clear_run_dir`). :class:`RunLog` writes ``log.csv``
(always), TensorBoard events (when installed) and the progress lines on stderr, on rank 0 only.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .checkpointing import list_checkpoints

logger = logging.getLogger(__name__)

__all__ = ["CSV_FIELDS", "RunLog", "check_run_dir", "clear_run_dir", "format_seconds", "previous_run"]


#: What a run leaves in its run folder (besides checkpoints/): a fresh run replaces these.
_RUN_FILES = ("log.csv", "tensorboard")


def previous_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """What an earlier run left in ``run_dir``: names among log.csv, tensorboard, checkpoints
    (a checkpoints/ folder with step folders or a ``latest`` pointer); [] for none."""
    root = Path(run_dir)
    found = [name for name in _RUN_FILES if (root / name).exists()]
    ckpts = root / "checkpoints"
    if list_checkpoints(root) or (ckpts / "latest").exists():
        found.append("checkpoints")
    return found


def check_run_dir(run_dir: str | os.PathLike[str], resume: bool | str | os.PathLike[str], overwrite: bool) -> None:
    """ValueError (one line) when a fresh run (no ``resume``) would write into the folder of an
    earlier run without ``overwrite``: its log.csv would be truncated and its checkpoints mixed
    with the new ones."""
    if resume and overwrite:
        raise ValueError("give --resume (continue the run) or --overwrite (start it again), not both")
    if resume or overwrite:
        return
    found = previous_run(run_dir)
    if found:
        raise ValueError(f"run folder {str(run_dir)!r} holds an earlier run ({', '.join(found)}); give --resume "
                         "to continue it, --overwrite to start it again (its log and checkpoints are deleted), "
                         "or another run_dir")


def clear_run_dir(run_dir: str | os.PathLike[str]) -> None:
    """Delete what an earlier run left in ``run_dir`` (log.csv, tensorboard/, checkpoints/); other files stay."""
    import shutil

    root = Path(run_dir)
    for name in (*_RUN_FILES, "checkpoints"):
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


CSV_FIELDS = ("kind", "step", "epoch", "loss", "l1", "ssim", "psnr", "nmse", "lr", "grad_norm",
              "sec_per_step", "time", "data_wait")


class RunLog:
    """CSV (always), TensorBoard (when installed), progress lines on stderr; rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, progress: bool, resume_step: int | None):
        self.enabled = enabled
        self.progress = progress and enabled
        self.path = run_dir / "log.csv"
        self.writer: Any = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            # keep what the interrupted run logged up to its checkpoint; later rows are redone
            with open(self.path, newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle)
                        if (r.get("step") or "").isdigit() and int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                logger.info("tensorboard is not installed; logging to %s only", self.path)

    def row(self, **values: Any) -> None:
        if not self.enabled:
            return
        values.setdefault("time", f"{time.time():.1f}")
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=CSV_FIELDS).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        if self.writer is not None:
            kind = values["kind"]
            for key in ("loss", "l1", "ssim", "psnr", "nmse", "lr", "grad_norm"):
                if isinstance(values.get(key), (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", values[key], int(values["step"]))

    def line(self, text: str) -> None:
        if self.progress:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_seconds(seconds: float) -> str:
    """``seconds`` as ``1h05m`` (an hour or more) or ``4m07s``, for the progress lines."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"

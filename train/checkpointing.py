"""Training-state checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``<run_dir>/checkpoints/step_<8 digits>/`` holding

``state.safetensors``
    ``model.<name>`` (the state dict), ``optim.<param index>.<key>`` (AdamW's per-parameter
    tensors, flattened), ``rng.torch`` / ``rng.cuda.<i>`` (uint8 generator states),
    ``rng.numpy.keys`` (the legacy MT19937 key, int64);
``state.json``
    ``{"format": "cardiomm-train-state", "format_version": 1, "step", "epoch", "position",
    "config", "architecture", "text_encoder", "normalisation", "optimizer": {"param_groups",
    "scalars"}, "scheduler", "rng": {"python", "numpy"}, "sampler", "metrics", "created",
    "tensors_sha256"}``.

It is written into a hidden temporary folder beside the final one and renamed into place
(``os.replace`` of a folder is atomic on POSIX), then ``checkpoints/latest`` is rewritten
(temporary file + rename) to name it. A process killed at any moment leaves either the previous
checkpoint or the new one, never half of one. Reading checks the tensors' sha256 against the JSON
and never unpickles (safetensors + json only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from cardiomm_core.checkpoint import atomic_write
from cardiomm_core.files import default_dir_mode

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FORMAT",
    "TrainingCheckpoint",
    "checkpoint_dir",
    "find_latest",
    "flatten_optimizer_state",
    "list_checkpoints",
    "prune_checkpoints",
    "read_training_checkpoint",
    "unflatten_optimizer_state",
    "write_training_checkpoint",
]

STATE_FORMAT = "cardiomm-train-state"
STATE_FORMAT_VERSION = 1
TENSORS_FILE = "state.safetensors"
META_FILE = "state.json"
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class TrainingCheckpoint:
    """A training checkpoint read back: ``tensors`` (name -> CPU tensor) and ``meta`` (the JSON)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's state dict (``model.`` prefix removed)."""
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}


def checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``torch.optim`` state dict -> (tensors ``optim.<index>.<key>``, JSON part).

    The JSON part holds ``param_groups`` (tuples become lists) and the non-tensor per-parameter
    values (``scalars``).
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{int(index)}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(int(index)), {})[key] = value
    groups = json.loads(json.dumps(state_dict["param_groups"]))
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (``betas`` back to a tuple)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        for key in ("betas",):
            if isinstance(group.get(key), list):
                group[key] = tuple(group[key])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def write_training_checkpoint(run_dir: str | os.PathLike[str], step: int, tensors: Mapping[str, torch.Tensor],
                              meta: Mapping[str, Any]) -> Path:
    """Write a checkpoint folder for ``step`` atomically and point ``latest`` at it; return the folder.

    ``tensors``: name -> tensor (copied to contiguous CPU tensors); ``meta``: JSON-serialisable.
    An existing folder of the same step is replaced (an epoch-end checkpoint supersedes a periodic
    one of the same step).
    """
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{int(step):08d}"
    blob = safetensors_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                            metadata={"format": STATE_FORMAT})
    full_meta = dict(meta)
    full_meta.update({"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "step": int(step),
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "tensors_sha256": hashlib.sha256(blob).hexdigest()})
    text = json.dumps(full_meta, indent=1, allow_nan=True) + "\n"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        os.chmod(tmp, default_dir_mode())  # mkdtemp's 0700 would outlive the rename: respect the umask
        _fsync_write(tmp / TENSORS_FILE, blob)
        _fsync_write(tmp / META_FILE, text.encode("utf-8"))
        if final.exists():
            old = root / f".{final.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(root / LATEST_FILE, (final.name + "\n").encode("utf-8"))
    logger.info("saved training checkpoint %s", final)
    return final


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint folders of a run, oldest step first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def prune_checkpoints(run_dir: str | os.PathLike[str], keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoint folders (never the one ``latest`` names)."""
    folders = list_checkpoints(run_dir)
    latest = find_latest(run_dir)
    for folder in folders[:-keep_last] if keep_last > 0 else folders:
        if latest is not None and folder.resolve() == latest.resolve():
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _is_complete(folder: Path) -> bool:
    return (folder / TENSORS_FILE).is_file() and (folder / META_FILE).is_file()


def find_latest(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder of a run (``latest``, else the highest step), or None."""
    root = checkpoint_dir(run_dir)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if _STEP_DIR.match(name) and _is_complete(root / name):
            return root / name
    complete = [p for p in list_checkpoints(run_dir) if _is_complete(p)]
    return complete[-1] if complete else None


def read_training_checkpoint(path: str | os.PathLike[str]) -> TrainingCheckpoint:
    """Read a checkpoint folder (or a run folder: its latest checkpoint, or a ``state.json`` /
    ``state.safetensors`` file): safetensors + JSON, hash checked, never unpickled.

    Raises FileNotFoundError when there is no checkpoint, ValueError for a file that is not one.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not (path / META_FILE).is_file():
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"no training checkpoint in {path} (expected {META_FILE} + {TENSORS_FILE}, "
                                    f"or a run folder with checkpoints/step_*)")
        path = latest
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path / META_FILE} is not readable JSON: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path / META_FILE} is not a CardioMM training checkpoint (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {STATE_FORMAT!r})")
    if int(meta.get("format_version", 0)) > STATE_FORMAT_VERSION:
        raise ValueError(f"{path / META_FILE} has format_version {meta.get('format_version')}, newer than "
                         f"this trainer reads ({STATE_FORMAT_VERSION})")
    blob = (path / TENSORS_FILE).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("tensors_sha256"):
        raise ValueError(f"{path / TENSORS_FILE} does not match {META_FILE} (sha256 {digest[:12]} != "
                         f"{str(meta.get('tensors_sha256'))[:12]}): truncated or mixed-up checkpoint")
    try:
        tensors = safetensors_load(blob)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"cannot read {path / TENSORS_FILE} as safetensors: {error}") from error
    return TrainingCheckpoint(path, tensors, meta)

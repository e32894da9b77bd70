"""CardioMM checkpoints: weights in safetensors, everything else in a JSON sidecar.

A checkpoint is a pair of files with one stem::

    <stem>.safetensors   the state dict (tensors only; never a pickle)
    <stem>.json          {"format": "cardiomm-checkpoint", "format_version": 1,
                          "architecture": CardioMMConfig.to_dict(),
                          "text_encoder": {"name": ..., "dim": ...},
                          "normalisation": {...}, "training": {...},
                          "prompt": {"style": ..., "mask_convention": ..., "acceleration": ...},
                          "cardiomm_version": ..., "created": ISO-8601 UTC,
                          "weights_file": "<stem>.safetensors", "weights_sha256": ...}

The architecture is the project's ``CardioMMConfig`` unless it carries a ``"kind"``:
``"official"`` is an ``OfficialConfig`` (the authors' network, ``cardiomm_core.official``) and
``"varnet"`` a ``VarNetConfig`` (fastMRI's E2E-VarNet, a benchmark peer, ``cardiomm_core.varnet``;
loading one needs the fastmri package); sidecars written before that key existed are project
models. The CardioSM ablation is a project model with ``"context": "none"``. Tensors that alias one another in the model
(the official network shares one PReLU among 253 keys) are stored once, under the first name, and
shared again on load.

The architecture lives beside the weights, so loading builds the right model and a mismatch is
reported by tensor name before anything is copied. Loading never unpickles: a pickle or a
``torch.save`` archive (``.pt``, ``.ckpt``, or one renamed ``.safetensors``) is refused, and
``torch.load`` is never called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from cardiomm_core import __version__ as CARDIOMM_VERSION
from cardiomm_core.files import default_file_mode
from cardiomm_core.model import CardioMM, CardioMMConfig
from cardiomm_core.official import OFFICIAL_KIND, OfficialCardioMM, OfficialConfig
from cardiomm_core.prompting import PromptSpec
from cardiomm_core.text import canonical_encoder_name
from cardiomm_core.varnet import VARNET_KIND, VarNetConfig, VarNetRecon

logger = logging.getLogger(__name__)

FORMAT_NAME = "cardiomm-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"
#: how many names each section of a mismatch report lists before "... and N more"
_MAX_LISTED = 25


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint's JSON sidecar says, parsed and checked."""

    architecture: CardioMMConfig | OfficialConfig | VarNetConfig
    text_encoder_name: str
    text_encoder_dim: int
    normalisation: dict[str, Any]
    training: dict[str, Any]
    format_version: int
    cardiomm_version: str
    weights_sha256: str
    created: str = ""
    weights_path: Path | None = field(default=None, compare=False)
    storage_dtype: str = "float32"
    #: how the model is spoken to (``cardiomm_core.prompting.PromptSpec.to_dict()``); a sidecar
    #: without a "prompt" section gets the project defaults
    prompt: dict[str, Any] = field(default_factory=lambda: PromptSpec().to_dict())


#: dtypes floating-point weights may be stored in (the model computes in float32 regardless).
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
}


# --------------------------------------------------------------------------------------------
# paths and file sniffing
# --------------------------------------------------------------------------------------------


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights path, JSON path) for ``path`` given as the stem, the .safetensors or the .json."""
    p = Path(path).expanduser()
    if p.name.endswith(WEIGHTS_SUFFIX) or p.name.endswith(META_SUFFIX):
        stem = p.with_suffix("")
    else:
        stem = p
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + META_SUFFIX)


def _describe_non_safetensors(head: bytes) -> str | None:
    """Why ``head`` (the first bytes of a file) is not a safetensors file; None if it may be one."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the torch.save format of .pt/.pth/.ckpt files), which holds a pickle"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle (torch.save legacy format or pickle.dump)"
    if len(head) < 9:
        return "too short to be a safetensors file"
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len == 0 or header_len > 100_000_000 or head[8:9] != b"{":
        return "not a safetensors file (no JSON header after the 8-byte length)"
    return None


def _refuse_unless_safetensors(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(16)
    reason = _describe_non_safetensors(head)
    if reason is not None:
        raise ValueError(
            f"refusing to load {path}: it is {reason}. CardioMM checkpoints are safetensors weights "
            f"plus a JSON sidecar and are never unpickled (unpickling can run arbitrary code); "
            f"convert a trusted state dict with cardiomm_core.checkpoint.save_checkpoint"
        )


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename.

    The file gets the mode a plain ``open()`` would give it (``0o666 & ~umask``), not mkstemp's 0600.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp's 0600 would outlive the rename: respect the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


#: Every network a checkpoint can hold.
Network = CardioMM | OfficialCardioMM | VarNetRecon
NETWORK_CLASSES = (CardioMM, OfficialCardioMM, VarNetRecon)


def architecture_from_dict(values: Any) -> CardioMMConfig | OfficialConfig | VarNetConfig:
    """The config a sidecar's "architecture" describes: by its ``kind`` ("official", "varnet"),
    the project's CardioMMConfig when it has none. ValueError for an unknown kind or a bad field."""
    if isinstance(values, Mapping) and "kind" in values:
        if values["kind"] == OFFICIAL_KIND:
            return OfficialConfig.from_dict(values)
        if values["kind"] == VARNET_KIND:
            return VarNetConfig.from_dict(values)
        raise ValueError(f"unknown architecture kind {values['kind']!r} "
                         f"(known: {OFFICIAL_KIND!r}, {VARNET_KIND!r}, or no kind)")
    return CardioMMConfig.from_dict(values)


def build_network(config: CardioMMConfig | OfficialConfig | VarNetConfig) -> Network:
    """The (untrained) network of an architecture config."""
    if isinstance(config, OfficialConfig):
        return OfficialCardioMM(config)
    if isinstance(config, VarNetConfig):
        return VarNetRecon(config)
    return CardioMM(config)



def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Identity of the memory a tensor views: equal for aliases of one parameter."""
    return (tensor.device.type, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
            tuple(tensor.shape), tuple(tensor.stride()))


def _alias_groups(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Groups (first name first) of state-dict keys that view the same memory; singletons omitted."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault(_storage_key(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _json_section(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a dict (JSON object) or None, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serialisable (str keys; str/number/bool/None/list/dict values): {exc}") from exc


# --------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Network,
    *,
    text_encoder_name: str,
    text_encoder_dim: int,
    normalisation: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    storage_dtype: str = "float32",
    prompt: Mapping[str, Any] | PromptSpec | None = None,
) -> Path:
    """Write ``model`` as ``<stem>.safetensors`` + ``<stem>.json``; return the .safetensors path.

    ``path`` may be the stem or either file name. Both files are written to temporary files in
    the same folder and renamed into place (weights first), so a reader never sees half a file;
    a reader that catches the pair between the two renames sees a hash mismatch, not wrong weights.

    Args:
        model: the network (CardioMM, OfficialCardioMM or VarNetRecon); its ``config`` is stored as
            the architecture.
        text_encoder_name: the encoder the model was trained with (``TextEncoder.name``; aliases
            such as "minilm" are stored in canonical form, "minilm-l6-v2").
        text_encoder_dim: its embedding size; must equal ``model.config.text_dim``.
        normalisation: how inputs were scaled in training (JSON object), e.g. {"kind": "max_abs"}.
        training: free-form provenance (description, data, steps, ...), a JSON object.
        storage_dtype: "float32" (default, exact), or "float16" / "bfloat16" to halve the file
            (floating-point tensors are rounded on save and cast back to float32 on load; the
            packaged demo model uses float16 to stay a few MB).
        prompt: how the model is spoken to (``cardiomm_core.prompting.PromptSpec`` or its dict:
            ``style`` "project"/"official", ``mask_convention`` "project"/"official",
            ``acceleration`` "nominal"); None for the project defaults. Always written in full.

    Raises:
        ValueError: wrong model type, an encoder dim that does not fit the model, a section that is
            not JSON-serialisable.
    """
    if not isinstance(model, NETWORK_CLASSES):
        raise ValueError(f"model must be a CardioMM, OfficialCardioMM or VarNetRecon, got {type(model).__name__}")
    encoder_name = canonical_encoder_name(text_encoder_name)
    if isinstance(text_encoder_dim, bool) or not isinstance(text_encoder_dim, int) or text_encoder_dim < 1:
        raise ValueError(f"text_encoder_dim must be a positive integer, got {text_encoder_dim!r}")
    if text_encoder_dim != model.config.text_dim:
        raise ValueError(
            f"text_encoder_dim={text_encoder_dim} does not match the model's text_dim={model.config.text_dim}"
        )
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    norm_section = _json_section("normalisation", normalisation)
    training_section = _json_section("training", training)
    prompt_section = PromptSpec.from_dict(prompt).to_dict()

    weights_path, meta_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    aliases = {name for group in _alias_groups(state) for name in group[1:]}
    for name, tensor in state.items():
        if name in aliases:
            continue  # stored once under the group's first name; load_checkpoint shares it again
        # own, contiguous CPU copies: safetensors refuses shared or strided storage
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(STORAGE_DTYPES[storage_dtype])
        tensors[name] = tensor.contiguous().clone()
    blob = _safetensors_save(tensors, metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    digest = _sha256_bytes(blob)

    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": model.config.to_dict(),
        "text_encoder": {"name": encoder_name, "dim": int(text_encoder_dim)},
        "normalisation": norm_section,
        "training": training_section,
        "prompt": prompt_section,
        "cardiomm_version": CARDIOMM_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights_file": weights_path.name,
        "weights_sha256": digest,
        "storage_dtype": storage_dtype,
    }
    text = json.dumps(meta, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(weights_path, blob)
    atomic_write(meta_path, text.encode("utf-8"))
    logger.info("saved CardioMM checkpoint %s (%d tensors, sha256 %s)", weights_path, len(tensors), digest[:12])
    return weights_path


# --------------------------------------------------------------------------------------------
# read
# --------------------------------------------------------------------------------------------


def _read_meta_file(meta_path: Path, weights_path: Path) -> CheckpointMeta:
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"checkpoint sidecar {meta_path} not found: a CardioMM checkpoint is a pair "
            f"{weights_path.name} + {meta_path.name} (the JSON holds the architecture and text encoder)"
        )
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"checkpoint sidecar {meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint sidecar {meta_path} must hold a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{meta_path} is not a CardioMM checkpoint sidecar: format is {raw.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    version = raw.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{meta_path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {version}, newer than this cardiomm {CARDIOMM_VERSION} reads "
            f"(up to {FORMAT_VERSION}); upgrade cardiomm to load it"
        )
    missing = [k for k in ("architecture", "text_encoder", "weights_sha256") if k not in raw]
    if missing:
        raise ValueError(f"{meta_path}: missing key(s) {missing}")
    try:
        architecture = architecture_from_dict(raw["architecture"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{meta_path}: bad architecture: {exc}") from exc
    encoder = raw["text_encoder"]
    if not isinstance(encoder, dict) or not isinstance(encoder.get("name"), str) \
            or isinstance(encoder.get("dim"), bool) or not isinstance(encoder.get("dim"), int):
        raise ValueError(f"{meta_path}: text_encoder must be {{'name': str, 'dim': int}}, got {encoder!r}")
    if encoder["dim"] != architecture.text_dim:
        raise ValueError(
            f"{meta_path}: text_encoder dim {encoder['dim']} does not match architecture text_dim {architecture.text_dim}"
        )
    digest = raw["weights_sha256"]
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{meta_path}: weights_sha256 must be a 64-character hex string, got {digest!r}")
    storage_dtype = raw.get("storage_dtype", "float32")
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"{meta_path}: storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    sections = {}
    for key in ("normalisation", "training"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise ValueError(f"{meta_path}: {key} must be a JSON object, got {type(value).__name__}")
        sections[key] = value
    try:
        prompt = PromptSpec.from_dict(raw.get("prompt")).to_dict()
    except ValueError as exc:
        raise ValueError(f"{meta_path}: bad prompt section: {exc}") from exc
    return CheckpointMeta(
        architecture=architecture,
        text_encoder_name=encoder["name"],
        text_encoder_dim=encoder["dim"],
        normalisation=sections["normalisation"],
        training=sections["training"],
        format_version=version,
        cardiomm_version=str(raw.get("cardiomm_version", "")),
        weights_sha256=digest.lower(),
        created=str(raw.get("created", "")),
        weights_path=weights_path,
        storage_dtype=storage_dtype,
        prompt=prompt,
    )


def _resolve(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Checkpoint file pair for ``path``; refuses a pickle / torch.save file given directly."""
    p = Path(path).expanduser()
    if p.is_file() and not (p.name.endswith(WEIGHTS_SUFFIX) or p.name.endswith(META_SUFFIX)):
        # e.g. model.pt / model.ckpt: say what it is instead of "model.pt.safetensors not found"
        _refuse_unless_safetensors(p)
        raise ValueError(f"{p} is not a CardioMM checkpoint: expected <stem>{WEIGHTS_SUFFIX} + <stem>{META_SUFFIX}")
    weights_path, meta_path = checkpoint_paths(p)
    if weights_path.is_file():
        _refuse_unless_safetensors(weights_path)
    return weights_path, meta_path


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Parse and check a checkpoint's JSON sidecar (``path``: stem, .safetensors or .json).

    Raises:
        FileNotFoundError: no JSON sidecar.
        ValueError: not a CardioMM sidecar, a newer format_version, a malformed field, or a
            weights file that is a pickle / torch.save archive.
    """
    weights_path, meta_path = _resolve(path)
    return _read_meta_file(meta_path, weights_path)


def _limited(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _check_state_dict(weights_path: Path, expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k} (file {tuple(found[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k].shape)
    )
    mistyped = sorted(
        f"{k} (file {found[k].dtype}, model {expected[k].dtype})"
        for k in set(expected) & set(found)
        if tuple(found[k].shape) == tuple(expected[k].shape) and found[k].dtype != expected[k].dtype
    )
    if missing or unexpected or misshaped or mistyped:
        parts = []
        if missing:
            parts.append(f"missing from the file ({len(missing)}): {_limited(missing)}")
        if unexpected:
            parts.append(f"unexpected in the file ({len(unexpected)}): {_limited(unexpected)}")
        if misshaped:
            parts.append(f"wrong shape ({len(misshaped)}): {_limited(misshaped)}")
        if mistyped:
            parts.append(f"wrong dtype ({len(mistyped)}): {_limited(mistyped)}")
        raise ValueError(
            f"weights in {weights_path} do not fit the architecture in its JSON sidecar; " + "; ".join(parts)
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    text_encoder_name: str | None = None,
    text_encoder_dim: int | None = None,
    map_location: str | torch.device = "cpu",
    verify_hash: bool = True,
) -> tuple[Network, CheckpointMeta]:
    """Build the model described by a checkpoint, load its weights and return it in eval mode.

    Args:
        path: stem, .safetensors or .json of the checkpoint.
        text_encoder_name: when given, the encoder the caller will feed embeddings from; it must be
            the one the checkpoint was trained with (aliases such as "minilm" are accepted).
        text_encoder_dim: when given, that encoder's embedding size; it must match too.
        map_location: device of the returned model.
        verify_hash: compare the weights' sha256 with the sidecar's (on by default).

    Returns:
        (model in eval mode on ``map_location``, its CheckpointMeta)

    Raises:
        FileNotFoundError: a missing weights file or JSON sidecar.
        ValueError: a pickle / torch.save file, a bad sidecar, a text encoder mismatch, a hash
            mismatch, or tensors that do not fit the architecture (listing the names).
    """
    weights_path, meta_path = _resolve(path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {weights_path} not found")
    meta = _read_meta_file(meta_path, weights_path)

    if text_encoder_name is not None:
        wanted = canonical_encoder_name(text_encoder_name)
        if wanted != meta.text_encoder_name:
            dim_note = f", {text_encoder_dim}-dim" if text_encoder_dim is not None else ""
            raise ValueError(
                f"text encoder mismatch: checkpoint {weights_path.name} was trained with "
                f"{meta.text_encoder_name!r} ({meta.text_encoder_dim}-dim), but {wanted!r}{dim_note} was requested; "
                f"embeddings from another encoder are meaningless to this model"
            )
    if text_encoder_dim is not None and text_encoder_dim != meta.text_encoder_dim:
        raise ValueError(
            f"text encoder mismatch: checkpoint {weights_path.name} expects {meta.text_encoder_dim}-dim embeddings "
            f"from {meta.text_encoder_name!r}, but the requested encoder gives {text_encoder_dim}-dim"
        )

    blob = weights_path.read_bytes()
    if verify_hash:
        digest = _sha256_bytes(blob)
        if digest != meta.weights_sha256:
            raise ValueError(
                f"weights file {weights_path} does not match its sidecar: sha256 {digest} != recorded "
                f"{meta.weights_sha256} (modified, truncated, or paired with another checkpoint's JSON)"
            )
    try:
        tensors = _safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot read safetensors file {weights_path}: {exc}") from exc
    del blob

    model = build_network(meta.architecture)
    expected = model.state_dict()
    for group in _alias_groups(expected):
        source = next((name for name in group if name in tensors), None)
        if source is not None:
            for name in group:
                tensors.setdefault(name, tensors[source])
    stored = STORAGE_DTYPES[meta.storage_dtype]
    if stored != torch.float32:
        # weights kept in half precision on disk: floating tensors of exactly that dtype go back to
        # the model's float32; any other dtype is left as it is and fails the check below
        tensors = {k: (v.to(torch.float32) if v.dtype == stored else v) for k, v in tensors.items()}
    _check_state_dict(weights_path, expected, tensors)
    model.load_state_dict(tensors, strict=True)
    model.to(map_location)
    model.eval()
    logger.info(
        "loaded CardioMM checkpoint %s (text encoder %s, %d-dim)", weights_path, meta.text_encoder_name, meta.text_encoder_dim
    )
    return model, meta


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STORAGE_DTYPES",
    "NETWORK_CLASSES",
    "architecture_from_dict",
    "atomic_write",
    "build_network",
    "CheckpointMeta",
    "checkpoint_paths",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
]

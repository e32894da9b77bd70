"""``cardiomm-import-official``: an official CardioMM Lightning checkpoint -> a CardioMM checkpoint.

The authors' code (wangziblake/CardioMM_MMCMR-427K) saves PyTorch Lightning ``.ckpt`` files: a
pickle holding ``{"state_dict": {...}, "epoch": ..., ...}``. This module is the one place in the
project that reads such a file, once, offline:

- it is read with ``torch.load(weights_only=True)``: only tensors and plain containers (dict, list,
  tuple, str, numbers, OrderedDict) are rebuilt, plus a short allow-list of inert value types
  (``pathlib`` paths, ``argparse.Namespace``) that Lightning may store beside the weights; any other
  object (a class, a function call such as ``os.system``) makes the whole file refused, with a one-
  line message, before anything in it runs;
- of the state dict it keeps ``metausunetlight.*`` (the network), ``lm_head_meta.fc1.*`` and
  ``lm_head_us.fc1.*`` (the two text heads' used layer); it drops ``loss.w`` (the SSIM window),
  the unused ``fc2`` layers and the frozen CLIP tower ``language_model_no.*`` (the site provides
  CLIP itself);
- the architecture is read from the tensor shapes (cascades, channels, prompt banks, block
  counts), checked by loading the weights into :class:`~cardiomm_core.official.OfficialCardioMM`
  strictly, and written with :func:`~cardiomm_core.checkpoint.save_checkpoint` as safetensors +
  JSON: text encoder ``clip-vit-base-patch16`` (512-d, unnormalised), normalisation ``none``,
  ``"prompt": {"style": "official", "mask_convention": "official"}`` and the provenance (source
  file name and sha256, official code commit, licence note).

Normalisation ``none``: the official network normalises every U-Net input by its own mean and
standard deviation, its coil maps are divided by their RSS and its data consistency is linear, so
it is equivariant to the scale of the k-space; the engine's ACS-percentile scaling would only add
rounding (about 1e-7 relative) and is switched off to keep the engine's output identical to the
official code's.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .official import OFFICIAL_KIND, OfficialCardioMM, OfficialConfig

logger = logging.getLogger(__name__)

__all__ = [
    "KEPT_PREFIXES",
    "OFFICIAL_COMMIT",
    "OFFICIAL_LICENCE_NOTE",
    "OFFICIAL_PROMPT",
    "OfficialCheckpointError",
    "config_from_state_dict",
    "import_official",
    "main",
    "read_official_state_dict",
]

#: State-dict prefixes kept from an official checkpoint.
KEPT_PREFIXES = ("metausunetlight.", "lm_head_meta.fc1.", "lm_head_us.fc1.")
#: Commit of the official code whose architecture ``cardiomm_core.official`` reproduces.
OFFICIAL_COMMIT = "c4938c6ea16579481d3ac9f909dacb229aaa4631"
OFFICIAL_REPOSITORY = "wangziblake/CardioMM_MMCMR-427K"
OFFICIAL_LICENCE_NOTE = (
    "Weights trained with the official CardioMM code; its README says the software is for academic use "
    "only and cannot be used commercially. Do not redistribute these weights without the authors' permission."
)
#: The "prompt" section written for imported checkpoints: the official sentence style and masks.
OFFICIAL_PROMPT: dict[str, str] = {"style": "official", "mask_convention": "official"}
#: Text encoder recorded for imported checkpoints (see cardiomm_core.text.OFFICIAL_CLIP_NAME).
OFFICIAL_TEXT_ENCODER = "clip-vit-base-patch16"

_NET = "metausunetlight."


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be imported (one-line message)."""


# ---------------------------------------------------------------------------------------------
# Reading the pickle
# ---------------------------------------------------------------------------------------------


def _inert_globals() -> list[Any]:
    """Value types Lightning may pickle beside the weights that are safe to rebuild."""
    import argparse as _argparse
    import pathlib

    return [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
            _argparse.Namespace]


def _refusal_detail(exc: BaseException) -> str:
    """One short clause saying what torch's restricted unpickler objected to."""
    text = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return f"it would import and call {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        useful = [line for line in lines[1:]
                  if not line.startswith(("Check the documentation", "Re-running", "Please file an issue"))]
        return useful[0][:200] if useful else "it holds objects other than tensors and plain containers"
    return (lines[0] if lines else type(exc).__name__)[:200]


def read_official_state_dict(path: str | Path) -> tuple[OrderedDict[str, torch.Tensor], dict[str, Any]]:
    """Load an official Lightning checkpoint safely and keep the network's tensors.

    Returns:
        (state dict with only :data:`KEPT_PREFIXES` keys, in file order, float tensors on the CPU;
        ``info``: ``dropped`` key count by prefix and the Lightning ``epoch`` / ``global_step`` /
        ``pytorch-lightning_version`` when present as plain values)

    Raises:
        FileNotFoundError: no such file.
        OfficialCheckpointError: the file holds anything but tensors and plain containers, is not a
            checkpoint, or has no ``metausunetlight.`` weights.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} not found")
    # a zip archive (torch.save's format) is memory-mapped: the optimizer states a Lightning
    # checkpoint also holds (twice the weights for Adam) are then never read into memory
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_inert_globals()):
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any failure of the restricted unpickler is a refusal
        raise OfficialCheckpointError(
            f"refusing {path.name}: it is not a checkpoint of plain tensors and containers ({_refusal_detail(exc)}); "
            f"nothing in it was run"
        ) from exc
    if isinstance(blob, Mapping) and isinstance(blob.get("state_dict"), Mapping):
        state = blob["state_dict"]
    elif isinstance(blob, Mapping) and any(isinstance(k, str) and k.startswith(_NET) for k in blob):
        state = blob
    else:
        raise OfficialCheckpointError(
            f"{path.name} is not an official CardioMM checkpoint: no 'state_dict' with '{_NET}' weights"
        )
    kept: OrderedDict[str, torch.Tensor] = OrderedDict()
    dropped: dict[str, int] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise OfficialCheckpointError(f"{path.name}: state_dict entry {key!r} is not a named tensor")
        if key.startswith(KEPT_PREFIXES):
            kept[key] = value.clone() if mmap else value  # own memory: the file may change later
        else:
            prefix = ".".join(key.split(".")[:2]) if key.startswith("lm_head") else key.split(".")[0]
            dropped[prefix] = dropped.get(prefix, 0) + 1
    if not any(k.startswith(_NET) for k in kept):
        raise OfficialCheckpointError(f"{path.name} has no '{_NET}' weights: not an official CardioMM checkpoint")
    info: dict[str, Any] = {"dropped": dropped}
    if isinstance(blob, Mapping):
        for key in ("epoch", "global_step", "pytorch-lightning_version"):
            value = blob.get(key)
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                info[key] = value
    return kept, info


# ---------------------------------------------------------------------------------------------
# Architecture from the shapes
# ---------------------------------------------------------------------------------------------


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(re.escape(pattern).replace(r"\{j\}", r"(\d+)"))
    found = {m.group(1) for k in state if (m := regex.fullmatch(k))}
    return len(found)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise OfficialCheckpointError(f"official checkpoint lacks {key!r}: not the CardioMM_SEM architecture")
    return tuple(state[key].shape)


def _unet_layout(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    feat = _shape(state, f"{prefix}feat_extract.weight")
    if feat[1] != 2:
        raise OfficialCheckpointError(
            f"{prefix}feat_extract takes {feat[1]} channels: only num_adj_slices=1 (2 channels, the released "
            f"CardioMM) is supported"
        )
    out["chans"] = feat[0]
    out["feature_dims"] = tuple(_shape(state, f"{prefix}enc_level{lvl}.down.weight")[0] for lvl in (1, 2, 3))
    banks = [_shape(state, f"{prefix}prompt_level{lvl}.prompt_param") for lvl in (1, 2, 3)]
    out["prompt_dims"] = tuple(b[2] for b in banks)
    out["n_prompts"] = tuple(b[1] for b in banks)
    out["prompt_sizes"] = tuple(b[3] for b in banks)
    out["n_enc_cab"] = tuple(_count(state, f"{prefix}enc_level{lvl}.encoder.{{j}}.body.0.weight") for lvl in (1, 2, 3))
    out["n_dec_cab"] = tuple(_count(state, f"{prefix}dec_level{lvl}.fuse.{{j}}.body.0.weight") for lvl in (1, 2, 3))
    out["n_skip_cab"] = tuple(_count(state, f"{prefix}skip_attn{lvl}.skip_attn.{{j}}.body.0.weight")
                              for lvl in (1, 2, 3))
    out["n_bottleneck_cab"] = _count(state, f"{prefix}bottleneck.{{j}}.body.0.weight")
    gate = f"{prefix}metacond_level1.block.CA.conv_du.0.weight"
    out["use_ca"] = gate in state
    out["ca_reduction"] = out["chans"] // _shape(state, gate)[0] if out["use_ca"] else 4
    out["embed_dim"] = _shape(state, f"{prefix}metacond_level1.fc.weight")[1]
    return out


def config_from_state_dict(state: Mapping[str, torch.Tensor], num_low_frequencies: int = 20) -> OfficialConfig:
    """The :class:`OfficialConfig` whose tensors have the shapes of ``state`` (official key names)."""
    n_cascades = _count(state, f"{_NET}cascades.{{j}}.dc_weight")
    if n_cascades < 1:
        raise OfficialCheckpointError("official checkpoint has no cascades (no 'metausunetlight.cascades.N.dc_weight')")
    main = _unet_layout(state, f"{_NET}cascades.0.model.unet.")
    sens = _unet_layout(state, f"{_NET}sens_net.norm_unet.unet.")
    for field in ("n_prompts", "prompt_sizes", "n_enc_cab", "n_dec_cab", "n_skip_cab", "n_bottleneck_cab",
                  "use_ca", "embed_dim"):
        if sens[field] != main[field]:
            raise OfficialCheckpointError(
                f"the coil-map U-Net has {field}={sens[field]} but the cascades {main[field]}: this variant of the "
                f"official architecture is not supported"
            )
    head = _shape(state, "lm_head_meta.fc1.weight")
    if _shape(state, "lm_head_us.fc1.weight") != head or head[0] != main["embed_dim"]:
        raise OfficialCheckpointError(f"text heads {head} do not fit the network's {main['embed_dim']}-d embeddings")
    return OfficialConfig(
        kind=OFFICIAL_KIND, text_dim=head[1], embed_dim=main["embed_dim"], n_cascades=n_cascades, chans=main["chans"],
        feature_dims=main["feature_dims"], prompt_dims=main["prompt_dims"], n_prompts=main["n_prompts"],
        prompt_sizes=main["prompt_sizes"], n_enc_cab=main["n_enc_cab"], n_dec_cab=main["n_dec_cab"],
        n_skip_cab=main["n_skip_cab"], n_bottleneck_cab=main["n_bottleneck_cab"], ca_reduction=main["ca_reduction"],
        use_ca=main["use_ca"], sens_chans=sens["chans"], sens_feature_dims=sens["feature_dims"],
        sens_prompt_dims=sens["prompt_dims"], num_low_frequencies=num_low_frequencies,
    )


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_official(source: str | Path, output: str | Path, *, num_low_frequencies: int = 20,
                    text_encoder_name: str = OFFICIAL_TEXT_ENCODER) -> tuple[Path, OfficialCardioMM]:
    """Convert an official ``.ckpt`` into ``<output stem>.safetensors`` + ``.json``.

    Returns:
        (path of the written .safetensors, the loaded model in eval mode)

    Raises:
        FileNotFoundError, OfficialCheckpointError (see :func:`read_official_state_dict`), or
        OfficialCheckpointError when the weights do not load strictly into the inferred architecture.
    """
    from .checkpoint import save_checkpoint

    source = Path(source).expanduser()
    state, info = read_official_state_dict(source)
    config = config_from_state_dict(state, num_low_frequencies=num_low_frequencies)
    model = OfficialCardioMM(config)
    result = model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        raise OfficialCheckpointError(
            f"{source.name} does not fit the official architecture read from its shapes: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    model.eval()
    training = {
        "description": "imported from an official CardioMM checkpoint",
        "source": OFFICIAL_REPOSITORY,
        "source_file": source.name,
        "source_sha256": _sha256_file(source),
        "official_commit": OFFICIAL_COMMIT,
        "licence": OFFICIAL_LICENCE_NOTE,
        "dropped_keys": info["dropped"],
    }
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if key in info:
            training[key] = info[key]
    written = save_checkpoint(
        output, model, text_encoder_name=text_encoder_name, text_encoder_dim=config.text_dim,
        normalisation={"kind": "none"}, training=training, prompt=dict(OFFICIAL_PROMPT),
    )
    return written, model


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``cardiomm-import-official MODEL.ckpt -o NAME.safetensors``."""
    parser = argparse.ArgumentParser(
        prog="cardiomm-import-official",
        description="Convert a CardioMM checkpoint of the authors' code (PyTorch Lightning .ckpt) into a CardioMM "
                    "checkpoint (safetensors + JSON). Only tensors and plain containers are read from the file.",
    )
    parser.add_argument("checkpoint", help="the official .ckpt file (e.g. epochbest.ckpt)")
    parser.add_argument("-o", "--output", required=True, help="output NAME.safetensors (NAME.json is written beside it)")
    parser.add_argument("--num-low-frequencies", type=int, default=20,
                        help="central phase-encoding lines fed to the coil-map network (official: 20)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.num_low_frequencies < 1:
        parser.error("--num-low-frequencies must be a positive integer")
    try:
        written, model = import_official(args.checkpoint, args.output, num_low_frequencies=args.num_low_frequencies)
    except (OSError, ValueError) as exc:
        logger.debug("import failed", exc_info=True)
        print(f"cardiomm-import-official: error: {exc}", file=sys.stderr)
        return 2
    cfg = model.config
    n_params = sum(p.numel() for p in model.metausunetlight.parameters())
    print(f"wrote {written} and {written.with_suffix('.json').name}: official CardioMM, {cfg.n_cascades} cascades, "
          f"{cfg.chans}/{list(cfg.feature_dims)} channels, {n_params:,} parameters; "
          f"text encoder {OFFICIAL_TEXT_ENCODER} (set CARDIOMM_CLIP_DIR to a local openai/clip-vit-base-patch16)")
    print("licence: academic use only (official CardioMM README); do not redistribute the weights")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

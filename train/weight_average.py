"""Weight-space interpolation of two inference checkpoints (WiSE-FT, Wortsman et al., CVPR 2022).

A model continued on new data (``model.init_from``) often gains on the new distribution and loses
some of what its starting point did well: here the generalist fine-tune gained on varied geometry
and lost on T1 mapping at the packaged model's own matrix. Interpolating the weights of the start
and the fine-tuned model, ``(1 - alpha) * start + alpha * finetuned``, is a known remedy that costs
no training: both models share the architecture and, because one was continued from the other,
lie in one basin of the loss, so the interpolation is itself a good model that often beats both.

``average_checkpoints(start, finetuned, alpha, out)`` writes the interpolated checkpoint with the
usual sidecar; its ``training`` section records both parents (file names, weights sha256, their own
training sections) and alpha, so the result is as traceable as an exported run. Only checkpoints
that agree on the architecture, text encoder, input normalisation and prompt are combined: anything
else would give a model that was never trained to read what it is told.

    python -m train.weight_average START FINETUNED --alpha 0.5 -o OUT [--storage-dtype float16]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cardiomm_core.checkpoint import STORAGE_DTYPES, CheckpointMeta, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["average_checkpoints", "main"]


def _same(name: str, a: Any, b: Any, first: Path, second: Path) -> None:
    if a != b:
        raise ValueError(f"cannot interpolate {first.name} and {second.name}: their {name} differ ({a!r} vs {b!r})")


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = the start checkpoint, 1 = the fine-tuned one), got {alpha}")
    return alpha


def _parent(meta: CheckpointMeta, path: Path) -> dict[str, Any]:
    return {"file": path.name, "weights_sha256": meta.weights_sha256, "training": meta.training}


def average_checkpoints(start: str | os.PathLike[str], finetuned: str | os.PathLike[str], alpha: float,
                        out: str | os.PathLike[str], *, description: str | None = None,
                        storage_dtype: str = "float32") -> Path:
    """Write ``(1 - alpha) * start + alpha * finetuned`` as a checkpoint; return its .safetensors path.

    Floating-point tensors are interpolated in float64 and stored in ``storage_dtype``; integer
    buffers (there are none in CardioMM today) must be equal in both. Raises ValueError when the
    two checkpoints differ in architecture, text encoder, normalisation or prompt, or alpha is
    outside [0, 1].
    """
    alpha = _check_alpha(alpha)
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    start_path, tuned_path = Path(start), Path(finetuned)
    model_a, meta_a = load_checkpoint(start_path)
    model_b, meta_b = load_checkpoint(tuned_path)
    _same("architectures", meta_a.architecture, meta_b.architecture, start_path, tuned_path)
    _same("text encoders", (meta_a.text_encoder_name, meta_a.text_encoder_dim),
          (meta_b.text_encoder_name, meta_b.text_encoder_dim), start_path, tuned_path)
    _same("input normalisations", meta_a.normalisation, meta_b.normalisation, start_path, tuned_path)
    _same("prompts", meta_a.prompt, meta_b.prompt, start_path, tuned_path)

    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    mixed: dict[str, torch.Tensor] = {}
    for name, ta in state_a.items():
        tb = state_b[name]
        if ta.is_floating_point():
            mixed[name] = ((1.0 - alpha) * ta.double() + alpha * tb.double()).to(ta.dtype)
        elif torch.equal(ta, tb):
            mixed[name] = ta
        else:
            raise ValueError(f"cannot interpolate {start_path.name} and {tuned_path.name}: "
                             f"non-floating tensor {name} differs")
    model_a.load_state_dict(mixed, strict=True)

    training = {
        "description": description if description is not None else (
            f"weight-space interpolation (WiSE-FT) of {start_path.name} and {tuned_path.name}, "
            f"alpha {alpha:g}: {meta_b.training.get('description', '')}"),
        "data": meta_b.training.get("data", ""),
        "interpolation": {"method": "wise-ft", "alpha": alpha,
                          "start": _parent(meta_a, start_path), "finetuned": _parent(meta_b, tuned_path)},
        "undersampling": meta_b.training.get("undersampling", {}),
        "model_config_name": meta_b.training.get("model_config_name", ""),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = save_checkpoint(out, model_a, text_encoder_name=meta_a.text_encoder_name,
                           text_encoder_dim=meta_a.text_encoder_dim, normalisation=meta_a.normalisation,
                           training=training, storage_dtype=storage_dtype, prompt=meta_a.prompt)
    logger.info("wrote %s = %.3g x %s + %.3g x %s", path, 1.0 - alpha, start_path.name, alpha, tuned_path.name)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.weight_average", description=__doc__.split("\n\n")[0])
    parser.add_argument("start", help="the checkpoint training started from (model.init_from)")
    parser.add_argument("finetuned", help="the checkpoint training produced")
    parser.add_argument("--alpha", type=float, required=True, help="weight of the fine-tuned checkpoint, 0..1")
    parser.add_argument("-o", "--out", required=True, help="output stem or .safetensors name")
    parser.add_argument("--description", default=None, help="training description in the sidecar")
    parser.add_argument("--storage-dtype", default="float32", choices=sorted(STORAGE_DTYPES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = average_checkpoints(args.start, args.finetuned, args.alpha, args.out,
                                   description=args.description, storage_dtype=args.storage_dtype)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

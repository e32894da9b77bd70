"""Locating the CardioMM checkpoint shipped inside the package, and resolving checkpoint settings.

The demo model lives beside this module as a checkpoint pair (``cardiomm_core.checkpoint``)::

    cardiomm_core/models/cardiomm_small_synthetic.safetensors
    cardiomm_core/models/cardiomm_small_synthetic.json

and is installed as package data (``setup.cfg`` ``[options.package_data]``). Until it has been
trained and committed, :func:`packaged_model_path` returns None and the gadgets fall back to a
conventional reconstruction.

A checkpoint *setting* (a gadget parameter, a ``--checkpoint`` option) is one of:

* ``""`` or ``"packaged"``: the packaged demo model (None when it is not installed);
* ``"none"``: no model, conventional reconstruction only (None);
* a path to a checkpoint (its stem, its ``.safetensors`` or its ``.json``), which must exist.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: Folder of the packaged checkpoints.
MODELS_DIR = Path(__file__).resolve().parent / "models"
#: Stem of the packaged demo checkpoint inside MODELS_DIR.
PACKAGED_MODEL_STEM = "cardiomm_small_synthetic"
#: Settings that mean "the packaged model".
PACKAGED_WORDS = ("", "packaged")
#: Settings that mean "no model".
NONE_WORDS = ("none",)

_WEIGHTS_SUFFIX = ".safetensors"
_META_SUFFIX = ".json"


def packaged_model_path() -> Path | None:
    """The ``.safetensors`` file of the packaged demo checkpoint, or None when it is not installed.

    Both files of the pair must be present; a lone weights or JSON file counts as not installed
    (and is logged).
    """
    weights = MODELS_DIR / (PACKAGED_MODEL_STEM + _WEIGHTS_SUFFIX)
    meta = MODELS_DIR / (PACKAGED_MODEL_STEM + _META_SUFFIX)
    if weights.is_file() and meta.is_file():
        return weights
    if weights.is_file() or meta.is_file():
        logger.warning("packaged CardioMM checkpoint in %s is incomplete (needs %s and %s)",
                       MODELS_DIR, weights.name, meta.name)
    return None


def resolve_checkpoint(value: str) -> Path | None:
    """Resolve a checkpoint setting to the checkpoint's ``.safetensors`` path, or None for no model.

    ``""``/``"packaged"`` (any case) -> :func:`packaged_model_path`; ``"none"`` -> None (conventional
    reconstruction only); anything else is a path (the stem, the ``.safetensors`` or the ``.json``
    of a pair) whose weights file must exist, else ValueError naming it.
    """
    if not isinstance(value, str):
        raise ValueError(f"checkpoint must be a string ('packaged', 'none' or a path), got {type(value).__name__}")
    text = value.strip()
    if text.lower() in PACKAGED_WORDS:
        return packaged_model_path()
    if text.lower() in NONE_WORDS:
        return None
    path = Path(text).expanduser()
    if path.name.endswith(_WEIGHTS_SUFFIX) or path.name.endswith(_META_SUFFIX):
        stem = path.with_suffix("")
    else:
        stem = path
    weights = stem.with_name(stem.name + _WEIGHTS_SUFFIX)
    if weights.is_file():
        return weights
    if path.is_file() and path.suffix not in (_WEIGHTS_SUFFIX, _META_SUFFIX):
        # a weights file under another name (e.g. renamed); let the loader judge it
        return path
    raise ValueError(f"checkpoint {text!r} does not exist (looked for {str(weights)!r})")

"""Which checkpoints a peer may name: a CONFIG must not open, or probe, arbitrary host files.

A Gadgetron client can send any stream configuration (CONFIG_SCRIPT), and the warm worker's
CONFIG comes from whoever reaches its port; both may set CardioMMRecon's ``checkpoint``. A
checkpoint named there is accepted only inside an allowed directory:

* the packaged models folder (``cardiomm_core/models``), and
* every directory in ``$CARDIOMM_CHECKPOINT_DIR`` (a ``os.pathsep``-separated list),

besides the setting the gadget was started with (the worker's ``--checkpoint``, the operator's
choice). Paths are resolved (symbolic links, ``..``) before the check, and the check comes before
any look at the file, so the answer to the peer is the same whether the file exists or not. What
is sent to the peer never contains host paths (:func:`gadgets.protocol.wire_limits.redact_paths`); the
host's log names them.
"""

from __future__ import annotations

import os
from pathlib import Path

from cardiomm_core.packaged import MODELS_DIR, NONE_WORDS, PACKAGED_WORDS

#: Environment variable: extra directories (os.pathsep-separated) whose checkpoints a CONFIG may name.
CHECKPOINT_DIR_VARIABLE = "CARDIOMM_CHECKPOINT_DIR"

REFUSED_REASON = (f"the checkpoint named in the configuration is not in an allowed checkpoint directory "
                  f"(the packaged models or ${CHECKPOINT_DIR_VARIABLE} of the reconstruction host)")


class CheckpointRefused(ValueError):
    """A remotely configured checkpoint outside the allowed directories (message free of paths)."""


def allowed_checkpoint_dirs() -> list[Path]:
    """The packaged models folder and the directories of ``$CARDIOMM_CHECKPOINT_DIR``, resolved."""
    dirs = [Path(MODELS_DIR)]
    for entry in os.environ.get(CHECKPOINT_DIR_VARIABLE, "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()).expanduser())
    return [d.resolve() for d in dirs]


def _resolved(text: str) -> Path:
    return Path(text.strip()).expanduser().resolve()


def is_keyword(setting: str) -> bool:
    """True for the settings that name no file: '' / 'packaged' / 'none' (any case)."""
    return setting.strip().lower() in PACKAGED_WORDS + NONE_WORDS


def check_remote_checkpoint(setting: str, operator_setting: str | None = None) -> None:
    """Raise :class:`CheckpointRefused` unless a checkpoint set by a peer's CONFIG may be used.

    Allowed: the keywords ('packaged', 'none'), the ``operator_setting`` itself (the value the
    gadget or worker was started with), and paths inside :func:`allowed_checkpoint_dirs`.
    """
    if is_keyword(setting):
        return
    target = _resolved(setting)
    if operator_setting is not None and not is_keyword(operator_setting):
        own = _resolved(operator_setting)
        if target == own or target.with_suffix("") == own.with_suffix(""):
            return
    for folder in allowed_checkpoint_dirs():
        if target == folder or folder in target.parents:
            return
    raise CheckpointRefused(REFUSED_REASON)

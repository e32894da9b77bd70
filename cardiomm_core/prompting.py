"""What the model is told: one owner for the sentences, the sampling description and the input.

A checkpoint records, in the ``"prompt"`` section of its JSON sidecar, how its model was spoken
to in training (:class:`PromptSpec`)::

    "prompt": {"style": "project", "mask_convention": "project", "acceleration": "nominal"}

* ``style``: how a :class:`~cardiomm_core.context.ScanContext` becomes the two sentences:
  ``"project"`` (this project's wording, what the packaged model was trained with) or
  ``"official"`` (the wording of the authors' CardioMM code, e.g.
  ``'Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, short-axis.'``
  and ``'Undersampling: 16x random.'``).
* ``mask_convention``: which mask generator the model was trained with (``cardiomm_core.masks``):
  ``"project"`` (acceleration steered to the nominal R outside the calibration region, 24/16 ACS
  lines) or ``"official"`` (the authors' fixed line/spoke counts, 20 ACS lines for every family).
* ``acceleration``: which number the undersampling sentence carries. ``"nominal"``: the mask
  generator's nominal R (what both the project's trainer and the official code write), never a
  rate measured from the mask.

A sidecar without the section (every checkpoint written before it existed) means the project's
defaults, ``PromptSpec()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

#: Sentence styles a checkpoint can ask for.
PROMPT_STYLES: tuple[str, ...] = ("project", "official")
#: Mask conventions a checkpoint can have been trained with.
MASK_CONVENTIONS: tuple[str, ...] = ("project", "official")
#: How the acceleration in the undersampling sentence is chosen.
ACCELERATION_MODES: tuple[str, ...] = ("nominal",)


@dataclass(frozen=True)
class PromptSpec:
    """How a model is spoken to: sentence style, mask convention, acceleration mode (see module doc)."""

    style: str = "project"
    mask_convention: str = "project"
    acceleration: str = "nominal"

    def __post_init__(self) -> None:
        for name, allowed in (("style", PROMPT_STYLES), ("mask_convention", MASK_CONVENTIONS),
                              ("acceleration", ACCELERATION_MODES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"prompt {name} must be one of {list(allowed)}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "PromptSpec":
        """Build from a checkpoint's ``"prompt"`` section; None or {} give the project defaults.

        Raises ValueError for a value that is not a mapping, an unknown key or an unknown value.
        """
        if values is None:
            return cls()
        if isinstance(values, PromptSpec):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"prompt must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown prompt key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


__all__ = ["ACCELERATION_MODES", "MASK_CONVENTIONS", "PROMPT_STYLES", "PromptSpec"]

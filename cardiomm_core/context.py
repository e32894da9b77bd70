"""ScanContext: what the model is told, in words, about the scan it reconstructs.

CardioMM conditions its prior on two sentences. A checkpoint says in which *style* its model
read them in training (``cardiomm_core.prompting.PromptSpec.style``):

``"project"`` (this project's models, the packaged one included)::

    metadata:      "Adult cardiac MRI reconstruction. Vendor: 3.0T, Siemens, Vida. Modality: Cine, short-axis."
    undersampling: "Undersampling: 16x Random."

``"official"`` (the authors' CardioMM code, character for character)::

    metadata:      "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, short-axis."
    undersampling: "Undersampling: 16x random."

The official style has no space after "reconstruction.", lower-case pattern words (Uniform and
ktUniform "uniform", ktGaussian "random", ktRadial "radial"), its own modality and view words
(``OFFICIAL_MODALITIES``, ``OFFICIAL_VIEWS``: "late Gadolinium enhancement", "phase contrast",
"long-axis" for every long-axis view, "outflow tract" for LVOT/RVOT, ...) and field strengths as
its data folders spell them ("0.55T", "1.5T", "3.0T"). Both styles write the nominal integer R
(``cardiomm_core.prompting.describe_sampling`` says which R a mask has).

Sampling pattern names are the CMRxRecon mask families; the word the project style uses for
each is ``PATTERN_WORDS`` (ktGaussian is the paper's "Random").
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: CMRxRecon mask family -> the word used in the undersampling sentence.
PATTERN_WORDS: dict[str, str] = {
    "full": "Fully sampled",
    "Uniform": "Uniform",
    "ktUniform": "kt-Uniform",
    "ktGaussian": "Random",
    "ktRadial": "Radial",
}

#: Modalities the project knows how to describe (free text is allowed; these are the usual ones).
KNOWN_MODALITIES = ("Cine", "T1 mapping", "T2 mapping", "LGE", "Flow", "Black blood", "Tagging", "Perfusion")
#: Views the project knows how to describe.
KNOWN_VIEWS = ("short-axis", "two-chamber", "three-chamber", "four-chamber", "LVOT", "aorta")


#: Sentence styles (see the module docstring).
SENTENCE_STYLES: tuple[str, ...] = ("project", "official")

#: Pattern family -> the official word ("full" has no official word: R = 1 of the uniform lattice).
OFFICIAL_PATTERN_WORDS: dict[str, str] = {
    "full": "uniform",
    "Uniform": "uniform",
    "ktUniform": "uniform",
    "ktGaussian": "random",
    "ktRadial": "radial",
}

#: Modality (lower case, spaces/hyphens/underscores removed) -> the official word.
OFFICIAL_MODALITIES: dict[str, str] = {
    "cine": "cine",
    "t1mapping": "T1 mapping",
    "t1map": "T1 mapping",
    "t1rhomapping": "T1 rho mapping",
    "t1rho": "T1 rho mapping",
    "t2mapping": "T2 mapping",
    "t2map": "T2 mapping",
    "t2*mapping": "T2 star mapping",
    "t2starmapping": "T2 star mapping",
    "t2smap": "T2 star mapping",
    "tagging": "tagging",
    "flow": "phase contrast",
    "phasecontrast": "phase contrast",
    "flow2d": "phase contrast",
    "perfusion": "perfusion",
    "lge": "late Gadolinium enhancement",
    "lategadoliniumenhancement": "late Gadolinium enhancement",
    "blackblood": "blackblood",
    "t1weighted": "T1 weighted",
    "t1w": "T1 weighted",
    "t2weighted": "T2 weighted",
    "t2w": "T2 weighted",
}

#: View (lower case, spaces/hyphens/underscores/commas removed) -> the official word.
OFFICIAL_VIEWS: dict[str, str] = {
    "shortaxis": "short-axis",
    "sax": "short-axis",
    "longaxis": "long-axis",
    "lax": "long-axis",
    "twochamber": "long-axis",
    "threechamber": "long-axis",
    "fourchamber": "long-axis",
    "2ch": "long-axis",
    "3ch": "long-axis",
    "4ch": "long-axis",
    "lvot": "outflow tract",
    "rvot": "outflow tract",
    "outflowtract": "outflow tract",
    "aortasagittal": "sagittal aorta",
    "sagittalaorta": "sagittal aorta",
    "aortatransversal": "transversal aorta",
    "transversalaorta": "transversal aorta",
    "throughplane": "through-plane",
    "inplane": "in-plane",
    "unknown": "unknown",
}


def _vocabulary_key(text: str) -> str:
    return re.sub(r"[\s_,\-]+", "", text.strip().lower())


def official_modality(modality: str) -> str:
    """The official word for a modality ('LGE' -> 'late Gadolinium enhancement'); unknown words are kept."""
    return OFFICIAL_MODALITIES.get(_vocabulary_key(modality), modality.strip())


def official_view(view: str, modality: str = "") -> str:
    """The official word for a view ('four-chamber' -> 'long-axis', 'LVOT' -> 'outflow tract').

    A bare 'aorta' is 'through-plane' for flow (phase contrast), as the official data mapping
    defaults a 2D flow scan, and 'unknown' otherwise; other unknown words are kept.
    """
    key = _vocabulary_key(view)
    if key == "aorta":
        return "through-plane" if official_modality(modality) == "phase contrast" else "unknown"
    return OFFICIAL_VIEWS.get(key, view.strip())


def official_field_strength(tesla: float) -> str:
    """'3.0T', '1.5T', '0.55T': one decimal unless a second one is needed (as the official folders say)."""
    text = f"{tesla:.2f}"
    if text.endswith("0"):
        text = text[:-1]
    return text + "T"


def _format_number(value: float) -> str:
    """16.0 -> '16', 12.5 -> '12.5'."""
    return str(int(round(value))) if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def _check_style(style: str) -> str:
    if style not in SENTENCE_STYLES:
        raise ValueError(f"sentence style must be one of {list(SENTENCE_STYLES)}, got {style!r}")
    return style


@dataclass(frozen=True)
class ScanContext:
    """Typed description of a scan: who, where, on what, what, and how it was undersampled.

    ``field_strength_t`` is in tesla; ``acceleration`` is the nominal acceleration the model is
    told (>= 1; ``cardiomm_core.prompting.describe_sampling``); ``pattern`` is a key of PATTERN_WORDS.
    """

    population: str = "Adult"
    anatomy: str = "cardiac"
    field_strength_t: float = 3.0
    vendor: str = "Siemens"
    scanner_model: str = "Vida"
    modality: str = "Cine"
    view: str = "short-axis"
    acceleration: float = 1.0
    pattern: str = "full"

    def __post_init__(self) -> None:
        if not isinstance(self.field_strength_t, (int, float)) or not math.isfinite(self.field_strength_t) \
                or self.field_strength_t <= 0:
            raise ValueError(f"field_strength_t must be a positive number of tesla, got {self.field_strength_t!r}")
        if not isinstance(self.acceleration, (int, float)) or not math.isfinite(self.acceleration) \
                or self.acceleration < 1:
            raise ValueError(f"acceleration must be a number >= 1, got {self.acceleration!r}")
        if self.pattern not in PATTERN_WORDS:
            raise ValueError(f"pattern must be one of {sorted(PATTERN_WORDS)}, got {self.pattern!r}")
        for name in ("population", "anatomy", "vendor", "scanner_model", "modality", "view"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")

    def metadata_sentence(self, style: str = "project") -> str:
        """project: 'Adult cardiac MRI reconstruction. Vendor: 3.0T, Siemens, Vida. Modality: Cine, short-axis.'

        official: 'Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, short-axis.'
        """
        if _check_style(style) == "official":
            text = (f"{self.population} {self.anatomy} MRI reconstruction."
                    f"Vendor: {official_field_strength(self.field_strength_t)}, {self.vendor}, {self.scanner_model}. "
                    f"Modality: {official_modality(self.modality)}, {official_view(self.view, self.modality)}. ")
            return " ".join(text.split())
        return (
            f"{self.population} {self.anatomy} MRI reconstruction. "
            f"Vendor: {self.field_strength_t:.1f}T, {self.vendor}, {self.scanner_model}. "
            f"Modality: {self.modality}, {self.view}."
        )

    def undersampling_sentence(self, style: str = "project") -> str:
        """project: 'Undersampling: 16x Random.'; official: 'Undersampling: 16x random.'"""
        if _check_style(style) == "official":
            return f"Undersampling: {_format_number(self.acceleration)}x {OFFICIAL_PATTERN_WORDS[self.pattern]}."
        return f"Undersampling: {_format_number(self.acceleration)}x {PATTERN_WORDS[self.pattern]}."

    def sentences(self, style: str = "project") -> tuple[str, str]:
        """(metadata sentence, undersampling sentence) in ``style`` ("project" or "official")."""
        return self.metadata_sentence(style), self.undersampling_sentence(style)

    def with_sampling(self, acceleration: float, pattern: str) -> ScanContext:
        """A copy with another acceleration and sampling pattern."""
        return dataclasses.replace(self, acceleration=float(acceleration), pattern=pattern)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ScanContext:
        """Build from a mapping; an unknown key is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ScanContext field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

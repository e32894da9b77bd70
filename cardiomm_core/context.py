"""ScanContext: what the model is told, in words, about the scan it reconstructs.

CardioMM conditions its prior on two sentences, rendered here in the form of the paper:

    metadata:      "Adult cardiac MRI reconstruction. Vendor: 3.0T, Siemens, Vida. Modality: Cine, short-axis."
    undersampling: "Undersampling: 16x Random."

Sampling pattern names are the CMRxRecon mask families; the word the sentence uses for each is
``PATTERN_WORDS`` (ktGaussian is the paper's "Random").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

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


def _format_number(value: float) -> str:
    """16.0 -> '16', 12.5 -> '12.5'."""
    return str(int(round(value))) if abs(value - round(value)) < 0.05 else f"{value:.1f}"


@dataclass(frozen=True)
class ScanContext:
    """Typed description of a scan: who, where, on what, what, and how it was undersampled.

    ``field_strength_t`` is in tesla; ``acceleration`` is the realised acceleration (>= 1);
    ``pattern`` is a key of PATTERN_WORDS.
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

    def metadata_sentence(self) -> str:
        """'Adult cardiac MRI reconstruction. Vendor: 3.0T, Siemens, Vida. Modality: Cine, short-axis.'"""
        return (
            f"{self.population} {self.anatomy} MRI reconstruction. "
            f"Vendor: {self.field_strength_t:.1f}T, {self.vendor}, {self.scanner_model}. "
            f"Modality: {self.modality}, {self.view}."
        )

    def undersampling_sentence(self) -> str:
        """'Undersampling: 16x Random.'"""
        return f"Undersampling: {_format_number(self.acceleration)}x {PATTERN_WORDS[self.pattern]}."

    def sentences(self) -> tuple[str, str]:
        """(metadata sentence, undersampling sentence)."""
        return self.metadata_sentence(), self.undersampling_sentence()

    def with_sampling(self, acceleration: float, pattern: str) -> "ScanContext":
        """A copy with another acceleration and sampling pattern."""
        return dataclasses.replace(self, acceleration=float(acceleration), pattern=pattern)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ScanContext":
        """Build from a mapping; an unknown key is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ScanContext field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

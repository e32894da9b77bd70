"""What CardioMM is told about a scan: a ScanContext from an ISMRMRD header and a sampling mask.

``context_from_header(header, modality=..., view=...)`` reads

* the scanner from ``acquisitionSystemInformation``: ``systemVendor`` (normalised: "SIEMENS" ->
  "Siemens", "GE MEDICAL SYSTEMS" -> "GE", ...), ``systemModel`` and ``systemFieldStrength_T``
  (or, without it, ``experimentalConditions.H1resonanceFrequency_Hz`` / 42.577 MHz/T), snapped
  to the nominal field strength within 5 % (a Siemens "3T" reports 2.89 T; the model was told
  "3.0T" in training);
* the modality and view from ``measurementInformation.protocolName``, then
  ``seriesDescription``, then ``sequenceName`` (the first that is recognisable: cine, sax, lax,
  2ch/3ch/4ch, LVOT, T1/MOLLI/ShMOLLI/SASHA, T2 map/T2 prep, LGE/PSIR, flow, perfusion, ...),
  else the given ``modality``/``view`` (the gadget parameters).

Fields the header lacks take documented defaults, each with one INFO log line; a sparse header
such as Debian's shepp-logan file never fails:

==============  =============================================================================
vendor          ``DEFAULT_VENDOR`` ("Siemens", ScanContext's default, what CMRxRecon holds)
scanner model   ``DEFAULT_SCANNER_MODEL`` ("Vida") when the vendor is missing too, else
                ``UNKNOWN_MODEL`` ("unknown model")
field strength  from the H1 resonance frequency, else ``DEFAULT_FIELD_STRENGTH_T`` (3.0)
modality, view  the ``modality``/``view`` arguments, else "Cine" and "short-axis"
==============  =============================================================================

``sampling_from_mask(mask, declared=declared_acceleration(header))`` gives the nominal
acceleration and the CMRxRecon family of a mask, as training describes it
(``cardiomm_core.prompting.describe_sampling``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import ismrmrd
import numpy as np
import torch

from cardiomm_core.context import ScanContext
from cardiomm_core.prompting import describe_sampling

logger = logging.getLogger(__name__)

#: Defaults for what a header does not say (ScanContext's own defaults).
DEFAULT_VENDOR = ScanContext.vendor
DEFAULT_SCANNER_MODEL = ScanContext.scanner_model
DEFAULT_FIELD_STRENGTH_T = ScanContext.field_strength_t
DEFAULT_MODALITY = ScanContext.modality
DEFAULT_VIEW = ScanContext.view
#: Scanner model used when the vendor is known but the model is not.
UNKNOWN_MODEL = "unknown model"
#: Gyromagnetic ratio of 1H, Hz/T.
GAMMA_HZ_PER_T = 42.577478e6
#: Nominal clinical field strengths (T); a measured value within 5 % snaps to one of them.
NOMINAL_FIELD_STRENGTHS_T = (0.35, 0.55, 1.0, 1.5, 3.0, 5.0, 7.0)
_SNAP_TOLERANCE = 0.05

#: (pattern, vendor name) on the lower-cased systemVendor, first match wins.
_VENDORS: tuple[tuple[str, str], ...] = (
    (r"siemens", "Siemens"),
    (r"philips", "Philips"),
    (r"general electric|^ge\b|\bge medical|gehc|\bge healthcare", "GE"),
    (r"united imaging|^uih\b|uimaging", "United Imaging"),
    (r"canon|toshiba", "Canon"),
    (r"hitachi|fujifilm", "Fujifilm"),
)

#: (regex on the normalised protocol text, modality), first match wins. Words are separated by
#: single spaces; digits stay attached to their word ("t1map", "sax2").
_MODALITY_RULES: tuple[tuple[str, str], ...] = (
    (r"\bt2 ?map\w*|\bt2 ?prep\w*|\bt2 mapping\b", "T2 mapping"),
    (r"\b(?:sh)?molli\w*|\bsasha\b|\bt1 ?map\w*|\bt1 mapping\b", "T1 mapping"),
    (r"\blge\b|\bpsir\b|\blate ?gad\w*|\bdelayed ?enhancement\b|\blate enhancement\b", "LGE"),
    (r"\bq?flow\b|\bphase ?contrast\b|\bvenc\b|\bpc ?mri\b", "Flow"),
    (r"\bperf\w*", "Perfusion"),
    (r"\btag\w*|\bc?spamm\b", "Tagging"),
    (r"\bblack ?blood\b|\bdir ?tse\b", "Black blood"),
    (r"\bmapping\b", "T1 mapping"),  # the project's simulator calls T1 mapping "mapping"
    (r"\bcine\w*|\btf2d\w*|\btrufi\w*|\bb?ssfp\b", "Cine"),
)

#: (regex, view), first match wins (specific long-axis views before the generic one).
_VIEW_RULES: tuple[tuple[str, str], ...] = (
    (r"(?<![0-9])2 ?c[hv]\b|\btwo ?chamber\b|\bvla\b", "two-chamber"),
    (r"(?<![0-9])3 ?c[hv]\b|\bthree ?chamber\b", "three-chamber"),
    (r"(?<![0-9])4 ?c[hv]\b|\bfour ?chamber\b|\bhla\b", "four-chamber"),
    (r"\blvot\b", "LVOT"),
    (r"\bsax?\d*\b|\bshort ?axis\b", "short-axis"),
    (r"\baorta\b|\baortic\b", "aorta"),
    (r"\blax\d*\b|\blong ?axis\b", "long-axis"),
)


def _normalise_text(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z*]+", " ", text.lower()).split())


def _match(rules: Sequence[tuple[str, str]], text: str) -> str | None:
    for pattern, name in rules:
        if re.search(pattern, text):
            return name
    return None


def recognise_protocol(texts: Sequence[str | None]) -> tuple[str | None, str | None]:
    """(modality, view) recognised in ``texts`` (first text with a match wins, per item), or None."""
    modality = view = None
    for text in texts:
        if not text:
            continue
        normal = _normalise_text(str(text))
        if modality is None:
            modality = _match(_MODALITY_RULES, normal)
        if view is None:
            view = _match(_VIEW_RULES, normal)
    return modality, view


def normalise_vendor(vendor: str) -> str:
    """'SIEMENS' -> 'Siemens', 'GE MEDICAL SYSTEMS' -> 'GE', ...; unknown names are kept (stripped)."""
    lowered = vendor.strip().lower()
    for pattern, name in _VENDORS:
        if re.search(pattern, lowered):
            return name
    return vendor.strip()


def nominal_field_strength(tesla: float) -> float:
    """Snap ``tesla`` to the nearest of NOMINAL_FIELD_STRENGTHS_T when within 5 %, else round to 0.01 T."""
    if not math.isfinite(tesla) or tesla <= 0:
        raise ValueError(f"field strength must be a positive number of tesla, got {tesla!r}")
    nearest = min(NOMINAL_FIELD_STRENGTHS_T, key=lambda nominal: abs(nominal - tesla))
    if abs(nearest - tesla) <= _SNAP_TOLERANCE * nearest:
        return nearest
    return round(float(tesla), 2)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value.value if hasattr(value, "value") else value).strip()
    return text or None


def context_from_header(
    header: ismrmrd.xsd.ismrmrdHeader,
    *,
    modality: str | None = None,
    view: str | None = None,
) -> ScanContext:
    """ScanContext (acceleration 1, pattern "full") for the scan described by ``header``.

    See the module docstring for where each field comes from and the defaults. ``modality`` and
    ``view`` are used when the protocol names say nothing recognisable (None: "Cine",
    "short-axis"). Raises ValueError only when ``header`` is not an ISMRMRD header object.
    """
    if not isinstance(header, ismrmrd.xsd.ismrmrdHeader):
        raise ValueError(f"header must be an ismrmrd.xsd.ismrmrdHeader, got {type(header).__name__}")
    system = header.acquisitionSystemInformation
    raw_vendor = _text(getattr(system, "systemVendor", None))
    raw_model = _text(getattr(system, "systemModel", None))
    if raw_vendor is None:
        vendor = DEFAULT_VENDOR
        logger.info("context: the header has no systemVendor; using %r", vendor)
    else:
        vendor = normalise_vendor(raw_vendor)
    if raw_model is None:
        scanner_model = DEFAULT_SCANNER_MODEL if raw_vendor is None else UNKNOWN_MODEL
        logger.info("context: the header has no systemModel; using %r", scanner_model)
    else:
        scanner_model = raw_model

    field = getattr(system, "systemFieldStrength_T", None)
    field_strength: float | None = None
    if field is not None and math.isfinite(float(field)) and float(field) > 0:
        field_strength = nominal_field_strength(float(field))
    else:
        conditions = header.experimentalConditions
        frequency = getattr(conditions, "H1resonanceFrequency_Hz", None) if conditions is not None else None
        if frequency is not None and float(frequency) > 0:
            field_strength = nominal_field_strength(float(frequency) / GAMMA_HZ_PER_T)
            logger.info("context: the header has no systemFieldStrength_T; %.3f MHz H1 resonance gives %.2f T",
                        float(frequency) / 1e6, field_strength)
        else:
            field_strength = DEFAULT_FIELD_STRENGTH_T
            logger.info("context: the header has no field strength or H1 frequency; using %.1f T", field_strength)

    info = header.measurementInformation
    texts = [_text(getattr(info, name, None)) for name in ("protocolName", "seriesDescription", "sequenceName")] \
        if info is not None else []
    sequence = header.sequenceParameters
    texts.append(_text(getattr(sequence, "sequence_type", None)) if sequence is not None else None)
    found_modality, found_view = recognise_protocol(texts)
    if found_modality is None:
        found_modality = modality.strip() if modality and modality.strip() else DEFAULT_MODALITY
        logger.info("context: no modality recognisable in the protocol names %s; using %r",
                    [t for t in texts if t], found_modality)
    if found_view is None:
        found_view = view.strip() if view and view.strip() else DEFAULT_VIEW
        logger.info("context: no view recognisable in the protocol names %s; using %r",
                    [t for t in texts if t], found_view)
    context = ScanContext(field_strength_t=float(field_strength), vendor=vendor, scanner_model=scanner_model,
                          modality=found_modality, view=found_view)
    logger.debug("context from header: %s", context.metadata_sentence())
    return context


# --------------------------------------------------------------------------- sampling


def declared_acceleration(header: ismrmrd.xsd.ismrmrdHeader) -> float | None:
    """The acceleration the header declares: ``encoding[0].parallelImaging.accelerationFactor``
    ``kspace_encoding_step_1 * kspace_encoding_step_2`` (what the simulator writes and scanners
    send), or None when the header has no such section or a value below 1."""
    if not isinstance(header, ismrmrd.xsd.ismrmrdHeader):
        raise ValueError(f"header must be an ismrmrd.xsd.ismrmrdHeader, got {type(header).__name__}")
    if not header.encoding:
        return None
    imaging = getattr(header.encoding[0], "parallelImaging", None)
    factor = getattr(imaging, "accelerationFactor", None) if imaging is not None else None
    if factor is None:
        return None
    try:
        step_1 = int(getattr(factor, "kspace_encoding_step_1", 1) or 1)
        step_2 = int(getattr(factor, "kspace_encoding_step_2", 1) or 1)
    except (TypeError, ValueError):
        return None
    value = float(step_1 * step_2)
    return value if value >= 1 and math.isfinite(value) else None


def sampling_from_mask(mask: np.ndarray | torch.Tensor, *, declared: float | None = None,
                       convention: str = "project") -> tuple[float, str]:
    """(nominal acceleration, pattern family) of a sampling ``mask (..., frames, ky, kx|1)``: the
    one description the trainer, the evaluation and the gadgets share
    (``cardiomm_core.prompting.describe_sampling``; ``declared`` is the header's
    :func:`declared_acceleration`, used when consistent with the mask)."""
    return describe_sampling(mask, declared_acceleration=declared, convention=convention)

"""Fully sampled ISMRMRD raw files as training samples, assembled the way the inline chain does it.

``IsmrmrdRawDataset(paths)`` yields one :class:`KspaceSample` per (file, slice). A file is
assembled by the same gadgets the inline chain runs, in the same order, on the file's own header:

``NoiseAdjust`` (``gadgets.noise_adjust``: noise prewhitening with Gadgetron's semantics, the
numerics of ``cardiomm_core.noise``; a file without a noise scan passes unchanged) ->
optionally ``RemoveOversampling`` -> ``AcquisitionBuffer`` (``gadgets.buffer``: one ReconData per
slice) -> ``gadgets.layout.buffer_to_kspace`` (ReconData ``[E0, E1, E2, CHA, N, S, LOC]`` -> core
``(batch, coils, frames, ky, kx)``).

Frames: the first of the ``phase``, ``contrast``, ``repetition``, ``set`` counters whose encoding
limit exceeds 0 becomes the buffer's N dimension and so the core frames axis (cine phases, mapping
contrasts). Scans whose slices hold several 2D images per frame (3D encoding, a second dynamic
counter) are not training slices and raise a ValueError naming the file.

Readout oversampling is kept by default (``KspaceSample.recon_nx`` is the header's recon matrix
x, so targets are cropped to the recon FOV); ``remove_oversampling=True`` runs the
RemoveOversampling gadget instead.

Context from the header: ``acquisitionSystemInformation`` (systemVendor, systemModel,
systemFieldStrength_T; missing values give "Unknown" and 3.0 T) and the protocol name
(``measurementInformation.protocolName``) for modality and view (:func:`protocol_modality_view`).

Files are indexed from their headers (slices from ``encodingLimits.slice``); the whole file is
assembled on first access and kept until another file is read, so read the slices of a file in
order (or in one worker) to assemble it once. Unreadable files behave as in
``train.data.cmrxrecon.CMRxReconDataset`` (``skipped``, ``on_read_error``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import ismrmrd
import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.context import ScanContext
from gadgets.buffer import AcquisitionBuffer
from gadgets.ismrmrd_io import iter_acquisitions, read_header
from gadgets.layout import buffer_to_kspace
from gadgets.noise_adjust import NoiseAdjust
from gadgets.remove_oversampling import RemoveOversampling

from .sample import KspaceSample
from .skipping import READ_ERRORS, SkipUnreadable, check_on_read_error

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Counters that may carry the frames, in the order they are tried.
FRAME_COUNTERS = ("phase", "contrast", "repetition", "set")
#: Defaults for missing header fields.
DEFAULT_FIELD_STRENGTH_T = 3.0
UNKNOWN = "Unknown"

# (token prefixes, exact tokens, label), checked in order against the protocol name's tokens.
_MODALITY_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("molli", "shmolli", "t1map", "t1mapping", "sasha"), ("t1",), "T1 mapping"),
    (("t2map", "t2mapping", "t2prep"), ("t2",), "T2 mapping"),
    (("t2star", "t2smap"), (), "T2* mapping"),
    (("lge", "psir", "delayed"), ("de",), "LGE"),
    (("perf",), (), "Perfusion"),
    (("tagging", "spamm"), ("tag",), "Tagging"),
    (("flow", "venc"), ("pc",), "Flow"),
    (("blackblood", "haste"), ("bb", "dir"), "Black blood"),
    (("cine", "trufi", "bssfp", "ssfp", "fiesta"), ("tfe", "btfe"), "Cine"),
    (("mapping",), (), "T1 mapping"),
)
_VIEW_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("2ch", "2cv"), ("vla",), "two-chamber"),
    (("3ch", "3cv"), (), "three-chamber"),
    (("4ch", "4cv"), ("hla",), "four-chamber"),
    (("lvot",), (), "LVOT"),
    (("rvot",), (), "RVOT"),
    (("sax", "short"), ("sa",), "short-axis"),
    (("lax", "long"), ("la",), "long-axis"),
    (("aort",), ("ao",), "aorta"),
)


def _match(tokens: Sequence[str], rules: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]) -> str | None:
    for prefixes, exact, label in rules:
        for token in tokens:
            if token in exact or any(token.startswith(p) for p in prefixes):
                return label
    return None


def protocol_modality_view(protocol: str | None) -> tuple[str, str]:
    """(modality, view) from a protocol name: ``"CardioMM_cine_sax"`` -> ("Cine", "short-axis").

    Keywords (case-insensitive, on the name's alphanumeric tokens): MOLLI/ShMOLLI/T1map -> T1
    mapping, T2map/T2prep -> T2 mapping, LGE/PSIR -> LGE, perf -> Perfusion, tagging -> Tagging,
    flow -> Flow, black blood/HASTE -> Black blood, cine/TrueFISP/bSSFP -> Cine; views sax/sa,
    2ch/3ch/4ch, lvot, lax, aorta. Unknown parts default to Cine and short-axis (logged).
    """
    tokens = [t for t in re.split(r"[^a-z0-9*]+", (protocol or "").lower()) if t]
    modality = _match(tokens, _MODALITY_RULES)
    view = _match(tokens, _VIEW_RULES)
    if modality is None or view is None:
        logger.debug("protocol name %r: modality %s, view %s (defaults Cine, short-axis)", protocol, modality, view)
    return modality or "Cine", view or "short-axis"


def context_from_header(header: ismrmrd.xsd.ismrmrdHeader) -> ScanContext:
    """Fully sampled ScanContext from an ISMRMRD header (vendor, model, field strength, protocol name)."""
    system = getattr(header, "acquisitionSystemInformation", None)
    vendor = (getattr(system, "systemVendor", None) or "").strip() or UNKNOWN
    model = (getattr(system, "systemModel", None) or "").strip() or UNKNOWN
    field = getattr(system, "systemFieldStrength_T", None)
    field = float(field) if field is not None and float(field) > 0 else DEFAULT_FIELD_STRENGTH_T
    measurement = getattr(header, "measurementInformation", None)
    modality, view = protocol_modality_view(getattr(measurement, "protocolName", None))
    return ScanContext(field_strength_t=field, vendor=vendor, scanner_model=model, modality=modality, view=view)


def frame_counter(header: ismrmrd.xsd.ismrmrdHeader) -> str:
    """The counter that carries the frames (see the module docstring)."""
    limits = header.encoding[0].encodingLimits
    for name in FRAME_COUNTERS:
        limit = getattr(limits, name, None)
        if limit is not None and int(limit.maximum) > 0:
            return name
    return FRAME_COUNTERS[0]


def _n_slices(header: ismrmrd.xsd.ismrmrdHeader) -> int:
    limit = header.encoding[0].encodingLimits.slice
    return 1 if limit is None else int(limit.maximum) + 1


def _recon_nx(header: ismrmrd.xsd.ismrmrdHeader) -> int | None:
    encoding = header.encoding[0]
    encoded, recon = int(encoding.encodedSpace.matrixSize.x), int(encoding.reconSpace.matrixSize.x)
    return recon if 0 < recon < encoded else None


def assemble_slices(path: PathLike, *, group: str = "dataset", prewhiten: bool = True,
                    remove_oversampling: bool = False) -> tuple[dict[int, np.ndarray], ismrmrd.xsd.ismrmrdHeader]:
    """Assemble a raw file into ``{slice: kspace (C, T, ky, kx) complex64}`` with the chain's gadgets.

    Returns the slices and the parsed header. Raises ValueError when a slice assembles into more
    than one 2D+t image (3D encoding or a second dynamic counter) or a slice appears twice.
    """
    header, _ = read_header(path, group)
    if not header.encoding:
        raise ValueError(f"{str(path)!r}: the ISMRMRD header has no encoding")
    frames = frame_counter(header)
    items: Iterable[Any] = iter_acquisitions(path, group)
    if prewhiten:
        items = NoiseAdjust()(items, header)
    if remove_oversampling:
        items = RemoveOversampling()(items, header)
    buffer = AcquisitionBuffer(trigger_dimension="slice", N_dimension=frames, S_dimension="none")
    slices: dict[int, np.ndarray] = {}
    for recon_data in buffer(items, header):
        bit = recon_data.bits[0]
        kspace, layout = buffer_to_kspace(np.asarray(bit.data.data), "N")
        if layout.batch != 1:
            raise ValueError(f"{str(path)!r}: a slice assembled into {layout.batch} images per frame "
                             f"(E2 {layout.n_e2}, S {layout.n_s}, LOC {layout.n_loc}); only 2D(+t) scans are read")
        headers = np.asarray(bit.data.headers, dtype=object).ravel(order="F")
        filled = [h for h in headers if int(getattr(h, "number_of_samples", 0)) > 0]
        if not filled:
            raise ValueError(f"{str(path)!r}: a buffer without acquisitions")
        slice_index = int(filled[0].idx.slice)
        if slice_index in slices:
            raise ValueError(f"{str(path)!r}: slice {slice_index} assembled twice (acquisitions out of order?)")
        slices[slice_index] = kspace[0]
    if not slices:
        raise ValueError(f"{str(path)!r}: no imaging acquisitions")
    return slices, header


def _has_noise_scan(path: PathLike, group: str) -> bool:
    for acquisition in iter_acquisitions(path, group):
        return bool(acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT))  # noise scans come first
    return False


def has_ground_truth(path: PathLike) -> bool:
    """Whether ``path`` holds the ground truth group that ``gadgets.simulate`` writes beside the raw data."""
    import h5py

    from gadgets.simulate import TRUTH_GROUP

    with h5py.File(path, "r") as handle:
        return TRUTH_GROUP in handle


def truth_reference(path: PathLike, *, prewhiten: bool = True) -> np.ndarray:
    """The reference of a simulated file: ``(slices, T, y, x)`` float32 noise-free RSS on the recon FOV.

    The RSS of the noise-free coil images (``cardiomm_core.phantom.noise_free_rss``) after the
    prewhitening of the file's true noise covariance when the data are prewhitened, as the demo
    scores the chain's images (``gadgets.demo.reference_images``).
    """
    from cardiomm_core.noise import prewhitening_matrix
    from cardiomm_core.phantom import noise_free_rss
    from gadgets.simulate import read_ground_truth

    truth = read_ground_truth(path)
    mixing = prewhitening_matrix(np.asarray(truth.noise_covariance, dtype=np.complex128)) if prewhiten else None
    return noise_free_rss(truth.images, truth.sensitivities, mixing)


@dataclass(frozen=True)
class RawFileEntry:
    """One indexed raw file: path, slice count from the header, and context."""

    path: Path
    n_slices: int
    context: ScanContext
    recon_nx: int | None


class IsmrmrdRawDataset(SkipUnreadable, Dataset):
    """Fully sampled ISMRMRD raw files as :class:`KspaceSample`, one item per (file, slice).

    ``paths``: files (or one file). ``group``: the ISMRMRD group ("dataset"). ``prewhiten``: run
    NoiseAdjust (a no-op for files without a noise scan). ``remove_oversampling``: crop the readout
    to the recon FOV in k-space (RemoveOversampling) instead of keeping it with ``recon_nx``.
    ``on_read_error``: "next" (default) or "raise", as in CMRxReconDataset; ``skipped`` lists
    ``(path, reason)`` of the files left out.
    """

    def __init__(self, paths: PathLike | Sequence[PathLike], *, group: str = "dataset", prewhiten: bool = True,
                 remove_oversampling: bool = False, on_read_error: str = "next", ground_truth: bool = False) -> None:
        check_on_read_error(on_read_error)
        #: Score against the ground truth stored beside the raw data (gadgets.simulate's group), when a
        #: file has one: ``KspaceSample.reference`` = :func:`truth_reference` (cardiomm-eval sets this).
        self.ground_truth = bool(ground_truth)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        self.group = group
        self.prewhiten = bool(prewhiten)
        self.remove_oversampling = bool(remove_oversampling)
        self.on_read_error = on_read_error
        self.skipped: list[tuple[str, str]] = []
        self.files: list[RawFileEntry] = []
        self.items: list[tuple[int, int]] = []
        self._bad: set[int] = set()
        self._cache: tuple[int, dict[int, np.ndarray]] | None = None
        for path in self.paths:
            try:
                header, _ = read_header(path, group)
                if not header.encoding:
                    raise ValueError("the ISMRMRD header has no encoding")
                entry = RawFileEntry(path, _n_slices(header), context_from_header(header),
                                     None if remove_oversampling else _recon_nx(header))
            except READ_ERRORS as error:
                self._skip(path, f"{type(error).__name__}: {error}")
                continue
            self.files.append(entry)
            self.items.extend((len(self.files) - 1, s) for s in range(entry.n_slices))
        logger.info("IsmrmrdRawDataset: %d slices in %d files; %d files skipped",
                    len(self.items), len(self.files), len(self.skipped))

    def __len__(self) -> int:
        return len(self.items)

    def _slices(self, file_index: int) -> dict[int, np.ndarray]:
        if self._cache is None or self._cache[0] != file_index:
            slices, _ = assemble_slices(self.files[file_index].path, group=self.group, prewhiten=self.prewhiten,
                                        remove_oversampling=self.remove_oversampling)
            self._cache = (file_index, slices)
        return self._cache[1]

    def _load(self, index: int) -> KspaceSample:
        file_index, slice_index = self.items[index]
        entry = self.files[file_index]
        slices = self._slices(file_index)
        if slice_index not in slices:
            raise ValueError(f"slice {slice_index} is missing (the file has slices {sorted(slices)})")
        kspace = torch.from_numpy(np.array(slices[slice_index], dtype=np.complex64, copy=True))
        reference = None
        if self.ground_truth:
            truth = self._truth(file_index)
            if truth is not None:
                reference = torch.from_numpy(np.ascontiguousarray(truth[slice_index]))
        return KspaceSample(kspace, entry.context, f"{entry.path.name}@slice{slice_index}", None, entry.recon_nx,
                            reference)

    def _truth(self, file_index: int) -> np.ndarray | None:
        cached = getattr(self, "_truth_cache", None)
        if cached is None or cached[0] != file_index:
            path = self.files[file_index].path
            whitened = self.prewhiten and _has_noise_scan(path, self.group)  # NoiseAdjust whitens only then
            cached = (file_index, truth_reference(path, prewhiten=whitened) if has_ground_truth(path) else None)
            self._truth_cache = cached
        return cached[1]

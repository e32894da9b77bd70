"""The data sets of a run's source configs (``data.train`` / ``data.val``): synthetic phantoms,
CMRxRecon files or ISMRMRD raw files, and the one line that describes them in a checkpoint.

The data-set modules are imported on first use: an ISMRMRD source pulls in ``ismrmrd`` and the
gadgets, which a synthetic run never needs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from ..config import CMRxReconSource, IsmrmrdSource, SyntheticSource, TrainConfig

__all__ = ["build_source", "concat_sources", "describe_sources", "sim_cache_dir"]


def build_source(source: Any, sim_cache: str | os.PathLike[str] | None = None) -> Dataset:
    """The KspaceSample data set of a source config (synthetic / cmrxrecon / ismrmrd).

    ``sim_cache``: a folder where a synthetic source keeps its simulated slices (None: none)."""
    if isinstance(source, SyntheticSource):
        from .synthetic import DEFAULT_SCANNERS, VARIED_SCANNERS, SyntheticCardiacDataset

        if source.scanners is not None:
            scanners = tuple(tuple(s) for s in source.scanners)
        else:
            scanners = VARIED_SCANNERS if source.scanner_set == "varied" else DEFAULT_SCANNERS
        return SyntheticCardiacDataset(
            source.n_subjects, seed=source.seed, n_frames=source.n_frames, n_coils=source.n_coils,
            matrix=tuple(source.matrix), modalities=tuple(source.modalities), n_slices=source.n_slices,
            noise_level=source.noise_level, readout_oversampling=source.readout_oversampling,
            prewhiten=source.prewhiten, compress_coils=source.compress_coils, target=source.target,
            nx_range=source.nx_range, ny_range=source.ny_range, coils_range=source.coils_range,
            frames_by_modality=source.frames_by_modality, noise_range=source.noise_range,
            scanners=scanners, scanner_choice=source.scanner_choice, cache_dir=sim_cache)
    if isinstance(source, CMRxReconSource):
        from .cmrxrecon import CMRxReconDataset

        return CMRxReconDataset(source.root, source.year, source.modalities, source.split, lax_view=source.lax_view,
                                readout_oversampling=source.readout_oversampling,
                                on_read_error=source.on_read_error)
    if isinstance(source, IsmrmrdSource):
        from .ismrmrd_raw import IsmrmrdRawDataset  # pulls in ismrmrd and the gadgets

        return IsmrmrdRawDataset(list(source.paths), group=source.group, prewhiten=source.prewhiten,
                                 remove_oversampling=source.remove_oversampling, on_read_error=source.on_read_error)
    raise ValueError(f"unknown data source {source!r}")


def concat_sources(sources: Sequence[Any], sim_cache: str | os.PathLike[str] | None = None) -> Dataset:
    """One data set of several source configs (a ``ConcatDataset``; the data set itself for one)."""
    datasets = [build_source(s, sim_cache) for s in sources]
    return datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)


def sim_cache_dir(cfg: TrainConfig) -> Path | None:
    """The simulation cache folder of a run (``data.sim_cache``: null, "run" or a folder)."""
    value = cfg.data.sim_cache
    if not value:
        return None
    return Path(cfg.run_dir) / "sim_cache" if value == "run" else Path(value).expanduser()


def describe_sources(sources: Sequence[Any]) -> str:
    """One line describing data sources (recorded in checkpoints)."""
    parts = []
    for s in sources:
        if isinstance(s, SyntheticSource):
            n_coils = f"{s.coils_range[0]}-{s.coils_range[1]}" if s.coils_range else f"{s.n_coils}"
            coils = f"{n_coils} coils"
            if s.prewhiten:
                coils += " prewhitened"
            if s.compress_coils is not None and (s.coils_range is not None or s.compress_coils < s.n_coils):
                coils += f" compressed to {'at most ' if s.coils_range else ''}{s.compress_coils}"
            target = ", noise-free target" if s.target == "noise_free" else ""
            nx = f"{s.nx_range[0]}-{s.nx_range[1]}" if s.nx_range else f"{s.matrix[0]}"
            ny = f"{s.ny_range[0]}-{s.ny_range[1]}" if s.ny_range else f"{s.matrix[1]}"
            if s.frames_by_modality:
                frames = ", ".join(f"{m} {lo}-{hi}" if lo != hi else f"{m} {lo}"
                                   for m, (lo, hi) in sorted(s.frames_by_modality.items()))
                frames = f"frames {frames}"
            else:
                frames = f"{s.n_frames} frames"
            extra = ""
            if s.noise_range:
                extra += f", noise {s.noise_range[0]:g}-{s.noise_range[1]:g}"
            if s.scanners is not None or s.scanner_set != "default":
                from .synthetic import VARIED_SCANNERS

                n_scanners = len(s.scanners) if s.scanners is not None else len(VARIED_SCANNERS)
                extra += f", {n_scanners} scanners"
            parts.append(f"synthetic phantoms ({s.n_subjects} subjects, seed {s.seed}, {'/'.join(s.modalities)}, "
                         f"{nx}x{ny}, {frames}, {coils}{target}{extra})")
        elif isinstance(s, CMRxReconSource):
            parts.append(f"CMRxRecon {s.year or ''} {s.split or ''} at {s.root}".replace("  ", " "))
        elif isinstance(s, IsmrmrdSource):
            parts.append(f"ISMRMRD raw files ({len(s.paths)})")
    return "; ".join(parts)

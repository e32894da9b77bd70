"""Write a simulated cardiac scan as an ISMRMRD raw HDF5 file, the way a scanner's converter would.

``write_simulated_scan(path, ...)`` draws a multi-coil phantom (``cardiomm_core.phantom``), a
sampling mask (``cardiomm_core.masks``), and writes:

``/dataset/xml``
    A complete ISMRMRD header (schema version ``CURRENT_HEADER_VERSION`` = 14, which Gadgetron
    4.7.2 accepts): encoded space with 2x readout oversampling, recon space, FOVs in mm (the
    phantom's: square pixels, ``PhantomGeometry``), encoding limits (kspace_encoding_step_1, slice, and phase for cine or
    contrast for mapping, where the frames are contrasts), cartesian trajectory, parallel imaging
    (integer nominal acceleration, calibration mode "embedded"; "other" for full sampling),
    acquisition system (vendor, model, field strength, receiver channels, relative receiver noise
    bandwidth, one coil label per coil, station and device serial), subject and study information
    (patient ID, study ID and UID, as siemens_to_ismrmrd writes them), measurement information (a
    Siemens-style four-part measurementID ``DEVICE_PATIENT_STUDY_MEAS`` that Gadgetron's native
    NoiseAdjustGadget needs, protocol name such as ``CardioMM_cine_sax``, HFS; see :func:`scan_ids`), sequence
    parameters (TR, TE, flip angle, and TI = the frame times for T1 mapping) and ``CardioMM.*`` user
    parameters (seed, n_acs, nominal / realised / effective acceleration, pattern, modality,
    metadata sentence, frame dimension, frame times, slice spacing).
``/dataset/data``
    An optional noise measurement first (``ACQ_IS_NOISE_MEASUREMENT``, dwell ``NOISE_DWELL_US``,
    drawn with ``PhantomScan.noise_samples`` and scaled by ``sqrt(imaging dwell / noise dwell)``
    since noise power grows with bandwidth = 1 / dwell), then only the sampled ky lines, ordered
    slice -> frame -> ky ascending (prospective line undersampling with the mask of each frame).
``/cardiomm_truth``
    The ground truth: ``images (slices, frames, y, x)`` complex64, ``mask (frames, ky, 1)`` float32,
    ``sensitivities (slices, coils, y, x_enc)`` complex64, ``noise_covariance (coils, coils)``,
    ``frame_times_ms (frames,)``; attributes ``context`` (ScanContext as JSON, with the realised
    acceleration and the pattern), ``seed``, ``nominal_acceleration`` and the rest of
    ``GroundTruth``. ``read_ground_truth(path)`` returns it.

Acquisition header conventions (what a reader can rely on):

- ``idx.kspace_encode_step_1`` = ky row of the encoded matrix, ``idx.slice``, and ``idx.phase``
  (cine) or ``idx.contrast`` (mapping) = frame.
- Flags: FIRST/LAST_IN_ENCODE_STEP1 on the first/last sampled line of each (slice, frame) image;
  FIRST/LAST_IN_PHASE (cine) or FIRST/LAST_IN_CONTRAST (mapping) on the same two lines;
  FIRST/LAST_IN_SLICE on the first/last acquisition of each slice (all its frames, so a trigger on
  it sees a whole 2D+t slice); IS_PARALLEL_CALIBRATION_AND_IMAGING on lines inside the ACS block
  (not for ``pattern="full"``); LAST_IN_MEASUREMENT on the very last acquisition.
- ``center_sample`` = ``x_enc // 2`` (the k-space centre of ``fft2c``), discard_pre/post 0,
  ``sample_time_us`` from a readout bandwidth of ``BANDWIDTH_HZ_PER_PIXEL`` (oversampled dwell).
- Geometry: orthonormal, right-handed double-oblique short-axis directions; slice ``s`` lies at
  ``STACK_CENTRE_MM + slice_positions_mm[s] * slice_dir`` in mm, with the phantom's own slice
  positions (base to apex), so the written geometry matches the simulated anatomy: the spacing
  equals the thickness for a contiguous stack and is larger for a few slices spread over the
  ventricle (``CardioMM.slice_spacing_mm``). Patient table at isocentre.
- ``acquisition_time_stamp`` and ``physiology_time_stamp[0]`` are in ticks of 2.5 ms (the Siemens
  convention, Gadgetron's default time-stamp resolution). Acquisition stamps strictly increase;
  ``physiology_time_stamp[0]`` is the trigger delay: ``round(frame_times_ms[frame] / 2.5)`` for
  cine, ``MAPPING_TRIGGER_DELAY_MS`` for mapping (one image per heartbeat; the frame times are
  the TI or T2-preparation times there).
- ``scan_counter`` counts all acquisitions from 1 (noise included), ``version`` is 1.

The acquisitions are written as one compound array per block with h5py in ismrmrd-python's own
HDF5 types (``ismrmrd.hdf5.acquisition_dtype``): ismrmrd-python's per-acquisition
``Dataset.append_acquisition`` measured 3.7 s for 2000 acquisitions of 8 x 256 samples, the block
write 0.06 s, with identical acquisitions read back. Files read with ismrmrd-python and with the
C++ library (Debian's ismrmrd-tools 1.8).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

from cardiomm_core.checks import check_int
from cardiomm_core.context import ScanContext
from cardiomm_core.masks import SamplingMask, make_mask
from cardiomm_core.phantom import PhantomScan, phantom_geometry, simulate_cardiac_scan

from . import PathLike
from .ismrmrd_io import header_version, open_hdf5
from .simulated_header import (
    MAPPING_TRIGGER_DELAY_MS,
    MODALITIES,
    NOISE_DWELL_US,
    SEQUENCE,
    TABLE_POSITION_MM,
    TICK_MS,
    build_header,
    imaging_dwell_us,
    measurement_uid,
    slice_geometry,
)

logger = logging.getLogger(__name__)

#: Group of the ground truth inside the written file.
TRUTH_GROUP = "cardiomm_truth"
#: Patterns that sample whole ky lines (ktRadial samples kx too and cannot be written line by line).
LINE_PATTERNS = ("ktGaussian", "ktUniform", "Uniform", "full")
#: Acquisitions written per HDF5 call (and per progress line).
WRITE_BLOCK = 2048


def _bit(flag: int) -> int:
    """The bit of an ISMRMRD acquisition flag (flags are numbered from 1)."""
    return 1 << (flag - 1)


@dataclass(frozen=True)
class ScanSampling:
    """How a simulated scan was sampled, as its summary and its ground truth both report it: the
    modality, the line pattern, the nominal acceleration asked for, the realised and effective ones
    of the mask drawn (``cardiomm_core.masks.SamplingMask``) and the calibration lines."""

    modality: str
    pattern: str
    nominal_acceleration: float
    realised_acceleration: float
    effective_acceleration: float
    n_acs: int


@dataclass(frozen=True)
class SimulationSummary(ScanSampling):
    """What ``write_simulated_scan`` wrote. ``matrix`` is the recon ``(nx, ny)``."""

    path: Path
    n_acquisitions: int
    n_noise_acquisitions: int
    n_sampled_lines: int
    n_slices: int
    n_frames: int
    n_coils: int
    matrix: tuple[int, int]
    encoded_matrix: tuple[int, int]
    header_version: int
    context: ScanContext
    seed: int
    elapsed_s: float


@dataclass(frozen=True)
class GroundTruth(ScanSampling):
    """The ``/cardiomm_truth`` group of a simulated scan.

    images          (slices, frames, y, x)      complex64, truth on the recon FOV
    mask            (frames, ky, 1)             float32 sampling mask of each frame
    sensitivities   (slices, coils, y, x_enc)   complex64 on the encoded (oversampled) FOV
    noise_covariance (coils, coils)             complex64
    frame_times_ms  (frames,)                   float64 trigger delay (cine) or frame time
    """

    images: np.ndarray
    mask: np.ndarray
    sensitivities: np.ndarray
    noise_covariance: np.ndarray
    frame_times_ms: np.ndarray
    context: ScanContext
    seed: int
    readout_oversampling: int
    noise_level: float
    noise_scan_scale: float


# --------------------------------------------------------------------------- validation

def _check_matrix(matrix: Sequence[int]) -> tuple[int, int]:
    try:
        nx, ny = matrix
    except (TypeError, ValueError):
        raise ValueError(f"matrix must be (nx readout, ny phase), got {matrix!r}") from None
    return check_int("matrix[0] (nx readout)", nx, 2), check_int("matrix[1] (ny phase)", ny, 2)


def _check_pattern(pattern: str) -> str:
    if pattern == "ktRadial":
        raise ValueError(
            "pattern 'ktRadial' is not line-based (it samples kx as well as ky), so it cannot be "
            f"written as ISMRMRD readout lines; use one of {LINE_PATTERNS}"
        )
    if pattern not in LINE_PATTERNS:
        raise ValueError(f"pattern must be one of {LINE_PATTERNS}, got {pattern!r}")
    return pattern


# --------------------------------------------------------------------------- acquisitions

@dataclass(frozen=True)
class _LinePlan:
    """Per imaging acquisition, in file order: slice, frame, ky and flags."""

    slice: np.ndarray
    frame: np.ndarray
    ky: np.ndarray
    flags: np.ndarray


def _plan_lines(mask: SamplingMask, n_slices: int, n_frames: int, is_cine: bool, calibration: bool) -> _LinePlan:
    acs_ky = mask.acs_slice()[0]
    per_frame = [np.sort(np.asarray(mask.sampled_lines(t), dtype=np.int64)) for t in range(n_frames)]
    for t, lines in enumerate(per_frame):
        if lines.size == 0:
            raise ValueError(f"the mask samples no ky line in frame {t}")
    slices, frames, kys, flags = [], [], [], []
    first_frame_flag = ismrmrd.ACQ_FIRST_IN_PHASE if is_cine else ismrmrd.ACQ_FIRST_IN_CONTRAST
    last_frame_flag = ismrmrd.ACQ_LAST_IN_PHASE if is_cine else ismrmrd.ACQ_LAST_IN_CONTRAST
    for s in range(n_slices):
        for t, lines in enumerate(per_frame):
            f = np.zeros(lines.size, dtype=np.uint64)
            f[0] |= np.uint64(_bit(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) | _bit(first_frame_flag))
            f[-1] |= np.uint64(_bit(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) | _bit(last_frame_flag))
            if t == 0:
                f[0] |= np.uint64(_bit(ismrmrd.ACQ_FIRST_IN_SLICE))
            if t == n_frames - 1:
                f[-1] |= np.uint64(_bit(ismrmrd.ACQ_LAST_IN_SLICE))
            if calibration:
                in_acs = (lines >= acs_ky.start) & (lines < acs_ky.stop)
                f[in_acs] |= np.uint64(_bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING))
            slices.append(np.full(lines.size, s))
            frames.append(np.full(lines.size, t))
            kys.append(lines)
            flags.append(f)
    plan = _LinePlan(np.concatenate(slices), np.concatenate(frames), np.concatenate(kys), np.concatenate(flags))
    plan.flags[-1] |= np.uint64(_bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT))
    return plan


def _channel_mask(n_coils: int) -> np.ndarray:
    words = np.zeros(16, dtype=np.uint64)
    for c in range(n_coils):
        word, bit = divmod(c, 64)
        words[word] |= np.uint64(1 << bit)
    return words


def _base_heads(n: int, n_coils: int, n_samples: int, dwell_us: float, measurement_uid: int) -> np.ndarray:
    head = np.zeros(n, dtype=acquisition_header_dtype)
    head["version"] = 1
    head["measurement_uid"] = measurement_uid
    head["number_of_samples"] = n_samples
    head["available_channels"] = n_coils
    head["active_channels"] = n_coils
    head["channel_mask"] = _channel_mask(n_coils)[None, :]
    head["center_sample"] = n_samples // 2
    head["sample_time_us"] = dwell_us
    head["patient_table_position"] = np.asarray(TABLE_POSITION_MM, dtype=np.float32)[None, :]
    return head


def _rows(heads: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Structured acquisition rows from ``heads (n,)`` and ``data (n, coils, samples)`` complex64."""
    rows = np.zeros(heads.shape[0], dtype=acquisition_dtype)
    rows["head"] = heads
    flat = np.ascontiguousarray(data, dtype=np.complex64).view(np.float32).reshape(heads.shape[0], -1)
    empty = np.zeros(0, dtype=np.float32)
    for i in range(heads.shape[0]):
        rows[i] = (heads[i], empty, flat[i])
    return rows


# --------------------------------------------------------------------------- writing

def write_simulated_scan(
    path: PathLike,
    *,
    n_slices: int = 2,
    n_phases: int = 12,
    n_coils: int = 8,
    matrix: tuple[int, int] = (128, 112),
    acceleration: float = 8.0,
    pattern: str = "ktGaussian",
    n_acs: int | None = None,
    modality: str = "cine",
    seed: int = 0,
    noise_scan: bool = True,
    noise_level: float = 0.01,
    progress: bool = False,
) -> SimulationSummary:
    """Simulate a scan and write it to ``path`` as ISMRMRD raw data plus ``/cardiomm_truth``.

    ``matrix`` is the recon ``(nx readout, ny phase)``; the readout is written 2x oversampled.
    ``n_phases`` is the number of frames (cine phases, or mapping contrasts). ``acceleration`` is
    the nominal acceleration of ``pattern`` (ignored for "full"); ``n_acs`` the calibration lines
    (default: the pattern's, 24 for Uniform and 16 for the kt patterns); the same ``seed`` draws the
    phantom, the mask and the noise scan. The file is written beside ``path`` and then moved into
    place, so ``path`` is replaced whole or not at all. With ``progress`` each written block is
    logged at INFO level.
    """
    started = time.perf_counter()
    n_slices = check_int("n_slices", n_slices, 1)
    n_frames = check_int("n_phases", n_phases, 1)
    n_coils = check_int("n_coils", n_coils, 1)
    nx, ny = _check_matrix(matrix)
    pattern = _check_pattern(pattern)
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if pattern != "full" and (not np.isfinite(acceleration) or acceleration < 1):
        raise ValueError(f"acceleration must be a number >= 1, got {acceleration!r}")
    if not np.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    nominal = 1.0 if pattern == "full" else float(acceleration)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a directory; give a file name such as scan.h5")

    log = logger.info if progress else logger.debug
    log("simulating %s phantom: %d slices x %d frames x %d coils, matrix %d x %d, seed %d",
        modality, n_slices, n_frames, n_coils, nx, ny, seed)
    scan = simulate_cardiac_scan(seed=int(seed), n_slices=n_slices, n_frames=n_frames, n_coils=n_coils,
                                 matrix=(nx, ny), readout_oversampling=2, modality=modality,
                                 noise_level=float(noise_level))
    kspace = np.asarray(scan.kspace)
    n_ky, nx_enc = kspace.shape[-2], kspace.shape[-1]
    if kspace.shape != (n_slices, n_coils, n_frames, ny, nx * int(scan.readout_oversampling)):
        raise ValueError(f"phantom k-space has shape {kspace.shape}, expected "
                         f"{(n_slices, n_coils, n_frames, ny, nx * int(scan.readout_oversampling))}")
    mask = make_mask(pattern, nominal, n_frames, n_ky, nx_enc, n_acs=None if pattern == "full" else n_acs,
                     seed=int(seed))
    context = scan.context.with_sampling(max(1.0, float(mask.realised_acceleration)), pattern)
    is_cine = modality == "cine"

    geometry = phantom_geometry(scan)
    header = build_header(scan, mask, modality=modality, nominal_acceleration=nominal, n_slices=n_slices,
                          n_frames=n_frames, n_coils=n_coils, matrix=(nx, ny), geometry=geometry)
    xml_text = ismrmrd.xsd.ToXML(header)
    if isinstance(xml_text, bytes):
        xml_text = xml_text.decode("utf-8")

    plan = _plan_lines(mask, n_slices, n_frames, is_cine, calibration=pattern != "full")
    n_lines = plan.ky.size
    n_noise = 1 if noise_scan else 0
    n_total = n_lines + n_noise
    dwell_us = imaging_dwell_us(modality, nx_enc)
    noise_scale = math.sqrt(dwell_us / NOISE_DWELL_US)
    uid = measurement_uid(seed)
    positions, read_dir, phase_dir, slice_dir = slice_geometry(geometry.slice_positions_mm)
    ticks_per_readout = max(1, int(round(SEQUENCE[modality][0] / TICK_MS)))
    start_tick = 36_000 * 400  # 10:00:00 in 2.5 ms ticks
    if is_cine:
        trigger_ms = np.asarray(scan.frame_times_ms, dtype=np.float64)
    else:
        trigger_ms = np.full(n_frames, MAPPING_TRIGGER_DELAY_MS)
    frame_ticks = np.rint(trigger_ms / TICK_MS).astype(np.uint32)

    path.parent.mkdir(parents=True, exist_ok=True)
    # h5py creates the file itself, so it gets the usual permissions (mkstemp would make it 0600)
    tmp_name = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with h5py.File(tmp_name, "w") as handle:
            group = handle.create_group("dataset")
            group.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes))
            group["xml"][0] = xml_text.encode("utf-8")
            data = group.create_dataset("data", shape=(n_total,), maxshape=(None,), dtype=acquisition_dtype,
                                        chunks=(max(1, min(n_total, 256)),))
            written = 0
            if noise_scan:
                noise = np.asarray(scan.noise_samples(nx_enc, seed=int(seed)), dtype=np.complex64) * noise_scale
                head = _base_heads(1, n_coils, nx_enc, NOISE_DWELL_US, uid)
                head["flags"] = _bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                head["scan_counter"] = 1
                head["acquisition_time_stamp"] = start_tick - 400  # one second before imaging
                head["read_dir"], head["phase_dir"], head["slice_dir"] = read_dir, phase_dir, slice_dir
                head["position"] = positions[0]
                data[0:1] = _rows(head, noise.astype(np.complex64)[None])
                written = 1
            for first in range(0, n_lines, WRITE_BLOCK):
                last = min(first + WRITE_BLOCK, n_lines)
                sel = slice(first, last)
                s, t, ky = plan.slice[sel], plan.frame[sel], plan.ky[sel]
                head = _base_heads(last - first, n_coils, nx_enc, dwell_us, uid)
                head["flags"] = plan.flags[sel]
                order = np.arange(first, last)
                head["scan_counter"] = order + n_noise + 1
                head["acquisition_time_stamp"] = start_tick + order * ticks_per_readout
                head["physiology_time_stamp"][:, 0] = frame_ticks[t]
                head["position"] = positions[s].astype(np.float32)
                head["read_dir"], head["phase_dir"], head["slice_dir"] = read_dir, phase_dir, slice_dir
                head["idx"]["kspace_encode_step_1"] = ky
                head["idx"]["slice"] = s
                if is_cine:
                    head["idx"]["phase"] = t
                else:
                    head["idx"]["contrast"] = t
                lines = kspace[s, :, t, ky, :]  # (n, coils, x_enc)
                data[written + first:written + last] = _rows(head, lines)
                if last == n_lines or (10 * last) // n_lines > (10 * first) // n_lines:  # about every 10 %
                    log("wrote %d / %d acquisitions to %s", n_noise + last, n_total, path)
            _write_truth(handle, scan, mask, context, modality=modality, seed=int(seed), nominal=nominal,
                         noise_level=float(noise_level), noise_scale=noise_scale)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise

    summary = SimulationSummary(
        path=path, n_acquisitions=n_total, n_noise_acquisitions=n_noise, n_sampled_lines=n_lines,
        n_slices=n_slices, n_frames=n_frames, n_coils=n_coils, matrix=(nx, ny), encoded_matrix=(nx_enc, ny),
        modality=modality, pattern=pattern, nominal_acceleration=nominal,
        realised_acceleration=float(mask.realised_acceleration),
        effective_acceleration=float(mask.effective_acceleration), n_acs=int(mask.n_acs),
        header_version=int(header_version(xml_text) or 0), context=context, seed=int(seed),
        elapsed_s=time.perf_counter() - started,
    )
    log("wrote %s: %d acquisitions (%d sampled lines, %d noise), realised acceleration %.2f, in %.1f s",
        path, n_total, n_lines, n_noise, summary.realised_acceleration, summary.elapsed_s)
    return summary


def _write_truth(handle: h5py.File, scan: PhantomScan, mask: SamplingMask, context: ScanContext, *,
                 modality: str, seed: int, nominal: float, noise_level: float, noise_scale: float) -> None:
    truth = handle.create_group(TRUTH_GROUP)
    truth.create_dataset("images", data=np.asarray(scan.images, dtype=np.complex64), compression="gzip",
                         compression_opts=1)
    truth.create_dataset("mask", data=np.asarray(mask.mask, dtype=np.float32))
    truth.create_dataset("sensitivities", data=np.asarray(scan.sensitivities, dtype=np.complex64),
                         compression="gzip", compression_opts=1)
    truth.create_dataset("noise_covariance", data=np.asarray(scan.noise_covariance, dtype=np.complex64))
    truth.create_dataset("frame_times_ms", data=np.asarray(scan.frame_times_ms, dtype=np.float64))
    attrs = truth.attrs
    attrs["context"] = json.dumps(context.to_dict())
    attrs["seed"] = seed
    attrs["modality"] = modality
    attrs["pattern"] = mask.pattern
    attrs["nominal_acceleration"] = nominal
    attrs["realised_acceleration"] = float(mask.realised_acceleration)
    attrs["effective_acceleration"] = float(mask.effective_acceleration)
    attrs["n_acs"] = int(mask.n_acs)
    attrs["readout_oversampling"] = int(scan.readout_oversampling)
    attrs["noise_level"] = noise_level
    attrs["noise_scan_scale"] = noise_scale
    attrs["format_version"] = 1


def read_ground_truth(path: PathLike) -> GroundTruth:
    """Read the ``/cardiomm_truth`` group written by ``write_simulated_scan``."""
    with open_hdf5(path) as handle:
        if TRUTH_GROUP not in handle:
            raise ValueError(f"{str(path)!r} has no ground truth: group '/{TRUTH_GROUP}' is missing "
                             "(only files written by cardiomm-simulate have one)")
        truth = handle[TRUTH_GROUP]
        missing = [k for k in ("images", "mask", "sensitivities", "noise_covariance", "frame_times_ms")
                   if k not in truth]
        if missing:
            raise ValueError(f"{str(path)!r}: '/{TRUTH_GROUP}' lacks {missing}")
        attrs = truth.attrs
        context_json = attrs["context"]
        if isinstance(context_json, bytes):
            context_json = context_json.decode("utf-8")
        return GroundTruth(
            images=truth["images"][()].astype(np.complex64),
            mask=truth["mask"][()].astype(np.float32),
            sensitivities=truth["sensitivities"][()].astype(np.complex64),
            noise_covariance=truth["noise_covariance"][()].astype(np.complex64),
            frame_times_ms=truth["frame_times_ms"][()].astype(np.float64),
            context=ScanContext.from_dict(json.loads(context_json)),
            seed=int(attrs["seed"]),
            modality=str(attrs["modality"]),
            pattern=str(attrs["pattern"]),
            nominal_acceleration=float(attrs["nominal_acceleration"]),
            realised_acceleration=float(attrs["realised_acceleration"]),
            effective_acceleration=float(attrs["effective_acceleration"]),
            n_acs=int(attrs["n_acs"]),
            readout_oversampling=int(attrs["readout_oversampling"]),
            noise_level=float(attrs["noise_level"]),
            noise_scan_scale=float(attrs["noise_scan_scale"]),
        )

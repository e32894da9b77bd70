"""CardioMMRecon: ReconData -> images, with the CardioMM model or, failing that, CG-SENSE.

Accepts ``gadgetron.types.ReconData`` (from our :class:`~gadgets.buffer.AcquisitionBuffer` or
Gadgetron's ``BucketToBufferGadget``); every other item passes through. For each ReconBit:

1. the buffer ``data [E0, E1, E2, CHA, N, S, LOC]`` becomes core ``kspace (batch, coils, frames,
   ky, kx)`` and a line mask ``(batch, 1, frames, ky, 1)`` through :mod:`gadgets.layout` (frames =
   N or S, ``frames_dimension``). Calibration-only lines of an embedded reference buffer of the
   same shape (``ACQ_IS_PARALLEL_CALIBRATION`` lines that are not in ``data``) are merged in,
   since they were acquired in the same frame; a separate reference (another shape) is not used;
2. the ScanContext comes from the ISMRMRD header (:func:`gadgets.header_context.context_from_header`,
   with the ``modality``/``view`` parameters where the protocol says nothing recognisable) and the
   mask (:func:`gadgets.header_context.sampling_from_mask`: the nominal R and family as training describes
   them, in the engine's mask convention, with the header's declared
   ``parallelImaging.accelerationFactor`` when it fits the mask); the engine renders the sentences
   in its checkpoint's style;
3. ``cardiomm_core.engine.reconstruct_or_fallback`` reconstructs with the engine (obtained once per
   process per checkpoint and device through ``cardiomm_core.engine.ENGINES``: a warm worker loads the model once),
   or with the ``fallback`` method when there is no model, it cannot be loaded, or it fails. A
   fallback is logged and marked in the images, never an ERROR;
4. the images are cropped to the recon matrix along the readout when the data are still
   oversampled (E0 > recon matrix x; the central columns, as ``RemoveROOversampling`` keeps them),
   then sent as one ``ismrmrd.Image`` per (N, S, LOC) of data ``(1, 1, y, x)``: float32 magnitude
   (``magnitude``, IMTYPE_MAGNITUDE) or complex64 (IMTYPE_COMPLEX).

Image headers: position, read/phase/slice directions, patient table position, measurement uid,
average/slice/contrast/phase/repetition/set indices, acquisition and physiology time stamps from
the acquisition header of that (N, S, LOC) at the k-space centre line (or its first filled line);
where a (N, S, LOC) has no acquisition the layout's index goes to phase/set/slice. ``matrix_size``
= the image, ``field_of_view`` from the buffer's sampling description (readout: recon FOV per recon
pixel; phase: encoded FOV per encoded line; z: recon FOV), ``image_series_index`` the parameter,
``image_index`` counting up from 1 over the stream. Meta attributes: see :func:`image_meta`.

Data checks (:mod:`gadgets.data_checks`): a line of the buffer with a NaN, Inf or absurd sample (as
a native BucketToBuffer may deliver it) is zeroed and counted as not acquired before anything else;
the drop counts marked upstream plus these go to every image's meta (``CardioMM.DroppedAcquisitions``
and ``CardioMM.Dropped.*``). When the effective acceleration (all k-space locations over the
sampled ones) is below ``direct_recon_threshold`` (default 1.5) the data are (nearly) fully
sampled and the images are the direct reconstruction (zero-filled inverse FFT + root-sum-of-squares,
``cardiomm_core.conventional.direct_recon``), marked ``CardioMM.Method`` "direct". No image leaves with a NaN
or Inf pixel: such pixels (which the checks above should make impossible) are set to 0, logged and
counted in ``CardioMM.NonFinitePixels``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types.recon_data import ReconBuffer, ReconData

from cardiomm_core.checkpoint import read_checkpoint_meta
from cardiomm_core.context import ScanContext
from cardiomm_core.conventional import direct_recon
from cardiomm_core.engine import ENGINES, InferenceEngine, ReconOutcome, reconstruct_or_fallback
from cardiomm_core.packaged import resolve_checkpoint
from cardiomm_core.readout import crop_image_readout
from cardiomm_core.varnet import VarNetConfig

from . import data_checks
from .buffer import frames_dimension, series_extents
from .data_checks import DropCounts
from .header_context import context_from_header, declared_acceleration, sampling_from_mask
from .layout import (
    FRAME_DIMS,
    BufferLayout,
    ImageIndex,
    buffer_to_kspace,
    images_to_ismrmrd_data,
    line_sampled,
    sampling_mask,
)
from .protocol.checkpoint_policy import CheckpointRefused, allowed_checkpoint_dirs, check_remote_checkpoint
from .protocol.params import Param
from .protocol.stream import Gadget
from .protocol.wire_limits import redact_paths

logger = logging.getLogger(__name__)

#: Fallback methods (cardiomm_core.conventional.RECON_METHODS) and how images name them.
FALLBACK_NAMES = {"cg_sense": "CG-SENSE", "zero_filled": "zero-filled"}
#: ImageComment of model images; fallback images get "<this>_fallback_<method>".
IMAGE_COMMENT = "CardioMM"
#: Header indices that receive the layout's (N, S, LOC) when a (N, S, LOC) had no acquisition.
_LAYOUT_INDEX_FIELDS = ("phase", "set", "slice")

# --------------------------------------------------------------------------- the engine, once per process

def engine_loads() -> int:
    """How many times this process has loaded a model (a new engine in ``cardiomm_core.engine.ENGINES``)."""
    return ENGINES.loads


def load_engine(checkpoint: Path, device: str = "auto") -> InferenceEngine:
    """The engine of ``checkpoint`` on ``device`` from the process's cache, ``cardiomm_core.engine.ENGINES``.

    Thread-safe: concurrent first calls load once. A load (an engine not in the cache) is counted
    (:func:`engine_loads`) and logged as ``model loaded: ...``. Exceptions of the loader propagate.
    A benchmark peer's checkpoint (E2E-VarNet, architecture kind "varnet") is refused with a
    ValueError before it is loaded, and also when the cache already holds its engine (loaded by
    ``cardiomm_core.engine.get_engine``, which does not check): the chains reconstruct with CardioMM
    checkpoints only.
    """
    engine, loaded = ENGINES.get(checkpoint, device, before_load=refuse_benchmark_peer)
    if isinstance(engine.model.config, VarNetConfig):  # cached by another caller (get_engine) without the check
        raise _peer_refused(checkpoint)
    if loaded:
        logger.info("model loaded: %s on %s (%s; load %d of this process)", checkpoint, engine.device,
                    describe_model(checkpoint, engine), ENGINES.loads)
    return engine


def refuse_benchmark_peer(checkpoint: Path) -> None:
    """ValueError (one line) when ``checkpoint`` holds a benchmark peer (fastMRI's E2E-VarNet,
    ``"kind": "varnet"``), which ``benchmarks/quality.py`` evaluates but no chain runs. A sidecar
    that cannot be read is left to the loader to report."""
    try:
        meta = read_checkpoint_meta(checkpoint)
    except (OSError, ValueError):
        return
    if isinstance(meta.architecture, VarNetConfig):
        raise _peer_refused(checkpoint)


def _peer_refused(checkpoint: Path) -> ValueError:
    return ValueError(f"checkpoint {Path(checkpoint).name} is an E2E-VarNet benchmark peer (architecture kind "
                      "'varnet'), not a CardioMM model: the chains reconstruct with CardioMM checkpoints only "
                      "(evaluate it with benchmarks/quality.py)")


def describe_model(checkpoint: Path, engine: InferenceEngine) -> str:
    """'<checkpoint stem>; cascades=.. chans=.. pools=..; encoder=..' for the CardioMM.Model attribute."""
    config = engine.model.config
    if isinstance(config, VarNetConfig):  # load_engine hands out no benchmark peer
        raise _peer_refused(checkpoint)
    return (f"{Path(checkpoint).name}; cascades={config.n_cascades} chans={config.chans} "
            f"pools={config.n_pools} adjacent={config.n_adjacent}; encoder={engine.text_encoder.name}")


def check_model_setting(checkpoint: str = "packaged", device: str = "auto") -> Path | None:
    """Check, before a scan, the model that a CardioMMRecon with these settings would use, and load it.

    ``checkpoint``: 'packaged', 'none' or a path; ``device``: 'auto', 'cpu', 'cuda' or 'cuda:N'.
    Returns the checkpoint's ``.safetensors`` path (None for 'none'); the engine stays in this
    process's cache (:func:`load_engine`), so the scan's gadget reuses it. Raises ValueError with
    one line for what the scan would otherwise silently replace by the fallback: a device that
    is not available, a checkpoint that does not exist, the packaged model when it is not
    installed, a checkpoint that cannot be loaded (corrupt or mismatched weights or JSON).
    """
    from cardiomm_core.engine import resolve_device

    problem = _device_check(str(device))
    if problem is not None:
        raise ValueError(f"device must be {problem}, got {device!r}")
    resolve_device(device)  # ValueError when CUDA is asked for and not available
    path = resolve_checkpoint(checkpoint)
    if path is None:
        if checkpoint.strip().lower() == "none":
            return None
        raise ValueError("no packaged CardioMM model is installed (cardiomm_core/models); "
                         "give --checkpoint PATH, or 'none' for the conventional reconstruction")
    try:
        engine = load_engine(path, device)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes the one line the user sees
        logger.debug("loading %s on %s failed", path, device, exc_info=True)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot load checkpoint {path} on {device}: {type(exc).__name__}: {detail}") from exc
    encoder_dim, model_dim = int(engine.text_encoder.dim), int(engine.model.config.text_dim)
    if encoder_dim != model_dim:  # every scan would fail and fall back
        raise ValueError(f"checkpoint {path}: its text encoder {engine.text_encoder.name!r} gives {encoder_dim}-dim "
                         f"embeddings but the model expects {model_dim}")
    return path


def _run_lock(engine: InferenceEngine | None) -> threading.Lock:
    return threading.Lock() if engine is None else engine.run_lock  # no engine: a fresh lock never blocks


def _device_check(value: str) -> str | None:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) else "'auto', 'cpu', 'cuda' or 'cuda:N'"


# --------------------------------------------------------------------------- helpers


def check_buffer(buffer: ReconBuffer, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(data [E0, E1, E2, CHA, N, S, LOC] complex, headers [E1, E2, N, S, LOC] object)`` of ``buffer``,
    checked for consistency (ValueError naming the buffer and both shapes otherwise)."""
    data = np.asarray(buffer.data)
    if data.ndim != 7:
        raise ValueError(f"ReconBit {what} buffer must have 7 dimensions [E0, E1, E2, CHA, N, S, LOC], "
                         f"got shape {data.shape}")
    if not np.iscomplexobj(data):
        raise ValueError(f"ReconBit {what} buffer must be complex (complex64), got dtype {data.dtype}")
    headers = np.asarray(buffer.headers, dtype=object)
    expected = data.shape[1:3] + data.shape[4:]
    if headers.shape != expected:
        raise ValueError(f"ReconBit {what} buffer: headers have shape {headers.shape}, but data "
                         f"{data.shape} needs [E1, E2, N, S, LOC] = {expected}")
    return data, headers


def merge_reference(data: np.ndarray, headers: np.ndarray, ref: ReconBuffer | None) -> tuple[np.ndarray, np.ndarray]:
    """``data``/``headers`` with the lines that only the reference buffer ``ref`` holds added.

    Only an embedded reference of exactly the data's shape is merged (its lines were acquired in
    the same frames); otherwise ``data`` and ``headers`` are returned unchanged.
    """
    if ref is None:
        return data, headers
    ref_data, ref_headers = check_buffer(ref, "ref")
    if ref_data.shape != data.shape:
        logger.debug("reference buffer %s differs from the data buffer %s; used for nothing here",
                     ref_data.shape, data.shape)
        return data, headers
    extra = line_sampled(ref_data, ref_headers) & ~line_sampled(data, headers)  # [E1, E2, N, S, LOC]
    if not extra.any():
        return data, headers
    logger.info("CardioMMRecon: adding %d calibration-only lines from the reference buffer", int(extra.sum()))
    merged = np.where(extra[None, :, :, None], ref_data, data).astype(np.complex64)
    merged_headers = headers.copy()
    merged_headers[extra] = ref_headers[extra]
    return merged, merged_headers


def _positive(values: Sequence[float]) -> bool:
    return all(float(v) > 0 for v in values)


def field_of_view(sampling: Any, header: ismrmrd.xsd.ismrmrdHeader | None, n_y: int, n_x: int) -> tuple[float, float, float]:
    """Image field of view (mm) of ``n_y`` phase lines and ``n_x`` readout columns.

    x = recon FOV x * n_x / recon matrix x; y = encoded FOV y * n_y / encoded matrix y;
    z = recon FOV z; from the buffer's SamplingDescription, or from the header's first encoding
    when the description is empty.
    """
    recon_fov = [float(v) for v in sampling.recon_FOV] if sampling is not None else [0.0] * 3
    recon_matrix = [int(v) for v in sampling.recon_matrix] if sampling is not None else [0] * 3
    enc_fov = [float(v) for v in sampling.encoded_FOV] if sampling is not None else [0.0] * 3
    enc_matrix = [int(v) for v in sampling.encoded_matrix] if sampling is not None else [0] * 3
    if not (_positive(recon_fov[:2]) and _positive(recon_matrix[:2]) and _positive(enc_fov[:2])
            and _positive(enc_matrix[:2])) and header is not None and header.encoding:
        encoding = header.encoding[0]
        recon, enc = encoding.reconSpace, encoding.encodedSpace
        recon_fov = [recon.fieldOfView_mm.x, recon.fieldOfView_mm.y, recon.fieldOfView_mm.z]
        recon_matrix = [recon.matrixSize.x, recon.matrixSize.y, recon.matrixSize.z]
        enc_fov = [recon.fieldOfView_mm.x, enc.fieldOfView_mm.y, enc.fieldOfView_mm.z]
        enc_matrix = [recon.matrixSize.x, enc.matrixSize.y, enc.matrixSize.z]
    fov_x = recon_fov[0] * n_x / recon_matrix[0] if recon_matrix[0] > 0 else recon_fov[0]
    fov_y = enc_fov[1] * n_y / enc_matrix[1] if enc_matrix[1] > 0 else recon_fov[1]
    return float(fov_x), float(fov_y), float(recon_fov[2])


def reference_header(headers: np.ndarray, index: ImageIndex, centre_e1: int) -> ismrmrd.AcquisitionHeader | None:
    """Acquisition header of image ``index`` (n, s, loc): the centre line's, else the first filled one."""
    block = headers[:, :, index.n, index.s, index.loc]  # [E1, E2]
    if 0 <= centre_e1 < block.shape[0]:
        for head in block[centre_e1]:
            if head is not None and int(head.number_of_samples) > 0:
                return head
    for head in block.ravel(order="F"):
        if head is not None and int(head.number_of_samples) > 0:
            return head
    return None


def image_meta(*, image_number: int, context: ScanContext, outcome: ReconOutcome, reason: str | None,
               model: str, fallback_method: str, style: str = "project") -> ismrmrd.Meta:
    """Meta attributes of one image.

    ``DataRole``/``GADGETRON_DataRole`` "Image"; ``ImageComment``/``GADGETRON_ImageComment``
    "CardioMM" or "CardioMM_fallback_CG-SENSE" (``..._zero-filled``);
    ``ImageProcessingHistory``/``GADGETRON_ImageProcessingHistory`` ["CARDIOMM"];
    ``GADGETRON_ImageNumber``; ``GADGETRON_SeqDescription`` "_CardioMM";
    ``CardioMM.Acceleration`` (2 decimals), ``CardioMM.Pattern``, ``CardioMM.Metadata`` and
    ``CardioMM.Undersampling`` (the two sentences, in the model's ``style``), ``CardioMM.Model`` (checkpoint and
    architecture, or "none"), ``CardioMM.Method`` ("cardiomm", "cg_sense", "zero_filled"),
    ``CardioMM.Fallback`` "true"/"false" and, for a fallback, ``CardioMM.FallbackReason``.
    """
    comment = IMAGE_COMMENT if not outcome.fallback else \
        f"{IMAGE_COMMENT}_fallback_{FALLBACK_NAMES.get(outcome.method, FALLBACK_NAMES[fallback_method])}"
    meta = ismrmrd.Meta()
    meta["DataRole"] = "Image"
    meta["GADGETRON_DataRole"] = "Image"
    meta["ImageComment"] = comment
    meta["GADGETRON_ImageComment"] = comment
    meta["ImageProcessingHistory"] = ["CARDIOMM"]
    meta["GADGETRON_ImageProcessingHistory"] = ["CARDIOMM"]
    meta["GADGETRON_ImageNumber"] = str(image_number)
    meta["GADGETRON_SeqDescription"] = "_CardioMM"
    meta["CardioMM.Acceleration"] = f"{context.acceleration:.2f}"
    meta["CardioMM.Pattern"] = context.pattern
    meta["CardioMM.Metadata"] = context.metadata_sentence(style)
    meta["CardioMM.Undersampling"] = context.undersampling_sentence(style)
    meta["CardioMM.Model"] = model if not outcome.fallback else "none"
    meta["CardioMM.Method"] = outcome.method
    meta["CardioMM.Fallback"] = "true" if outcome.fallback else "false"
    if outcome.fallback:
        meta["CardioMM.FallbackReason"] = reason or "unknown"
    return meta


# --------------------------------------------------------------------------- the gadget


class CardioMMRecon(Gadget):
    """ReconData -> ismrmrd.Image (one per slice, frame and set), reconstructed by CardioMM."""

    PARAMETERS = (
        Param("checkpoint", str, "packaged",
              doc="'packaged' (the demo model shipped in cardiomm_core/models), 'none' (conventional "
                  "recon only) or a checkpoint path"),
        Param("device", str, "auto", check=_device_check, doc="'auto', 'cpu', 'cuda' or 'cuda:N'"),
        Param("modality", str, "Cine", doc="modality when the protocol name says none (e.g. Cine, T1 mapping, LGE)"),
        Param("view", str, "short-axis", doc="view when the protocol name says none (short-axis, four-chamber, ...)"),
        Param("fallback", str, "cg_sense", choices=tuple(FALLBACK_NAMES),
              doc="conventional reconstruction when the model is missing or fails"),
        Param("frames_dimension", str, "N", choices=FRAME_DIMS, doc="buffer dimension holding the frames"),
        Param("image_series_index", int, 1, low=0, doc="image_series_index of the images sent"),
        Param("magnitude", bool, True, doc="send float32 magnitude images (false: complex64)"),
        Param("direct_recon_threshold", float, 1.5, low=0.0,
              doc="below this effective acceleration the data are reconstructed directly (FFT + RSS), "
                  "not by the model (1 or less: never)"),
    )

    def configure(self) -> None:
        if not self.params.modality.strip() or not self.params.view.strip():
            raise ValueError(f"{self.gadget_name()}: modality and view must not be empty")

    # -- per stream ------------------------------------------------------------------------
    def start(self, header: ismrmrd.xsd.ismrmrdHeader) -> None:
        self.header = header
        self.base_context = context_from_header(header, modality=self.params.modality, view=self.params.view)
        self.declared_acceleration = declared_acceleration(header)
        self.engine, self.engine_problem, self.model_description = self._acquire_engine()
        prompt = getattr(self.engine, "prompt", None)
        self.sentence_style = prompt.style if prompt is not None else "project"
        self.mask_convention = prompt.mask_convention if prompt is not None else "project"
        self.image_count = 0
        self._found = DropCounts()
        self.series_dimension = frames_dimension(header)
        self.series_length = series_extents(header)[self.series_dimension]
        self._warned_split_series = False

    def _acquire_engine(self) -> tuple[InferenceEngine | None, str | None, str]:
        """(engine or None, why there is none, CardioMM.Model text)."""
        setting = self.params.checkpoint
        if "checkpoint" in getattr(self, "remote_params", {}):  # named by the peer's CONFIG
            try:
                check_remote_checkpoint(setting, getattr(self, "operator_params", {}).get("checkpoint"))
            except CheckpointRefused as exc:
                logger.error("CardioMMRecon: refused checkpoint %r from the configuration: not inside %s; images "
                             "will come from %s", setting, [str(d) for d in allowed_checkpoint_dirs()],
                             self.params.fallback)
                return None, str(exc), "none"
        try:
            path = resolve_checkpoint(setting)
        except ValueError as exc:
            logger.error("CardioMMRecon: %s; images will come from %s", exc, self.params.fallback)
            return None, redact_paths(str(exc)), "none"
        if path is None:
            if setting.strip().lower() == "none":
                reason = "checkpoint 'none': conventional reconstruction only"
                logger.info("CardioMMRecon: %s (%s)", reason, self.params.fallback)
            else:
                reason = "no packaged CardioMM model is installed (cardiomm_core/models)"
                logger.warning("CardioMMRecon: %s; images will come from %s", reason, self.params.fallback)
            return None, reason, "none"
        try:
            engine = load_engine(path, self.params.device)
        except Exception as exc:  # noqa: BLE001 - a model that cannot load must still give images
            # one line for the user; the traceback at debug level only
            logger.error("CardioMMRecon: could not load checkpoint %s on %s (%s: %s); images will come from %s",
                         path, self.params.device, type(exc).__name__, exc, self.params.fallback)
            logger.debug("loading %s failed", path, exc_info=True)
            return None, redact_paths(f"could not load checkpoint {path.name}: {type(exc).__name__}: {exc}"), "none"
        return engine, None, describe_model(path, engine)

    # -- items -----------------------------------------------------------------------------
    def accepts(self, item: Any) -> bool:
        return isinstance(item, ReconData)

    def process(self, item: ReconData) -> Iterable[Any]:
        bits = list(item.bits)
        if not bits:
            raise ValueError("ReconData has no bits")
        images: list[ismrmrd.Image] = []
        for bit in bits:
            images.extend(self.reconstruct_bit(bit))
        return images

    def reconstruct_bit(self, bit: Any) -> list[ismrmrd.Image]:
        """The images of one ReconBit (see the module docstring)."""
        check_buffer(bit.data)
        data_buffer, found = data_checks.sanitize_buffer(bit.data)
        ref_buffer = bit.ref if bit.ref is None else data_checks.sanitize_buffer(bit.ref)[0]
        if found.total:
            logger.warning("CardioMMRecon: %d buffer line(s) with NaN/Inf or absurd samples treated as not acquired",
                           found.total)
        self._found = self._found + found
        drops = data_checks.read_marks(np.asarray(bit.data.headers, dtype=object)) + self._found
        data, headers = check_buffer(data_buffer)
        if data.shape[2] != 1:
            raise ValueError(f"CardioMMRecon reconstructs 2D (multi-slice) data; this buffer has E2 = {data.shape[2]} "
                             f"partitions (shape {data.shape})")
        data, headers = merge_reference(data, headers, ref_buffer)
        kspace, layout = buffer_to_kspace(data, self.params.frames_dimension)
        self._check_series(layout.frames)
        mask = sampling_mask(data, headers, layout).astype(np.float32)  # (batch, 1, frames, ky, 1)
        if not mask.any(axis=(1, 2, 3, 4)).all():
            raise ValueError("a slice of the buffer has no sampled lines at all")
        acceleration, pattern = sampling_from_mask(mask, declared=getattr(self, "declared_acceleration", None),
                                                   convention=getattr(self, "mask_convention", "project"))
        context = self.base_context.with_sampling(acceleration, pattern)
        logger.info("CardioMMRecon: k-space %s, %s", kspace.shape,
                    context.undersampling_sentence(getattr(self, "sentence_style", "project")))
        effective = float(mask.size / max(int(np.count_nonzero(mask)), 1))
        if effective < self.params.direct_recon_threshold:
            outcome = self.direct(kspace, mask, effective)
        else:
            with _run_lock(self.engine):
                outcome = reconstruct_or_fallback(self.engine, kspace, mask, context,
                                                  fallback_method=self.params.fallback)
        reason = outcome.reason
        if outcome.fallback and self.engine is None and self.engine_problem:
            reason = self.engine_problem
        if outcome.fallback:
            # a chosen conventional reconstruction (checkpoint 'none') is no warning, every slice
            chosen = self.engine is None and self.params.checkpoint.strip().lower() == "none"
            logger.log(logging.INFO if chosen else logging.WARNING, "CardioMMRecon: images from %s (fallback: %s)",
                       outcome.method, reason)
        sampling = bit.data.sampling
        recon_x = int(sampling.recon_matrix[0]) if sampling is not None else 0
        images = np.asarray(outcome.images)
        if 0 < recon_x < images.shape[-1]:  # readout oversampling left in (no RemoveOversampling before)
            images = crop_image_readout(images, recon_x)
        finite = np.isfinite(images)
        n_non_finite = int(images.size - np.count_nonzero(finite))
        if n_non_finite:
            logger.error("CardioMMRecon: %d of %d pixels from %s are NaN or Inf; set to 0 and counted in "
                         "CardioMM.NonFinitePixels", n_non_finite, images.size, outcome.method)
            images = np.where(finite, images, 0).astype(np.complex64)
        return self.to_images(images, layout, headers, sampling, context, outcome, reason, drops=drops,
                              non_finite_pixels=n_non_finite)

    def direct(self, kspace: np.ndarray, mask: np.ndarray, effective: float) -> ReconOutcome:
        """The direct reconstruction (FFT + RSS) of ``kspace (batch, coils, frames, ky, kx)``."""
        import torch

        reason = (f"effective acceleration {effective:.2f} is below direct_recon_threshold "
                  f"{self.params.direct_recon_threshold:g}: direct FFT + RSS reconstruction")
        logger.info("CardioMMRecon: %s", reason)
        images = direct_recon(torch.from_numpy(np.ascontiguousarray(kspace)), torch.from_numpy(mask))
        return ReconOutcome(images=images.numpy(), method="direct", fallback=False, reason=reason)

    def _check_series(self, n_frames: int) -> None:
        """Warn once when the chain hands over fewer frames than the scan's series holds: the model
        then reconstructs each frame (e.g. each mapping weighting) alone, unlike in training."""
        if self._warned_split_series or n_frames >= self.series_length:
            return
        self._warned_split_series = True
        logger.warning(
            "CardioMMRecon: the scan's series runs over the %s counter (%d frames by the header's encoding limits) "
            "but the chain hands over %d frame(s) at a time, so the model never sees the whole series; set the "
            "buffer's N_dimension to %s (or auto; chains/cardiomm_mapping_python.xml does for mapping scans)",
            self.series_dimension, self.series_length, n_frames, self.series_dimension)

    def to_images(self, images: np.ndarray, layout: BufferLayout, headers: np.ndarray, sampling: Any,
                  context: ScanContext, outcome: ReconOutcome, reason: str | None, *,
                  drops: DropCounts | None = None, non_finite_pixels: int = 0) -> list[ismrmrd.Image]:
        """Core ``images (batch, frames, y, x)`` -> ismrmrd.Image list with headers and meta attributes."""
        n_y, n_x = images.shape[-2:]
        fov = field_of_view(sampling, getattr(self, "header", None), n_y, n_x)
        centre_e1 = int(sampling.sampling_limits[1].center) if sampling is not None else headers.shape[0] // 2
        magnitude = self.params.magnitude
        result = []
        for index, pixels in images_to_ismrmrd_data(np.ascontiguousarray(images, dtype=np.complex64), layout):
            reference = reference_header(headers, index, centre_e1)
            if reference is not None:
                head = ismrmrd.ImageHeader.from_acquisition(reference)
                if data_checks.is_marked(reference):  # the drop marks are not user data
                    for slot in (5, 6, 7):
                        head.user_int[slot] = 0
            else:
                head = ismrmrd.ImageHeader()
                for field, value in zip(_LAYOUT_INDEX_FIELDS, (index.n, index.s, index.loc)):
                    setattr(head, field, value)
            self.image_count += 1
            head.version = 1
            head.image_type = ismrmrd.IMTYPE_MAGNITUDE if magnitude else ismrmrd.IMTYPE_COMPLEX
            head.image_series_index = int(self.params.image_series_index)
            head.image_index = self.image_count
            head.field_of_view[:] = fov
            meta = image_meta(image_number=self.image_count, context=context, outcome=outcome,
                              reason=redact_paths(reason) if reason else reason,
                              model=self.model_description, fallback_method=self.params.fallback,
                              style=getattr(self, "sentence_style", "project"))
            if outcome.method == "direct":
                meta["ImageComment"] = meta["GADGETRON_ImageComment"] = f"{IMAGE_COMMENT}_direct_FFT_RSS"
                meta["CardioMM.Model"] = "none"
                meta["CardioMM.Direct"] = "true"
                meta["CardioMM.DirectReason"] = reason or ""
            if drops is not None:
                drops.to_meta(meta)
            if non_finite_pixels:
                meta["CardioMM.NonFinitePixels"] = str(non_finite_pixels)
            attributes = meta.serialize()
            head.attribute_string_len = len(attributes.encode("utf-8"))
            wire = np.abs(pixels).astype(np.float32) if magnitude else pixels.astype(np.complex64)
            result.append(ismrmrd.Image(head=head, meta=meta, data=np.ascontiguousarray(wire)))
        return result


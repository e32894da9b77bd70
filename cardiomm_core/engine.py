"""Inference around a trained CardioMM: intensity normalisation, batching, caching, fallback.

``InferenceEngine.reconstruct(kspace (S,C,T,ky,kx), mask (1|S,1,T,ky,kx|1), context) ->
images (S,T,y,x) complex64`` runs the network on any number of slices:

- the two conditioning sentences, rendered in the checkpoint's sentence style
  (``cardiomm_core.prompting.PromptSpec``), are embedded once per distinct pair of sentences
  (in-memory cache keyed by the rendered strings; the text encoder is usually a ``CachedEncoder``
  with its own on-disk cache);
- each slice is scaled so that its calibration (ACS) zero-filled image has a fixed magnitude
  (``normalisation``, recorded in checkpoints) and the inverse scale is applied to the output, so
  the reconstruction is linear in the input scale;
- slices are batched within a budget of k-space elements (``max_batch_elems``); on a CUDA
  out-of-memory error the batch is halved and retried;
- the network pads each U-Net input to a multiple of ``2**n_pools`` internally and crops back,
  so any matrix size is accepted (no k-space padding, which would change the field of view);
- ``torch.inference_mode`` throughout, bf16 autocast on CUDA (physics stays complex64).

``get_engine(path, device)`` keeps one engine per (checkpoint, device) per process (``ENGINES``, an
LRU of 4 whose evicted engines are freed), each with its ``run_lock`` for callers that share it
across threads; and
``reconstruct_or_fallback`` guarantees images: any model failure logs the error and falls back to
a conventional reconstruction (CG-SENSE by default), marked as such.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import check_complex, check_ndim
from .coils import acs_region_mask
from .context import ScanContext
from .fft import ifft2c
from .model import CardioMM
from .official import OfficialCardioMM
from .prompting import PromptSpec, context_sentences, encode_sentences, model_forward, prepare_model_input
from .varnet import VarNetRecon

#: Networks the engine runs: anything with ``config.text_dim``, ``to_channels_last()`` and
#: ``forward(kspace, mask, metadata_emb, sampling_emb, acs) -> (B, T, y, x)`` complex64 (or a real
#: magnitude: the authors' architecture and fastMRI's E2E-VarNet, a benchmark peer that the
#: gadgets refuse, ``gadgets.recon.refuse_benchmark_peer``).
RECON_MODELS = (CardioMM, OfficialCardioMM, VarNetRecon)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NORMALISATION",
    "ENGINES",
    "EngineCache",
    "NORMALISATION_KINDS",
    "InferenceEngine",
    "ReconOutcome",
    "get_engine",
    "normalisation_scale",
    "reconstruct_or_fallback",
    "resolve_device",
]

#: How inputs are scaled before the network (recorded in checkpoints' "normalisation" section):
#: the ``percentile`` of the root-sum-of-squares magnitude of the zero-filled, time-averaged
#: calibration-region image is brought to ``target``.
DEFAULT_NORMALISATION: dict[str, Any] = {"kind": "acs_percentile", "percentile": 99.0, "target": 1.0}
#: Supported normalisation kinds: "acs_percentile" (above), "none" (scale 1).
NORMALISATION_KINDS = ("acs_percentile", "none")
#: Default budget of complex k-space elements per network call (two CMRxRecon cine slices).
DEFAULT_MAX_BATCH_ELEMS = 2 * 10 * 12 * 246 * 256
_EMBEDDING_CACHE_SIZE = 64


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else as ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def _to_tensor(name: str, value: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach()
    raise ValueError(f"{name} must be a numpy array or torch.Tensor, got {type(value).__name__}")


def _prepare(kspace: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and convert to (complex64 kspace (S,C,T,ky,kx), float32 mask (S,1,T,ky,kx|1)) on the CPU or as given."""
    k = _to_tensor("kspace", kspace)
    check_ndim("kspace", k, 5, "(slices, coils, frames, ky, kx)")
    check_complex("kspace", k)
    k = k.to(torch.complex64)
    m = _to_tensor("mask", mask)
    check_ndim("mask", m, 5, "(slices, 1, frames, ky, kx)")
    if m.is_complex():
        raise ValueError(f"mask must be real or bool, got dtype {m.dtype}")
    n_s, _, n_t, n_ky, n_kx = k.shape
    if m.shape[0] not in (1, n_s) or m.shape[1] != 1 or m.shape[2] not in (1, n_t) or m.shape[3] != n_ky \
            or m.shape[4] not in (1, n_kx):
        raise ValueError(
            f"mask shape {tuple(m.shape)} does not fit kspace {tuple(k.shape)}; "
            f"expected (1|{n_s}, 1, 1|{n_t}, {n_ky}, 1|{n_kx})"
        )
    m = (m != 0).to(torch.float32).expand(n_s, 1, n_t, n_ky, m.shape[4])
    return k, m


def normalisation_scale(kspace: torch.Tensor, mask: torch.Tensor, normalisation: Mapping[str, Any] | None = None,
                        acs: torch.Tensor | None = None) -> torch.Tensor:
    """Per-slice intensity scale ``(S,)`` float32 to multiply the k-space with before the network.

    ``kspace (S, C, T, ky, kx)`` complex64, ``mask (S, 1, T, ky, kx|1)``, ``acs (S, 1, 1, ky, kx|1)``
    the calibration region (default: found from ``mask``). ``normalisation`` is a mapping with
    ``kind`` in NORMALISATION_KINDS (default DEFAULT_NORMALISATION). A slice without signal gets 1.
    The scale is homogeneous of degree -1 in the data: scaling the k-space by ``a`` divides it by ``a``.
    """
    norm = dict(DEFAULT_NORMALISATION if not normalisation else normalisation)
    kind = norm.get("kind")
    if kind not in NORMALISATION_KINDS:
        raise ValueError(f"normalisation kind must be one of {NORMALISATION_KINDS}, got {kind!r}")
    n_s = kspace.shape[0]
    if kind == "none":
        return torch.ones(n_s, dtype=torch.float32, device=kspace.device)
    percentile = float(norm.get("percentile", DEFAULT_NORMALISATION["percentile"]))
    target = float(norm.get("target", DEFAULT_NORMALISATION["target"]))
    if not 0.0 < percentile <= 100.0 or not np.isfinite(target) or target <= 0:
        raise ValueError(f"normalisation needs 0 < percentile <= 100 and target > 0, got {norm}")
    if acs is None:
        acs = acs_region_mask(mask)
    m = mask.to(torch.float32)
    counts = m.sum(dim=2, keepdim=True).clamp_min(1.0)
    k_avg = (kspace * m).sum(dim=2, keepdim=True) / counts            # (S, C, 1, ky, kx)
    image = ifft2c(k_avg * acs.to(torch.float32))
    magnitude = torch.sqrt((image.abs() ** 2).sum(dim=1)).reshape(n_s, -1)
    level = torch.quantile(magnitude, percentile / 100.0, dim=1)
    scale = torch.where(level > 0, target / level.clamp_min(torch.finfo(torch.float32).tiny),
                        torch.ones_like(level))
    return scale.to(torch.float32)


class InferenceEngine:
    """A CardioMM model ready for inference on one device, with its text encoder.

    Args:
        model: the network (moved to ``device``, put in eval mode): the project's CardioMM or the
            authors' architecture (OfficialCardioMM, whose output is a magnitude image).
        text_encoder: a TextEncoder (name, dim, encode) with ``dim == model.config.text_dim``;
            a mismatch is reported when reconstructing (so ``reconstruct_or_fallback`` can fall back).
        device: "auto" (cuda when available), "cpu", "cuda", "cuda:N".
        amp: bf16 autocast on CUDA (ignored on the CPU).
        max_batch_elems: most complex k-space elements per network call (at least one slice is
            always processed); default DEFAULT_MAX_BATCH_ELEMS.
        normalisation: the input scaling (default DEFAULT_NORMALISATION; from_checkpoint passes the
            checkpoint's).
        prompt: how the model is spoken to (a PromptSpec or a checkpoint's "prompt" section;
            default the project's): its ``style`` renders the sentences, its ``mask_convention``
            is what callers describe masks with (``describe_sampling(..., convention=)``).
    """

    def __init__(self, model: CardioMM | OfficialCardioMM | VarNetRecon, text_encoder: Any, *, device: str | torch.device = "auto",
                 amp: bool = True, max_batch_elems: int | None = None,
                 normalisation: Mapping[str, Any] | None = None,
                 prompt: PromptSpec | Mapping[str, Any] | None = None) -> None:
        if not isinstance(model, RECON_MODELS):
            raise ValueError(f"model must be a CardioMM, OfficialCardioMM or VarNetRecon, got {type(model).__name__}")
        for attr in ("name", "dim", "encode"):
            if not hasattr(text_encoder, attr):
                raise ValueError(f"text_encoder must implement TextEncoder (name, dim, encode); it has no {attr!r}")
        if max_batch_elems is not None and (isinstance(max_batch_elems, bool) or not isinstance(max_batch_elems, int)
                                            or max_batch_elems < 1):
            raise ValueError(f"max_batch_elems must be a positive integer or None, got {max_batch_elems!r}")
        self.device = resolve_device(device)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.max_batch_elems = max_batch_elems if max_batch_elems is not None else DEFAULT_MAX_BATCH_ELEMS
        self.normalisation = dict(normalisation) if normalisation else dict(DEFAULT_NORMALISATION)
        if self.normalisation.get("kind") not in NORMALISATION_KINDS:
            raise ValueError(f"normalisation kind must be one of {NORMALISATION_KINDS}, got {self.normalisation}")
        self.prompt = PromptSpec.from_dict(prompt)
        self.text_encoder = text_encoder
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model.to_channels_last()
        if int(text_encoder.dim) != model.config.text_dim:
            logger.warning("text encoder %r gives %d-dim embeddings but the model expects %d",
                           getattr(text_encoder, "name", "?"), int(text_encoder.dim), model.config.text_dim)
        self._embeddings: OrderedDict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        #: held around a reconstruction by callers that share this engine across threads (the
        #: gadgets of a warm worker's connections): one scan at a time on the model
        self.run_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"InferenceEngine(device={self.device}, amp={self.amp}, text_encoder={self.text_encoder.name!r}, "
                f"max_batch_elems={self.max_batch_elems})")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], *, device: str | torch.device = "auto",
                        text_encoder: Any = None, amp: bool = True,
                        max_batch_elems: int | None = None) -> InferenceEngine:
        """Load a checkpoint (weights + architecture + text encoder + normalisation) for inference.

        Without ``text_encoder``, the encoder named in the checkpoint is built with
        ``get_encoder`` and wrapped in a ``CachedEncoder`` (on-disk embedding cache).
        """
        from .checkpoint import load_checkpoint
        from .embedding_cache import CachedEncoder
        from .text import get_encoder

        resolved = resolve_device(device)
        if text_encoder is not None:
            model, checkpoint_meta = load_checkpoint(path, text_encoder_name=text_encoder.name,
                                                     text_encoder_dim=int(text_encoder.dim), map_location=resolved)
        else:
            model, checkpoint_meta = load_checkpoint(path, map_location=resolved)
            text_encoder = CachedEncoder(get_encoder(checkpoint_meta.text_encoder_name))
        return cls(model, text_encoder, device=resolved, amp=amp, max_batch_elems=max_batch_elems,
                   normalisation=checkpoint_meta.normalisation or None, prompt=checkpoint_meta.prompt)

    # -- embeddings --------------------------------------------------------------------------------

    def sentences(self, context: ScanContext) -> tuple[str, str]:
        """The two sentences this engine's model reads for ``context`` (in its checkpoint's style)."""
        return context_sentences(context, self.prompt.style)

    def embeddings(self, context: ScanContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(metadata ``(1, D)``, undersampling ``(1, D)``) float32 on the engine's device, cached per
        rendered sentences (so two styles never share an entry)."""
        key = self.sentences(context)
        hit = self._embeddings.get(key)
        if hit is not None:
            self._embeddings.move_to_end(key)
            return hit
        metadata_emb, sampling_emb = encode_sentences(self.text_encoder, key)
        pair = (metadata_emb.reshape(1, -1).to(self.device, torch.float32),
                sampling_emb.reshape(1, -1).to(self.device, torch.float32))
        self._embeddings[key] = pair
        while len(self._embeddings) > _EMBEDDING_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return pair

    # -- reconstruction ----------------------------------------------------------------------------

    def slices_per_batch(self, kspace_shape: tuple[int, ...]) -> int:
        """How many slices of ``kspace_shape (S, C, T, ky, kx)`` fit in one network call (>= 1)."""
        per_slice = int(np.prod(kspace_shape[1:]))
        return max(1, min(int(kspace_shape[0]), self.max_batch_elems // max(per_slice, 1)))

    def _run(self, kspace: torch.Tensor, mask: torch.Tensor, metadata_emb: torch.Tensor,
             sampling_emb: torch.Tensor) -> torch.Tensor:
        inputs = prepare_model_input(kspace.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True),
                                     metadata_emb, sampling_emb, self.normalisation)
        image = model_forward(self.model, inputs, amp=self.amp)
        return (image / inputs.scale.view(-1, 1, 1, 1)).to("cpu")

    def reconstruct(self, kspace: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                    context: ScanContext) -> np.ndarray:
        """Reconstruct slices: ``kspace (S, C, T, ky, kx)`` complex (zeros where unsampled), ``mask
        (1|S, 1, T, ky, kx|1)`` -> images ``(S, T, y, x)`` complex64 numpy, coil-combined, in the
        input's intensity scale.
        """
        k, m = _prepare(kspace, mask)
        metadata_emb, sampling_emb = self.embeddings(context)
        n_s = k.shape[0]
        step = self.slices_per_batch(tuple(k.shape))
        out = torch.empty(n_s, k.shape[2], k.shape[3], k.shape[4], dtype=torch.complex64)
        start = 0
        with torch.inference_mode():
            while start < n_s:
                stop = min(start + step, n_s)
                try:
                    out[start:stop] = self._run(k[start:stop], m[start:stop], metadata_emb, sampling_emb)
                except torch.cuda.OutOfMemoryError:
                    if step == 1:
                        raise
                    step = max(1, step // 2)
                    logger.warning("CUDA out of memory; retrying with %d slice(s) per batch", step)
                    torch.cuda.empty_cache()
                    continue
                start = stop
        return out.numpy()


class EngineCache:
    """The engines of this process, one per (resolved checkpoint path, device), least recently
    used first out beyond ``maxsize``.

    An evicted engine is dropped here, so its model is freed once no caller holds it any more.
    Thread-safe: a load happens under the cache's lock, so concurrent first calls load once.
    ``loads`` counts the engines this cache has loaded.
    """

    def __init__(self, maxsize: int = 4) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive integer, got {maxsize!r}")
        self.maxsize = maxsize
        self.loads = 0
        self._engines: OrderedDict[tuple[str, str], InferenceEngine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike[str], device: str | torch.device = "auto", *,
            before_load: Callable[[Path], None] | None = None) -> tuple[InferenceEngine, bool]:
        """``(engine, loaded)``: the cached engine of ``path`` on ``device``, or a new one
        (``loaded`` True) from :meth:`InferenceEngine.from_checkpoint`. ``before_load(resolved
        path)`` runs before a load and may refuse it by raising; exceptions propagate and nothing
        is cached."""
        resolved = Path(path).expanduser().resolve()
        key = (str(resolved), str(resolve_device(device)))
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine, False
            if before_load is not None:
                before_load(resolved)
            logger.info("loading CardioMM engine from %s on %s", key[0], key[1])
            engine = InferenceEngine.from_checkpoint(key[0], device=key[1])
            self._engines[key] = engine
            self.loads += 1
            while len(self._engines) > self.maxsize:
                evicted, _ = self._engines.popitem(last=False)
                logger.info("engine of %s on %s evicted from the cache", *evicted)
            return engine, True

    def clear(self) -> None:
        """Drop every engine (each is freed once no caller holds it)."""
        with self._lock:
            self._engines.clear()

    def __len__(self) -> int:
        return len(self._engines)


#: The process's engines (``get_engine``, the gadgets' ``load_engine``).
ENGINES = EngineCache(maxsize=4)


def get_engine(path: str | os.PathLike[str], device: str | torch.device = "auto") -> InferenceEngine:
    """The engine for a checkpoint, loaded once per process per (resolved path, device)
    (:data:`ENGINES`, least recently used out beyond 4)."""
    return ENGINES.get(path, device)[0]


@dataclass
class ReconOutcome:
    """``images (S, T, y, x)`` complex64; ``method`` "cardiomm" or the fallback's name;
    ``fallback`` True when the model was not used; ``reason`` why (None on success)."""

    images: np.ndarray
    method: str
    fallback: bool
    reason: str | None = None


def reconstruct_or_fallback(engine: InferenceEngine | None, kspace: np.ndarray | torch.Tensor,
                            mask: np.ndarray | torch.Tensor, context: ScanContext, *,
                            fallback_method: str = "cg_sense") -> ReconOutcome:
    """Reconstruct with the model, or (engine None, any model failure, which is logged, or a model
    output with a NaN or Inf pixel, e.g. from a checkpoint with NaN weights) with
    ``cardiomm_core.conventional.conventional_recon(method=fallback_method)``, so a scan always gives images.

    ``kspace (S, C, T, ky, kx)`` complex, ``mask (1|S, 1, T, ky, kx|1)`` -> ReconOutcome with
    images ``(S, T, y, x)`` complex64.
    """
    from .conventional import RECON_METHODS, conventional_recon

    if fallback_method not in RECON_METHODS:
        raise ValueError(f"fallback_method must be one of {RECON_METHODS}, got {fallback_method!r}")
    if engine is None:
        reason = "no CardioMM model available"
        logger.debug("%s; using %s", reason, fallback_method)  # the caller knows why and says so
    else:
        try:
            images = engine.reconstruct(kspace, mask, context)
        except Exception as exc:  # noqa: BLE001 - any model failure must still give images
            reason = f"{type(exc).__name__}: {exc}"
            logger.exception("CardioMM reconstruction failed; falling back to %s", fallback_method)
        else:
            n_bad = int(images.size - np.count_nonzero(np.isfinite(images)))
            if n_bad == 0:
                return ReconOutcome(images=images, method="cardiomm", fallback=False, reason=None)
            reason = f"the model output is not finite ({n_bad} of {images.size} pixels NaN or Inf)"
            logger.warning("CardioMM reconstruction: %s; falling back to %s", reason, fallback_method)
    k, m = _prepare(kspace, mask)
    result = conventional_recon(k, m, method=fallback_method)
    images = result.images.detach().to("cpu", torch.complex64).numpy()
    return ReconOutcome(images=images, method=result.method, fallback=True, reason=reason)

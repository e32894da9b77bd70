"""Typed training samples: a fully sampled slice, an undersampled training example, and batching.

Shapes (one slice of one scan; C coils, T frames, ky phase encoding, kx readout):

``KspaceSample``
    kspace   (C, T, ky, kx)   complex64, fully sampled, every frame of the slice
    target   (T, y, x)        optional ground truth (float32 magnitude or complex64), recon FOV
    reference (T, y, x)       optional float32 magnitude the model should learn instead of the RSS
                              of ``kspace`` (a noise-free RSS, known for simulated data), recon FOV
``TrainingExample``
    masked_kspace (C, T, ky, kx)     complex64, zero wherever ``mask`` is zero
    mask          (1, T, ky, kx|1)   float32 0/1 (kx = 1 for line patterns)
    target        (T, y, x)          float32, root-sum-of-squares of the fully sampled coil images,
                                     cropped along the readout to the recon FOV when the k-space
                                     is readout-oversampled (``recon_nx``); the sample's
                                     ``reference`` instead when it has one
``TrainingBatch`` (from :func:`collate_examples`)
    masked_kspace (B, C, T, ky, kx), mask (B, 1, T, ky, kx|1), target (B, T, y, x)

Batching: examples in a batch must have the same shapes (coils, frames, matrix). Cardiac data sets
mix matrix sizes and coil counts, so the usual setting (as in PromptMR / PromptMR+) is one example
per GPU (``batch_size=1``) with gradient accumulation or data parallelism for a larger effective
batch; :func:`collate_examples` raises a ValueError naming the examples when shapes differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cardiomm_core.context import ScanContext
from cardiomm_core.fft import ifft2c
from cardiomm_core.readout import crop_image_readout


def _check_complex_tensor(name: str, value: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {tuple(value.shape)}")
    if value.dtype != torch.complex64:
        raise ValueError(f"{name} must be complex64, got {value.dtype}")
    return value


def _check_context(value: object) -> None:
    if not isinstance(value, ScanContext):
        raise ValueError(f"context must be a ScanContext, got {type(value).__name__}")


def _check_identifier(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"identifier must be a non-empty string, got {value!r}")


def crop_to_recon_fov(images: torch.Tensor, recon_nx: int | None) -> torch.Tensor:
    """Central ``recon_nx`` columns of the last axis: ``(..., x_enc) -> (..., recon_nx)``.

    The first kept column is ``x_enc // 2 - recon_nx // 2`` (the centre pixel ``n // 2`` of the
    centred FFT stays the centre, as ``cardiomm_core.readout.crop_image_readout``). ``None`` keeps all.
    """
    if recon_nx is None:
        return images
    n_enc = int(images.shape[-1])
    if isinstance(recon_nx, bool) or not isinstance(recon_nx, int) or not 1 <= recon_nx <= n_enc:
        raise ValueError(f"recon_nx must be an integer in [1, {n_enc}] (the readout length), got {recon_nx!r}")
    return crop_image_readout(images, recon_nx)


def rss_target(kspace: torch.Tensor, recon_nx: int | None = None) -> torch.Tensor:
    """Root-sum-of-squares image of fully sampled k-space, cropped to the recon FOV.

    ``kspace (C, T, ky, kx)`` complex64 -> ``(T, ky, recon_nx or kx)`` float32:
    ``sqrt(sum_c |ifft2c(kspace_c)|^2)``, then :func:`crop_to_recon_fov`.
    """
    _check_complex_tensor("kspace", kspace, 4, "(coils, frames, ky, kx)")
    coil_images = ifft2c(kspace)
    rss = torch.sqrt((coil_images.real ** 2 + coil_images.imag ** 2).sum(dim=0))
    return crop_to_recon_fov(rss, recon_nx).contiguous().to(torch.float32)


@dataclass
class KspaceSample:
    """One fully sampled slice with all its frames.

    kspace      (C, T, ky, kx) complex64 torch tensor (readout may be oversampled)
    context     ScanContext of the scan, fully sampled (acceleration 1, pattern "full")
    identifier  "<file or source>@slice<k>", unique within a data set
    target      optional (T, y, x) ground truth on the recon FOV (float32 or complex64), or None
    recon_nx    readout columns of the recon FOV when the readout is oversampled (targets are
                cropped to the central ``recon_nx`` columns), None when kx is the recon FOV
    reference   optional (T, y, x) float32 magnitude on the recon FOV that training and evaluation
                score against instead of :func:`rss_target` of ``kspace`` (for simulated data: the
                RSS of the noise-free coil images), or None
    """

    kspace: torch.Tensor
    context: ScanContext
    identifier: str
    target: torch.Tensor | None = None
    recon_nx: int | None = None
    reference: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_complex_tensor("kspace", self.kspace, 4, "(coils, frames, ky, kx)")
        _check_context(self.context)
        _check_identifier(self.identifier)
        if self.target is not None:
            if not isinstance(self.target, torch.Tensor) or self.target.ndim != 3:
                raise ValueError(f"target must be a torch.Tensor (frames, y, x) or None, got "
                                 f"{type(self.target).__name__} {tuple(getattr(self.target, 'shape', ()))}")
            if self.target.shape[0] != self.kspace.shape[1]:
                raise ValueError(f"target has {self.target.shape[0]} frames, kspace {self.kspace.shape[1]}")
        if self.recon_nx is not None:
            crop_to_recon_fov(self.kspace[:1, :1, :1], self.recon_nx)  # validates the value
        if self.reference is not None:
            n_x = self.recon_nx if self.recon_nx is not None else int(self.kspace.shape[3])
            expected = (int(self.kspace.shape[1]), int(self.kspace.shape[2]), n_x)
            if not isinstance(self.reference, torch.Tensor) or self.reference.dtype != torch.float32 \
                    or tuple(self.reference.shape) != expected:
                raise ValueError(f"reference must be a float32 torch.Tensor (frames, y, x) = {expected} or None, got "
                                 f"{getattr(self.reference, 'dtype', type(self.reference).__name__)} "
                                 f"{tuple(getattr(self.reference, 'shape', ()))}")

    def scoring_target(self) -> torch.Tensor:
        """What a reconstruction of this sample is scored against: ``(T, y, x)`` float32.

        ``reference`` when the sample has one, else :func:`rss_target` of the fully sampled k-space.
        """
        if self.reference is not None:
            return self.reference
        return rss_target(self.kspace, self.recon_nx)

    @property
    def n_coils(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.kspace.shape[1])


@dataclass
class TrainingExample:
    """A retrospectively undersampled slice and its target.

    masked_kspace (C, T, ky, kx) complex64, ``kspace * mask``
    mask          (1, T, ky, kx|1) float32 0/1
    target        (T, y, x) float32 rss of the fully sampled k-space on the recon FOV
    context       ScanContext with the undersampling actually used (pattern, nominal acceleration)
    identifier    the sample's identifier
    n_acs         calibration lines of the mask (ktRadial: side of the calibration square)
    """

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    context: ScanContext
    identifier: str
    n_acs: int = 0

    def __post_init__(self) -> None:
        kspace = _check_complex_tensor("masked_kspace", self.masked_kspace, 4, "(coils, frames, ky, kx)")
        if not isinstance(self.mask, torch.Tensor) or self.mask.ndim != 4 or self.mask.dtype != torch.float32:
            raise ValueError(f"mask must be a float32 torch.Tensor (1, frames, ky, kx|1), got "
                             f"{getattr(self.mask, 'dtype', type(self.mask).__name__)} "
                             f"{tuple(getattr(self.mask, 'shape', ()))}")
        _, n_frames, n_ky, n_kx = kspace.shape
        if self.mask.shape[0] != 1 or self.mask.shape[1:3] != (n_frames, n_ky) or self.mask.shape[3] not in (1, n_kx):
            raise ValueError(f"mask shape {tuple(self.mask.shape)} does not fit masked_kspace "
                             f"{tuple(kspace.shape)}: expected (1, {n_frames}, {n_ky}, 1 or {n_kx})")
        if not isinstance(self.target, torch.Tensor) or self.target.ndim != 3 or self.target.dtype != torch.float32:
            raise ValueError(f"target must be a float32 torch.Tensor (frames, y, x), got "
                             f"{getattr(self.target, 'dtype', type(self.target).__name__)} "
                             f"{tuple(getattr(self.target, 'shape', ()))}")
        if self.target.shape[0] != n_frames:
            raise ValueError(f"target has {self.target.shape[0]} frames, masked_kspace {n_frames}")
        _check_context(self.context)
        _check_identifier(self.identifier)


@dataclass
class TrainingBatch:
    """Examples stacked along a new batch axis (see :func:`collate_examples`).

    masked_kspace (B, C, T, ky, kx) complex64; mask (B, 1, T, ky, kx|1) float32;
    target (B, T, y, x) float32; contexts and identifiers: B entries; n_acs (B,) int64.
    """

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    contexts: list[ScanContext]
    identifiers: list[str]
    n_acs: torch.Tensor

    def __len__(self) -> int:
        return len(self.identifiers)

    def to(self, device: torch.device | str) -> TrainingBatch:
        """A copy with the tensors on ``device``."""
        return TrainingBatch(self.masked_kspace.to(device), self.mask.to(device), self.target.to(device),
                             list(self.contexts), list(self.identifiers), self.n_acs.to(device))


def collate_examples(examples: Sequence[TrainingExample]) -> TrainingBatch:
    """Stack equally shaped TrainingExamples into a TrainingBatch (a DataLoader ``collate_fn``).

    Line masks (kx = 1) are expanded to the full kx when the batch mixes them with ktRadial masks.
    Raises ValueError when the list is empty or when k-space or target shapes differ (batch size 1
    per GPU is the usual setting for cardiac data of mixed sizes, as in PromptMR).
    """
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    for position, example in enumerate(examples):
        if not isinstance(example, TrainingExample):
            raise ValueError(f"examples[{position}] must be a TrainingExample, got {type(example).__name__}")
    first = examples[0]
    for name in ("masked_kspace", "target"):
        shapes = {tuple(getattr(e, name).shape) for e in examples}
        if len(shapes) > 1:
            described = ", ".join(f"{e.identifier} {tuple(getattr(e, name).shape)}" for e in examples)
            raise ValueError(
                f"cannot batch examples with different {name} shapes ({described}); use batch_size=1 "
                "per GPU (as PromptMR does) or group examples of equal shape"
            )
    n_kx = int(first.masked_kspace.shape[-1])
    mask_widths = {int(e.mask.shape[-1]) for e in examples}
    masks = [e.mask if len(mask_widths) == 1 else e.mask.expand(-1, -1, -1, n_kx) for e in examples]
    return TrainingBatch(
        masked_kspace=torch.stack([e.masked_kspace for e in examples]),
        mask=torch.stack(masks).contiguous(),
        target=torch.stack([e.target for e in examples]),
        contexts=[e.context for e in examples],
        identifiers=[e.identifier for e in examples],
        n_acs=torch.tensor([int(e.n_acs) for e in examples], dtype=torch.int64),
    )

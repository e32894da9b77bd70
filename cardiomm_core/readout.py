"""The readout (x) axis: readout oversampling removed in k-space, and the image-space centre crop.

Two operations with two meanings, both keeping the centre of the field of view along the readout:

- ``remove_readout_oversampling(lines, n_keep)``: k-space readout lines in, k-space lines out
  (Gadgetron's RemoveROOversamplingGadget: centred orthonormal inverse FFT along the readout, keep
  the central ``n_keep`` image samples, centred orthonormal FFT back). The gadget
  ``gadgets.remove_oversampling.RemoveOversampling`` runs it on every acquisition.
- ``crop_image_readout(x, nx)`` / ``pad_image_readout(x, nx_enc)``: an image (or coil images,
  sensitivities) with ``nx_enc`` columns cut to the central ``nx`` (and its zero-padding inverse),
  as a reconstruction of oversampled k-space is cut to the recon matrix.

The centred FFT keeps the object's centre at column ``n // 2``; the image crop starts at
``n_enc // 2 - nx // 2`` so that centre stays the centre. The k-space removal starts at
``(n_samples - n_keep) // 2`` as the native gadget does (the same for even ``n_keep``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:  # the gadgets that crop numpy arrays do not import torch
    import torch

#: A numpy array or a torch tensor (the crop returns the type it is given).
ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")

__all__ = ["crop_image_readout", "pad_image_readout", "remove_readout_oversampling"]


def crop_image_readout(x: ArrayT, nx: int) -> ArrayT:
    """Central ``nx`` columns of the last axis (``(..., nx_enc) -> (..., nx)``), starting at
    ``nx_enc // 2 - nx // 2``; a view of a numpy array or torch tensor. ValueError unless
    ``1 <= nx <= nx_enc``."""
    n_enc = x.shape[-1]
    if not 1 <= nx <= n_enc:
        raise ValueError(f"nx must be in [1, {n_enc}] for an array with {n_enc} columns, got {nx}")
    start = n_enc // 2 - nx // 2
    return x[..., start:start + nx]


def pad_image_readout(x: np.ndarray, nx_enc: int) -> np.ndarray:
    """Zero-pad the last axis to ``nx_enc`` columns (``(..., nx) -> (..., nx_enc)``), the inverse
    of :func:`crop_image_readout`."""
    nx = x.shape[-1]
    if nx_enc < nx:
        raise ValueError(f"nx_enc must be >= the {nx} columns of x, got {nx_enc}")
    out = np.zeros(x.shape[:-1] + (nx_enc,), x.dtype)
    start = nx_enc // 2 - nx // 2
    out[..., start:start + nx] = x
    return out


def remove_readout_oversampling(lines: np.ndarray, n_keep: int) -> tuple[np.ndarray, int]:
    """Keep the central ``n_keep`` image-space samples of k-space readout lines ``lines (channels, samples)``.

    Returns ``(kspace (channels, n_keep) complex64, start)`` where ``start`` is the first kept
    image-space sample (``(samples - n_keep) // 2``). Centred orthonormal FFTs
    (``fftshift(fft(ifftshift(x)), norm="ortho")``) along the readout.
    """
    if not isinstance(lines, np.ndarray) or lines.ndim != 2:
        raise ValueError(f"lines must be a numpy array (channels, samples), got shape {getattr(lines, 'shape', None)}")
    n_samples = lines.shape[1]
    if not 1 <= n_keep <= n_samples:
        raise ValueError(f"n_keep must be in 1..{n_samples} (the number of samples), got {n_keep}")
    start = (n_samples - n_keep) // 2
    image = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(lines, axes=1), axis=1, norm="ortho"), axes=1)
    kept = image[:, start:start + n_keep]
    kspace = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(kept, axes=1), axis=1, norm="ortho"), axes=1)
    return kspace.astype(np.complex64), start

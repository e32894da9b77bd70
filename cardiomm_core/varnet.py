"""fastMRI's E2E-VarNet as a benchmark peer, behind the project's model interface.

``VarNetRecon`` wraps ``fastmri.models.VarNet`` (fastmri 0.3.0, unchanged) so that the project's
trainer, checkpoints and inference engine run it exactly like CardioMM:

    forward(masked_kspace (B, C, T, ky, kx) complex64, mask (B, 1, T, ky, kx|1),
            metadata_emb (B, D), sampling_emb (B, D), acs (B, 1, 1, ky, kx|1) | None) -> image (B, T, y, x)

The output is real (float32): the root-sum-of-squares magnitude fastMRI's VarNet returns. The
text embeddings are accepted and ignored (E2E-VarNet is not conditioned); ``text_dim`` is in the
config only because a checkpoint names the encoder its caller feeds (the benchmark configs use
the cheap ``hashing`` encoder).

Conventions bridged here (and nowhere else):

- **Frames into the batch.** VarNet is a 2D network: each frame of each slice is one fastMRI
  example, ``(B, C, T, ky, kx) -> (B*T, C, ...)``, with that frame's own mask.
- **Phase encoding along fastMRI's W.** fastMRI's k-space is ``(N, C, H, W, 2)`` with the
  sampled lines along W (mask ``(N, 1, 1, W, 1)``; its sensitivity model finds the
  low-frequency band along W). The project's lines run along ky (mask ``(..., ky, 1)``), so
  ky and kx are swapped on the way in (``H = kx``, ``W = ky``) and the image is swapped back on
  the way out. A 2D centred orthonormal FFT commutes with that transposition.
- **FFT.** fastMRI's ``fft2c`` / ``ifft2c`` (``ifftshift -> fft(norm="ortho") -> fftshift``
  over (H, W) of the real view) are the project's ``cardiomm_core.fft`` on the complex dtype;
  ``tests/core/test_varnet.py`` checks both on odd sizes, and that a VarNet without cascades
  returns the project's zero-filled RSS image (``sense.rss_complex`` of the masked k-space).
- **Calibration region.** The number of low-frequency lines handed to fastMRI's sensitivity
  model is the ky extent of the project's ACS region (``model.acs_region_mask``: 24/16 lines,
  the 16 x 16 centre of radial masks), the smallest in the batch.
- **Masks varying along kx** (ktRadial) are passed whole, ``(N, 1, kx, ky, 1)``: fastMRI's data
  consistency broadcasts them (its comments assume line masks, its arithmetic does not).
- **Intensity.** The trainer and the engine scale the k-space by
  ``engine.normalisation_scale`` and divide the output by it, as for CardioMM; VarNet's
  NormUnets normalise internally as well.

Importing fastmri: ``fastmri.models`` imports ``fastmri.data``, whose ``__init__`` pulls in the
file-based data sets (pandas, requests, tqdm) that the network never uses. When those are not
installed, :func:`fastmri_varnet_class` loads ``fastmri.data`` as a bare package (its
``transforms`` and ``subsample`` modules, which VarNet does use, import only torch and numpy),
so ``pip install --no-deps fastmri==0.3.0`` alone is enough beside torch, numpy and h5py.
torchvision (a declared dependency of fastmri that fails to import beside torch 2.13 CPU) is
never imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .checks import check_model_inputs, dataclass_fields_from

logger = logging.getLogger(__name__)

__all__ = [
    "VARNET_KIND",
    "VARNET_NAMES",
    "VarNetConfig",
    "VarNetRecon",
    "fastmri_varnet_class",
    "varnet_config_by_name",
]

#: ``architecture.kind`` of a VarNet checkpoint.
VARNET_KIND = "varnet"
#: Named sizes (see :func:`varnet_config_by_name`).
VARNET_NAMES = ("tiny", "matched", "published")


@dataclass
class VarNetConfig:
    """Hyper-parameters of :class:`VarNetRecon` (stored beside the weights; ``kind`` is "varnet").

    The names are fastMRI's ``VarNet`` arguments; ``text_dim`` is the size of the (ignored)
    text embeddings the caller feeds.
    """

    kind: str = VARNET_KIND
    text_dim: int = 64
    num_cascades: int = 12
    chans: int = 18
    pools: int = 4
    sens_chans: int = 8
    sens_pools: int = 4
    mask_center: bool = True

    def __post_init__(self) -> None:
        if self.kind != VARNET_KIND:
            raise ValueError(f"kind must be {VARNET_KIND!r}, got {self.kind!r}")
        for name in ("text_dim", "chans", "pools", "sens_chans", "sens_pools"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.num_cascades, bool) or not isinstance(self.num_cascades, int) or self.num_cascades < 0:
            raise ValueError(f"num_cascades must be a non-negative integer, got {self.num_cascades!r}")
        if not isinstance(self.mask_center, bool):
            raise ValueError(f"mask_center must be true or false, got {self.mask_center!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (with ``kind``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VarNetConfig:
        """Inverse of :meth:`to_dict`; an unknown key is a ValueError naming it (missing keys
        take their defaults, except ``kind``, which a stored architecture must carry)."""
        return cls(**dataclass_fields_from(cls, values, "VarNetConfig mapping", may_be_missing=None))


def varnet_config_by_name(name: str, text_dim: int) -> VarNetConfig:
    """Named VarNet sizes.

    - ``published``: fastMRI's E2E-VarNet (12 cascades, 18 channels, 4 pools; sensitivity U-Net
      8 channels, 4 pools): about 30 M parameters.
    - ``matched``: the same 12 cascades with 8-channel U-Nets, about as many parameters as
      CardioMM ``small`` (~6.5 M; see ``benchmarks/quality.py``), so that a comparison is one of
      architectures at equal capacity, and the fp16 weights stay under 16 MiB.
    - ``tiny``: unit tests (2 cascades, 4 channels, 2 pools).
    """
    if name == "published":
        return VarNetConfig(text_dim=text_dim)
    if name == "matched":
        return VarNetConfig(text_dim=text_dim, num_cascades=12, chans=8, pools=4, sens_chans=8, sens_pools=4)
    if name == "tiny":
        return VarNetConfig(text_dim=text_dim, num_cascades=2, chans=4, pools=2, sens_chans=4, sens_pools=2)
    raise ValueError(f"VarNet size must be one of {list(VARNET_NAMES)}, got {name!r}")


def _load_bare_fastmri_data() -> None:
    """Register ``fastmri.data`` as a package without running its ``__init__`` (which imports the
    file-based data sets and so pandas / requests / tqdm); its submodules import normally."""
    spec = importlib.util.find_spec("fastmri")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fastmri is not installed")
    import os

    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    package = types.ModuleType("fastmri.data")
    package.__path__ = [folder]  # type: ignore[attr-defined]
    package.__package__ = "fastmri.data"
    sys.modules["fastmri.data"] = package
    importlib.import_module("fastmri.data.transforms")


def fastmri_varnet_class() -> type:
    """``fastmri.models.VarNet`` (fastmri 0.3.0), importable without fastmri's data-set extras.

    Raises ImportError with the install command when fastmri is missing.
    """
    try:
        from fastmri.models import VarNet

        return VarNet
    except ModuleNotFoundError as error:
        if error.name == "fastmri" or error.name is None or error.name.startswith("fastmri"):
            raise ImportError("E2E-VarNet needs the fastmri package: pip install --no-deps fastmri==0.3.0 "
                              "(beside torch, numpy, h5py)") from error
        if error.name not in ("pandas", "requests", "tqdm", "yaml"):
            raise
        logger.debug("fastmri.data's data sets need %s (not installed); loading the network without them",
                     error.name)
    stale = ("fastmri.models", "fastmri.data")
    for name in [m for m in sys.modules if m in stale or m.startswith(tuple(p + "." for p in stale))]:
        del sys.modules[name]  # half-imported by the failed attempt
    _load_bare_fastmri_data()
    from fastmri.models import VarNet

    return VarNet


class VarNetRecon(nn.Module):
    """fastMRI's E2E-VarNet with the project's model interface (see the module docstring).

    ``forward(masked_kspace (B,C,T,ky,kx) complex, mask (B,1,T,ky,kx|1), metadata_emb (B,D),
    sampling_emb (B,D), acs (B,1,1,ky,kx|1) | None) -> magnitude (B,T,y,x) float32``. The state dict
    is fastMRI's, under ``varnet.``.
    """

    def __init__(self, config: VarNetConfig) -> None:
        super().__init__()
        if not isinstance(config, VarNetConfig):
            raise ValueError(f"config must be a VarNetConfig, got {type(config).__name__}")
        self.config = config
        varnet_class = fastmri_varnet_class()
        self.varnet = varnet_class(num_cascades=config.num_cascades, sens_chans=config.sens_chans,
                                   sens_pools=config.sens_pools, chans=config.chans, pools=config.pools,
                                   mask_center=config.mask_center)

    def to_channels_last(self) -> VarNetRecon:
        """For the engine's and trainer's interface: fastMRI's U-Nets keep their default layout
        (their inputs are made contiguous in NCHW by fastMRI's own reshapes)."""
        return self

    @staticmethod
    def to_fastmri(masked_kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project layout -> fastMRI layout, frames in the batch, ky along W.

        ``masked_kspace (B, C, T, ky, kx)`` complex -> ``(B*T, C, kx, ky, 2)`` float32;
        ``mask (B, 1, T, ky, kx|1)`` -> bool ``(B*T, 1, kx|1, ky, 1)``.
        """
        n_b, n_c, n_t, n_ky, n_kx = masked_kspace.shape
        k = masked_kspace.to(torch.complex64).permute(0, 2, 1, 4, 3).reshape(n_b * n_t, n_c, n_kx, n_ky)
        m = mask.expand(n_b, 1, n_t, n_ky, mask.shape[-1]) != 0
        m = m.permute(0, 2, 1, 4, 3).reshape(n_b * n_t, 1, mask.shape[-1], n_ky, 1)
        return torch.view_as_real(k).contiguous(), m

    @staticmethod
    def from_fastmri(image: torch.Tensor, n_b: int, n_t: int) -> torch.Tensor:
        """fastMRI's ``(B*T, kx, ky)`` image -> the project's ``(B, T, y, x)``."""
        return image.reshape(n_b, n_t, *image.shape[-2:]).transpose(-1, -2)

    @staticmethod
    def low_frequency_lines(acs: torch.Tensor) -> int:
        """ky lines of the calibration region ``acs (B, 1, 1, ky, kx|1)`` (the smallest in the batch, >= 1)."""
        rows = (acs != 0).any(dim=-1).reshape(acs.shape[0], -1).sum(dim=-1)
        return max(int(rows.min().item()), 1)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, metadata_emb: torch.Tensor,
                sampling_emb: torch.Tensor, acs: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct: ``(B,C,T,ky,kx)`` complex k-space -> RSS magnitude ``(B,T,y,x)`` float32."""
        check_model_inputs(masked_kspace, mask, metadata_emb, sampling_emb, text_dim=self.config.text_dim,
                           hint="was the model trained with another text encoder?")
        n_b, _, n_t = masked_kspace.shape[:3]
        if acs is None:
            from .coils import acs_region_mask

            acs = acs_region_mask(mask.expand(n_b, 1, n_t, *mask.shape[-2:]))
        k, m = self.to_fastmri(masked_kspace * (mask != 0).to(torch.float32), mask)
        image = self.varnet(k, m, self.low_frequency_lines(acs))
        return self.from_fastmri(image.to(torch.float32), n_b, n_t)

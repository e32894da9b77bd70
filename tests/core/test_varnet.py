"""fastMRI's E2E-VarNet behind the project's model interface (cardiomm_core.varnet).

The conventions (FFT, axis order, frames in the batch, the mask's phase-encoding axis) are
checked against the project's own physics: a VarNet without cascades must return exactly the
project's zero-filled root-sum-of-squares image, so a mismatch of FFT shift, norm or axes cannot
pass; a transposed or mis-shifted adapter gives a different image on these odd, non-symmetric sizes.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fastmri", reason="fastmri is not installed (pip install --no-deps fastmri==0.3.0)")

from cardiomm_core.fft import fft2c, ifft2c  # noqa: E402
from cardiomm_core.masks import make_mask  # noqa: E402
from cardiomm_core.sense import rss_complex  # noqa: E402
from cardiomm_core.varnet import (  # noqa: E402
    VarNetConfig,
    VarNetRecon,
    fastmri_varnet_class,
    varnet_config_by_name,
)


def _data(n_b: int = 2, n_c: int = 3, n_t: int = 4, n_ky: int = 25, n_kx: int = 18, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kspace = torch.randn(n_b, n_c, n_t, n_ky, n_kx, dtype=torch.complex64, generator=g)
    mask = torch.as_tensor(make_mask("ktGaussian", 4.0, n_t, n_ky, 1, n_acs=6, seed=seed).mask.copy(), dtype=torch.float32)
    return kspace, mask.reshape(1, 1, n_t, n_ky, 1).expand(n_b, 1, n_t, n_ky, 1).contiguous()


def test_fastmri_fft_is_the_project_fft_on_odd_sizes():
    import fastmri

    x = torch.randn(2, 3, 13, 18, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    for ours, theirs in ((fft2c, fastmri.fft2c), (ifft2c, fastmri.ifft2c)):
        got = torch.view_as_complex(theirs(torch.view_as_real(x)).contiguous())
        assert torch.allclose(got, ours(x), atol=1e-5)


@pytest.mark.parametrize("n_ky,n_kx", [(25, 18), (16, 21)])
def test_without_cascades_varnet_is_the_zero_filled_rss_of_our_conventions(n_ky, n_kx):
    kspace, mask = _data(n_ky=n_ky, n_kx=n_kx)
    net = VarNetRecon(VarNetConfig(num_cascades=0, sens_chans=4, sens_pools=2)).eval()
    emb = torch.zeros(2, 64)
    with torch.no_grad():
        out = net(kspace, mask, emb, emb)
    reference = rss_complex(kspace * mask)
    assert out.shape == (2, 4, n_ky, n_kx) and out.dtype == torch.float32
    assert torch.allclose(out, reference, rtol=1e-5, atol=1e-6 * float(reference.max()))
    # the same with a mask that varies along kx (ktRadial), passed whole to fastMRI
    radial = torch.as_tensor(make_mask("ktRadial", 4.0, 4, n_ky, n_kx, n_acs=6, seed=2).mask.copy(), dtype=torch.float32)
    radial = radial.reshape(1, 1, 4, n_ky, n_kx)
    with torch.no_grad():
        out = net(kspace, radial, emb[:1], emb[:1])
    assert torch.allclose(out, rss_complex(kspace * radial), rtol=1e-5, atol=1e-6 * float(reference.max()))


def test_layout_round_trip_and_the_mask_is_fastmris_line_mask_per_frame():
    kspace, mask = _data()
    k, m = VarNetRecon.to_fastmri(kspace, mask)
    assert k.shape == (2 * 4, 3, 18, 25, 2) and m.shape == (2 * 4, 1, 1, 25, 1) and m.dtype == torch.bool
    # frame t of slice b is example b*T + t, ky along fastMRI's W
    assert torch.equal(torch.view_as_complex(k[1 * 4 + 2]), kspace[1, :, 2].transpose(-1, -2))
    assert torch.equal(m[1 * 4 + 2, 0, 0, :, 0], mask[1, 0, 2, :, 0] != 0)
    image = torch.arange(2 * 4 * 18 * 25, dtype=torch.float32).reshape(8, 18, 25)
    back = VarNetRecon.from_fastmri(image, 2, 4)
    assert back.shape == (2, 4, 25, 18) and torch.equal(back[1, 2], image[6].T)


def test_sensitivity_band_is_the_acs_height():
    acs = torch.zeros(2, 1, 1, 25, 1)
    acs[0, ..., 10:16, :] = 1
    acs[1, ..., 9:17, :] = 1
    assert VarNetRecon.low_frequency_lines(acs) == 6


def test_trains_a_step_and_runs_under_bf16_autocast():
    kspace, mask = _data()
    net = VarNetRecon(varnet_config_by_name("tiny", 64))
    emb = torch.zeros(1, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(kspace, mask, emb, emb)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_config_checks_and_sizes():
    assert VarNetConfig.from_dict(VarNetConfig(chans=8).to_dict()) == VarNetConfig(chans=8)
    with pytest.raises(ValueError, match="unknown key"):
        VarNetConfig.from_dict({"kind": "varnet", "chanz": 3})
    with pytest.raises(ValueError, match="kind"):
        VarNetConfig(kind="official")
    with pytest.raises(ValueError, match="chans"):
        VarNetConfig(chans=0)
    with pytest.raises(ValueError, match="size"):
        varnet_config_by_name("huge", 64)
    assert fastmri_varnet_class().__name__ == "VarNet"
    published = VarNetRecon(varnet_config_by_name("published", 64))
    assert 29e6 < sum(p.numel() for p in published.parameters()) < 31e6  # fastMRI's ~30 M

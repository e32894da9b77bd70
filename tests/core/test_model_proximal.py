"""The physics-initialised ("proximal") unroll of CardioMM (``CardioMMConfig.unroll``)."""

import dataclasses

import numpy as np
import pytest
import torch

from cardiomm_core.cg import conjugate_gradient
from cardiomm_core.checkpoint import load_checkpoint, save_checkpoint
from cardiomm_core.conventional import conventional_recon
from cardiomm_core.model import CardioMM, CardioMMConfig, config_by_name
from cardiomm_core.sense import sens_expand
from cardiomm_core.unroll import ProximalDataConsistency, SensitivityRefiner, conventional_start
from tests.core.test_model import TEXT_DIM, make_inputs
from tests.helpers import crandn

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_proximal(**overrides) -> CardioMM:
    torch.manual_seed(0)
    cfg = dataclasses.replace(config_by_name("tiny", TEXT_DIM), unroll="proximal", **overrides)
    return CardioMM(cfg).eval()


def test_untrained_network_reproduces_the_conventional_recon(rng):
    """Prior and map refinement start at zero: with a stiff proximal weight the output is the
    conventional recon it starts from; with the default weight it stays close to it."""
    kspace, mask, meta, us = make_inputs(rng, 2, 4, 3, (16, 14))
    expected = torch.cat([conventional_recon(kspace[b:b + 1], mask[b:b + 1]).images for b in range(2)])
    stiff = tiny_proximal(prox_weight_init=1e6)
    with torch.no_grad():
        out = stiff.forward_with_intermediates(kspace, mask, meta, us)
    torch.testing.assert_close(out.image, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    start_images, start_maps = conventional_start(kspace * mask, mask)
    torch.testing.assert_close(out.sens, start_maps)
    torch.testing.assert_close(start_images, expected)
    with torch.no_grad():
        default = tiny_proximal()(kspace, mask, meta, us)
    relative = (default - expected).abs().norm() / expected.abs().norm()
    assert 0 < relative < 0.5  # the data-consistency steps move it, towards the data


def test_proximal_dc_closed_form_with_full_sampling(rng):
    """Full sampling and rss-normalised maps: A^H A = I on the support, so the solution is
    (A^H y + lam z) / (1 + lam) there, reached by the first CG step."""
    n_c, n_t, n_y, n_x = 3, 2, 8, 6
    sens = crandn(rng, 1, n_c, 1, n_y, n_x)
    sens = sens / sens.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.ones(1, 1, n_t, n_y, 1)
    truth = crandn(rng, 1, n_t, n_y, n_x)
    k0 = sens_expand(truth, sens, mask) + 0.05 * crandn(rng, 1, n_c, n_t, n_y, n_x)
    z = crandn(rng, 1, n_t, n_y, n_x)
    dc = ProximalDataConsistency(weight_init=0.5, n_iter=2)
    with torch.no_grad():
        x = dc(z, k0, mask, sens)
    adjoint = (torch.fft.ifftshift(torch.fft.ifft2(torch.fft.fftshift(k0, dim=(-2, -1)), norm="ortho"),
                                   dim=(-2, -1)) * sens.conj()).sum(1)
    torch.testing.assert_close(x, (adjoint + 0.5 * z) / 1.5, rtol=1e-4, atol=1e-5)


def test_proximal_dc_fits_the_data_better_than_its_input(rng):
    kspace, mask, _, _ = make_inputs(rng, 1, 4, 2, (12, 10))
    sens = crandn(rng, 1, 4, 1, 12, 10)
    sens = sens / sens.abs().pow(2).sum(1, keepdim=True).sqrt()
    z = torch.zeros(1, 2, 12, 10, dtype=torch.complex64)
    residuals = []
    for weight in (10.0, 0.5, 0.01):
        with torch.no_grad():
            x = ProximalDataConsistency(weight, n_iter=8)(z, kspace, mask, sens)
        residuals.append(float((sens_expand(x, sens, mask) - kspace).abs().pow(2).sum()))
    assert residuals[0] > residuals[1] > residuals[2]  # a smaller lam trusts the data more
    assert residuals[0] < float(kspace.abs().pow(2).sum())


def test_conjugate_gradient_fixed_steps_solve_small_systems_exactly(rng):
    """n steps of CG solve an n-dimensional Hermitian positive definite system (per image)."""
    n_y, n_x = 2, 3
    n = n_y * n_x
    a = crandn(rng, 2, n, n).to(torch.complex128)
    hpd = a @ a.conj().transpose(-2, -1) + n * torch.eye(n, dtype=torch.complex128)   # (T, n, n)
    rhs = crandn(rng, 1, 2, n_y, n_x).to(torch.complex128)

    def normal(image):
        flat = image.reshape(1, 2, n, 1)
        return (hpd[None] @ flat).reshape(image.shape)

    x = conjugate_gradient(normal, rhs, n_iter=n)
    expected = torch.linalg.solve(hpd, rhs.reshape(2, n, 1)).reshape(rhs.shape)
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-10)


def test_sensitivity_refiner_starts_as_identity_and_keeps_the_support(rng):
    sens0 = crandn(rng, 2, 3, 1, 10, 12)
    sens0 = sens0 / sens0.abs().pow(2).sum(1, keepdim=True).sqrt()
    sens0[..., :2, :] = 0  # thresholded background
    torch.manual_seed(0)
    refiner = SensitivityRefiner(4, 2, 4, True)
    with torch.no_grad():
        torch.testing.assert_close(refiner(sens0), sens0)
        for p in refiner.parameters():
            p.add_(0.1 * torch.randn_like(p))
        refined = refiner(sens0)
    assert not torch.allclose(refined, sens0)
    assert torch.equal(refined[..., :2, :], torch.zeros_like(refined[..., :2, :]))
    torch.testing.assert_close(refined[..., 2:, :].abs().pow(2).sum(1), torch.ones(2, 1, 8, 12))


def test_training_reaches_every_parameter_and_the_sentences(rng):
    """The zero-initialised last convolutions pass gradients to themselves first; after one
    optimiser step every parameter (text heads, prompts, maps, proximal weights) gets a gradient,
    and the two sentences change the output."""
    model = tiny_proximal().train()
    kspace, mask, meta, us = make_inputs(rng, 1, 3, 3, (16, 12))
    target = crandn(rng, 1, 3, 16, 12).abs()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimiser.zero_grad()
        loss = (model(kspace, mask, meta, us).abs() - target).abs().mean()
        loss.backward()
        optimiser.step()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    model.eval()
    with torch.no_grad():
        base = model(kspace, mask, meta, us)
        other_meta = model(kspace, mask, meta.flip(-1), us)
        other_us = model(kspace, mask, meta, us.flip(-1))
    assert torch.isfinite(torch.view_as_real(base)).all()
    scale = base.abs().max()
    assert (base - other_meta).abs().max() > 1e-5 * scale and (base - other_us).abs().max() > 1e-5 * scale


def test_checkpoint_roundtrip_and_older_configs(rng, tmp_path):
    model = tiny_proximal(cg_iterations=3, prox_weight_init=0.25)
    path = save_checkpoint(tmp_path / "prox", model, text_encoder_name="hashing-64", text_encoder_dim=TEXT_DIM)
    loaded, meta = load_checkpoint(path)
    assert loaded.config == model.config and loaded.config.unroll == "proximal"
    kspace, mask, m, u = make_inputs(rng, 1, 2, 2, (12, 10))
    with torch.no_grad():
        assert torch.equal(loaded(kspace, mask, m, u), model(kspace, mask, m, u))
    # a mapping written before the unroll fields existed reads as the k-space unroll
    older = model.config.to_dict()
    for key in ("unroll", "cg_iterations", "prox_weight_init"):
        older.pop(key)
    assert CardioMMConfig.from_dict(older).unroll == "kspace"


@pytest.mark.parametrize("field,value", [("unroll", "image"), ("cg_iterations", 0), ("prox_weight_init", 0.0),
                                         ("prox_weight_init", float("nan"))])
def test_bad_unroll_settings_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(config_by_name("tiny", TEXT_DIM), **{field: value})


def test_model_runs_with_one_frame_and_no_calibration_block(rng, caplog):
    """One frame with a mask lacking a calibration block: the conventional start falls back
    (logged) and the network still returns finite images."""
    model = tiny_proximal()
    mask = torch.from_numpy((np.arange(16) % 3 == 0).astype(np.float32)).reshape(1, 1, 1, 16, 1)
    kspace = crandn(rng, 1, 2, 1, 16, 10) * mask
    meta = torch.zeros(1, TEXT_DIM)
    with torch.no_grad():
        out = model(kspace, mask, meta, meta)
    assert "no conventional start" in caplog.text
    assert out.shape == (1, 1, 16, 10) and torch.isfinite(torch.view_as_real(out)).all()

"""Perturbation spaces and losses: the kornia-style battery (shapes, errors, references, round trip, gradcheck)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from skimage.color import rgb2lab

from anti_i2v.protect.losses import diffusion_loss, feature_distance, ira_loss, irc_loss
from anti_i2v.protect.spaces import (
    Space,
    apply_dct,
    apply_lab,
    dct2,
    idct2,
    lab_to_rgb,
    lowpass_mask,
    rgb_to_lab,
)


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 16, 12), (2, 4, 3, 5, 7)])
def test_cardinality_and_round_trip(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert rgb_to_lab(x).shape == shape
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(idct2(dct2(x)), x, atol=1e-5, rtol=0)
    zero_ab = torch.zeros(*shape[:-3], 2, *shape[-2:])
    torch.testing.assert_close(apply_lab(x, zero_ab), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        apply_dct(x, torch.zeros_like(x), lowpass_mask(*shape[-2:])), x, atol=1e-5, rtol=0
    )


def test_reference_values():
    rng = np.random.default_rng(1)
    img = rng.random((6, 5, 3))
    ours = rgb_to_lab(torch.from_numpy(img).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, rgb2lab(img), atol=2e-3)
    coeffs = dct2(torch.from_numpy(img).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(coeffs, scipy.fft.dctn(img, axes=(0, 1), norm="ortho"), atol=1e-10)


def test_lab_perturbation_leaves_lightness():
    x = torch.rand(1, 3, 8, 8) * 0.6 + 0.2  # mid-range: no gamut clipping
    ab = torch.full((1, 2, 8, 8), 0.02)
    lab_before, lab_after = rgb_to_lab(x), rgb_to_lab(apply_lab(x, ab))
    torch.testing.assert_close(lab_after[:, 0], lab_before[:, 0], atol=0.2, rtol=0)
    assert (lab_after[:, 1:] - lab_before[:, 1:]).mean() > 1.5  # 0.02 x 128 = 2.56 a*/b* units


def test_exceptions():
    with pytest.raises(ValueError, match="2 channels"):
        apply_lab(torch.rand(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="unknown space"):
        Space("hsv").init(torch.rand(1, 3, 4, 4))


def test_gradcheck():
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.5 + 0.25
    ab = torch.zeros(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: apply_lab(x, d), (ab,), fast_mode=True, atol=1e-4)
    d = torch.zeros(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = lowpass_mask(4, 4, 0.6).double()
    assert torch.autograd.gradcheck(lambda v: apply_dct(x, v, mask), (d,), fast_mode=True)


def test_lowpass_mask_keeps_low_frequencies():
    m = lowpass_mask(8, 8, 0.25)
    assert m[0, 0] == 1 and m[7, 7] == 0 and m[0, 1] == 1 and m[4, 0] == 0
    assert int(m.sum()) == 3


@pytest.mark.parametrize("name", ["dual", "lab", "dct", "rgb"])
def test_projection_keeps_budget_and_image_range(name):
    space = Space(name, eps=4 / 255)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    params = {k: torch.randn(v.shape) for k, v in space.init(x).items()}
    projected = space.project(params)
    assert all(v.abs().max() <= space.eps + 1e-7 for v in projected.values())
    adv = space.apply(x, projected)
    assert adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)


def test_dct_budget_bounds_every_pixel():
    """However the coefficients combine, the pixel change stays within eps (here: all at +eps)."""
    x = torch.full((1, 3, 32, 32), 0.5)
    eps = 8 / 255
    mask = lowpass_mask(32, 32, 0.25)
    worst = apply_dct(x, torch.full_like(x, eps), mask)
    assert (worst - x).abs().max() <= eps + 1e-6
    rand = apply_dct(
        x, eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0))), mask
    )
    assert (rand - x).abs().max() <= eps + 1e-6


def test_losses_with_known_answers():
    a = torch.randn(2, 3, 4, 4, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(2, 3, 4, 4, 8, generator=torch.Generator().manual_seed(1))
    assert feature_distance(a, a) == 0
    assert feature_distance(a, 5 * a + 0.0) < 1e-6  # per-token normalisation: scale does not matter
    assert feature_distance(a, b) > 1
    assert irc_loss({"x": a}, {"c": a}) == 0
    assert ira_loss({"x": a}, {"x": b}) == feature_distance(a, b)
    unet_like = torch.randn(2, 3, 8, 8, 16)  # different grid and width: similarity structure
    assert feature_distance(unet_like, unet_like) == 0 and feature_distance(a, unet_like) > 0
    assert diffusion_loss(a, a) == 0 and diffusion_loss(a, b) > 1


def test_irc_target_is_stop_gradient():
    anchor = torch.randn(1, 1, 2, 2, 4, requires_grad=True)
    collapse = torch.randn(1, 1, 2, 2, 4, requires_grad=True)
    irc_loss({"a": anchor}, {"c": collapse}).backward()
    assert anchor.grad.abs().sum() > 0 and collapse.grad is None


TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # bfloat16 keeps 8 bits of mantissa


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_spaces_round_trip_and_perturb_in_float32(dtype):
    x = (torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2).to(dtype)
    tol = TOLERANCE[dtype]
    assert rgb_to_lab(x).dtype == dtype
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(x)), x, atol=tol, rtol=0)
    torch.testing.assert_close(idct2(dct2(x)), x, atol=tol, rtol=0)
    space = Space("dual", eps=8 / 255)
    params = space.project({k: torch.randn(v.shape) for k, v in space.init(x).items()})
    assert all(
        v.dtype == torch.float32 and v.abs().max() <= space.eps + 1e-7 for v in params.values()
    )
    adv = space.apply(x, params)  # a bfloat16 photo still gets a float32 cloak
    assert adv.dtype == torch.float32 and adv.min() >= 0 and adv.max() <= 1
    assert 0 < (adv - x.float()).abs().max() < 0.25
    one_step = space.apply(x, {k: torch.full_like(v, 1 / 255) for k, v in params.items()})
    assert (
        one_step - space.apply(x, {k: torch.zeros_like(v) for k, v in params.items()})
    ).abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_losses_are_float32_whatever_the_feature_dtype(dtype):
    a = torch.randn(2, 3, 4, 4, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    b = torch.randn(2, 3, 4, 4, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    for loss in (feature_distance(a, b), diffusion_loss(a, b), irc_loss({"x": a}, {"c": b})):
        assert loss.dtype == torch.float32 and loss > 1
    assert feature_distance(a, a) == 0 and diffusion_loss(a, a) == 0
    ref = feature_distance(a.float(), b.float())
    assert abs(float(feature_distance(a, b)) - float(ref)) < 1e-4  # both computed in float32


def test_ab_unit_110_moves_a_and_b_by_110_points_per_unit():
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    delta = torch.full((1, 2, 8, 8), 0.01)
    for unit in (128.0, 110.0):
        shifted = rgb_to_lab(Space("lab", ab_unit=unit).apply(x, {"ab": delta}))
        moved = (shifted[:, 1:] - rgb_to_lab(x)[:, 1:]).mean()
        assert float(moved) == pytest.approx(unit * 0.01, rel=0.1)
    assert "110" in Space("lab", ab_unit=110.0).units()["ab"]

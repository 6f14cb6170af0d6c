"""The four SR frameworks and their upsamplers: shapes, gradients, initial behaviour, validation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.degradation import imresize
from course_lib.models import (
    FRAMEWORKS,
    DownProjection,
    IterativeSR,
    PostUpsamplingSR,
    PreUpsamplingSR,
    ProgressiveSR,
    SubPixelUpsampler,
    UpProjection,
    bilinear_deconv_weight,
    build_framework,
    checkerboard_energy,
    count_parameters,
    deconv_upsampler,
    icnr_,
)

SMALL = {  # small widths keep the tests fast
    "pre-upsampling": dict(features=8, mid_features=4),
    "post-upsampling": dict(features=8, mid_features=4),
    "progressive": dict(features=8, depth=1),
    "iterative": dict(features=4, stages=2),
}


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values (the zero-initialised output layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
@pytest.mark.parametrize("scale", [2, 4])
def test_output_shapes_batch_and_single_image(name, scale):
    model = build_framework(name, scale, **SMALL[name])
    lr = torch.rand(2, 3, 6, 5)
    assert model(lr).shape == (2, 3, 6 * scale, 5 * scale)
    assert model(lr[0]).shape == (3, 6 * scale, 5 * scale)


@pytest.mark.parametrize("name", ["pre-upsampling", "post-upsampling", "iterative"])
def test_scale_three_works_where_the_framework_allows_it(name):
    model = build_framework(name, 3, **SMALL[name])
    assert model(torch.rand(1, 3, 5, 4)).shape == (1, 3, 15, 12)


def test_progressive_needs_a_power_of_two():
    with pytest.raises(ValueError, match="not supported"):
        ProgressiveSR(3)


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_every_parameter_receives_a_gradient(name):
    model = randomise(build_framework(name, 2, **SMALL[name]))
    lr = torch.rand(2, 3, 6, 6)
    model(lr).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


def test_learnable_image_branch_receives_a_gradient():
    model = randomise(ProgressiveSR(4, features=4, depth=1, image_upsampler="deconv", upsampler="subpixel"))
    model(torch.rand(1, 3, 4, 4)).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_input_gradient_matches_finite_differences(name):
    model = randomise(build_framework(name, 2, **SMALL[name])).double()
    lr = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x).sum(dim=(2, 3)), (lr,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("cls", [PreUpsamplingSR, PostUpsamplingSR, IterativeSR])
def test_residual_models_start_as_matlab_bicubic(cls):
    model = cls(4, features=8)
    lr = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(model(lr), imresize(lr, 4.0))


def test_progressive_deconv_stage_starts_as_bilinear():
    model = ProgressiveSR(2, features=8, depth=1, image_upsampler="deconv")
    lr = torch.rand(1, 3, 8, 8)
    ref = F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
    # the transposed convolution has zero padding; compare away from the one-pixel border
    torch.testing.assert_close(model(lr)[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_progressive_bicubic_stages_start_as_repeated_bicubic():
    model = ProgressiveSR(4, features=8, depth=1)
    lr = torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(model(lr), imresize(imresize(lr, 2.0), 2.0))
    with pytest.raises(ValueError, match="image_upsampler"):
        ProgressiveSR(4, image_upsampler="nearest")


def test_progressive_returns_every_level():
    model = ProgressiveSR(8, features=4, depth=1)
    levels = model.upscale_levels(torch.rand(1, 3, 3, 4))
    assert [tuple(x.shape) for x in levels] == [(1, 3, 6, 8), (1, 3, 12, 16), (1, 3, 24, 32)]
    single = model.upscale_levels(torch.rand(3, 3, 4))
    assert single[-1].shape == (3, 24, 32)


def test_progressive_subpixel_variant():
    model = ProgressiveSR(4, features=4, depth=1, upsampler="subpixel")
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="upsampler"):
        ProgressiveSR(4, upsampler="bilinear")


def test_bilinear_deconv_weight_by_hand():
    w = bilinear_deconv_weight(1, 2)[0, 0]
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(w, ramp[:, None] * ramp[None, :])


def test_projection_units_shapes():
    up, down = UpProjection(4, 4), DownProjection(4, 4)
    low = torch.rand(2, 4, 5, 6)
    high = up(low)
    assert high.shape == (2, 4, 20, 24)
    assert down(high).shape == low.shape
    assert IterativeSR(4, features=4, stages=1)(torch.rand(1, 3, 4, 4)).shape == (1, 3, 16, 16)


def test_icnr_subpixel_is_nearest_neighbour_at_initialisation():
    torch.manual_seed(0)
    up = SubPixelUpsampler(4, 3, 2, kernel_size=3)
    x = torch.rand(2, 4, 5, 6)
    base = F.conv2d(x, up.conv.weight[::4], up.conv.bias[::4], padding=1)
    torch.testing.assert_close(up(x), F.interpolate(base, scale_factor=2, mode="nearest"))
    assert checkerboard_energy(up(torch.ones(1, 4, 8, 8)), 2).item() < 1e-12


def test_icnr_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="multiple"):
        icnr_(torch.empty(6, 2, 3, 3), 2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_upsampler_output_size(scale):
    layer = deconv_upsampler(2, 3, scale)
    assert layer(torch.rand(1, 2, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)
    assert layer.kernel_size[0] - 2 * layer.padding[0] == scale


def test_deconv_upsampler_rejects_impossible_kernel():
    with pytest.raises(ValueError, match="exact"):
        deconv_upsampler(1, 1, 2, kernel_size=3)


def test_uneven_overlap_of_a_transposed_convolution_makes_a_checkerboard():
    # Odena et al. (2016): kernel 3, stride 2, padding 1, all-ones weights. Output o reads input i
    # through tap t = o + 1 - 2i in {0, 1, 2}: an even o only through t = 1 (one tap), an odd o
    # through t = 0 and t = 2 (two taps); in 2D the products 1, 2, 2, 4.
    layer = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    out = layer(torch.ones(1, 1, 6, 6))[0, 0, 2:-2, 2:-2]
    taps = torch.tensor([1.0, 2.0])
    expected = (taps[:, None] * taps[None, :]).repeat(4, 4)
    torch.testing.assert_close(out, expected)
    # phase means 1, 2, 2, 4: variance = mean of squares - square of mean = 6.25 - 2.25^2
    assert checkerboard_energy(out[None, None], 2).item() == pytest.approx(6.25 - 2.25**2)


def test_checkerboard_energy_by_hand():
    tile = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    img = tile.repeat(3, 3)[None].expand(3, 6, 6)
    assert checkerboard_energy(img, 2).item() == pytest.approx(1.25)  # var of 0,1,2,3
    a = 0.1
    sign = (-1.0) ** (torch.arange(8)[:, None] + torch.arange(8)[None, :])
    board = (0.5 + a * sign).expand(2, 3, 8, 8)
    torch.testing.assert_close(checkerboard_energy(board, 2), torch.full((2,), a * a))
    assert checkerboard_energy(torch.full((3, 9, 9), 0.3), 3).item() == pytest.approx(0.0, abs=1e-12)


def test_checkerboard_energy_validates():
    with pytest.raises(ValueError, match="smaller"):
        checkerboard_energy(torch.rand(3, 1, 1), 2)
    with pytest.raises(TypeError):
        checkerboard_energy(torch.ones(3, 4, 4, dtype=torch.int64), 2)


def test_count_parameters_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 1, 1, bias=False))
    assert count_parameters(model) == 3 * 4 * 9 + 4 + 4
    model[1].requires_grad_(False)
    assert count_parameters(model) == 112
    assert count_parameters(model, trainable_only=False) == 116


def test_input_validation():
    model = PostUpsamplingSR(2, features=4, mid_features=4)
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 1, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(4, 4))
    with pytest.raises(TypeError, match="Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match="unknown framework"):
        build_framework("transformer")
    with pytest.raises(ValueError, match="at least 2"):
        PreUpsamplingSR(1)
    with pytest.raises(TypeError):
        PreUpsamplingSR(2.0)
    with pytest.raises(ValueError, match="odd"):
        PreUpsamplingSR(2, kernel_sizes=(9, 2, 5))

"""Feature extractors: the VGG-19 key layout and loading errors (with synthetic weights), and the
Gabor filter bank's defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.features import (
    VGG19_LAYERS,
    VGG19_WEIGHTS_ENV,
    GaborFeatures,
    VGG19Features,
    gabor_kernel,
    load_feature_extractor,
    vgg19_expected_shapes,
)

# torchvision.models.vgg19().features: convolutions at these Sequential indices, pools at these.
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
TORCHVISION_POOL_INDICES = [4, 9, 18, 27, 36]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def synthetic_state_dict(prefix="", up_to=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {prefix + k: 0.05 * torch.randn(shape, generator=g) for k, shape in vgg19_expected_shapes(up_to).items()}


def test_layer_table_matches_torchvision_indices():
    assert len(VGG19_LAYERS) == 37
    assert [i for i, n in enumerate(VGG19_LAYERS) if n.startswith("conv")] == TORCHVISION_CONV_INDICES
    assert [i for i, n in enumerate(VGG19_LAYERS) if n.startswith("pool")] == TORCHVISION_POOL_INDICES
    assert VGG19_LAYERS[35] == "relu5_4" and VGG19_LAYERS[8] == "relu2_2"
    shapes = vgg19_expected_shapes()
    assert len(shapes) == 32
    assert shapes["0.weight"] == (64, 3, 3, 3) and shapes["34.weight"] == (512, 512, 3, 3)
    n_params = sum(math.prod(s) for s in shapes.values())
    assert n_params == 20_024_384  # the published size of VGG-19's convolutional part


def test_vgg_features_equal_a_hand_written_forward_pass():
    state = synthetic_state_dict(up_to="relu2_1")
    vgg = VGG19Features(state, ["relu1_1", "relu2_1"])
    x = torch.rand(2, 3, 16, 16)
    z = (x - MEAN) / STD
    h1 = F.relu(F.conv2d(z, state["0.weight"], state["0.bias"], padding=1))
    h2 = F.relu(F.conv2d(h1, state["2.weight"], state["2.bias"], padding=1))
    h3 = F.relu(F.conv2d(F.max_pool2d(h2, 2), state["5.weight"], state["5.bias"], padding=1))
    out = vgg(x)
    torch.testing.assert_close(out["relu1_1"], h1)
    torch.testing.assert_close(out["relu2_1"], h3)
    assert len(vgg.features) == VGG19_LAYERS.index("relu2_1") + 1  # truncated after the deepest layer
    assert not any(p.requires_grad for p in vgg.parameters())


def test_whole_model_layout_with_classifier_loads(tmp_path):
    state = synthetic_state_dict(prefix="features.")
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    path = tmp_path / "vgg19.pt"
    torch.save(state, path)
    vgg = VGG19Features.from_file(path, ["relu5_4"])
    assert vgg(torch.rand(1, 3, 32, 32))["relu5_4"].shape == (1, 512, 2, 2)


def test_missing_file_explains_how_to_get_the_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="torchvision") as info:
        VGG19Features.from_file(tmp_path / "nope.pt")
    assert VGG19_WEIGHTS_ENV in str(info.value)


def test_missing_key_is_named():
    state = synthetic_state_dict(up_to="relu2_2")
    del state["7.bias"]
    with pytest.raises(ValueError, match=r"7\.bias"):
        VGG19Features(state, ["relu2_2"])


def test_wrong_shape_is_named():
    state = synthetic_state_dict(up_to="relu1_2")
    state["2.weight"] = torch.zeros(64, 32, 3, 3)
    with pytest.raises(ValueError, match=r"2\.weight: expected \(64, 64, 3, 3\)"):
        VGG19Features(state, ["relu1_2"])


def test_unreadable_or_wrong_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        VGG19Features.from_file(garbage)
    with pytest.raises(ValueError, match="state dict"):
        VGG19Features([1, 2, 3])
    with pytest.raises(ValueError, match="unknown layers"):
        VGG19Features(synthetic_state_dict(up_to="relu1_1"), ["relu9_9"])
    with pytest.raises(ValueError, match="RGB"):
        VGG19Features(synthetic_state_dict(up_to="relu1_1"), ["relu1_1"])(torch.rand(1, 1, 8, 8))


def test_load_feature_extractor_follows_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(VGG19_WEIGHTS_ENV, raising=False)
    assert isinstance(load_feature_extractor(), GaborFeatures)
    assert "Gabor" in capsys.readouterr().out
    path = tmp_path / "vgg.pt"
    torch.save(synthetic_state_dict(up_to="relu3_1"), path)
    monkeypatch.setenv(VGG19_WEIGHTS_ENV, str(path))
    vgg = load_feature_extractor(verbose=False)
    assert isinstance(vgg, VGG19Features) and set(vgg.texture_layers) <= set(vgg.layer_names)
    monkeypatch.delenv(VGG19_WEIGHTS_ENV)
    assert isinstance(load_feature_extractor(path, layers=["relu1_1"], verbose=False), VGG19Features)
    monkeypatch.setenv(VGG19_WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError):  # a named file that is missing is an error, not a fallback
        load_feature_extractor(verbose=False)


def test_gabor_kernel_properties():
    k = gabor_kernel(9, 4.0, 0.0, 0.0)
    assert abs(k.sum().item()) < 1e-6 and k.norm().item() == pytest.approx(1.0)
    torch.testing.assert_close(k, k.flip(0))  # theta = 0 varies along x only: symmetric in y
    odd = gabor_kernel(9, 4.0, 0.0, math.pi / 2)
    torch.testing.assert_close(odd, -odd.flip(1))  # the odd filter is antisymmetric in x
    # orientation selectivity: a grating varying along x excites theta = 0, not theta = pi/2
    xs = torch.arange(32.0)
    grating = torch.cos(2 * math.pi * xs / 4.0).expand(32, 32)[None, None]
    def energy(theta):
        even = F.conv2d(grating, gabor_kernel(9, 4.0, theta, 0.0)[None, None])
        odd = F.conv2d(grating, gabor_kernel(9, 4.0, theta, math.pi / 2)[None, None])
        return (even**2 + odd**2).mean().item()
    assert energy(0.0) > 100 * energy(math.pi / 2)
    with pytest.raises(ValueError, match="odd"):
        gabor_kernel(8, 4.0, 0.0, 0.0)


def test_gabor_features_shapes_and_constant_images():
    feats = GaborFeatures(levels=3)
    out = feats(torch.rand(2, 3, 32, 40))
    assert list(out) == ["scale1", "scale2", "scale3"]
    assert [tuple(v.shape) for v in out.values()] == [(2, 18, 16, 20), (2, 18, 8, 10), (2, 18, 4, 5)]
    flat = feats(torch.full((1, 3, 32, 32), 0.3))
    energy = torch.tensor([c % 6 < 4 for c in range(18)])  # per colour: 4 energies, 2 low-pass
    for v in flat.values():  # zero-mean band-pass filters ignore a constant image
        assert v[:, energy].abs().max().item() < 1e-4
    # the luminance low-pass of a constant 0.3 image: opponent channel (0.3 - 0.5) * sqrt(3) < 0,
    # so only its negative half-wave responds, with exactly that value
    lum = flat["scale1"][0, 4:6]
    assert lum[0].abs().max().item() < 1e-6
    torch.testing.assert_close(lum[1], torch.full_like(lum[1], 0.2 * math.sqrt(3)))
    with pytest.raises(ValueError, match="too small"):
        feats(torch.rand(1, 3, 4, 4))


def test_gabor_features_see_blur_more_than_a_small_shift():
    # the property feature losses rely on: blurring costs more than misplacing detail slightly
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(1, 3, 16, 16, generator=g) > 0.5).float().repeat_interleave(4, -1).repeat_interleave(4, -2)
    # random 4x4-pixel blocks in every colour; shifted by one pixel vs. blurred with [1 4 6 4 1]/16
    shifted = torch.roll(img, 1, dims=-1)
    blur_kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k2 = (blur_kernel[:, None] * blur_kernel[None, :]).expand(3, 1, 5, 5)
    blurred = F.conv2d(F.pad(img, (2, 2, 2, 2), mode="circular"), k2, groups=3)
    feats = GaborFeatures()
    def dist(a, b):
        fa, fb = feats(a), feats(b)
        return sum(((fa[n] - fb[n]) ** 2).mean() for n in fa).item()
    pixel_shift, pixel_blur = ((shifted - img) ** 2).mean(), ((blurred - img) ** 2).mean()
    assert pixel_shift > pixel_blur  # in pixels the shift is worse ...
    assert dist(shifted, img) < dist(blurred, img)  # ... in features the blur is worse

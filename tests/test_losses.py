"""Losses against values computed by hand, and the discriminator's shapes and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.losses import (
    GAN_KINDS,
    PatchDiscriminator,
    PerceptualLoss,
    TextureLoss,
    charbonnier_loss,
    discriminator_loss,
    generator_adversarial_loss,
    gram_matrix,
    l1_loss,
    l2_loss,
    pixel_loss,
    total_variation,
)

SR = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2)
HR = torch.ones(1, 1, 2, 2)  # differences -1, 0, 1, 2


def test_pixel_losses_by_hand():
    assert l2_loss(SR, HR).item() == pytest.approx((1 + 0 + 1 + 4) / 4)
    assert l1_loss(SR, HR).item() == pytest.approx((1 + 0 + 1 + 2) / 4)
    expected = (math.sqrt(2) + 1 + math.sqrt(2) + math.sqrt(5)) / 4  # sqrt(d^2 + 1)
    assert charbonnier_loss(SR, HR, eps=1.0).item() == pytest.approx(expected)
    assert pixel_loss("mse") is l2_loss and pixel_loss("charbonnier") is charbonnier_loss


def test_charbonnier_tends_to_l1():
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert charbonnier_loss(sr, hr, eps=1e-6).item() == pytest.approx(l1_loss(sr, hr).item(), rel=1e-4)


def test_pixel_losses_validate():
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(TypeError):
        l2_loss(torch.ones(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="eps"):
        charbonnier_loss(SR, HR, eps=0.0)
    with pytest.raises(ValueError, match="unknown pixel loss"):
        pixel_loss("huber")


def test_gram_matrix_by_hand():
    feats = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (N=1, C=2, H=1, W=2)
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(feats)[0], expected)
    torch.testing.assert_close(gram_matrix(feats[0]), expected)  # (C, H, W) input


def test_gram_matrix_forgets_positions():
    feats = torch.randn(2, 5, 4, 6)
    perm = torch.randperm(24)
    shuffled = feats.flatten(2)[..., perm].view_as(feats)
    torch.testing.assert_close(gram_matrix(shuffled), gram_matrix(feats))
    with pytest.raises(ValueError):
        gram_matrix(torch.rand(4, 4))


class ToyExtractor(nn.Module):
    """A fixed 'feature network' whose features are easy to compute by hand."""

    layer_names = ("identity", "square")

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # must be frozen by the loss

    def forward(self, x):
        return {"identity": self.scale * x, "square": x**2}


def test_perceptual_loss_by_hand():
    loss = PerceptualLoss(ToyExtractor(), {"identity": 1.0, "square": 0.5})
    sr, hr = SR.clone().requires_grad_(True), HR
    value = loss(sr, hr)
    # identity: mean d^2 = 1.5 ; square: (0-1)^2, 0, (4-1)^2, (9-1)^2 -> mean 74/4
    assert value.item() == pytest.approx(1.5 + 0.5 * 74 / 4)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.extractor.parameters())


def test_texture_loss_by_hand():
    loss = TextureLoss(ToyExtractor(), ["identity"])
    sr = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    hr = torch.zeros(1, 2, 1, 2)
    g = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4
    assert loss(sr, hr).item() == pytest.approx((g**2).sum().item())


def test_texture_loss_on_tiles_by_hand():
    # patch 1: one Gram matrix per pixel, G = f f^T / C for the C-vector f at that pixel
    loss = TextureLoss(ToyExtractor(), ["identity"], patch=1)
    sr = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    hr = torch.zeros_like(sr)
    per_pixel = [torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])]
    expected = sum(((torch.outer(f, f) / 2) ** 2).sum() for f in per_pixel) / 2
    assert loss(sr, hr).item() == pytest.approx(expected.item())


def test_feature_losses_validate():
    with pytest.raises(ValueError, match="unknown feature layers"):
        PerceptualLoss(ToyExtractor(), ["relu5_4"])
    with pytest.raises(TypeError):
        PerceptualLoss(ToyExtractor(), "identity")
    with pytest.raises(ValueError, match="batches"):
        PerceptualLoss(ToyExtractor(), ["identity"])(torch.rand(3, 4, 4), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="patch"):
        TextureLoss(ToyExtractor(), ["identity"], patch=0)


def test_total_variation_by_hand():
    x = torch.tensor([[0.0, 1.0], [3.0, 5.0]])[None]  # (1, 2, 2)
    # dx: 1 and 2 ; dy: 3 and 4
    assert total_variation(x).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert total_variation(x, kind="squared").item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    # isotropic: only pixel (0, 0) has both differences: sqrt(1^2 + 3^2)
    assert total_variation(x, kind="isotropic", eps=0.0).item() == pytest.approx(math.sqrt(10) / 4)
    assert total_variation(torch.full((2, 3, 5, 5), 0.7)).item() == 0.0
    with pytest.raises(ValueError, match="kind"):
        total_variation(x, kind="l0")


def test_gan_losses_by_hand():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    log2 = math.log(2)
    d_ns = (log2 + math.log1p(math.exp(-2))) / 2 + (log2 + math.log1p(math.exp(-1))) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(d_ns)
    assert discriminator_loss(real, fake, kind="lsgan").item() == pytest.approx((1 + 1) / 2 + (0 + 1) / 2)
    assert discriminator_loss(real, fake, kind="hinge").item() == pytest.approx((1 + 0) / 2 + (1 + 0) / 2)
    assert generator_adversarial_loss(fake).item() == pytest.approx((log2 + math.log1p(math.e)) / 2)
    assert generator_adversarial_loss(fake, kind="lsgan").item() == pytest.approx((1 + 4) / 2)
    assert generator_adversarial_loss(fake, kind="hinge").item() == pytest.approx(0.5)


def test_nonsaturating_loss_is_binary_cross_entropy():
    real, fake = torch.randn(10), torch.randn(10)
    bce = (F.binary_cross_entropy(torch.sigmoid(real), torch.ones(10))
           + F.binary_cross_entropy(torch.sigmoid(fake), torch.zeros(10)))
    assert discriminator_loss(real, fake).item() == pytest.approx(bce.item(), rel=1e-5)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        generator_adversarial_loss(fake, kind="wgan")
    assert set(GAN_KINDS) == {"nonsaturating", "lsgan", "hinge"}


def test_patch_discriminator_shapes_and_gradients():
    disc = PatchDiscriminator(3, features=8, n_layers=3)
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    logits = disc(x)
    assert logits.shape == (2, 1, 4, 6)
    generator_adversarial_loss(logits).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="too small"):
        disc(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="batches"):
        disc(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="n_layers"):
        PatchDiscriminator(n_layers=0)


def test_spectral_norm_bounds_the_layers():
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, features=4, n_layers=2)
    disc(torch.rand(1, 3, 16, 16))  # a forward pass runs the power iteration
    first = disc.net[0]
    w = first.weight.reshape(first.weight.shape[0], -1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=0.1)

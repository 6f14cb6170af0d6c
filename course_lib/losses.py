"""Training losses for super-resolution, from pixels to features to a discriminator.

=====================  ===================================================  ===================
loss                   formula (per batch, means over elements)             paper
=====================  ===================================================  ===================
L2 (MSE)               ``mean (x_hat - x)^2``                               SRCNN
L1                     ``mean |x_hat - x|``                                 EDSR
Charbonnier            ``mean sqrt((x_hat - x)^2 + eps^2)``                 LapSRN
perceptual / content   ``sum_l w_l mean (phi_l(x_hat) - phi_l(x))^2``       Johnson et al. 2016
texture (Gram)         ``sum_l w_l sum_{c,c'} (G_l(x_hat) - G_l(x))^2``     Gatys et al. 2016
total variation        ``mean |grad x_hat|``                                Rudin-Osher-Fatemi
adversarial            ``-log D(x_hat)`` and the discriminator's BCE        SRGAN
=====================  ===================================================  ===================

The feature losses take a *feature extractor*: a module mapping an image batch to a dict of named
feature maps (see :mod:`course_lib.features`: a user-supplied VGG-19 or the offline filter bank).
The adversarial losses come with :class:`PatchDiscriminator`, a small PatchGAN-style critic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "l1_loss",
    "l2_loss",
    "charbonnier_loss",
    "pixel_loss",
    "gram_matrix",
    "PerceptualLoss",
    "TextureLoss",
    "total_variation",
    "PatchDiscriminator",
    "discriminator_loss",
    "generator_adversarial_loss",
    "gan_critics",
    "GAN_KINDS",
]

GAN_KINDS = ("nonsaturating", "lsgan", "hinge")


# --------------------------------------------------------------------------------- checks
def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_pair(sr: torch.Tensor, hr: torch.Tensor) -> None:
    _check_tensor(sr, "sr")
    _check_tensor(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")


# --------------------------------------------------------------------------------- pixel losses
def l2_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``mean (sr - hr)^2`` (SRCNN's loss; maximising PSNR is minimising it)."""
    _check_pair(sr, hr)
    return ((sr - hr) ** 2).mean()


def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean absolute error ``mean |sr - hr|`` (EDSR; the optimum is the posterior *median*)."""
    _check_pair(sr, hr)
    return (sr - hr).abs().mean()


def charbonnier_loss(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss ``mean sqrt((sr - hr)^2 + eps^2)`` (LapSRN, eq. 3, with ``eps = 1e-3``):
    a differentiable L1 that is quadratic for errors below ``eps``."""
    _check_pair(sr, hr)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    return torch.sqrt((sr - hr) ** 2 + eps * eps).mean()


_PIXEL_LOSSES = {"l1": l1_loss, "l2": l2_loss, "mse": l2_loss, "charbonnier": charbonnier_loss}


def pixel_loss(kind: str):
    """The pixel loss function called ``kind``: ``"l1"``, ``"l2"`` (alias ``"mse"``) or ``"charbonnier"``."""
    if kind not in _PIXEL_LOSSES:
        raise ValueError(f"unknown pixel loss {kind!r}; choose one of {sorted(_PIXEL_LOSSES)}")
    return _PIXEL_LOSSES[kind]


# --------------------------------------------------------------------------------- feature losses
def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix ``G[c, c'] = sum_{h,w} F[c,h,w] F[c',h,w] / (C H W)`` (Johnson et al.
    2016, eq. 3; Gatys et al. 2016 without the normalisation).

    ``features``: ``(N, C, H, W)`` or ``(C, H, W)``; returns ``(N, C, C)`` or ``(C, C)``. The Gram
    matrix averages over positions, so it keeps which features occur together (texture) and
    forgets where they occur.
    """
    _check_tensor(features, "features")
    if features.ndim not in (3, 4):
        raise ValueError(f"features must be (C, H, W) or (N, C, H, W), got shape {tuple(features.shape)}")
    batch = features.unsqueeze(0) if features.ndim == 3 else features
    n, c, h, w = batch.shape
    flat = batch.reshape(n, c, h * w)
    gram = flat @ flat.transpose(1, 2) / (c * h * w)
    return gram[0] if features.ndim == 3 else gram


def _layer_weights(layers: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    if isinstance(layers, str):
        raise TypeError("layers must be a sequence of layer names or a {name: weight} mapping, not a str")
    weights = dict(layers) if isinstance(layers, Mapping) else {name: 1.0 for name in layers}
    if not weights:
        raise ValueError("give at least one feature layer")
    return weights


class _FeatureLoss(nn.Module):
    def __init__(self, extractor: nn.Module, layers: Sequence[str] | Mapping[str, float]) -> None:
        super().__init__()
        if not isinstance(extractor, nn.Module):
            raise TypeError(f"extractor must be an nn.Module, got {type(extractor).__name__}")
        self.weights = _layer_weights(layers)
        known = getattr(extractor, "layer_names", None)
        if known is not None:
            unknown = sorted(set(self.weights) - set(known))
            if unknown:
                raise ValueError(f"unknown feature layers {unknown}; the extractor has {list(known)}")
        self.extractor = extractor.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # the extractor stays in eval mode: it is a fixed network
        super().train(mode)
        self.extractor.eval()
        return self

    def _features(self, sr: torch.Tensor, hr: torch.Tensor):
        _check_pair(sr, hr)
        if sr.ndim != 4:
            raise ValueError(f"feature losses take batches (N, C, H, W), got shape {tuple(sr.shape)}")
        with torch.no_grad():  # the target's features need no gradient
            target = self.extractor(hr)
        output = self.extractor(sr)
        missing = sorted(set(self.weights) - (set(output) & set(target)))
        if missing:
            raise ValueError(f"the extractor returned no features for layers {missing}")
        return {name: (output[name], target[name]) for name in self.weights}


class PerceptualLoss(_FeatureLoss):
    """Content / perceptual loss (Johnson et al. 2016, eq. 2; SRGAN's VGG loss):
    ``sum_l w_l mean_{c,h,w} (phi_l(sr) - phi_l(hr))^2``.

    Args:
        extractor: fixed network ``x -> {layer: (N, C, H, W)}``; its weights are frozen here.
        layers: layer names, or ``{name: weight}``.
    """

    def __init__(self, extractor: nn.Module, layers: Sequence[str] | Mapping[str, float]) -> None:
        super().__init__(extractor, layers)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        feats = self._features(sr, hr)
        return sum(w * ((feats[name][0] - feats[name][1]) ** 2).mean() for name, w in self.weights.items())


def _local_gram(features: torch.Tensor, patch: int | None) -> torch.Tensor:
    if patch is None:
        return gram_matrix(features)
    n, c, h, w = features.shape
    if h < patch or w < patch:
        raise ValueError(f"feature map {h}x{w} is smaller than the texture patch size {patch}")
    h, w = h - h % patch, w - w % patch
    tiles = features[..., :h, :w].reshape(n, c, h // patch, patch, w // patch, patch)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, patch, patch)
    return gram_matrix(tiles)


class TextureLoss(_FeatureLoss):
    """Texture / style loss (Gatys et al. 2016; Johnson et al. 2016, eq. 4):
    ``sum_l w_l sum_{c,c'} (G(phi_l(sr)) - G(phi_l(hr)))^2 / B`` with :func:`gram_matrix` ``G``,
    i.e. the squared Frobenius distance of the Gram matrices, averaged over the ``B`` Gram matrices.

    ``patch``: compute Gram matrices on non-overlapping ``patch x patch`` tiles of each feature
    map instead of the whole map (EnhanceNet's local texture matching, Sajjadi et al. 2017, which
    keeps textures in place); ``None`` uses the whole map.
    """

    def __init__(self, extractor: nn.Module, layers: Sequence[str] | Mapping[str, float], *,
                 patch: int | None = None) -> None:
        super().__init__(extractor, layers)
        if patch is not None and (isinstance(patch, bool) or not isinstance(patch, int) or patch < 1):
            raise ValueError(f"patch must be a positive int or None, got {patch!r}")
        self.patch = patch

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        feats = self._features(sr, hr)
        total = 0.0
        for name, w in self.weights.items():
            g_sr, g_hr = (_local_gram(f, self.patch) for f in feats[name])
            total = total + w * ((g_sr - g_hr) ** 2).sum(dim=(-2, -1)).mean()
        return total


# --------------------------------------------------------------------------------- total variation
def total_variation(img: torch.Tensor, *, kind: str = "anisotropic", eps: float = 1e-8) -> torch.Tensor:
    """Total variation of an image, as a mean per pixel (so it does not grow with the image size).

    With forward differences ``dx = x[..., :, 1:] - x[..., :, :-1]`` and
    ``dy = x[..., 1:, :] - x[..., :-1, :]`` (no wrap-around):

    * ``"anisotropic"``: ``(sum |dx| + sum |dy|) / numel(img)``;
    * ``"isotropic"``: ``sum sqrt(dx^2 + dy^2 + eps) / numel(img)`` over the pixels where both
      differences exist (all but the last row and column);
    * ``"squared"``: ``(sum dx^2 + sum dy^2) / numel(img)`` (a smoothness prior, as in Johnson et al.).

    Penalising it removes noise and small oscillations; it also flattens texture, which is why SR
    uses it only with a small weight.
    """
    _check_tensor(img, "img")
    if img.ndim < 2:
        raise ValueError(f"img must have at least 2 dimensions (..., H, W), got shape {tuple(img.shape)}")
    dx = img[..., :, 1:] - img[..., :, :-1]
    dy = img[..., 1:, :] - img[..., :-1, :]
    if kind == "anisotropic":
        total = dx.abs().sum() + dy.abs().sum()
    elif kind == "squared":
        total = (dx**2).sum() + (dy**2).sum()
    elif kind == "isotropic":
        total = torch.sqrt(dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2 + eps).sum()
    else:
        raise ValueError(f"kind must be 'anisotropic', 'isotropic' or 'squared', got {kind!r}")
    return total / img.numel()


# --------------------------------------------------------------------------------- adversarial
class PatchDiscriminator(nn.Module):
    """A small PatchGAN-style discriminator: strided ``4x4`` convolutions with leaky ReLU, ending in
    one logit per image patch (shape ``(N, 1, H', W')``), as in pix2pix / SRGAN's critic without
    the dense layers. Spectral normalisation (Miyato et al. 2018) keeps it well-behaved.

    Args:
        in_channels: image channels.
        features: width of the first layer; it doubles with each downsampling.
        n_layers: number of stride-2 layers (receptive field ``~ 4 * 2^n_layers`` pixels).
        spectral_norm: wrap every convolution in spectral normalisation.
    """

    def __init__(self, in_channels: int = 3, features: int = 32, n_layers: int = 3, *,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (features, "features"), (n_layers, "n_layers")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        norm = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers, width = [], in_channels
        for i in range(n_layers):
            out = features * 2**i
            layers += [norm(nn.Conv2d(width, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        layers += [norm(nn.Conv2d(width, width, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True),
                   norm(nn.Conv2d(width, 1, 3, padding=1))]
        self.net = nn.Sequential(*layers)
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tensor(x, "x")
        if x.ndim != 4:
            raise ValueError(f"the discriminator takes batches (N, C, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < 2**self.n_layers:
            raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for {self.n_layers} "
                             f"stride-2 layers (need at least {2**self.n_layers} pixels)")
        return self.net(x)


def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_KINDS}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *,
                       kind: str = "nonsaturating") -> torch.Tensor:
    """The discriminator's loss on logits of real (HR) and generated (SR) images.

    * ``"nonsaturating"``: binary cross-entropy, ``mean softplus(-D(x)) + mean softplus(D(x_hat))``
      ``= -mean log sigmoid(D(x)) - mean log(1 - sigmoid(D(x_hat)))`` (Goodfellow et al. 2014).
    * ``"lsgan"``: ``mean (D(x) - 1)^2 + mean D(x_hat)^2`` (least squares).
    * ``"hinge"``: ``mean relu(1 - D(x)) + mean relu(1 + D(x_hat))``.
    """
    _check_kind(kind)
    _check_tensor(real_logits, "real_logits")
    _check_tensor(fake_logits, "fake_logits")
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "lsgan":
        return ((real_logits - 1) ** 2).mean() + (fake_logits**2).mean()
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor, *, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's (SR network's) adversarial loss on the discriminator's logits of its outputs.

    * ``"nonsaturating"``: ``mean softplus(-D(x_hat)) = -mean log sigmoid(D(x_hat))`` (SRGAN, eq. 6).
    * ``"lsgan"``: ``mean (D(x_hat) - 1)^2``.
    * ``"hinge"``: ``-mean D(x_hat)``.
    """
    _check_kind(kind)
    _check_tensor(fake_logits, "fake_logits")
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind == "lsgan":
        return ((fake_logits - 1) ** 2).mean()
    return -fake_logits.mean()


def gan_critics(*, features: str | None = None, discriminator_width: int = 32,
                in_channels: int = 3) -> tuple[PerceptualLoss, PatchDiscriminator]:
    """``(perceptual, discriminator)`` for adversarial fine-tuning of an SR or rescaling model
    (IRN+, HCFlow++): a :class:`PerceptualLoss` on a fixed feature network (VGG-19 from the weights
    file ``features`` or ``$COURSE_VGG19_WEIGHTS``, else the offline Gabor stand-in of
    :func:`course_lib.features.load_feature_extractor`) on its content layers, and a spectral-norm
    :class:`PatchDiscriminator`. Our choice, not the papers' VGG-128 discriminator: the course
    fine-tunes on small patches."""
    from course_lib.features import load_feature_extractor

    extractor = load_feature_extractor(features, verbose=False)
    perceptual = PerceptualLoss(extractor, extractor.content_layers)
    return perceptual, PatchDiscriminator(in_channels, discriminator_width, n_layers=3)

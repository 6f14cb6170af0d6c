"""Fixed feature extractors for the perceptual (content) and texture (Gram) losses.

Both extractors map an image batch ``(N, 3, H, W)`` in ``[0, 1]`` to a dict ``{layer: features}``
and expose ``layer_names``, ``content_layers`` and ``texture_layers`` (sensible defaults for the
losses in :mod:`course_lib.losses`).

VGG-19 with weights you supply
------------------------------
:class:`VGG19Features` is a plain-torch copy of the convolutional part of VGG-19 (Simonyan &
Zisserman, 2015) with exactly the layer indices of ``torchvision.models.vgg19().features``, so a
torchvision state dict loads into it. The course never downloads weights: make the file once on a
machine with internet (Colab has torchvision installed)::

    import torch, torchvision
    vgg = torchvision.models.vgg19(weights=torchvision.models.VGG19_Weights.IMAGENET1K_V1)
    torch.save(vgg.features.state_dict(), "vgg19_features.pt")      # about 80 MB

then copy ``vgg19_features.pt`` to your machine and either pass its path to
:func:`load_feature_extractor` or set the environment variable ``COURSE_VGG19_WEIGHTS`` to it.
Accepted key layouts: ``"<i>.weight"`` / ``"<i>.bias"`` (the state dict of ``vgg.features``, as
above) or ``"features.<i>.weight"`` (the whole model's ``vgg.state_dict()``; the ``classifier.*``
entries are ignored). ``<i>`` is the index in the ``Sequential``: convolutions sit at 0, 2, 5, 7,
10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34 (see :func:`vgg19_expected_shapes`). Inputs are
normalised with the ImageNet mean and standard deviation inside the module.

The offline stand-in: a fixed multi-scale Gabor filter bank
-----------------------------------------------------------
Without a weights file (tests, CI, the book built offline) the course uses :class:`GaborFeatures`:
the image, in an orthonormal opponent colour space, is decomposed into a Gaussian pyramid; at every
scale each colour channel is filtered with quadrature pairs (even and odd) of Gabor filters at four
orientations and with a Gaussian low-pass. Each pair gives the local *energy*
``sqrt(even^2 + odd^2)`` (the "complex cell" of the energy model of Adelson & Bergen, 1985), the
low-pass response is rectified with both signs (ReLU), and all maps are average-pooled ``2 x 2``.
Nothing is learned and nothing is random.

Why this is a fair stand-in for the *mechanism* of feature losses:

* The first layers of ImageNet CNNs learn exactly such oriented band-pass (Gabor-like) filters and
  colour-opponent blobs (Krizhevsky et al., 2012, fig. 3); the shallow VGG layers that SR losses
  use (``relu2_2`` in Johnson et al., 2016; ``conv1_1``-``conv3_1`` in EnhanceNet's texture loss)
  are close to them.
* Energy and pooling make the features tolerant to shifts of a pixel or two, as VGG's stacks of
  ReLU and max pooling become: a sharp edge or texture that is slightly misplaced costs little,
  while blurring it removes band-pass energy and costs a lot (tested in ``tests/test_features.py``).
  That is the property that makes a feature loss prefer sharp guesses over the blurry average.
* Gram matrices of a fixed multi-scale oriented filter bank are the classic texture statistics
  (Portilla & Simoncelli, 2000) that Gatys et al. (2016) reformulated with VGG features.

What it does not capture: the learned, increasingly semantic features of deep VGG layers
(``relu5_4`` in SRGAN sees object parts, fur, text, faces) and everything VGG learned from ImageNet
about which structures are plausible; the energy channels also ignore the polarity of an edge
(a pixel loss next to it supplies that). Results with the stand-in therefore show *how* feature
losses trade PSNR for sharpness and texture, not the look of VGG-trained SRGAN outputs; numbers
are not comparable with papers that use VGG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VGG19_CONFIG",
    "VGG19_LAYERS",
    "VGG19_WEIGHTS_ENV",
    "vgg19_expected_shapes",
    "VGG19Features",
    "gabor_kernel",
    "GaborFeatures",
    "load_feature_extractor",
]

VGG19_WEIGHTS_ENV = "COURSE_VGG19_WEIGHTS"

# torchvision's configuration "E": channel counts of the convolutions, "M" = 2x2 max pooling.
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

HOW_TO_GET_VGG19 = (
    "Make the file on a machine with internet (e.g. Colab, which has torchvision):\n"
    "    import torch, torchvision\n"
    "    vgg = torchvision.models.vgg19(weights=torchvision.models.VGG19_Weights.IMAGENET1K_V1)\n"
    "    torch.save(vgg.features.state_dict(), 'vgg19_features.pt')\n"
    f"then pass its path or set the environment variable {VGG19_WEIGHTS_ENV} to it."
)


def _vgg19_layer_table() -> tuple[tuple[str, ...], dict[int, tuple[int, int]]]:
    """Names of the ``Sequential`` entries (``conv1_1``, ``relu1_1``, ..., ``pool5``) and, for each
    convolution index, its ``(in_channels, out_channels)``."""
    names, convs = [], {}
    block, conv_in_block, in_channels = 1, 0, 3
    for entry in VGG19_CONFIG:
        if entry == "M":
            names.append(f"pool{block}")
            block, conv_in_block = block + 1, 0
        else:
            conv_in_block += 1
            convs[len(names)] = (in_channels, entry)
            names += [f"conv{block}_{conv_in_block}", f"relu{block}_{conv_in_block}"]
            in_channels = entry
    return tuple(names), convs


VGG19_LAYERS, _VGG19_CONVS = _vgg19_layer_table()


def vgg19_expected_shapes(up_to: str | None = None) -> dict[str, tuple[int, ...]]:
    """The keys (``"<i>.weight"``, ``"<i>.bias"``) and tensor shapes of the VGG-19 ``features``
    state dict, for the convolutions up to layer ``up_to`` (default: all 16)."""
    last = len(VGG19_LAYERS) - 1 if up_to is None else _layer_index(up_to)
    shapes = {}
    for index, (cin, cout) in _VGG19_CONVS.items():
        if index <= last:
            shapes[f"{index}.weight"] = (cout, cin, 3, 3)
            shapes[f"{index}.bias"] = (cout,)
    return shapes


def _layer_index(name: str) -> int:
    if name not in VGG19_LAYERS:
        raise ValueError(f"unknown VGG-19 layer {name!r}; layers are {', '.join(VGG19_LAYERS)}")
    return VGG19_LAYERS.index(name)


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("the input must be a floating-point torch.Tensor")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"the input must be an RGB batch (N, 3, H, W), got shape {tuple(x.shape)}")


def _check_layers(layers: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError("give at least one layer")
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; choose from {list(known)}")
    return layers


class VGG19Features(nn.Module):
    """The convolutional part of VGG-19 with user-supplied weights; returns the requested layers.

    Args:
        state_dict: torchvision's ``vgg19().features.state_dict()`` or ``vgg19().state_dict()``
            (see the module docstring for how to make it offline-free).
        layers: names such as ``"relu2_2"``, ``"conv5_4"`` (before its ReLU, as ESRGAN uses) or
            ``"relu5_4"`` (SRGAN's VGG54). Only the network up to the deepest one is built.
        normalize_input: subtract the ImageNet mean and divide by its std (inputs in ``[0, 1]``).

    Raises ``ValueError`` naming the keys that are missing or have the wrong shape.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    content_layers = ("relu2_2",)
    texture_layers = ("relu1_1", "relu2_1", "relu3_1")

    def __init__(self, state_dict: Mapping[str, torch.Tensor],
                 layers: Sequence[str] = ("relu1_1", "relu2_1", "relu2_2", "relu3_1"),
                 *, normalize_input: bool = True) -> None:
        super().__init__()
        self.layer_names = _check_layers(layers, VGG19_LAYERS)
        last = max(VGG19_LAYERS.index(name) for name in self.layer_names)
        modules = []
        for index, name in enumerate(VGG19_LAYERS[: last + 1]):
            if index in _VGG19_CONVS:
                modules.append(nn.Conv2d(*_VGG19_CONVS[index], 3, padding=1))
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))
            else:
                modules.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        self.features.load_state_dict(self._select(state_dict, last))
        self.normalize_input = normalize_input
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @staticmethod
    def _select(state_dict, last: int) -> dict[str, torch.Tensor]:
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"VGG-19 weights must be a state dict (a mapping of names to tensors), "
                             f"got {type(state_dict).__name__}")
        prefix = "features." if any(str(k).startswith("features.") for k in state_dict) else ""
        expected = vgg19_expected_shapes(VGG19_LAYERS[last])
        selected, missing, wrong = {}, [], []
        for key, shape in expected.items():
            value = state_dict.get(prefix + key)
            if value is None:
                missing.append(prefix + key)
            elif not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                wrong.append(f"{prefix + key}: expected {shape}, got {got}")
            else:
                selected[key] = value.float()
        if missing or wrong:
            problems = []
            if missing:
                problems.append(f"missing keys {missing[:4]}{' ...' if len(missing) > 4 else ''}")
            if wrong:
                problems.append("wrong shapes: " + "; ".join(wrong[:3]))
            raise ValueError("these weights do not fit VGG-19 (torchvision layout, keys like "
                             f"'0.weight' or 'features.0.weight'): {', '.join(problems)}")
        return selected

    @classmethod
    def from_file(cls, path: str | os.PathLike, layers: Sequence[str] = ("relu1_1", "relu2_1", "relu2_2",
                                                                         "relu3_1"),
                  *, normalize_input: bool = True) -> VGG19Features:
        """Load the weights from a file made with ``torch.save(state_dict, path)``
        (read with ``weights_only=True``: no code in the file is executed)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no VGG-19 weights file at {path}.\n{HOW_TO_GET_VGG19}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated files, pickles with code, other formats
            raise ValueError(f"cannot read VGG-19 weights from {path}: {err}\n{HOW_TO_GET_VGG19}") from err
        return cls(state, layers, normalize_input=normalize_input)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(x)
        if self.normalize_input:
            x = (x - self.mean) / self.std
        wanted, out = set(self.layer_names), {}
        for index, module in enumerate(self.features):
            x = module(x)
            name = VGG19_LAYERS[index]
            if name in wanted:
                out[name] = x
        return out


def gabor_kernel(size: int, wavelength: float, theta: float, phase: float, sigma: float | None = None) -> torch.Tensor:
    """A ``size x size`` Gabor filter ``exp(-r^2 / (2 sigma^2)) cos(2 pi u / wavelength + phase)``,
    ``u = x cos(theta) + y sin(theta)``, with zero mean and unit L2 norm.

    ``sigma`` defaults to ``0.56 * wavelength`` (a bandwidth of about one octave).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd int >= 3, got {size!r}")
    if not wavelength > 0:
        raise ValueError(f"wavelength must be positive, got {wavelength}")
    sigma = 0.56 * wavelength if sigma is None else sigma
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    envelope = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    u = x * math.cos(theta) + y * math.sin(theta)
    kernel = envelope * torch.cos(2 * math.pi * u / wavelength + phase)
    kernel = kernel - envelope * kernel.sum() / envelope.sum()  # remove the DC response
    return (kernel / kernel.norm()).float()


class GaborFeatures(nn.Module):
    """The offline stand-in for VGG features: a fixed multi-scale Gabor energy filter bank (see the
    module docstring for why it is a fair stand-in and what it lacks).

    Per scale ``l = 1 .. levels`` (the image blurred and halved ``l - 1`` times with the binomial
    filter ``[1 4 6 4 1] / 16``): each of the three opponent colour channels gives
    ``orientations`` Gabor energies ``sqrt(even^2 + odd^2)`` and the two rectified signs of a
    Gaussian low-pass; the maps are average-pooled ``2 x 2``. Layer ``"scale<l>"`` therefore has
    ``3 * (orientations + 2)`` channels (18 by default; per colour the energies first, then the
    low-pass pair) at ``1 / 2^l`` of the input size.

    Args:
        levels: number of scales (octaves).
        size: odd filter size.
        wavelength: Gabor wavelength in pixels of each scale (so ``wavelength * 2^(l-1)`` input pixels).
        orientations: number of orientations, evenly spaced in ``[0, pi)``.
    """

    def __init__(self, levels: int = 3, *, size: int = 9, wavelength: float = 4.0, orientations: int = 4) -> None:
        super().__init__()
        for value, name in ((levels, "levels"), (orientations, "orientations")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.levels = levels
        self.orientations = orientations
        self.layer_names = tuple(f"scale{level + 1}" for level in range(levels))
        self.content_layers = self.layer_names
        self.texture_layers = self.layer_names
        filters = []
        for i in range(orientations):
            theta = math.pi * i / orientations
            filters.append(gabor_kernel(size, wavelength, theta, 0.0))
        for i in range(orientations):
            theta = math.pi * i / orientations
            filters.append(gabor_kernel(size, wavelength, theta, math.pi / 2))
        r = torch.arange(size, dtype=torch.float64) - size // 2
        lowpass = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (wavelength / 2) ** 2))
        filters.append((lowpass / lowpass.sum()).float())
        bank = torch.stack(filters)[:, None]  # (2 * orientations + 1, 1, size, size): even, odd, low-pass
        self.register_buffer("bank", bank.repeat(3, 1, 1, 1), persistent=False)  # per colour channel
        # Orthonormal opponent colours: luminance, red-green, blue-yellow.
        opponent = torch.tensor([[1, 1, 1], [1, -1, 0], [1, 1, -2]], dtype=torch.float32)
        opponent = opponent / opponent.norm(dim=1, keepdim=True)
        self.register_buffer("opponent", opponent, persistent=False)
        binomial = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
        self.register_buffer("pyramid_kernel", (binomial[:, None] * binomial[None, :]).expand(3, 1, 5, 5).clone(),
                             persistent=False)
        self.pad = size // 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(x)
        if min(x.shape[-2:]) < 2**self.levels:
            raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for {self.levels} scales")
        x = torch.einsum("oc,nchw->nohw", self.opponent, x - 0.5)
        k = self.orientations
        out = {}
        for level, name in enumerate(self.layer_names):
            if level:
                x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.pyramid_kernel, stride=2, groups=3)
            response = F.conv2d(F.pad(x, (self.pad,) * 4, mode="replicate"), self.bank, groups=3)
            response = response.unflatten(1, (3, 2 * k + 1))  # (N, colour, filter, h, w)
            even, odd, low = response[:, :, :k], response[:, :, k:2 * k], response[:, :, 2 * k:]
            energy = torch.sqrt(even**2 + odd**2 + 1e-10)
            feats = torch.cat([energy, F.relu(low), F.relu(-low)], dim=2).flatten(1, 2)
            out[name] = F.avg_pool2d(feats, 2)
        return out


def load_feature_extractor(path: str | os.PathLike | None = None, *,
                           layers: Sequence[str] | None = None, verbose: bool = True) -> nn.Module:
    """The feature network for perceptual and texture losses.

    Uses :class:`VGG19Features` when a weights file is given (``path``, else the environment
    variable ``COURSE_VGG19_WEIGHTS``), and the offline :class:`GaborFeatures` otherwise.
    A given file that is missing or does not fit raises an error (no silent fallback).
    ``layers`` (VGG only) defaults to the union of the content and texture layers.
    """
    path = path if path is not None else os.environ.get(VGG19_WEIGHTS_ENV) or None
    if path is None:
        extractor: nn.Module = GaborFeatures()
        message = ("feature extractor: fixed multi-scale Gabor filter bank (offline stand-in; set "
                   f"{VGG19_WEIGHTS_ENV} to a VGG-19 weights file to use VGG)")
    else:
        wanted = layers or tuple(dict.fromkeys(VGG19Features.content_layers + VGG19Features.texture_layers))
        extractor = VGG19Features.from_file(path, wanted)
        message = f"feature extractor: VGG-19 from {path}, layers {list(extractor.layer_names)}"
    if verbose:
        print(message)
    extractor.description = message
    return extractor

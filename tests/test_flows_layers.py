"""The flow contract for every layer of course_lib.flows.

(a) inverse(forward(x)) == x to float64 precision;
(b) logdet == log|det J| of the Jacobian computed by torch.autograd.functional.jacobian
    (conditional layers with their cond held fixed), and the inverse's own logdet
    (``inverse_and_logdet``) == -logdet == log|det| of the inverse's autograd Jacobian;
(c) non-finite input raises a clear ValueError.
Plus layer-specific checks against hand-derived references (Haar bands, squeeze indexing,
the IRN / HCFlow clamp formulas, ActNorm statistics, Gaussian log-densities).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import flows
from course_lib.flows import (
    MLP,
    ActNorm,
    AdditiveAffineCoupling,
    AdditiveCoupling,
    AffineCoupling,
    AffineInjector,
    ConvNet,
    DenseBlock,
    FlowSequential,
    Gaussianize,
    HaarDownsampling,
    Inverse,
    InvertibleConv1x1,
    Permutation,
    Split,
    Squeeze,
    UniformDequantization,
    autograd_logdet,
    soft_clamp,
)

mlp = functools.partial(MLP, hidden=8, layers=1)
conv = functools.partial(ConvNet, hidden=6)
dense = functools.partial(DenseBlock, growth=3)


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (often identity-giving, zero) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def vec(n=2, d=4, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def img(n=2, c=4, h=4, w=4, seed=1):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# name -> (layer factory, input factory, cond factory or None)
CASES = {
    "affine_mlp_atan": (lambda: AffineCoupling(4, mlp, clamp=1.5), vec, None),
    "affine_mlp_sigmoid_swap": (
        lambda: AffineCoupling(4, mlp, split_channels=1, clamp_kind="sigmoid", swap=True), vec, None
    ),
    "affine_mlp_tanh_cond": (
        lambda: AffineCoupling(4, mlp, clamp_kind="tanh", cond_channels=3), vec, lambda: vec(d=3, seed=5)
    ),
    "affine_mlp_noclamp": (lambda: AffineCoupling(3, mlp, clamp_kind="none"), lambda: vec(d=3), None),
    "affine_conv_cond": (lambda: AffineCoupling(4, conv, clamp=0.5, cond_channels=2), img, lambda: img(c=2, seed=5)),
    "additive_conv_cond": (
        lambda: AdditiveCoupling(4, conv, cond_channels=2, swap=True), img, lambda: img(c=2, seed=5)
    ),
    "irn_invblock_dense": (lambda: AdditiveAffineCoupling(5, dense, split_channels=2), lambda: img(c=5), None),
    "irn_invblock_dense_cond": (
        lambda: AdditiveAffineCoupling(4, dense, split_channels=1, cond_channels=2), img, lambda: img(c=2, seed=5)
    ),
    "affine_injector_img": (lambda: AffineInjector(4, 2, conv, clamp=1.0), img, lambda: img(c=2, seed=5)),
    "affine_injector_vec": (lambda: AffineInjector(4, 3, mlp, clamp_kind="sigmoid"), vec, lambda: vec(d=3, seed=5)),
    "actnorm_vec": (lambda: ActNorm(4), vec, None),
    "actnorm_img": (lambda: ActNorm(4), img, None),
    "invconv_plain": (lambda: InvertibleConv1x1(4), img, None),
    "invconv_lu": (lambda: InvertibleConv1x1(4, lu=True), img, None),
    "invconv_lu_vec": (lambda: InvertibleConv1x1(4, lu=True), vec, None),
    "squeeze": (lambda: Squeeze(2), img, None),
    "haar_irn": (lambda: HaarDownsampling(4), img, None),
    "haar_orthonormal": (lambda: HaarDownsampling(4, orthonormal=True), img, None),
    "haar_up": (lambda: Inverse(HaarDownsampling(1)), lambda: img(c=4, h=2, w=2), None),
    "inverse_of_coupling_cond": (
        lambda: Inverse(AffineCoupling(4, mlp, cond_channels=3)), vec, lambda: vec(d=3, seed=5)
    ),
    "permutation": (lambda: Permutation(4, "random", generator=torch.Generator().manual_seed(3)), img, None),
    "split_kept": (lambda: Split(4, 2), img, None),
    "split_cond_only": (lambda: Split(4, 1, cond_channels=2, condition_on_kept=False), img, lambda: img(c=2, seed=5)),
    "split_kept_and_cond": (lambda: Split(4, 3, cond_channels=2, clamp=2.0), img, lambda: img(c=2, seed=5)),
    "split_learned": (lambda: Split(4, 2, condition_on_kept=False), img, None),
    "gaussianize_vec_cond": (lambda: Gaussianize(4, 3, spatial=False), vec, lambda: vec(d=3, seed=5)),
    "glow_steps_cond": (
        lambda: FlowSequential(
            flows.glow_step(4, conv, cond_channels=2),
            flows.glow_step(4, conv, lu=False, coupling="additive", cond_channels=2),
        ),
        img,
        lambda: img(c=2, seed=5),
    ),
}


def per_sample_logdet(fn, inputs, cond):
    """Autograd ``log |det|`` of ``v -> fn(v, cond_i)`` at every sample ``i`` (``cond_i`` held fixed)."""
    values = []
    for i in range(inputs.shape[0]):
        ci = None if cond is None else cond[i : i + 1]
        values.append(autograd_logdet(lambda v, ci=ci: fn(v, ci), inputs[i : i + 1])[0])
    return torch.stack(values)


def build(name):
    make_layer, make_x, make_cond = CASES[name]
    layer = make_layer().double()
    x = make_x()
    cond = make_cond() if make_cond else None
    layer.train()
    layer(x, cond)  # triggers ActNorm's data-dependent initialisation where present
    perturb(layer)
    layer.eval()
    return layer, x, cond


@pytest.mark.parametrize("name", sorted(CASES))
def test_inverse_of_forward_is_identity(name):
    layer, x, cond = build(name)
    z, logdet = layer(x, cond)
    assert logdet.shape == (x.shape[0],)
    torch.testing.assert_close(layer.inverse(z, cond), x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logdet_matches_autograd_jacobian(name):
    layer, x, cond = build(name)
    _, logdet = layer(x, cond)
    reference = per_sample_logdet(lambda v, c: layer(v, c)[0], x, cond)
    torch.testing.assert_close(logdet, reference, atol=1e-8, rtol=1e-8)
    assert logdet.abs().max() > 1e-3 or name in {"squeeze", "permutation", "additive_conv_cond", "haar_orthonormal"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_inverse_logdet_is_minus_forward_and_matches_autograd(name):
    layer, x, cond = build(name)
    z, logdet = layer(x, cond)
    x_rec, logdet_inv = layer.inverse_and_logdet(z, cond)
    assert logdet_inv.shape == (x.shape[0],)
    torch.testing.assert_close(x_rec, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(x_rec, layer.inverse(z, cond), atol=0, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-10, rtol=1e-10)
    reference = per_sample_logdet(layer.inverse, z, cond)
    torch.testing.assert_close(logdet_inv, reference, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_non_finite_input_raises(name):
    layer, x, cond = build(name)
    bad = x.clone()
    bad.view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        layer(bad, cond)
    bad.view(-1)[3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        layer.inverse(bad, cond)
    with pytest.raises(ValueError, match="non-finite"):
        layer.inverse_and_logdet(bad, cond)
    if cond is not None:
        bad_cond = cond.clone()
        bad_cond.view(-1)[0] = float("nan")
        with pytest.raises(ValueError, match="non-finite"):
            layer(x, bad_cond)


def test_missing_cond_and_wrong_shapes_raise():
    with pytest.raises(ValueError, match="conditional"):
        AffineCoupling(4, mlp, cond_channels=2)(vec())
    with pytest.raises(ValueError, match="channels"):
        AffineCoupling(4, mlp)(vec(d=5))
    with pytest.raises(ValueError, match="divisible"):
        Squeeze(2)(img(h=3))
    with pytest.raises(ValueError, match="divisible"):
        HaarDownsampling(4)(img(w=5))
    with pytest.raises(TypeError, match="floating"):
        ActNorm(4)(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="cond must be a feature map"):
        AffineCoupling(4, conv, cond_channels=2)(img(), img(c=2, h=2, w=2))


def test_soft_clamps_match_irn_and_hcflow_formulas():
    s = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    # HCFlow: log-scale = 0.318 * atan(2 s)  (0.318 ~ 1/pi)
    torch.testing.assert_close(soft_clamp(s, 0.5, "atan"), torch.atan(2 * s) / math.pi)
    # IRN InvBlockExp: clamp * (2 sigmoid(s) - 1) with clamp = 1
    torch.testing.assert_close(soft_clamp(s, 1.0, "sigmoid"), 2 * torch.sigmoid(s) - 1)
    for kind in ("atan", "sigmoid", "tanh"):
        out = soft_clamp(s, 2.0, kind)
        assert out.abs().max() <= 2.0 and out.abs().max() > 1.9  # bounded, and nearly reaches the bound
        assert torch.isfinite(soft_clamp(torch.tensor([1e30, -1e30]), 2.0, kind)).all()
        mid = soft_clamp(s[400:601], 2.0, kind)  # s in [-10, 10]
        assert torch.all(mid[1:] > mid[:-1])  # strictly increasing
    # slopes at 0: 2/pi for FrEIA/HCFlow's atan, 1 for tanh, clamp/2 for IRN's sigmoid
    s0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for kind, slope in (("atan", 2 / math.pi), ("tanh", 1.0), ("sigmoid", 1.5)):
        (grad,) = torch.autograd.grad(soft_clamp(s0, 3.0, kind).sum(), s0)
        assert abs(float(grad) - slope) < 1e-12
    with pytest.raises(ValueError, match="clamp kind"):
        soft_clamp(s, 1.0, "relu")


def test_affine_coupling_formula():
    """y_b = x_b * exp(c(s)) + t with (s, t) the subnet output, x_a unchanged."""
    layer = perturb(AffineCoupling(4, mlp, split_channels=1, clamp=1.0)).double()
    x = vec()
    y, logdet = layer(x)
    h = layer.subnet(x[:, :1])
    s, t = soft_clamp(h[:, :3], 1.0, "atan"), h[:, 3:]
    torch.testing.assert_close(y[:, :1], x[:, :1])
    torch.testing.assert_close(y[:, 1:], x[:, 1:] * torch.exp(s) + t)
    torch.testing.assert_close(logdet, s.sum(1))


def test_couplings_start_as_identity():
    x = img()
    for layer in (AffineCoupling(4, conv), AdditiveCoupling(4, conv), AdditiveAffineCoupling(4, dense)):
        y, logdet = layer.double()(x)
        torch.testing.assert_close(y, x)
        assert float(logdet.detach().abs().max()) == 0.0


def test_haar_bands_match_hand_formula_and_order():
    x = img(c=3, h=4, w=6)
    y, logdet = HaarDownsampling(3)(x)
    a, b = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
    c, d = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    expected = torch.cat([(a + b + c + d) / 4, (a - b + c - d) / 4, (a + b - c - d) / 4, (a - b - c + d) / 4], dim=1)
    torch.testing.assert_close(y, expected)
    # LL-first: the first C channels are the 2x2 mean, i.e. a box-downscaled image
    torch.testing.assert_close(y[:, :3], F.avg_pool2d(x, 2))
    # IRN's logdet: (#elements / 4) * log(1/16)
    torch.testing.assert_close(logdet, torch.full((2,), 3 * 4 * 6 / 4 * math.log(1 / 16), dtype=torch.float64))


def test_squeeze_matches_index_formula():
    x = img(n=1, c=2, h=4, w=6)
    y, _ = Squeeze(2)(x)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(y[:, c * 4 + i * 2 + j], x[:, c, i::2, j::2])


def test_actnorm_data_init_normalises_first_batch():
    x = 3.0 + 2.5 * img(n=8, c=3)
    layer = ActNorm(3).double()
    y, _ = layer(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    # afterwards the parameters are fixed: a second, different batch is not renormalised
    y2, _ = layer(x + 1.0)
    assert float(y2.detach().mean()) > 0.3
    assert bool(layer.initialized)


def test_invconv_starts_as_rotation_and_lu_equals_plain_matrix():
    for lu in (False, True):
        w = InvertibleConv1x1(5, lu=lu, generator=torch.Generator().manual_seed(0)).matrix().detach()
        torch.testing.assert_close(w @ w.T, torch.eye(5), atol=1e-5, rtol=0)
    plain = InvertibleConv1x1(5, generator=torch.Generator().manual_seed(0))
    lu = InvertibleConv1x1(5, lu=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lu.matrix().detach(), plain.matrix().detach(), atol=1e-5, rtol=0)


def test_split_is_a_gaussian_prior():
    """log N(eps; 0, I) + logdet equals log N(x_off; mean, std) of the split-off channels."""
    layer = perturb(Split(4, 1, cond_channels=2)).double().eval()
    x, cond = img(), img(c=2, seed=5)
    z, logdet = layer(x, cond)
    kept, eps = layer.split(z)
    torch.testing.assert_close(kept, x[:, :1])
    mean, log_std = layer.gaussianize.prior.params(torch.cat([x[:, :1], cond], dim=1))
    reference = torch.distributions.Normal(mean, log_std.exp()).log_prob(x[:, 1:]).sum(dim=(1, 2, 3))
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(dim=(1, 2, 3))
    torch.testing.assert_close(standard + logdet, reference)


def test_dequantization_bound_is_exact_for_uniform_density():
    """On [0,1]^D with p = 1, log p(y) + logdet must be the uniform discrete log-prob -D log n."""
    n_bins = 16
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, n_bins, (5, 3, 2, 2), generator=g).double() / (n_bins - 1)
    layer = UniformDequantization(n_bins)
    y, logdet = layer(x)
    assert float(y.min()) >= 0 and float(y.max()) < 1
    torch.testing.assert_close(logdet, torch.full((5,), -12 * math.log(n_bins), dtype=torch.float64))
    k = torch.round(x * (n_bins - 1))
    assert torch.all((y >= k / n_bins) & (y < (k + 1) / n_bins))  # y lies in its own bin
    torch.testing.assert_close(layer.requantize(y), x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer(x + 2.0)
    # HCFlow / SRFlow noise-only variant: continuous x, noise in [0, 1/n), same bin-volume term
    x_cont = torch.rand(5, 3, 2, 2, generator=g, dtype=torch.float64)
    y_cont, logdet_cont = UniformDequantization(n_bins, quantize=False)(x_cont)
    assert torch.all((y_cont - x_cont >= 0) & (y_cont - x_cont < 1 / n_bins))
    torch.testing.assert_close(logdet_cont, logdet)


def test_dequantization_is_not_an_invertible_layer():
    """It adds noise, so it is a plain nn.Module that a FlowSequential refuses."""
    layer = UniformDequantization(16)
    assert isinstance(layer, torch.nn.Module) and not isinstance(layer, flows.InvertibleModule)
    assert not hasattr(layer, "inverse")
    with pytest.raises(TypeError, match="InvertibleModule"):
        FlowSequential(layer)
    with pytest.raises(ValueError, match="non-finite"):
        layer(torch.full((1, 2), float("nan")))

"""Tests of course_lib.amortised_map: projection, learned pseudo-inverse, losses, exact 2D MAP.

References are independent of the code under test: numpy's pseudo-inverse of the dense operator
matrix, a loop-based transposed convolution, autograd scores of torch.distributions, closed-form
Gaussian posteriors and a brute-force grid search.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.amortised_map.affdg import (
    MLPDenoiser,
    affdg_loss,
    denoiser_loss,
    gaussian_mmse_denoiser,
    score_estimate,
)
from course_lib.amortised_map.affgan import generator_loss, instance_noise_sigma, noisy_discriminator_loss
from course_lib.amortised_map.affll import affll_loss, bits_per_dim
from course_lib.amortised_map.baselines import SRNet, mlp, mse_loss
from course_lib.amortised_map.projection import (
    AffineProjection,
    LearnedPseudoInverse,
    ProjectedNetwork,
    blur_operator,
    consistency_psnr,
    fit_pseudo_inverse,
)
from course_lib.amortised_map.toy2d import ToyMAPProblem, evaluate_toy, map_demo_prior
from course_lib.data.toy2d import GaussianMixture, Toy2D
from course_lib.degradation import BlurDownsample, MatrixOperator, anisotropic_gaussian_kernel, gaussian_kernel

# kernel, scale, HR size (H, W): odd and even kernels, non-square images, LR sizes smaller than
# the kernel (the periodic boundaries wrap the kernel around several times) and odd LR sizes.
CASES = [
    (gaussian_kernel(8, 1.0), 2, (16, 16)),
    (gaussian_kernel(7, 0.8), 2, (10, 14)),
    (gaussian_kernel(16, 1.6), 4, (12, 20)),
    (gaussian_kernel(9, 1.2), 3, (9, 6)),
    (anisotropic_gaussian_kernel(13, 2.0, 0.7, 0.5), 4, (8, 8)),
]


def _dense_pinv_projection(op: BlurDownsample, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference: ``g - pinv(M) (M g - y)`` with numpy's SVD pseudo-inverse of the dense matrix."""
    m = op.matrix(g.shape[-2:]).numpy()
    pinv = np.linalg.pinv(m)
    gf = g.double().reshape(-1, g.shape[-2] * g.shape[-1]).numpy()
    yf = y.double().reshape(-1, y.shape[-2] * y.shape[-1]).numpy()
    out = gf - (gf @ m.T - yf) @ pinv.T
    return torch.from_numpy(out).reshape(g.shape)


@pytest.mark.parametrize("kernel,scale,size", CASES)
def test_projection_matches_dense_pseudo_inverse_and_is_consistent(kernel, scale, size):
    op = blur_operator(kernel, scale)
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(2, 3, *size, generator=gen)
    y = torch.rand(2, 3, size[0] // scale, size[1] // scale, generator=gen)
    f = AffineProjection(op)(g, y)
    assert f.dtype == torch.float32
    ref = _dense_pinv_projection(op, g, y)
    assert torch.allclose(f.double(), ref, atol=2e-5)
    assert consistency_psnr(f, y, op) > 60.0  # the requirement, float32
    assert consistency_psnr(ref, y.double(), op) > 200.0  # the reference itself is exact


@pytest.mark.parametrize("kernel,scale,size", CASES[:3])
def test_nullspace_projector_is_idempotent_and_symmetric(kernel, scale, size):
    op = blur_operator(kernel, scale)
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(1, 1, *size, generator=gen, dtype=torch.float64)
    b = torch.randn(1, 1, *size, generator=gen, dtype=torch.float64)
    pa = op.nullspace_project(a)
    assert torch.allclose(op.nullspace_project(pa), pa, atol=1e-10)  # P P = P
    assert math.isclose(float((pa * b).sum()), float((a * op.nullspace_project(b)).sum()), abs_tol=1e-9)
    assert float(op.A(pa).abs().max()) < 1e-10  # P maps into ker A


def test_matrix_operator_against_numpy():
    m = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, -1.0]])
    op = MatrixOperator(m)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    ref = x.numpy() - (x.numpy() @ m.T - y.numpy()) @ np.linalg.pinv(m).T
    assert np.allclose(op.project(x, y).numpy(), ref, atol=1e-12)
    p = op.nullspace_project
    assert torch.allclose(p(p(x)), p(x), atol=1e-12)
    basis = op.nullspace_basis()
    assert basis.shape == (3, 1) and np.allclose(m @ basis.numpy(), 0, atol=1e-12)


def _loop_transposed_conv(weight: np.ndarray, y: np.ndarray, scale: int, half: int) -> np.ndarray:
    """``(B y)[n] = sum_j y[j] b[n - s j]`` with ``b[d] = weight[d + half]``, periodic, by loops."""
    h, w = y.shape
    out = np.zeros((scale * h, scale * w))
    size = weight.shape[0]
    for n0 in range(scale * h):
        for n1 in range(scale * w):
            for k0 in range(size):
                d0 = k0 - half
                if (n0 - d0) % scale:
                    continue
                for k1 in range(size):
                    d1 = k1 - half
                    if (n1 - d1) % scale:
                        continue
                    j0, j1 = ((n0 - d0) // scale) % h, ((n1 - d1) // scale) % w
                    out[n0, n1] += y[j0, j1] * weight[k0, k1]
    return out


@pytest.mark.parametrize("scale,taps,lr_size", [(2, 3, (4, 5)), (3, 3, (2, 3)), (4, 1, (3, 3))])
def test_learned_pinv_layer_is_the_periodic_strided_transposed_convolution(scale, taps, lr_size):
    layer = LearnedPseudoInverse(scale, taps).double()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.size, layer.size, generator=gen, dtype=torch.float64))
    y = torch.randn(*lr_size, generator=gen, dtype=torch.float64)
    ref = _loop_transposed_conv(layer.weight.detach().numpy(), y.numpy(), scale, layer.half)
    assert np.allclose(layer(y).detach().numpy(), ref, atol=1e-12)


def test_truncated_exact_kernel_converges_to_exact_pinv():
    op = blur_operator(gaussian_kernel(16, 1.6), 4)
    y = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = op.pinv(y)
    with torch.no_grad():
        errors = [float((LearnedPseudoInverse.from_operator(op, t).double()(y) - exact).norm() / exact.norm())
                  for t in (3, 7, 11)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_learned_pinv_by_regression_is_close_to_exact_and_consistent():
    op = blur_operator(gaussian_kernel(16, 1.6), 4)
    layer, history = fit_pseudo_inverse(op, 9, method="lstsq", noise="row-space", batch_size=4, hr_size=64)
    assert history is None
    gen = torch.Generator().manual_seed(4)
    y = torch.rand(2, 3, 16, 16, generator=gen)
    g = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        rel = float((layer(y) - op.pinv(y)).norm() / op.pinv(y).norm())
        f = AffineProjection(op, layer)(g, y)
    assert rel < 5e-3
    assert consistency_psnr(f, y, op) > 60.0


def test_white_noise_regression_floor_is_the_nullspace_fraction():
    """E ||A^+ A x - x||^2 / n = 1 - 1/s^2 for white x: the loss floor of the paper's regression."""
    for scale, kernel in ((2, gaussian_kernel(8, 1.0)), (4, gaussian_kernel(16, 1.6))):
        op = blur_operator(kernel, scale)
        x = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        floor = float((op.pinv(op.A(x)) - x).pow(2).mean())
        assert abs(floor - (1 - 1 / scale**2)) < 0.01
    # and more white-noise data gets the regression closer to A^+
    op = blur_operator(gaussian_kernel(8, 0.8), 2)
    y = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    errs = []
    for n in (2, 16):
        layer, _ = fit_pseudo_inverse(op, 5, method="lstsq", noise="white", batch_size=n, hr_size=32)
        with torch.no_grad():
            errs.append(float((layer(y) - op.pinv(y)).norm() / op.pinv(y).norm()))
    assert errs[1] < errs[0]


def _grad_wrt_g(model: ProjectedNetwork, loss_fn) -> torch.Tensor:
    store = {}

    def hook(_, __, out):
        out.retain_grad()
        store["g"] = out

    handle = model.net.register_forward_hook(hook)
    loss = loss_fn(model)
    loss = loss[0] if isinstance(loss, tuple) else loss
    loss.backward()
    handle.remove()
    return store["g"].grad


class _Gaussian(nn.Module):
    """A standard normal density with a log_prob (a stand-in for a flow)."""

    def log_prob(self, x):
        return -0.5 * x.pow(2).reshape(x.shape[0], -1).sum(1)


def _check_in_nullspace(op, grad):
    assert float(grad.abs().max()) > 1e-6  # a real gradient
    assert float(op.A(grad).abs().max()) < 1e-5 * float(grad.abs().max())
    assert torch.allclose(op.nullspace_project(grad), grad, atol=1e-5 * float(grad.abs().max()))


def test_every_loss_reaches_g_only_through_the_nullspace_images():
    torch.manual_seed(0)
    op = blur_operator(gaussian_kernel(8, 1.0), 2)
    x = torch.rand(2, 3, 16, 16)
    y = op.A(x)
    disc = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1))
    denoiser = lambda v, s: 0.9 * v  # noqa: E731 - any denoiser will do
    losses = {
        "Aff-MSE": lambda m: mse_loss(m, (y, x)),
        "AffGAN": lambda m: generator_loss(disc, m(y), 0.05),
        "AffDG": lambda m: affdg_loss(m, y, denoiser, 0.1),
        "AffLL": lambda m: affll_loss(m, y, _Gaussian()),
    }
    for loss_fn in losses.values():
        model = ProjectedNetwork(SRNet(2, 3, 8, 2), op)
        nn.init.normal_(model.net.body[-2].weight, std=0.1)
        _check_in_nullspace(op, _grad_wrt_g(model, loss_fn))


def test_every_loss_reaches_g_only_through_the_nullspace_2d():
    torch.manual_seed(0)
    problem = ToyMAPProblem(map_demo_prior())
    x, y = problem.sample(64, torch.Generator().manual_seed(0))
    disc = mlp(2, 1, 16, 2)
    denoiser = MLPDenoiser(2, 16, 2)
    for loss_fn in (lambda m: mse_loss(m, (y, x)), lambda m: generator_loss(disc, m(y), 0.1),
                    lambda m: affdg_loss(m, y, denoiser, 0.3), lambda m: affll_loss(m, y, _Gaussian())):
        model = ProjectedNetwork(mlp(1, 2, 16, 2), problem.operator)
        _check_in_nullspace(problem.operator, _grad_wrt_g(model, loss_fn))


def test_denoiser_score_equals_true_score_for_gaussian_prior():
    """Tweedie / Alain-Bengio: (D*(x) - x)/sigma^2 = grad log p_sigma(x) for the MMSE denoiser D*."""
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    a = torch.tensor([[1.0, 0.3], [-0.4, 0.6]], dtype=torch.float64)
    cov = a @ a.T
    denoiser = gaussian_mmse_denoiser(mean, cov)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for sigma in (0.05, 0.3, 1.5):
        smoothed = torch.distributions.MultivariateNormal(mean, cov + sigma**2 * torch.eye(2, dtype=torch.float64))
        xr = x.clone().requires_grad_(True)
        (true_score,) = torch.autograd.grad(smoothed.log_prob(xr).sum(), xr)
        assert torch.allclose(score_estimate(denoiser, x, sigma), true_score, atol=1e-10)


def test_denoising_loss_is_minimised_by_the_mmse_denoiser():
    mean = torch.zeros(2)
    cov = torch.tensor([[1.0, 0.5], [0.5, 0.8]])
    best = gaussian_mmse_denoiser(mean, cov)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((20000,))
    worse = lambda v, s: 1.1 * best(v, s)  # noqa: E731
    torch.manual_seed(0)
    loss_best = float(denoiser_loss(best, x, 0.3, 0.3))
    torch.manual_seed(0)
    loss_worse = float(denoiser_loss(worse, x, 0.3, 0.3))
    assert loss_best < loss_worse


def test_gan_losses_match_their_formulas():
    torch.manual_seed(0)
    disc = mlp(2, 1, 8, 2)
    fake = torch.randn(16, 2)
    real = torch.randn(16, 2) + 1.0
    d = torch.sigmoid(disc(fake)[:, 0])
    expected = (-torch.log(d) + torch.log1p(-d)).mean()  # E[-log D + log(1 - D)]
    assert torch.allclose(generator_loss(disc, fake, 0.0), expected, atol=1e-6)
    loss, stats = noisy_discriminator_loss(disc, real, fake, 0.0)
    dr = torch.sigmoid(disc(real)[:, 0])
    assert torch.allclose(loss, -(torch.log(dr).mean() + torch.log1p(-d).mean()), atol=1e-6)
    assert 0.0 <= stats["d_acc_real"] <= 1.0


def test_instance_noise_schedule():
    assert instance_noise_sigma(0, 11, 1.0, 0.01) == pytest.approx(1.0)
    assert instance_noise_sigma(10, 11, 1.0, 0.01) == pytest.approx(0.01)
    assert instance_noise_sigma(5, 11, 1.0, 0.01) == pytest.approx(0.1)  # geometric midpoint
    assert instance_noise_sigma(5, 11, 1.0, 0.0, schedule="linear") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        instance_noise_sigma(0, 10, -1.0, 0.1)
    with pytest.raises(ValueError):
        instance_noise_sigma(0, 10, 1.0, 0.1, schedule="cosine")


def test_affll_loss_and_bits_per_dim():
    density = _Gaussian()
    y = torch.randn(3, 2)
    model = ProjectedNetwork(mlp(2, 4, 8, 1), MatrixOperator(np.eye(2, 4)))
    loss, _ = affll_loss(model, y, density)
    out = model(y)
    assert torch.allclose(loss, 0.5 * out.pow(2).sum(1).mean() / 4)
    images = torch.zeros(2, 1, 2, 2)  # log p = 0 -> bits/dim = 8
    assert torch.allclose(bits_per_dim(density, images), torch.full((2,), 8.0))


class _FullGaussian(Toy2D):
    """A correlated Gaussian prior on R^2 (not in course_lib.data), for closed-form posteriors."""

    def __init__(self, mean, cov):
        self.dist = torch.distributions.MultivariateNormal(torch.as_tensor(mean, dtype=torch.float64),
                                                           torch.as_tensor(cov, dtype=torch.float64))
        self.bounds = ((-6.0, 6.0), (-6.0, 6.0))

    def _sample(self, n, generator):
        return self.dist.mean + torch.randn(n, 2, generator=generator, dtype=torch.float64) @ self.dist.scale_tril.T

    def _log_prob(self, x):
        return self.dist.log_prob(x)


def test_exact_map_and_posterior_mean_for_gaussian_prior():
    mean = torch.tensor([0.4, -0.3], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    problem = ToyMAPProblem(_FullGaussian(mean, cov))
    a = problem.operator.matrix()
    y = torch.linspace(-1.5, 1.5, 9, dtype=torch.float64)[:, None]
    # conditioning a Gaussian on the noiseless observation A x = y
    expected = mean + ((y - mean @ a.T) / (a @ cov @ a.T)) @ (cov @ a.T).T
    assert torch.allclose(problem.exact_map(y), expected, atol=1e-7)
    assert torch.allclose(problem.posterior_mean(y), expected, atol=1e-5)


def test_exact_map_matches_brute_force_grid_search():
    """Every point of a fine 2D lattice within one lattice step of the solution line is tried."""
    problem = ToyMAPProblem(map_demo_prior())
    y = torch.tensor([[-1.3], [-0.4], [0.2], [0.9], [1.6]], dtype=torch.float64)
    found = problem.exact_map(y)
    step = 0.002
    axis = torch.arange(-4.0, 4.0, step, dtype=torch.float64)
    for i in range(y.shape[0]):
        # lattice points (x1, x2) with |(x1 + x2)/2 - y| < step: x2 within 2 steps of 2y - x1
        centre = torch.round((2 * y[i, 0] - axis) / step) * step
        x2 = (centre[:, None] + step * torch.arange(-2, 3, dtype=torch.float64)).reshape(-1)
        pts = torch.stack([axis.repeat_interleave(5), x2], dim=1)
        pts = pts[(problem.operator.A(pts)[:, 0] - y[i, 0]).abs() < step]
        best = pts[problem.log_prior(pts).argmax()]
        assert float((best - found[i]).norm()) < 4 * step
        on_line = problem.operator.project(pts, y[i].expand(pts.shape[0], 1))
        assert float(problem.log_prior(found[i:i + 1])) >= float(problem.log_prior(on_line).max()) - 1e-9
    assert float((problem.operator.A(found) - y).abs().max()) < 1e-12


def test_evaluate_toy_table_values():
    problem = ToyMAPProblem(map_demo_prior())
    y = torch.tensor([[0.5], [-0.7]])
    x_map = problem.exact_map(y)
    row = evaluate_toy(problem, x_map, y, x_map)
    assert row["map_distance"] == 0.0 and row["consistency"] < 1e-12
    assert row["log_prior"] == pytest.approx(float(problem.log_prior(x_map).mean()))
    shifted = evaluate_toy(problem, x_map + torch.tensor([0.3, 0.4], dtype=torch.float64), y, x_map)
    assert shifted["map_distance"] == pytest.approx(0.5)
    assert shifted["consistency"] == pytest.approx(0.35)  # A (0.3, 0.4) = 0.35


def test_bad_inputs_get_clear_errors():
    op = blur_operator(gaussian_kernel(8, 1.0), 2)
    proj = AffineProjection(op)
    with pytest.raises(ValueError, match="sums to"):
        blur_operator(2 * gaussian_kernel(8, 1.0), 2)
    with pytest.raises(ValueError, match="sums to"):
        AffineProjection(BlurDownsample(2 * gaussian_kernel(8, 1.0), 2))
    with pytest.raises(ValueError, match="y has shape"):
        proj(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match="divisible"):
        proj(torch.rand(1, 3, 15, 16), torch.rand(1, 3, 7, 8))
    with pytest.raises(TypeError):
        proj(torch.ones(1, 3, 16, 16, dtype=torch.int64), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="non-finite"):
        proj(torch.rand(1, 3, 16, 16), torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="odd"):
        LearnedPseudoInverse(2, 4)
    with pytest.raises(ValueError, match="full row rank"):
        MatrixOperator([[1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="last dimension"):
        MatrixOperator([[0.5, 0.5]]).pinv(torch.rand(3, 2))
    problem = ToyMAPProblem(map_demo_prior())
    with pytest.raises(ValueError, match="shape"):
        problem.exact_map(torch.rand(3, 2))
    with pytest.raises(ValueError, match="positive"):
        score_estimate(MLPDenoiser(2), torch.rand(3, 2), 0.0)
    with pytest.raises(ValueError):
        fit_pseudo_inverse(op, 5, method="sgd")
    with pytest.raises(ValueError, match="SRNet expects"):
        SRNet(2, 3)(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="log_prob"):
        affll_loss(ProjectedNetwork(mlp(1, 2), problem.operator), torch.rand(2, 1), nn.Identity())


def test_map_demo_prior_has_two_modes_on_a_solution_line():
    prior = map_demo_prior()
    assert isinstance(prior, GaussianMixture)
    problem = ToyMAPProblem(prior)
    y = torch.tensor([[0.3]], dtype=torch.float64)
    u = torch.linspace(-problem.reach, problem.reach, 2001, dtype=torch.float64)
    logp = problem.log_prior(problem.line(y, u[None]))[0]
    peaks = ((logp[1:-1] > logp[:-2]) & (logp[1:-1] > logp[2:])).sum()
    assert int(peaks) == 2
    # the posterior mean sits between the modes, where the density is far lower than at the MAP
    mean, map_ = problem.posterior_mean(y), problem.exact_map(y)
    assert float(problem.log_prior(mean)) < float(problem.log_prior(map_)) - 2.0


def test_image_task_evaluation_columns():
    from course_lib.amortised_map.image_demo import dead_leaves_task, evaluate_images, sr_network, super_resolve

    task = dead_leaves_task(patch_size=16, batch_size=2, n_images=1, image_size=32, n_eval=2, eval_size=32)
    y, x = task.pairs(0)
    assert y.shape == (2, 3, 4, 4) and x.shape == (2, 3, 16, 16)
    torch.manual_seed(0)
    model = sr_network(task, projected=True)
    last_conv = [m for m in model.net.body if isinstance(m, nn.Conv2d)][-1]  # zero at init
    nn.init.normal_(last_conv.weight, std=0.05)
    outputs = {"projected": super_resolve(model, task.eval_lr), "HR": task.eval_hr,
               "unprojected": super_resolve(model.net, task.eval_lr)}
    rows = evaluate_images(task, outputs)
    assert rows["HR"]["PSNR (dB)"] == math.inf and rows["HR"]["SSIM"] == pytest.approx(1.0)
    assert rows["HR"]["gradient energy (x HR)"] == pytest.approx(1.0)
    assert rows["projected"]["LR consistency (dB)"] > 60.0
    assert rows["unprojected"]["LR consistency (dB)"] < rows["projected"]["LR consistency (dB)"] - 30


def test_two_tone_dead_leaves_task_is_grayscale_with_two_levels():
    from course_lib.amortised_map import image_demo
    task = image_demo.dead_leaves_task(patch_size=16, batch_size=2, n_images=1, image_size=48, n_eval=1,
                                       eval_size=32, tones=(0.15, 0.85), r_min=4.0)
    assert task.channels == 1 and task.eval_hr.shape == (1, 1, 32, 32)
    hr = task.eval_hr
    at_a_tone = ((hr - 0.15).abs() < 1e-6) | ((hr - 0.85).abs() < 1e-6)
    assert at_a_tone.float().mean() > 0.7  # only the antialiased edge pixels lie between the two
    assert hr.min() >= 0.15 - 1e-6 and hr.max() <= 0.85 + 1e-6
    with pytest.raises(ValueError, match="two grey levels"):
        image_demo.dead_leaves_task(tones=(0.5,))


@pytest.mark.parametrize("hr_layers", [0, 1, 2])
def test_srnet_starts_as_bicubic_and_its_hr_head_is_trained(hr_layers):
    """Untrained, SRNet returns the bicubic interpolation (its last convolution is zero) for every
    head; with ``hr_layers`` > 0 the HR convolutions exist, take gradients and change the output."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    net = SRNet(4, 1, 8, 2, hr_features=4, hr_layers=hr_layers)
    y = torch.rand(2, 1, 6, 6)
    bicubic = F.interpolate(y, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(net(y), bicubic)
    hr_convs = [m for m in net.body[next(i for i, m in enumerate(net.body) if isinstance(m, nn.PixelShuffle)):]
                if isinstance(m, nn.Conv2d)]
    assert len(hr_convs) == hr_layers
    loss = (net(y) - torch.rand(2, 1, 24, 24)).pow(2).mean()
    loss.backward()
    torch.optim.SGD(net.parameters(), lr=0.5).step()
    assert not torch.allclose(net(y), bicubic)
    with pytest.raises(ValueError, match="hr_layers"):
        SRNet(4, 1, hr_layers=-1)


def test_train_regression_continues_a_copy_of_init():
    from course_lib.amortised_map.image_demo import dead_leaves_task, train_regression
    from course_lib.amortised_map.projection import ProjectedNetwork

    task = dead_leaves_task(patch_size=16, batch_size=2, n_images=1, image_size=32, n_eval=1, eval_size=16,
                            tones=(0.15, 0.85))
    start, _ = train_regression(task, 3, projected=True, progress=False)
    before = [p.detach().clone() for p in start.parameters()]
    longer, history = train_regression(task, 2, projected=True, init=start, progress=False)
    assert isinstance(longer, ProjectedNetwork) and longer is not start
    assert all(torch.equal(p, q) for p, q in zip(start.parameters(), before))  # init is left as it was
    assert any(not torch.equal(p, q) for p, q in zip(longer.parameters(), before))  # the copy trained
    with torch.no_grad():
        first = float(torch.nn.functional.mse_loss(start(task.pairs(0)[0]), task.pairs(0)[1]))
    assert history.logs["loss"][0] == pytest.approx(first, rel=1e-5)  # step 0 starts from init's weights
    with pytest.raises(ValueError, match="projected"):
        train_regression(task, 1, projected=False, init=start, progress=False)

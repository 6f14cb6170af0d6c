"""Tests of course_lib.data.toy2d: normalisation, exact densities, samples vs density, autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from course_lib.data import (
    TOY_NAMES,
    GaussianMixture,
    Ridge,
    Rings,
    Toy2D,
    TwoMoons,
    make_toy,
)

GRID = 200  # midpoint rule: spectrally accurate for these smooth, decaying densities


def _grid_density(toy: Toy2D, n: int = GRID):
    _, _, points = toy.grid(n)
    (x0, x1), (y0, y1) = toy.bounds
    cell = (x1 - x0) * (y1 - y0) / n**2
    return toy.log_prob(points), cell


@pytest.fixture(scope="module", params=TOY_NAMES)
def toy(request):
    return make_toy(request.param)


def test_density_integrates_to_one(toy):
    logp, cell = _grid_density(toy)
    assert abs(float(logp.exp().sum() * cell) - 1.0) < 1e-3


def test_monte_carlo_entropy_matches_grid_entropy(toy):
    logp, cell = _grid_density(toy)
    grid_entropy = float(-(logp.exp() * logp).sum() * cell)
    estimate = toy.entropy(n_mc=20_000, generator=torch.Generator().manual_seed(0))
    assert 0 < estimate.stderr < 0.05
    assert abs(estimate.value - grid_entropy) < 4 * estimate.stderr + 2e-3, (estimate, grid_entropy)


def test_sample_histogram_matches_density(toy):
    """Chi-square test of 20000 samples in 16 x 16 bins against the density's bin masses."""
    n, bins, sub = 20_000, 16, 8
    samples = toy.sample(n, generator=torch.Generator().manual_seed(1)).double()
    (x0, x1), (y0, y1) = toy.bounds
    counts, _, _ = np.histogram2d(samples[:, 1].numpy(), samples[:, 0].numpy(), bins=bins,
                                  range=[[y0, y1], [x0, x1]])
    logp, cell = _grid_density(toy, bins * sub)
    mass = (logp.exp() * cell).reshape(bins, sub, bins, sub).sum(dim=(1, 3)).numpy()
    expected = mass * n
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum() + (n - counts.sum()))
    predicted = np.append(expected[big], expected[~big].sum() + n * (1 - mass.sum()))
    chi2 = float(((observed - predicted) ** 2 / predicted).sum())
    pvalue = stats.chi2.sf(chi2, observed.size - 1)
    assert pvalue > 1e-3, (chi2, observed.size)


def test_sampling_is_deterministic_with_a_generator(toy):
    a = toy.sample(50, generator=torch.Generator().manual_seed(7))
    b = toy.sample(50, generator=torch.Generator().manual_seed(7))
    c = toy.sample(50, generator=torch.Generator().manual_seed(8))
    assert a.shape == (50, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_log_prob_gradient_matches_finite_differences(toy):
    x = toy.sample(3, generator=torch.Generator().manual_seed(2)).double().requires_grad_()
    assert torch.autograd.gradcheck(toy.log_prob, (x,), fast_mode=True)
    y = torch.zeros(3, 2, requires_grad=True)  # float32 in, float32 out, finite gradient
    out = toy.log_prob(y)
    assert out.dtype == torch.float32 and out.shape == (3,)
    out.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_log_prob_keeps_batch_dims(toy):
    x = torch.randn(4, 5, 2, dtype=torch.float64)
    out = toy.log_prob(x)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out.reshape(-1), toy.log_prob(x.reshape(-1, 2)))


def test_gaussian_mixture_against_scipy():
    means = np.array([[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]])
    stds, weights = np.array([0.3, 0.5, 1.0]), np.array([1.0, 2.0, 1.0])
    toy = GaussianMixture(means, stds, weights)
    x = np.random.default_rng(0).normal(size=(10, 2))
    ref = sum(w / weights.sum() * stats.multivariate_normal(m, s**2 * np.eye(2)).pdf(x)
              for m, s, w in zip(means, stds, weights))
    got = toy.log_prob(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, np.log(ref), rtol=1e-12, atol=1e-12)


def test_ridge_against_scipy():
    toy = Ridge(curvature=0.4, offset=-1.5, spread=1.2, std=0.3)
    x = np.random.default_rng(1).normal(size=(10, 2))
    ref = (stats.norm(0, 1.2).logpdf(x[:, 0])
           + stats.norm(0.4 * x[:, 0] ** 2 - 1.5, 0.3).logpdf(x[:, 1]))
    np.testing.assert_allclose(toy.log_prob(torch.from_numpy(x)).numpy(), ref, rtol=1e-12)


def test_rings_against_direct_radial_integration():
    """Each ring's normaliser by scipy.quad, and the radial law of the samples by a KS test."""
    radii, std, weights = (0.5, 2.0), 0.3, np.array([1.0, 3.0])
    toy = Rings(radii, std, weights)
    profile = [lambda t, r=r: math.exp(-(t - r) ** 2 / (2 * std**2)) for r in radii]
    norms = [integrate.quad(lambda t, f=f: f(t) * 2 * math.pi * t, 0, np.inf)[0] for f in profile]
    x = np.random.default_rng(2).normal(size=(10, 2))
    rho = np.linalg.norm(x, axis=1)
    ref = sum(w / weights.sum() * np.array([f(t) for t in rho]) / z
              for f, z, w in zip(profile, norms, weights))
    got = toy.log_prob(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, np.log(ref), rtol=1e-10)

    samples = toy.sample(20_000, generator=torch.Generator().manual_seed(3)).double()
    # radial CDF of the density itself: ∫_0^t p(τ, 0) 2πτ dτ on a fine grid
    grid = np.linspace(0, 2.0 + 8 * std, 20_001)
    points = torch.stack([torch.from_numpy(grid), torch.zeros(grid.size, dtype=torch.float64)], 1)
    radial = toy.log_prob(points).exp().numpy() * 2 * math.pi * grid
    cdf = integrate.cumulative_trapezoid(radial, grid, initial=0.0)
    assert abs(cdf[-1] - 1) < 1e-6
    result = stats.kstest(samples.norm(dim=1).numpy(), lambda t: np.interp(t, grid, cdf))
    assert result.pvalue > 1e-3, result
    angles = torch.atan2(samples[:, 1], samples[:, 0]).numpy()
    assert stats.kstest(angles, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3


def test_two_moons_quadrature_against_adaptive_integration():
    """p(x) = 1/2 sum_k (1/pi) ∫ N(x; c_k + u(theta), s^2 I) dtheta, by scipy.quad per point."""
    toy = TwoMoons(noise=0.1)
    s = 0.1
    centers = [np.array([-0.5, -0.25]), np.array([0.5, 0.25])]
    arcs = [(0.0, math.pi), (math.pi, 2 * math.pi)]
    points = np.array([[0.0, 0.0], [-0.5, 0.75], [0.5, -0.75], [1.0, 0.3], [-1.2, -0.2],
                       [0.3, 0.6], [2.0, 1.0]])
    for point in points:
        total = 0.0
        for c, (a, b) in zip(centers, arcs):
            def f(t, c=c, point=point):
                d2 = ((point - c - [math.cos(t), math.sin(t)]) ** 2).sum()
                return math.exp(-d2 / (2 * s**2)) / (2 * math.pi * s**2)
            total += 0.5 * integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=200)[0] / math.pi
        got = float(toy.log_prob(torch.tensor(point)))
        assert abs(got - math.log(total)) < 1e-8, (point, got, math.log(total))


def test_two_moons_default_quadrature_is_converged():
    g = torch.Generator().manual_seed(4)
    x = torch.cat([TwoMoons().grid(60)[2].reshape(-1, 2),
                   torch.randn(500, 2, dtype=torch.float64, generator=g)])
    fine = TwoMoons(n_quad=1024).log_prob(x)
    coarse = TwoMoons().log_prob(x)
    near = fine > fine.max() - 30
    assert float((coarse - fine)[near].abs().max()) < 1e-9
    assert float((coarse - fine).abs().max()) < 1e-3


def test_bad_inputs():
    toy = make_toy("rings")
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        toy.log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="floating"):
        toy.log_prob(torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(TypeError):
        toy.log_prob([[0.0, 0.0]])
    with pytest.raises(ValueError, match="non-finite"):
        toy.log_prob(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError):
        toy.sample(-1)
    with pytest.raises(ValueError, match="two_moons"):
        make_toy("swiss_roll")
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="std"):
        Rings(std=0.0)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(np.zeros((2, 2)), 1.0, [1.0, -1.0])
    assert set(TOY_NAMES) == {"two_moons", "rings", "mixture", "ridge"}
    assert all(make_toy(name).name == name for name in TOY_NAMES)

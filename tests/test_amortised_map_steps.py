"""The three amortised-MAP training steps written out by hand (as chapter 3 writes them) agree with
the library's on the same batch: the same loss and the same gradient (AffDG, AffLL), and the same
weights after one update (AffGAN, whose instance noise comes from torch's global generator)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from course_lib.amortised_map import (
    ConvDenoiser,
    ImageDiscriminator,
    MatrixOperator,
    ProjectedNetwork,
    SRNet,
    affdg_loss,
    affgan_step,
    affll_loss,
    blur_operator,
    denoiser_residual,
    gaussian_mmse_denoiser,
    map_by_score_ascent,
)
from course_lib.degradation import gaussian_kernel
from course_lib.flows import Glow


def _setup(seed=0):
    torch.manual_seed(seed)
    operator = blur_operator(gaussian_kernel(8, 1.0), 2)
    model = ProjectedNetwork(SRNet(2, 1, 8, 2), operator)
    torch.nn.init.normal_(model.net.body[-2].weight, std=0.1)  # a network that is not the identity yet
    y = torch.rand(3, 1, 8, 8)
    return operator, model, y


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def affdg_loss_by_hand(model, y, denoiser, sigma):
    x = model(y)
    with torch.no_grad():
        score = (denoiser(x, sigma) - x) / sigma**2  # the denoiser's estimate of grad log p_sigma(x)
    return -(score * x).flatten(1).sum(1).mean()  # its gradient pushes x along the score


def affll_loss_by_hand(model, y, flow):
    x = model(y)
    return -flow.log_prob(x).mean() / x[0].numel()


def affgan_step_by_hand(G, D, opt_g, opt_d, y, real, sigma):
    def logit(x):
        return D(x).reshape(len(x), -1).mean(1)  # one logit per image

    with torch.no_grad():
        fake = G(y)
    d_real = logit(real + sigma * torch.randn_like(real))
    d_fake = logit(fake + sigma * torch.randn_like(fake))
    loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()  # logistic loss, labels 1 and 0
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    out = G(y)
    loss_g = -logit(out + sigma * torch.randn_like(out)).mean()  # reverse KL: E[-logit D]
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return loss_d.item(), loss_g.item()


def test_affdg_step_by_hand_equals_the_library_and_moves_only_the_null_space():
    operator, model, y = _setup()
    denoiser = ConvDenoiser(1, 8, 2)
    ours = affdg_loss_by_hand(model, y, denoiser, 0.1)
    g_ours = _grads(model, ours)
    theirs, _ = affdg_loss(model, y, denoiser, 0.1)
    g_theirs = _grads(model, theirs)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(g_ours, g_theirs):  # the score is scaled by 1/sigma^2: float32 sums differ by ~1e-5 relative
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    # the gradient reaching g = net(y) is the score projected onto the null space of A
    g = model.net(y).detach().requires_grad_()
    x = model.projection(g, y)
    with torch.no_grad():
        score = (denoiser(x, 0.1) - x) / 0.01
    (-(score * x).sum()).backward()
    torch.testing.assert_close(g.grad, -operator.nullspace_project(score), atol=1e-5, rtol=1e-4)


def test_affll_step_by_hand_equals_the_library():
    _, model, y = _setup(1)
    flow = Glow(1, levels=1, steps=1, hidden=8)
    ours = affll_loss_by_hand(model, y, flow)
    g_ours = _grads(model, ours)
    theirs, _ = affll_loss(model, y, flow)
    g_theirs = _grads(model, theirs)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_affgan_step_by_hand_equals_the_library():
    _, generator, y = _setup(2)
    discriminator = ImageDiscriminator(1, 8, 1)
    real = torch.rand(3, 1, 16, 16)
    models = {}
    for who in ("hand", "library"):
        G, D = copy.deepcopy(generator), copy.deepcopy(discriminator)
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
        torch.manual_seed(7)  # the same instance noise for both
        if who == "hand":
            loss_d, loss_g = affgan_step_by_hand(G, D, opt_g, opt_d, y, real, 0.05)
        else:
            logs = affgan_step(G, D, opt_g, opt_d, y, real, 0.05)
            loss_d, loss_g = logs["loss_d"], logs["loss_g"]
        models[who] = (G, D, loss_d, loss_g)
    (g1, d1, ld1, lg1), (g2, d2, ld2, lg2) = models["hand"], models["library"]
    assert abs(ld1 - ld2) < 1e-6 and abs(lg1 - lg2) < 1e-6
    for a, b in zip(list(g1.parameters()) + list(d1.parameters()), list(g2.parameters()) + list(d2.parameters())):
        torch.testing.assert_close(a, b)


def test_map_by_score_ascent_finds_the_gaussian_map_on_the_affine_subspace():
    """With the exact MMSE denoiser of N(m, C) and a constant sigma, the ascent's fixed point is the
    mode of N(m, C + sigma^2 I) restricted to {A x = y}: m + C' A^T (A C' A^T)^{-1} (y - A m)."""
    torch.manual_seed(0)
    d, k, sigma = 6, 2, 0.5
    A = torch.randn(k, d, dtype=torch.float64)
    operator = MatrixOperator(A)
    L = torch.randn(d, d, dtype=torch.float64)
    C = L @ L.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    m = torch.randn(d, dtype=torch.float64)
    denoiser = gaussian_mmse_denoiser(m, C)
    x_true = torch.randn(3, d, dtype=torch.float64)
    y = x_true @ A.T
    x0 = operator.pinv(y)  # consistent start
    x = map_by_score_ascent(denoiser, operator, x0, steps=3000, sigma_start=sigma, sigma_end=sigma, step_size=1.0)
    c_noisy = C + sigma**2 * torch.eye(d, dtype=torch.float64)
    gain = c_noisy @ A.T @ torch.linalg.inv(A @ c_noisy @ A.T)
    expected = m + (y - m @ A.T) @ gain.T
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x @ A.T, y)  # every iterate stays consistent


def test_map_by_score_ascent_refuses_bad_schedules():
    operator = MatrixOperator(torch.ones(1, 2))
    denoiser = gaussian_mmse_denoiser(torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="sigma_end <= sigma_start"):
        map_by_score_ascent(denoiser, operator, torch.zeros(1, 2), sigma_start=0.1, sigma_end=0.2)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        map_by_score_ascent(denoiser, operator, torch.zeros(1, 2), steps=0)


def test_denoiser_residual_is_the_scaled_squared_score():
    denoiser = gaussian_mmse_denoiser(torch.zeros(3), torch.eye(3))
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    sigma = 0.5
    # D(x) = x / (1 + sigma^2), so (D(x) - x) / sigma = -sigma x / (1 + sigma^2)
    expected = (sigma * x / (1 + sigma**2)).pow(2).mean(dim=1)
    torch.testing.assert_close(denoiser_residual(denoiser, x, sigma), expected)

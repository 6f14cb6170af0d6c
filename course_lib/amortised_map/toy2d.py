"""The 2D toy problem of amortised MAP inference: two "HR pixels", one "LR pixel".

``x in R^2`` has a known prior ``p_X``; we observe ``y = A x`` with ``A = [1/2, 1/2]`` (the
two-pixel version of average pooling). Every ``y`` fixes a line of solutions
``{x : A x = y} = {A^+ y + u n}``, ``n`` the unit vector spanning ker A, and the posterior is the
prior restricted to that line. Because the line is one-dimensional we can compute, for every ``y``,

* the exact MAP ``argmax_u log p_X(A^+ y + u n)`` by a dense search along the line refined by a
  golden-section search (:meth:`ToyMAPProblem.exact_map`), and
* the exact posterior mean by quadrature along the line (:meth:`ToyMAPProblem.posterior_mean`),

and compare them with amortised estimators: small MLPs ``y -> x`` trained with MSE (they learn the
posterior mean) or with the projected AffGAN, AffDG and AffLL objectives (they aim at the MAP).
:func:`map_demo_prior` builds a prior whose posteriors have two modes on every solution line, so
the posterior mean falls in the empty valley between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data.toy2d import GaussianMixture, Toy2D
from ..degradation import MatrixOperator
from ..flows import RealNVP2D
from ..training import fit
from .affdg import MLPDenoiser, affdg_loss, train_denoiser
from .affgan import instance_noise_sigma, train_affgan
from .affll import affll_loss, freeze, train_density
from .baselines import mlp, mse_loss
from .projection import ProjectedNetwork

__all__ = [
    "map_demo_prior",
    "ToyMAPProblem",
    "toy_estimator",
    "train_toy_mse",
    "train_toy_affgan",
    "train_toy_affdg",
    "train_toy_affll",
    "evaluate_toy",
    "plot_toy_demo",
]

Tensor = torch.Tensor
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def map_demo_prior(offset: float = 1.2, std: float = 0.3, half_length: float = 2.5, n_per_ridge: int = 11,
                   tilt: float = 0.3) -> GaussianMixture:
    """Two parallel ridges along the diagonal ``(1, 1)``, one each side of it, at distance ``offset``.

    Each ridge is a row of ``n_per_ridge`` isotropic Gaussians (std ``std``) from ``-half_length``
    to ``half_length`` along the diagonal. Their weights grow along the diagonal as
    ``exp(+tilt t)`` on the upper-left ridge and ``exp(-tilt t)`` on the lower-right one. Every
    solution line (direction ``(1, -1)``) crosses both ridges: the posterior has two modes, the
    MAP jumps from one ridge to the other where their heights cross (``y = 0``), and the posterior
    mean slides through the valley between them.
    """
    if not (offset > 0 and std > 0 and half_length > 0 and n_per_ridge >= 1):
        raise ValueError("offset, std and half_length must be positive and n_per_ridge >= 1")
    t = torch.linspace(-half_length, half_length, n_per_ridge, dtype=torch.float64)
    along = torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2.0)
    across = torch.tensor([-1.0, 1.0], dtype=torch.float64) / math.sqrt(2.0)
    upper = t[:, None] * along + offset * across
    lower = t[:, None] * along - offset * across
    weights = torch.cat([torch.exp(tilt * t), torch.exp(-tilt * t)])
    return GaussianMixture(torch.cat([upper, lower]), std, weights, name="two ridges")


class ToyMAPProblem:
    """A prior on R^2 and a measurement ``y = A x`` with ``A`` of shape (1, 2)."""

    def __init__(self, prior: Toy2D, matrix: Sequence[Sequence[float]] = ((0.5, 0.5),)):
        if not hasattr(prior, "log_prob") or not hasattr(prior, "sample"):
            raise TypeError("prior must provide sample(n, generator) and log_prob(x)")
        self.prior = prior
        self.operator = MatrixOperator(matrix)
        if self.operator.in_dim != 2 or self.operator.out_dim != 1:
            raise ValueError(f"the toy problem needs A of shape (1, 2), got {tuple(self.operator.matrix().shape)}")
        self.null = self.operator.nullspace_basis()[:, 0]  # unit vector spanning ker A
        (x0, x1), (y0, y1) = prior.bounds
        self.reach = math.hypot(max(abs(x0), abs(x1)), max(abs(y0), abs(y1)))  # |u| beyond it: no mass

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` pairs ``(x, y = A x)`` with ``x`` from the prior (float32)."""
        x = self.prior.sample(n, generator)
        return x, self.operator.A(x)

    def log_prior(self, x: Tensor) -> Tensor:
        return self.prior.log_prob(x)

    def _check_y(self, y) -> Tensor:
        y = torch.as_tensor(y)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != 1:
            raise ValueError(f"y must have shape (N,) or (N, 1), got {tuple(y.shape)}")
        if not y.is_floating_point() or not torch.isfinite(y).all():
            raise ValueError("y must be a finite floating-point tensor")
        return y

    def line(self, y: Tensor, u: Tensor) -> Tensor:
        """Points ``A^+ y + u n`` of the solution lines: ``y`` (N, 1), ``u`` (N, K) -> (N, K, 2)."""
        base = self.operator.pinv(y)  # (N, 2)
        return base[:, None, :] + u[..., None] * self.null.to(y)

    def _grid(self, n_grid: int, like: Tensor) -> Tensor:
        return torch.linspace(-self.reach, self.reach, n_grid, dtype=like.dtype, device=like.device)

    def exact_map(self, y, *, n_grid: int = 2001, iters: int = 60) -> Tensor:
        """``argmax_{x : A x = y} log p_X(x)`` for each ``y`` (float64, shape (N, 2)).

        A dense search over ``n_grid`` points of each line brackets the global maximum; a
        golden-section search inside the bracket refines it to float64 precision (the bracket is
        two grid steps wide, so the search finds the best point of the mode the grid found).
        """
        y = self._check_y(y).double()
        if n_grid < 3:
            raise ValueError(f"n_grid must be at least 3, got {n_grid}")
        u = self._grid(n_grid, y)
        with torch.no_grad():
            logp = self.log_prior(self.line(y, u.expand(y.shape[0], -1)))
            best = logp.argmax(dim=1)
            step = u[1] - u[0]
            lo, hi = u[best] - step, u[best] + step

            def value(v: Tensor) -> Tensor:
                return self.log_prior(self.line(y, v[:, None]))[:, 0]

            a = hi - _GOLDEN * (hi - lo)
            b = lo + _GOLDEN * (hi - lo)
            fa, fb = value(a), value(b)
            for _ in range(iters):
                left = fa > fb  # the maximum lies in [lo, b]
                hi = torch.where(left, b, hi)
                lo = torch.where(left, lo, a)
                a_new = hi - _GOLDEN * (hi - lo)
                b_new = lo + _GOLDEN * (hi - lo)
                a, b = a_new, b_new
                fa, fb = value(a), value(b)
            u_star = (lo + hi) / 2
        return self.line(y, u_star[:, None])[:, 0]

    def posterior_mean(self, y, *, n_grid: int = 4001) -> Tensor:
        """``E[x | y]`` by quadrature along each line (float64, shape (N, 2)): the MSE target."""
        y = self._check_y(y).double()
        u = self._grid(n_grid, y)
        with torch.no_grad():
            points = self.line(y, u.expand(y.shape[0], -1))
            weights = torch.softmax(self.log_prior(points), dim=1)
        return (weights[..., None] * points).sum(dim=1)

    def y_quantiles(self, n: int, *, lo: float = 0.01, hi: float = 0.99, samples: int = 20000, seed: int = 0
                    ) -> Tensor:
        """``n`` evenly spaced values of ``y`` between two quantiles of its distribution, shape (n, 1)."""
        _, y = self.sample(samples, torch.Generator().manual_seed(seed))
        q = torch.quantile(y[:, 0].double(), torch.tensor([lo, hi], dtype=torch.float64))
        return torch.linspace(float(q[0]), float(q[1]), n, dtype=torch.float32)[:, None]


# --------------------------------------------------------------------------- estimators
def toy_estimator(problem: ToyMAPProblem, *, projected: bool = True, hidden: int = 128, layers: int = 3) -> nn.Module:
    """An MLP ``g: y -> x``; with ``projected=True`` wrapped as ``f(y) = (I - A^+A) g(y) + A^+ y``."""
    net = mlp(problem.operator.out_dim, problem.operator.in_dim, hidden, layers)
    return ProjectedNetwork(net, problem.operator) if projected else net


def _toy_batches(problem: ToyMAPProblem, batch_size: int, seed: int) -> Callable[[int], tuple[Tensor, Tensor]]:
    """``batch(step) -> (y, x)``: a deterministic batch of measurements and their prior samples."""

    def batch(step: int) -> tuple[Tensor, Tensor]:
        x, y = problem.sample(batch_size, torch.Generator().manual_seed(seed * 1_000_003 + step))
        return y, x

    return batch


def train_toy_mse(problem: ToyMAPProblem, steps: int, *, projected: bool = False, batch_size: int = 256,
                  lr: float = 2e-3, seed: int = 0, progress: bool = True):
    """MSE regression on pairs ``(y, x)``; returns ``(model, history)``. Learns ``E[x | y]``."""
    torch.manual_seed(seed)
    model = toy_estimator(problem, projected=projected)
    history = fit(model, mse_loss, _toy_batches(problem, batch_size, seed), steps, lr=lr, seed=seed,
                  progress=progress, desc="Aff-MSE" if projected else "MSE", tag="toy-mse")
    return model, history


def train_toy_affgan(problem: ToyMAPProblem, steps: int, *, batch_size: int = 256, sigma_start: float = 2.0,
                     sigma_end: float = 0.2, lr_g: float = 1e-3, lr_d: float = 2e-3, d_steps: int = 4,
                     seed: int = 0, progress: bool = True):
    """AffGAN on the toy: projected MLP generator, MLP discriminator, annealed instance noise.

    The generator sees only ``y``; the discriminator sees independent prior samples.
    Returns ``(generator, {"history": ..., "discriminator": ...})``.
    """
    torch.manual_seed(seed)
    generator = toy_estimator(problem, projected=True)
    discriminator = mlp(2, 1, 128, 3, activation=lambda: nn.LeakyReLU(0.2))
    batches = _toy_batches(problem, batch_size, seed)
    real = _toy_batches(problem, batch_size, seed + 7919)
    history = train_affgan(generator, discriminator, lambda s: batches(s)[0], lambda s: real(s)[1], steps,
                           sigma_start=sigma_start, sigma_end=sigma_end, lr_g=lr_g, lr_d=lr_d,
                           d_steps=d_steps, seed=seed, progress=progress, desc="AffGAN")
    return generator, {"history": history, "discriminator": discriminator}


def train_toy_affdg(problem: ToyMAPProblem, steps: int, *, denoiser_steps: int, batch_size: int = 256,
                    sigma_start: float = 1.0, sigma_end: float = 0.05, lr: float = 1e-3, seed: int = 0,
                    progress: bool = True, denoiser: nn.Module | None = None):
    """AffDG on the toy: train a noise-conditional denoiser on prior samples for every level in
    ``[sigma_end, sigma_start]``, then the projected MLP on the denoiser's score with ``sigma``
    annealed geometrically. Pass a trained ``denoiser`` to skip its training.

    Returns ``(model, {"history": ..., "denoiser": ..., "denoiser_history": ...})``.
    """
    torch.manual_seed(seed)
    den_history = None
    if denoiser is None:
        denoiser = MLPDenoiser(2)
        den_history = train_denoiser(denoiser, lambda s: _toy_batches(problem, batch_size, seed + 1)(s)[1],
                                     denoiser_steps, sigma_min=sigma_end, sigma_max=sigma_start, lr=lr,
                                     seed=seed, progress=progress, desc="denoiser")
    freeze(denoiser)
    model = toy_estimator(problem, projected=True)
    batches = _toy_batches(problem, batch_size, seed)

    def batch_fn(step: int):
        return batches(step)[0], instance_noise_sigma(step, steps, sigma_start, sigma_end)

    history = fit(model, lambda m, b: affdg_loss(m, b[0], denoiser, b[1]), batch_fn, steps, lr=lr,
                  seed=seed, progress=progress, desc="AffDG", tag="toy-affdg")
    return model, {"history": history, "denoiser": denoiser, "denoiser_history": den_history}


def train_toy_affll(problem: ToyMAPProblem, steps: int, *, flow_steps: int, batch_size: int = 256,
                    lr: float = 1e-3, seed: int = 0, progress: bool = True, flow: nn.Module | None = None):
    """AffLL on the toy: fit a RealNVP to prior samples by maximum likelihood, then the projected MLP
    to maximise the flow's log-density of its outputs. Pass a trained ``flow`` to skip its training.

    Returns ``(model, {"history": ..., "flow": ..., "flow_history": ...})``.
    """
    torch.manual_seed(seed)
    flow_history = None
    if flow is None:
        flow = RealNVP2D(n_couplings=8, hidden=64)
        flow_history = train_density(flow, lambda s: _toy_batches(problem, batch_size, seed + 2)(s)[1],
                                     flow_steps, lr=lr, seed=seed, progress=progress, desc="RealNVP prior")
    freeze(flow)
    model = toy_estimator(problem, projected=True)
    batches = _toy_batches(problem, batch_size, seed)
    history = fit(model, lambda m, b: affll_loss(m, b[0], flow), batches, steps, lr=lr, seed=seed,
                  progress=progress, desc="AffLL", tag="toy-affll")
    return model, {"history": history, "flow": flow, "flow_history": flow_history}


# --------------------------------------------------------------------------- evaluation and plots
def evaluate_toy(problem: ToyMAPProblem, estimator: Callable[[Tensor], Tensor] | Tensor, y: Tensor,
                 x_map: Tensor | None = None) -> dict[str, float]:
    """The chapter's table row for an estimator (a callable ``y -> x`` or its outputs ``(N, 2)``):

    * ``log_prior``: mean ``log p_X(f(y))`` (minus the cross-entropy the paper minimises);
    * ``map_distance``: mean Euclidean distance to the exact MAP;
    * ``consistency``: root-mean-square of ``A f(y) - y``.
    """
    y = problem._check_y(y)
    if callable(estimator) and not isinstance(estimator, torch.Tensor):
        with torch.no_grad():
            out = estimator(y.float())
    else:
        out = estimator
    if out.shape != (y.shape[0], 2):
        raise ValueError(f"estimates must have shape ({y.shape[0]}, 2), got {tuple(out.shape)}")
    x_map = problem.exact_map(y) if x_map is None else x_map
    out = out.double()
    return {
        "log_prior": float(problem.log_prior(out).mean()),
        "map_distance": float((out - x_map.double()).norm(dim=1).mean()),
        "consistency": float((problem.operator.A(out) - y.double()).pow(2).mean().sqrt()),
    }


def plot_toy_demo(problem: ToyMAPProblem, curves: dict[str, Tensor], y_grid: Tensor, *, ax=None,
                  lines: Sequence[float] = (), x_map: Tensor | None = None, title: str | None = None):
    """Prior density, a few solution lines, the exact MAP (dots: it jumps) and each estimator's
    outputs along ``y_grid`` (``curves``: name -> (N, 2) outputs)."""
    import matplotlib.pyplot as plt

    from ..viz import plot_density_2d

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    bounds = problem.prior.bounds
    plot_density_2d(problem.log_prior, bounds, n=250, ax=ax, cmap="Greys")
    for yv in lines:
        yt = torch.tensor([[float(yv)]], dtype=torch.float64)
        pts = problem.line(yt, torch.tensor([[-problem.reach, problem.reach]], dtype=torch.float64))[0]
        ax.plot(pts[:, 0], pts[:, 1], ls="--", lw=0.8, color="tab:blue", alpha=0.6)
    x_map = problem.exact_map(y_grid) if x_map is None else x_map
    ax.plot(x_map[:, 0], x_map[:, 1], ".", ms=3, color="black", label="exact MAP")
    styles = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:cyan", "tab:brown", "tab:pink"]
    for (name, out), color in zip(curves.items(), styles):
        out = out.detach().double()
        ax.plot(out[:, 0], out[:, 1], "-", lw=1.8, color=color, label=name)
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    if title:
        ax.set_title(title)
    return ax

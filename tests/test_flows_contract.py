"""The flow contract beyond single layers: ``inverse_and_logdet`` for layers without a closed
form, ``Inverse`` running the wrapped layer once per call, and what ``course_lib.flows`` imports."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import subprocess
import sys

import pytest
import torch

from course_lib import flows
from course_lib.flows import (
    MLP,
    ActNorm,
    AdditiveAffineCoupling,
    AffineCoupling,
    DenseBlock,
    FlowSequential,
    HaarDownsampling,
    Inverse,
    InvertibleConv1x1,
    InvertibleModule,
    Split,
    autograd_logdet,
)
from course_lib.flows.base import sum_per_sample

mlp = functools.partial(MLP, hidden=8, layers=1)
dense = functools.partial(DenseBlock, growth=3)


def randn(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def perturb(module, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.eval()


class ElementwiseCubic(InvertibleModule):
    """``y = x + x^3 / 3`` with only ``_forward`` / ``_inverse``: no closed-form inverse logdet."""

    def _forward(self, x, cond):
        return x + x**3 / 3, sum_per_sample(torch.log1p(x**2))

    def _inverse(self, z, cond):
        x = torch.zeros_like(z)
        for _ in range(60):  # Newton's method on x + x^3/3 = z (monotone, converges from 0)
            x = x - (x + x**3 / 3 - z) / (1 + x**2)
        return x


def test_default_inverse_and_logdet_for_a_layer_without_closed_form():
    layer = ElementwiseCubic()
    x = randn(2, 3)
    z, logdet = layer(x)
    x_rec, logdet_inv = layer.inverse_and_logdet(z)
    torch.testing.assert_close(x_rec, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet)
    torch.testing.assert_close(logdet_inv, autograd_logdet(layer.inverse, z), atol=1e-8, rtol=1e-8)
    # Inverse of it works through the fallback, and a sequence mixes fallback and closed forms
    flow = FlowSequential(ElementwiseCubic(), perturb(AffineCoupling(3, mlp).double()), Inverse(ElementwiseCubic()))
    z, logdet = flow(x)
    x_rec, logdet_inv = flow.inverse_and_logdet(z)
    torch.testing.assert_close(x_rec, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet)


class Counting:
    """Records each outside call of a layer's ``_forward``, ``_inverse`` or ``_inverse_and_logdet``.

    A call that one of these methods makes to another (``_inverse_and_logdet`` using ``_inverse``
    for the map, then a closed form for the logdet) is part of the same pass and is not recorded.
    """

    def __init__(self, layer):
        self.calls = []
        self.depth = 0
        for name in ("_forward", "_inverse", "_inverse_and_logdet"):
            setattr(layer, name, self._wrap(name, getattr(layer, name)))  # shadows the method

    def _wrap(self, name, method):
        def counted(*args):
            if self.depth == 0:
                self.calls.append(name)
            self.depth += 1
            try:
                return method(*args)
            finally:
                self.depth -= 1

        return counted


CLOSED_FORM_LAYERS = {
    "affine_coupling": lambda: (AffineCoupling(4, mlp), randn(2, 4)),
    "irn_coupling": lambda: (AdditiveAffineCoupling(4, dense, split_channels=1), randn(2, 4, 4, 4)),
    "actnorm": lambda: (ActNorm(4), randn(2, 4, 2, 2)),
    "invconv": lambda: (InvertibleConv1x1(4, lu=True), randn(2, 4, 2, 2)),
    "haar": lambda: (HaarDownsampling(1), randn(2, 4, 2, 2)),
    "split": lambda: (Split(4, 2), randn(2, 4, 2, 2)),
    "sequence": lambda: (flows.glow_step(4, mlp), randn(2, 4)),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORM_LAYERS))
def test_inverse_runs_the_wrapped_layer_once_per_call(name):
    layer, x = CLOSED_FORM_LAYERS[name]()
    layer = perturb(layer.double())
    counter = Counting(layer)
    inv = Inverse(layer)
    y, logdet = inv(x)
    assert counter.calls == ["_inverse_and_logdet"]
    counter.calls.clear()
    x_rec = inv.inverse(y)
    assert counter.calls == ["_forward"]
    counter.calls.clear()
    x_rec2, logdet_inv = inv.inverse_and_logdet(y)
    assert counter.calls == ["_forward"]
    torch.testing.assert_close(x_rec, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(x_rec2, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet)


def test_inverse_of_a_coupling_evaluates_its_subnet_once():
    layer = perturb(AffineCoupling(4, mlp).double())
    evaluations = []
    layer.subnet.register_forward_hook(lambda *args: evaluations.append(1))
    inv = Inverse(layer)
    y, _ = inv(randn(2, 4))
    assert len(evaluations) == 1
    inv.inverse(y)
    assert len(evaluations) == 2


def test_inverse_refuses_a_module_that_is_not_invertible():
    with pytest.raises(TypeError, match="InvertibleModule"):
        Inverse(torch.nn.Linear(2, 2))


def test_flows_does_not_import_training():
    code = (
        "import sys, importlib, pkgutil, course_lib.flows as f\n"
        "for m in pkgutil.iter_modules(f.__path__): importlib.import_module('course_lib.flows.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k == 'course_lib.training' or k.startswith('course_lib.training.'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_flows_module_declares_all_with_its_own_names():
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"course_lib.flows.{info.name}")
        assert hasattr(module, "__all__"), f"course_lib.flows.{info.name} has no __all__"
        for name in module.__all__:
            obj = getattr(module, name)  # every listed name exists
            # defined there, so the API docs (automodule :members:) list each object once
            assert getattr(obj, "__module__", module.__name__) == module.__name__, (info.name, name)

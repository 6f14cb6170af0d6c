"""Estimate what every chapter's "Run all" costs on a Colab T4 under ``COURSE_PROFILE=gpu``.

    .venv/bin/python benchmarks/gpu_budget.py [--chapters ch5 ch6] [--json out.json]

For every training cell of every chapter it prints the parameters, the FLOPs and the activation
memory of one training step, the steps, and the estimated T4 time and peak memory; then a total
per chapter with PASS or OVER against the budget of the GUIDE: 14 GB of GPU memory and 20 minutes
per chapter. It runs on a CPU in about a minute with one thread.

How (estimates, not measurements; ``benchmarks/gpu_smoke.sh`` measures on a real GPU):

* Each cell's training step runs on the CPU at a small size (a small batch and patch) through the
  library's own training functions, under a dispatch mode that counts the operators and their
  FLOPs (``torch.utils.flop_counter``'s formulas) and a saved-tensor hook that adds up the
  activations kept for the backward pass (each storage once). FLOPs and activations of
  convolutional networks grow linearly with batch x pixels, so they are scaled to the cell's
  ``gpu`` size; the operator count does not change with the size.
* Steps, sizes and time limits are the ``gpu`` values of the library (``irn.train_config("gpu")``,
  ``hcflow.TRAIN_CONFIGS``) and of the notebooks' ``config.choose(...)`` calls, parsed from the
  ``.ipynb`` files (:func:`notebook_values`), so the table follows the chapters.
* Time per step on the GPU: ``max(FLOPs / (peak x utilisation), activation traffic / bandwidth,
  operators x launch cost)`` (an optimiser step counts as 12 kernels: CUDA's multi-tensor Adam);
  the batch is built on the CPU in the loop (time measured here at the ``gpu`` size, one core)
  and adds to it, unless DataLoader workers build it ahead (IRN, HCFlow on
  CUDA), where the step takes the longer of the two. A cell with a wall-clock limit takes its limit.
* Memory: weights, gradients and Adam's two moments (16 bytes per trainable parameter) plus the
  activations times 1.2 (temporaries, allocator slack); mixed precision keeps 0.6 of the float32
  activations (0.50 measured per pixel for IRN and HCFlow under the CPU's bfloat16 autocast) and
  adds a half-precision copy of the weights (2 bytes per parameter).
* Every chapter gets 2 minutes for everything that is not a training loop (imports, model
  loading, evaluation, figures): an allowance, not an estimate.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from the measured training runs
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHAPTERS = {
    "ch1": "ch1_fundamentals.ipynb", "ch2": "ch2_ill_posedness.ipynb", "ch3": "ch3_amortised_map.ipynb",
    "ch4": "ch4_normalizing_flows.ipynb", "ch5": "ch5_irn.ipynb", "ch6": "ch6_hcflow.ipynb",
    "ch7": "ch7_kernelgan.ipynb",
}


@dataclass(frozen=True)
class GPU:
    """The machine the budget is for, and the assumptions of the estimate (all stated in the output)."""

    name: str = "NVIDIA T4 (Colab)"
    fp32_flops: float = 8.1e12     # peak float32
    fp16_flops: float = 65e12      # peak float16 on tensor cores
    fp32_util: float = 0.35        # share of the float32 peak that convolution training reaches
    amp_util: float = 0.15         # share of the float16 peak: channel counts like 9, 41, 73 fit tensor cores poorly
    bandwidth: float = 240e9       # bytes/s reached of the 320 GB/s
    traffic: float = 3.0           # activation bytes moved per step: written, read back, and their gradients
    launch_s: float = 15e-6        # per operator: Python, dispatcher and kernel launch on Colab's CPU
    memory_limit: float = 14e9     # bytes: the GUIDE's 14 GB
    time_limit: float = 1200.0     # seconds: the GUIDE's 20 minutes per chapter
    overhead: float = 1.2          # activations x this: temporaries, allocator slack
    amp_activations: float = 0.6   # mixed precision keeps this share of the float32 activation bytes (0.50
                                   # measured for IRN and HCFlow under CPU bfloat16 autocast, per pixel)
    amp_weight_bytes: int = 2      # per parameter under mixed precision: the float16 copy of each weight
    state_bytes: int = 16          # per trainable parameter: weight, gradient, Adam's two moments (float32)
    other_s: float = 120.0         # per chapter: everything that is not a training loop (an allowance)


# ------------------------------------------------------------------------------------------------
# the notebooks' gpu values
# ------------------------------------------------------------------------------------------------


class _Unknown(str):
    """A name or expression the parser does not evaluate (kept as its source text)."""


def _value(node: ast.AST, source: str):
    """A literal, or a call with keyword arguments (``dict(...)``, ``ZSSRConfig(...)``) as a dict."""
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        pass
    if isinstance(node, ast.Call) and not node.args:
        out = {kw.arg: _value(kw.value, source) for kw in node.keywords if kw.arg}
        name = ast.get_source_segment(source, node.func) or ""
        return out if name == "dict" else {"__call__": name, **out}
    if isinstance(node, ast.Dict):
        return {_value(k, source): _value(v, source) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, (ast.Tuple, ast.List)):
        return type(node.elts)([_value(e, source) for e in node.elts]) if isinstance(node, ast.List) else tuple(
            _value(e, source) for e in node.elts)
    return _Unknown(ast.get_source_segment(source, node) or "?")


def _is_choose(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "choose")
        or (isinstance(node.func, ast.Name) and node.func.id == "choose"))


def _gpu(call: ast.Call, source: str):
    for kw in call.keywords:
        if kw.arg == "gpu":
            return _value(kw.value, source)
    raise ValueError(f"choose(...) without gpu=: {ast.get_source_segment(source, call)}")


def notebook_values(path: str | Path) -> dict[str, dict]:
    """``{cell id: {name: value}}`` for every code cell: the ``gpu=`` value of each ``choose(...)``
    call, named by the variable it is assigned to (``steps = config.choose(...)``; tuple targets
    by position) or the keyword it is passed as (``train_config(..., patch=config.choose(...))``),
    and plain literal assignments (``SCALE = 4``, ``FRAMEWORK_OPTIONS = {...}``)."""
    nb = json.loads(Path(path).read_text())
    out: dict[str, dict] = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        values: dict = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                target, value = node.targets[0], node.value
                pairs = (list(zip(target.elts, value.elts)) if isinstance(target, ast.Tuple)
                         and isinstance(value, ast.Tuple) else [(target, value)])
                for t, v in pairs:
                    if not isinstance(t, ast.Name):
                        continue
                    if _is_choose(v):
                        values[t.id] = _gpu(v, source)
                    elif not isinstance(v, ast.Call) and not isinstance(_value(v, source), _Unknown):
                        values.setdefault(t.id, _value(v, source))  # a literal (a call is not a setting)
            elif isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg and _is_choose(kw.value):
                        values.setdefault(kw.arg, _gpu(kw.value, source))
        out[cell.get("id", "")] = values
    return out


def book_values(chapter: str) -> dict[str, dict]:
    return notebook_values(ROOT / "book" / CHAPTERS[chapter])


def find(values: dict[str, dict], name: str, default=None):
    """The value of ``name`` in whichever cell sets it first (for names such as ``SCALE``)."""
    for cell in values.values():
        if name in cell:
            return cell[name]
    if default is None:
        raise KeyError(f"no cell sets {name!r}")
    return default


# ------------------------------------------------------------------------------------------------
# measuring a training step on the CPU
# ------------------------------------------------------------------------------------------------


# Kernels of one optimiser step on CUDA, where Adam updates all parameters with a few multi-tensor
# ("foreach") kernels; on the CPU it loops over the parameters, so the CPU's count is not used.
OPTIMIZER_KERNELS = 12


class _Count(TorchDispatchMode):
    """Counts the aten operators run outside optimiser steps, optimiser steps, and FLOPs."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.flops = 0
        self.optimizer_steps = 0
        self.in_optimizer = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += not self.in_optimizer
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


@dataclass
class Measured:
    """Per training step at the measured size."""

    flops: float
    ops: float
    activation_bytes: float
    params: int


def _measure_once(run: Callable[[], object]) -> tuple[float, float, float, dict[int, int]]:
    storages: dict[int, tuple[int, torch.Tensor]] = {}
    params: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if not (t.is_leaf and t.requires_grad):  # parameters are counted with the optimiser state
            storage = t.untyped_storage()
            storages.setdefault(storage.data_ptr(), (storage.nbytes(), t))  # keep it: no address reuse
        return t

    count = _Count()

    def before_step(optimizer, args, kwargs):
        count.in_optimizer = True

    def after_step(optimizer, args, kwargs):
        count.in_optimizer = False
        count.optimizer_steps += 1
        for group in optimizer.param_groups:
            for p in group["params"]:
                params[id(p)] = p.numel()

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    handles = [register_optimizer_step_pre_hook(before_step), register_optimizer_step_post_hook(after_step)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), count, \
                contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            run()
    finally:
        for handle in handles:
            handle.remove()
    ops = count.ops + OPTIMIZER_KERNELS * count.optimizer_steps
    return float(count.flops), float(ops), float(sum(n for n, _ in storages.values())), params


def measure(run: Callable[[int], object], k1: int = 1, k2: int | None = None) -> Measured:
    """Run ``run(k)`` (``k`` training steps) under the counters; per step. With ``k2`` the fixed
    costs of a run (set-up, a final evaluation) cancel: per step = (cost(k2) - cost(k1)) / (k2 - k1)."""
    f1, o1, a1, p1 = _measure_once(lambda: run(k1))
    if k2 is None:
        return Measured(f1 / k1, o1 / k1, a1 / k1, sum(p1.values()))
    f2, o2, a2, p2 = _measure_once(lambda: run(k2))
    d = k2 - k1
    return Measured(max(f2 - f1, 0) / d, max(o2 - o1, 0) / d, max(a2 - a1, 0) / d, sum(p2.values()))


def time_batches(make: Callable[[], Callable[[int], object]], calls: int = 2) -> float:
    """CPU seconds per call of the batch function ``make()`` returns (built first, not timed). The
    process's CPU time, not the wall time: other programs on this machine do not inflate it."""
    fn = make()
    start = time.process_time()
    for step in range(calls):
        fn(step)
    return (time.process_time() - start) / calls


# ------------------------------------------------------------------------------------------------
# cells and their estimates
# ------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One training loop of a chapter (``runs`` alike in the cell) and what was measured of it."""

    chapter: str
    cell: str                      # the notebook cell id
    label: str
    steps: int                     # per run
    measured: Measured
    scale: float = 1.0             # (batch x pixels at the gpu size) / (batch x pixels measured)
    runs: int = 1
    amp: bool = False
    data_s: float = 0.0            # CPU seconds per batch at the gpu size, built in the loop
    prefetched: bool = False       # DataLoader workers build batches ahead
    max_seconds: float | None = None
    note: str = ""
    estimate: dict = field(default_factory=dict)


def estimate(cell: Cell, gpu: GPU = GPU()) -> dict:
    """Estimated parameters, FLOPs, activations, step time, steps, total time and peak memory on ``gpu``."""
    m = cell.measured
    flops = m.flops * cell.scale
    act32 = m.activation_bytes * cell.scale
    act = act32 * (gpu.amp_activations if cell.amp else 1.0)
    rate = gpu.fp16_flops * gpu.amp_util if cell.amp else gpu.fp32_flops * gpu.fp32_util
    compute = max(flops / rate, gpu.traffic * act / gpu.bandwidth, m.ops * gpu.launch_s)
    step = max(compute, cell.data_s) if cell.prefetched else compute + cell.data_s
    steps = cell.steps * cell.runs
    seconds = steps * step
    if cell.max_seconds is not None:
        steps = min(steps, int(cell.max_seconds / step))
        seconds = min(seconds, cell.max_seconds)
    memory = m.params * (gpu.state_bytes + (gpu.amp_weight_bytes if cell.amp else 0)) + act * gpu.overhead
    return {"params": m.params, "gflop_per_step": flops / 1e9, "activations_gb": act / 1e9,
            "activations_fp32_gb": act32 / 1e9, "step_s": step, "data_s": cell.data_s, "steps": steps,
            "seconds": seconds, "memory_gb": memory / 1e9, "ops_per_step": m.ops}


# ------------------------------------------------------------------------------------------------
# the chapters (each function measures its chapter's training cells at small sizes)
# ------------------------------------------------------------------------------------------------

QUIET = {"progress": False}


def ch1() -> list[Cell]:
    from course_lib import losses
    from course_lib.data import TRAIN_PHOTOS, PatchSampler
    from course_lib.degradation import bicubic_downscale
    from course_lib.features import load_feature_extractor
    from course_lib.models import build_framework
    from course_lib.training import fit

    v = book_values("ch1")
    sizes = v["5f37413b"]
    scale_factor = find(v, "SCALE")
    options = v["9c84a82e"]["FRAMEWORK_OPTIONS"]
    p, b = 32, 1
    factor = sizes["patch"] ** 2 * sizes["batch"] / (p * p * b)

    def pairs(patch, batch, s=scale_factor):
        sampler = PatchSampler(list(TRAIN_PHOTOS), patch, batch, seed=0, scale=s)

        def pair(step):
            hr = sampler(step)
            return bicubic_downscale(hr, s, quantize=True), hr
        return pair

    data_s = time_batches(lambda: pairs(sizes["patch"], sizes["batch"]))
    cells = []
    for name, opts in options.items():
        def run(k, name=name, opts=opts):
            fit(build_framework(name, scale_factor, **opts), lambda m, pr: losses.l1_loss(m(pr[0]), pr[1]),
                pairs(p, b), k, device="cpu", **QUIET)
        cells.append(Cell("ch1", "c2ad435e", f"framework: {name}", sizes["steps"], measure(run, 1, 2),
                          factor, data_s=data_s, prefetched=True))  # the chapter's batches(): 2 workers on CUDA

    def tiny(k):  # the largest of the four x2 upsamplers (one LR convolution, then a learned x2 layer)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.ConvTranspose2d(16, 3, 4, stride=2, padding=1))
        fit(model, lambda m, pr: losses.l2_loss(m(pr[0]), pr[1]), pairs(p, b, 2), k, device="cpu", **QUIET)

    cells.append(Cell("ch1", "313f5f7a", "4 tiny x2 upsamplers", v["313f5f7a"]["tiny_steps"], measure(tiny, 1, 2),
                      factor, runs=4, data_s=time_batches(lambda: pairs(sizes["patch"], sizes["batch"], 2)),
                      prefetched=True))
    extractor = load_feature_extractor()
    perceptual = losses.PerceptualLoss(extractor, extractor.content_layers)

    def finetune(k):
        model = build_framework("post-upsampling", scale_factor, **options["post-upsampling"])
        fit(model, lambda m, pr: losses.l1_loss(m(pr[0]), pr[1]) + perceptual(m(pr[0]), pr[1]), pairs(p, b), k,
            device="cpu", **QUIET)

    cells.append(Cell("ch1", "9b1b24af", "6 loss fine-tunings (with a feature loss)", v["9b1b24af"]["ft_steps"],
                      measure(finetune, 1, 2), factor, runs=6, data_s=data_s, prefetched=True))
    return cells


def ch2() -> list[Cell]:
    from torch import nn

    from course_lib import losses
    from course_lib.training import fit

    v = book_values("ch2")
    steps = v["78bb047b"]["edge_steps"]
    batch = v["78bb047b"].get("edge_batch", 64)

    def run(k):  # EdgeSR: an MLP from the 4x4 LR image to the 32x32 HR image, batch 64
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 32 * 32))
        x = torch.rand(batch, 1, 4, 4)
        fit(net, lambda m, y: losses.l2_loss(m(y), torch.zeros(batch, 1024)), lambda s: x, k, device="cpu", **QUIET)

    return [Cell("ch2", "78bb047b", "MSE network on edges (MLP)", steps, measure(run, 1, 3))]


def ch3() -> list[Cell]:
    from course_lib.amortised_map import image_demo, toy2d
    from course_lib.amortised_map.projection import blur_operator, fit_pseudo_inverse
    from course_lib.data import dead_leaves
    from course_lib.degradation import gaussian_kernel

    v = book_values("ch3")
    cells = []
    operator = blur_operator(gaussian_kernel(16, 1.6), find(v, "scale"))
    cells.append(Cell("ch3", "ch3-07", "learned pseudo-inverse (Adam)", v["ch3-07"]["pinv_steps"], measure(
        lambda k: fit_pseudo_inverse(operator, 9, method="adam", steps=k, batch_size=8, hr_size=32), 1, 3)))
    problem = toy2d.ToyMAPProblem(toy2d.map_demo_prior())
    toy_steps = v["ch3-13"]["toy_steps"]
    toys = {"toy MSE, Aff-MSE": (2, lambda k: toy2d.train_toy_mse(problem, k)),
            "toy AffGAN": (1, lambda k: toy2d.train_toy_affgan(problem, k)),
            "toy AffDG (denoiser + generator)": (1, lambda k: toy2d.train_toy_affdg(problem, k, denoiser_steps=k)),
            "toy AffLL (flow + generator)": (1, lambda k: toy2d.train_toy_affll(problem, k, flow_steps=k))}
    for label, (runs, run) in toys.items():
        cells.append(Cell("ch3", "ch3-13", label, toy_steps, measure(run, 1, 3), runs=runs))
    sizes = v["ch3-24"]["sizes"]
    small = dict(patch_size=16, batch_size=2, n_images=1, image_size=32, n_eval=1, eval_size=16)
    task = image_demo.dead_leaves_task(scale=4, tones=(0.15, 0.85), r_min=6.0, **small)  # the cell's grey task
    factor = sizes["patch_size"] ** 2 * sizes["batch_size"] / (16 * 16 * 2)
    img_steps, prior_steps = v["ch3-24"]["img_steps"], v["ch3-24"]["prior_steps"]
    map_train_steps = v["ch3-24"]["map_train_steps"]
    def trained_priors(t):
        """One-step models of a task: the warm start, the denoiser, the flow (their costs are not needed)."""
        return (image_demo.train_regression(t, 1, projected=True, device="cpu", progress=False)[0],
                image_demo.train_image_denoiser(t, 1, device="cpu", progress=False)[0],
                image_demo.train_image_flow(t, 1, device="cpu", progress=False)[0])

    def methods_for(warm, den, flow):
        return {
            "MSE, MAE, Aff-MSE regressions": (3, img_steps, lambda k, t: image_demo.train_regression(
                t, k, projected=True, device="cpu", progress=False)),
            "AffGAN": (1, map_train_steps, lambda k, t: image_demo.train_image_affgan(t, k, init=warm, device="cpu",
                                                                                progress=False)),
            "denoiser": (1, prior_steps, lambda k, t: image_demo.train_image_denoiser(t, k, device="cpu",
                                                                                      progress=False)),
            "AffDG": (1, map_train_steps, lambda k, t: image_demo.train_image_affdg(t, k, den, init=warm, device="cpu",
                                                                              progress=False)),
            "flows (prior, judge)": (2, prior_steps, lambda k, t: image_demo.train_image_flow(t, k, device="cpu",
                                                                                              progress=False)),
            "AffLL": (1, map_train_steps, lambda k, t: image_demo.train_image_affll(t, k, flow, init=warm, device="cpu",
                                                                              progress=False)),
        }

    warm, den, flow = trained_priors(task)
    methods = methods_for(warm, den, flow)
    methods["Aff-MSE, as long"] = (1, map_train_steps, lambda k, t: image_demo.train_regression(
        t, k, projected=True, init=warm, device="cpu", progress=False))  # dead leaves only
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    dead_leaves(sizes["image_size"], generator=g)
    make_task_s = (time.perf_counter() - start) * (2 * sizes["n_images"] + sizes["n_eval"])
    for label, (runs, steps, run) in methods.items():
        cells.append(Cell("ch3", "ch3-25", f"dead leaves: {label}", steps, measure(lambda k, r=run: r(k, task), 1, 2),
                          factor, runs=runs, note=""))
    cells[-1].note = f"+ {make_task_s:.0f} s on the CPU to draw the dead-leaves images"
    cells[-1].data_s = make_task_s / max(1, img_steps)  # spread over the steps so that the total holds it
    # MAP by projected score ascent on the held-out images, then on one training batch (its targets),
    # and the regression of a copy of the Aff-MSE network on that batch
    from course_lib.amortised_map.affdg import map_by_score_ascent

    map_steps, fit_steps = v["ch3-27"]["map_steps"], v["ch3-30"]["fit_steps"]
    start_images = task.operator.pinv(task.eval_lr)
    eval_factor = sizes["n_eval"] * sizes["eval_size"] ** 2 / (small["n_eval"] * small["eval_size"] ** 2)
    cells.append(Cell("ch3", "ch3-27", "MAP by optimisation, held-out images", map_steps, measure(
        lambda k: map_by_score_ascent(den, task.operator, start_images, steps=k), 1, 3), eval_factor))
    y_batch, _ = task.pairs(0)
    cells.append(Cell("ch3", "ch3-30", "MAP targets for one batch", map_steps, measure(
        lambda k: map_by_score_ascent(den, task.operator, task.operator.pinv(y_batch), steps=k), 1, 3), factor))

    def regress(k: int) -> None:
        net = copy.deepcopy(warm)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for _ in range(k):
            loss = (net(y_batch) - task.operator.pinv(y_batch)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    cells.append(Cell("ch3", "ch3-30", "regression on the MAP targets", fit_steps, measure(regress, 1, 3), factor))
    photo_steps = v["ch3-33"]["steps"]
    ptask = image_demo.photo_task(scale=4, patch_size=16, batch_size=2, eval_size=16)
    pfactor = 48 * 48 * 32 / (16 * 16 * 2)  # photo_task(patch_size=48, batch_size=32) in the cell
    for label, (runs, _, run) in methods_for(*trained_priors(ptask)).items():  # colour photos
        runs = {"MSE, MAE, Aff-MSE regressions": 2}.get(label, runs)  # the photo experiment has no MAE
        label = label.replace("MSE, MAE, Aff-MSE", "MSE, Aff-MSE")
        cells.append(Cell("ch3", "ch3-33", f"photos: {label}", photo_steps,
                          measure(lambda k, r=run: r(k, ptask), 1, 2), pfactor, runs=runs))
    return cells


def ch4() -> list[Cell]:
    from course_lib import flows
    from course_lib.data import TRAIN_PHOTOS, PatchSampler, make_toy
    from course_lib.training import fit

    v = book_values("ch4")
    t = v["1db11dda"]
    toy = make_toy("two_moons")

    def toys(k):
        model = flows.RealNVP2D(n_couplings=t["toy_couplings"], hidden=t["toy_hidden"], actnorm=True)
        fit(model, lambda m, x: -m.log_prob(x).mean(),
            lambda s: toy.sample(t.get("toy_batch", 256), generator=torch.Generator().manual_seed(s)), k,
            device="cpu", **QUIET)

    g = v["7f7520e3"]
    small = 2 ** (g["glow_levels"] + 1)  # 2 x 2 pixels at the last level

    def glow(k):
        model = flows.Glow(3, levels=g["glow_levels"], steps=g["glow_steps_per_level"], hidden=g["glow_hidden"])
        fit(model, lambda m, x: m.bits_per_dim(x).mean(), PatchSampler(TRAIN_PHOTOS, small, 2, seed=0), k,
            lr=1e-3, grad_clip=50.0, device="cpu", **QUIET)

    data_s = time_batches(lambda: PatchSampler(TRAIN_PHOTOS, g["patch"], g["glow_batch"], seed=0))
    return [Cell("ch4", "1db11dda", "3 RealNVP toy densities", t["toy_steps"], measure(toys, 1, 3), runs=3),
            Cell("ch4", "7f7520e3", "Glow on photo patches", g["glow_train_steps"], measure(glow),
                 g["patch"] ** 2 * g["glow_batch"] / (small * small * 2), data_s=data_s)]


def ch5() -> list[Cell]:
    from course_lib import irn
    from course_lib.data import training_sampler

    v = book_values("ch5")
    demo = v["e5f4a727"]
    cells = []

    def irn_step(scale, blocks, growth, patch=16):
        def run(k):
            torch.manual_seed(0)
            model = irn.IRN(scale, blocks, growth)
            opt = torch.optim.Adam(model.parameters())
            for _ in range(k):
                opt.zero_grad()
                loss, _ = irn.irn_loss(model, torch.rand(1, 3, patch, patch))
                loss.backward()
                opt.step()
        return run

    cpu = irn.train_config("cpu")
    cells.append(Cell("ch5", "e5f4a727", "IRN x2 demo (small model)", demo["steps"],
                      measure(irn_step(2, cpu.blocks, cpu.growth)), demo["patch"] ** 2 * demo["batch"] / 256,
                      data_s=time_batches(lambda: training_sampler(demo["patch"], demo["batch"], scale=2)),
                      prefetched=True))
    gpu = irn.train_config("gpu")
    minutes = v["0ffab803"]["gpu_minutes"]
    cells.append(Cell("ch5", "0ffab803", "IRN x4, the paper's model (time-limited)", gpu.steps,
                      measure(irn_step(4, gpu.blocks, gpu.growth)), gpu.patch ** 2 * gpu.batch / 256, amp=True,
                      data_s=time_batches(lambda: training_sampler(gpu.patch, gpu.batch, scale=4,
                                                                   dead_leaves_fraction=gpu.dead_leaves_fraction)),
                      prefetched=True,
                      max_seconds=60.0 * minutes, note=f"{minutes} min limit; re-run to continue"))
    return cells


def _hcflow_step(mode, cfg, patch=16):
    from course_lib import hcflow
    from course_lib.hcflow.train import loss_function

    def run(k):
        torch.manual_seed(0)
        model = hcflow.HCFlow(4, mode, hierarchical=cfg.hierarchical, arch=cfg.architecture())
        loss_fn = loss_function(model, cfg)
        opt = torch.optim.Adam(model.parameters())
        for _ in range(k):
            opt.zero_grad()
            loss, _ = loss_fn(model, torch.rand(1, 3, patch, patch))
            loss.backward()
            opt.step()
    return run


def ch6() -> list[Cell]:
    from course_lib import hcflow
    from course_lib.data import training_sampler
    from course_lib.models import PostUpsamplingSR
    from course_lib.training import fit

    v = book_values("ch6")
    cells = []

    def mse(k):
        fit(PostUpsamplingSR(4), lambda m, hr: torch.mean((m(hcflow.reference_lr(hr, 4)) - hr) ** 2),
            training_sampler(16, 1, scale=4, seed=0), k, device="cpu", **QUIET)

    # make_batch_fn(48, 8, ...) in the cell: patch and batch are literals there
    cells.append(Cell("ch6", "8ff25db4", "MSE network (ESPCN)", v["8ff25db4"]["mse_steps"], measure(mse, 1, 2),
                      48 * 48 * 8 / 256, data_s=time_batches(lambda: training_sampler(48, 8, scale=4))))
    # the hierarchy ablation (a77a84ca) loads its shipped runs under cpu and gpu: no training there
    g = v["73297604"]
    cfg = hcflow.train_config("sr", "gpu", batch=8, steps=g["gpu_steps"])  # batch=8 is a literal in the cell
    cells.append(Cell("ch6", "73297604", f"HCFlow SR, the paper's model, batch {cfg.batch} (time-limited)",
                      cfg.steps, measure(_hcflow_step("sr", cfg)), cfg.patch ** 2 * cfg.batch / 256, amp=True,
                      data_s=time_batches(lambda: training_sampler(cfg.patch, cfg.batch, scale=4,
                                                                   dead_leaves_fraction=cfg.dead_leaves_fraction)),
                      prefetched=True, max_seconds=60.0 * g["gpu_minutes"],
                      note=f"{g['gpu_minutes']} min limit; re-run to continue"))
    return cells


def ch7() -> list[Cell]:
    from dataclasses import replace

    from course_lib import kernelgan as kg
    from course_lib import zssr as Z

    v = book_values("ch7")
    s = v["668152e9"]["S"]
    lr = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    cfg = kg.KernelGANConfig(g_channels=s["g_channels"], crop_size=s["crop"])

    def gan(k):
        kg.KernelGAN(lr, replace(cfg, iterations=k), device="cpu", seed=0).fit(progress=False)

    z = {k: val for k, val in s["zssr"].items() if k != "__call__"}
    crop = 32

    def zssr(k):
        Z.zssr(lr, None, 2, config=Z.ZSSRConfig(**{**z, "steps": k, "crop_size": crop}), device="cpu", progress=False)

    flow = kg.load_kernel_flow()

    def fkp(k):  # KernelGAN-FKP with its defaults (WGAN-GP critic, 8 crops per iteration)
        kg.KernelGANFKP(lr, replace(cfg, iterations=k), flow=flow, device="cpu", seed=0).fit(progress=False)

    n_ablation = len(kg.REGULARIZERS)  # one run per regulariser left out; "all terms" reuses the study's run
    n = s["n_images"]
    gan_m = measure(gan, 2, 4)
    return [Cell("ch7", "2426ec63", "KernelGAN structure study (2 runs)", s["study_iterations"], gan_m, runs=2),
            Cell("ch7", "3ead5127", f"KernelGAN ablation ({n_ablation} runs)", s["study_iterations"], gan_m,
                 runs=n_ablation),
            Cell("ch7", "5d8a70dc", f"KernelGAN on {n} images", s["gan_iterations"], gan_m, runs=n),
            Cell("ch7", "eb1947a6", f"KernelGAN-FKP on {n} images", s["fkp_iterations"], measure(fkp, 2, 4), runs=n),
            Cell("ch7", "5b0a7d3c", f"ZSSR, {n} images x 4 kernels", z["steps"], measure(zssr, 1, 2),
                 (z["crop_size"] / crop) ** 2, runs=4 * n)]


MEASURE = {"ch1": ch1, "ch2": ch2, "ch3": ch3, "ch4": ch4, "ch5": ch5, "ch6": ch6, "ch7": ch7}


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def budget(chapters: list[str] | None = None, gpu: GPU = GPU()) -> dict[str, dict]:
    """``{chapter: {"cells": [Cell with .estimate], "seconds", "memory_gb", "pass"}}``."""
    out = {}
    for chapter in chapters or list(CHAPTERS):
        cells = MEASURE[chapter]()
        for cell in cells:
            cell.estimate = estimate(cell, gpu)
        seconds = gpu.other_s + sum(c.estimate["seconds"] for c in cells)
        memory = max(c.estimate["memory_gb"] for c in cells)
        out[chapter] = {"cells": cells, "seconds": seconds, "memory_gb": memory,
                        "pass": seconds <= gpu.time_limit and memory * 1e9 <= gpu.memory_limit}
    return out


def report(result: dict[str, dict], gpu: GPU = GPU()) -> str:
    lines = [f"GPU budget per chapter under COURSE_PROFILE=gpu on a {gpu.name}: ESTIMATES, not measurements",
             f"  assumptions: float32 {gpu.fp32_flops / 1e12:.1f} TFLOP/s at {gpu.fp32_util:.0%}, mixed precision "
             f"{gpu.fp16_flops / 1e12:.0f} TFLOP/s at {gpu.amp_util:.0%}, {gpu.bandwidth / 1e9:.0f} GB/s for "
             f"{gpu.traffic:g}x the activations, {gpu.launch_s * 1e6:.0f} us per operator; memory = "
             f"{gpu.state_bytes} B/parameter + {gpu.overhead:g} x activations (mixed precision: "
             f"x{gpu.amp_activations:g} activations, +{gpu.amp_weight_bytes} B/parameter)",
             f"  batches built on one CPU core (time measured here); {gpu.other_s:.0f} s per chapter for everything "
             "but training loops",
             f"  budget: {gpu.memory_limit / 1e9:.0f} GB and {gpu.time_limit / 60:.0f} min per chapter; "
             "measure on a GPU with benchmarks/gpu_smoke.sh", ""]
    head = (f"{'chapter/cell':<14}{'training loop':<46}{'params':>9}{'GFLOP/step':>11}{'act GB':>8}{'precision':>10}"
            f"{'steps':>11}{'s/step':>8}{'T4 time':>10}{'T4 GB':>7}")
    lines.append(head)
    lines.append("-" * len(head))
    for chapter, r in result.items():
        for c in r["cells"]:
            e = c.estimate
            runs = f"{c.runs} x " if c.runs > 1 else ""
            steps = f"{runs}{c.steps}" if c.max_seconds is None else f"~{e['steps']}"
            lines.append(f"{chapter + ' ' + c.cell:<14}{c.label[:45]:<46}{e['params'] / 1e6:>8.2f}M"
                         f"{e['gflop_per_step']:>11.1f}{e['activations_gb']:>8.2f}{'amp' if c.amp else 'fp32':>10}"
                         f"{steps:>11}{e['step_s']:>8.3f}{_fmt_s(e['seconds']):>10}{e['memory_gb']:>7.2f}"
                         + (f"  ({c.note})" if c.note else ""))
        verdict = "PASS" if r["pass"] else "OVER"
        lines.append(f"{chapter + ' total':<14}{'(training loops + ' + _fmt_s(gpu.other_s) + ' for the rest)':<46}"
                     f"{'':>9}{'':>11}{'':>8}{'':>10}{'':>11}{'':>8}{_fmt_s(r['seconds']):>10}{r['memory_gb']:>7.2f}"
                     f"  {verdict}")
        lines.append("")
    return "\n".join(lines)


def commands(result: dict[str, dict], gpu: GPU = GPU()) -> str:
    """The paper-size command lines that chapters 5 and 6 print (not part of any chapter's budget):
    estimated from the same measurements, with DIV2K batches (decoded once, milliseconds each)."""
    from dataclasses import replace

    from course_lib import hcflow, irn

    rows = []
    for chapter, cell_id, runs in (
            ("ch5", "0ffab803", [("python -m course_lib.irn train --scale 4 --profile gpu --data div2k", 1.0,
                                  irn.train_config("gpu").steps),
                                 ("  ... --steps 500000 (the paper's schedule)", 1.0, 500_000)]),
            ("ch6", "73297604", [("python -m course_lib.hcflow train --mode sr --profile gpu --data div2k", None,
                                  hcflow.train_config("sr", "gpu").steps),
                                 ("  ... --batch 8 (fits a 16 GB T4 in float32 too)", 1.0,
                                  hcflow.train_config("sr", "gpu").steps)])):
        if chapter not in result:
            continue
        cell = next(c for c in result[chapter]["cells"] if c.cell == cell_id)
        for text, factor, steps in runs:
            if factor is None:  # the paper's batch against the cell's
                factor = hcflow.train_config("sr", "gpu").batch / result_batch(cell)
            e = estimate(replace(cell, steps=steps, runs=1, scale=cell.scale * factor, data_s=0.01,
                                 max_seconds=None), gpu)
            fits = "fits" if e["memory_gb"] * 1e9 <= gpu.memory_limit else "does NOT fit"
            rows.append(f"  {text:<74}{steps:>8} steps  {e['step_s']:.2f} s/step  "
                        f"{e['seconds'] / 3600:6.1f} h  {e['memory_gb']:5.1f} GB ({fits} 14 GB, mixed precision)")
    return "\n".join(["Paper-size command lines (printed by chapters 5 and 6; not in a chapter's budget), on DIV2K:",
                      *rows])


def result_batch(cell: Cell) -> int:
    """The batch of a cell's label ("... batch 8 ..."), for the HCFlow commands."""
    words = cell.label.split()
    return int(words[words.index("batch") + 1]) if "batch" in words else 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="*", choices=list(CHAPTERS), default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = budget(args.chapters)
    print(report(result))
    print(commands(result))
    print(f"(measured on this CPU in {time.perf_counter() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {ch: {"seconds": r["seconds"], "memory_gb": r["memory_gb"], "pass": r["pass"],
                  "cells": [{"cell": c.cell, "label": c.label, "steps": c.steps, "runs": c.runs, "amp": c.amp,
                             **c.estimate} for c in r["cells"]]}
             for ch, r in result.items()}, indent=1))
    return 0 if all(r["pass"] for r in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""One training loop for every chapter: progress bar, evaluation hook, checkpoint and resume,
mixed precision, several processes under ``torchrun``, and a clean Ctrl-C.

Two levels:

* :func:`fit` trains one model on one loss with one optimiser (most chapters).
* :class:`Trainer` runs any ``step_fn(step) -> {name: float}`` over several modules and
  optimisers (GANs such as AffGAN and KernelGAN); it owns checkpointing, resuming and logging.

**Resume.** Resuming is exact: the batches come from ``batch_fn(step)``, a deterministic function of
the step (see :class:`~course_lib.data.patches.PatchSampler`), and the checkpoint stores the modules,
optimisers, schedulers, the gradient scaler, the step, the history and torch's random state (of
every process). A run interrupted and resumed therefore ends with the same weights as an
uninterrupted one (tested in ``tests/test_training.py`` and ``tests/test_distributed.py``).
Bit for bit this holds on the CPU. On CUDA it holds only with deterministic algorithms
(``torch.use_deterministic_algorithms(True)``, ``torch.backends.cudnn.benchmark = False``,
``CUBLAS_WORKSPACE_CONFIG=:4096:8``): by default some kernels accumulate with atomic additions in
an order that changes from run to run (e.g. the backward of convolutions, ``index_add``,
``scatter_add``), and cuDNN's autotuner may pick another algorithm in the resumed process, so a
resumed CUDA run is equal in distribution to an uninterrupted one, not bitwise equal.

**Mixed precision** is opt-in: ``fit(..., amp=None)`` runs the loss function under
``torch.autocast`` on CUDA (the default, ``amp=False``, never does), in float16 with a
:class:`torch.amp.GradScaler` (its state is saved in the checkpoint, so a resumed run continues with
the same loss scale), or in bfloat16 (``amp_dtype=torch.bfloat16``, no scaler needed); off on the
CPU unless asked for (``amp=True`` there means bfloat16). Autocast runs
convolutions and matrix products in half precision, which is where the speed is. Flows must still
compute log-determinants, log-likelihoods and losses in float32: a sum of ``H*W`` log-scales or of
squared latents overflows or loses most of its digits in float16. Wrap those lines in
:func:`full_precision` and cast their inputs with ``.float()``. :class:`MixedPrecision` bundles the
autocast context and the scaler for step functions of a :class:`Trainer`.

**Several processes (torchrun).** Started by ``torchrun --nproc_per_node N ...``, the loop reads the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``),
starts the process group if the script has not (NCCL for CUDA tensors, gloo for CPU tensors), and:

* ``batch_fn(step)`` gives the *global* batch (the paper's batch size) on every process; it is split
  into N contiguous chunks along the first dimension and process ``r`` trains on chunk ``r``
  (:func:`shard_batch`). N processes at a per-process batch B thus see exactly the samples that one
  process sees at batch N*B, and, since the gradients are averaged, take the same steps up to the
  order of float additions (about 1e-6 relative). The global batch must divide by N.
* :func:`fit` wraps the loss in :class:`~torch.nn.parallel.DistributedDataParallel` (the whole
  ``loss_fn(model, batch)`` runs inside DDP's forward, so losses that call ``model.encode`` or
  ``model.inverse`` are synchronised too). A :class:`Trainer` averages the gradients of its modules
  over the processes at the end of every backward pass (before clipping and the optimiser step), so
  a step function only has to train on :func:`shard_batch` of its batch, and decide anything that
  skips a backward pass (a non-finite loss) on all processes together (:func:`all_ranks`).
* Learning-rate schedules count optimiser steps, one per global batch, as in a single process.
* Random draws inside the loss (noise, dropout) come from each process's own generator: a fresh run
  seeds process ``r`` with ``seed + r``. Parameters are broadcast from process 0 at the start and
  after the first step, so data-dependent initialisations (ActNorm) agree.
* Logged scalars are averaged over the processes (the global batch's mean); evaluation, progress
  bar, messages and checkpoint files are process 0's; every process calls the loop's checkpointing
  (the random states of all processes are gathered into the file).
* Resuming with the same number of processes is exact. With another number the weights, optimiser
  and schedule continue and the global batch stays the same; only the random draws inside the loss
  differ from an uninterrupted run (a note says so).

Without torchrun nothing of this happens and results are bit for bit those of a single process.

**Ctrl-C.** An interrupt lets the current step finish, saves a checkpoint (when a path was given;
under torchrun every process stops at the same step, within torchrun's 30 s grace), prints one line
saying how to resume, and raises ``KeyboardInterrupt`` (so a notebook cell stops as usual) without a
traceback from deep inside torch. A second Ctrl-C (single process) stops at once without saving.

Checkpoints hold only tensors and plain Python containers, so they load with
``torch.load(..., weights_only=True)``; each records a ``tag`` naming the model it was made for,
and loading it into a different model raises a clear error instead of silently mismatching.
A checkpoint may also hold ``model_config``, the constructor arguments of the model, so that a
loader can rebuild the model from the file alone.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import is_static_build

__all__ = [
    "CHECKPOINT_FORMAT", "EvalFn", "History", "MixedPrecision", "StepFn", "Trainer", "all_ranks", "discriminator_step",
    "evaluation_mode", "export_weights", "fit", "full_precision", "get_rank", "get_world_size",
    "is_distributed", "is_main_process", "load_checkpoint", "load_weights", "setup_distributed", "shard_batch",
    "batch_noise",
]

CHECKPOINT_FORMAT = 1

StepFn = Callable[[int], Mapping[str, float]]
EvalFn = Callable[[int], Mapping[str, float]]


@dataclass
class History:
    """Logged scalars: ``logs[name][i]`` was recorded at training step ``steps[i]``."""

    steps: list[int] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, step: int, values: Mapping[str, float]) -> None:
        self.steps.append(step)
        for name, value in values.items():
            self.logs.setdefault(name, []).append(float(value))

    def record_eval(self, step: int, values: Mapping[str, float]) -> None:
        self.eval_steps.append(step)
        for name, value in values.items():
            self.evals.setdefault(name, []).append(float(value))

    def last(self, name: str) -> float:
        """Most recent value of a training log or evaluation metric."""
        if name in self.logs and self.logs[name]:
            return self.logs[name][-1]
        if name in self.evals and self.evals[name]:
            return self.evals[name][-1]
        raise KeyError(f"nothing logged under {name!r}; have {sorted(self.logs) + sorted(self.evals)}")

    def smoothed(self, name: str, window: int = 20) -> list[float]:
        """Running mean of a training log over ``window`` steps (for plots)."""
        values = self.logs[name]
        out, total = [], 0.0
        for i, v in enumerate(values):
            total += v
            if i >= window:
                total -= values[i - window]
            out.append(total / min(i + 1, window))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "logs": {k: list(v) for k, v in self.logs.items()},
            "eval_steps": list(self.eval_steps),
            "evals": {k: list(v) for k, v in self.evals.items()},
            "seconds": float(self.seconds),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> History:
        return cls(
            steps=list(state["steps"]),
            logs={k: list(v) for k, v in state["logs"].items()},
            eval_steps=list(state["eval_steps"]),
            evals={k: list(v) for k, v in state["evals"].items()},
            seconds=float(state.get("seconds", 0.0)),
        )

    def plot(self, names: list[str] | None = None, *, window: int = 20, ax=None, logy: bool = False):
        """Plot training logs (smoothed) and evaluation metrics against the step."""
        import matplotlib.pyplot as plt

        names = names or list(self.logs) + list(self.evals)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        for name in names:
            if name in self.logs:
                ax.plot(self.steps, self.smoothed(name, window), label=name)
            elif name in self.evals:
                ax.plot(self.eval_steps, self.evals[name], "o-", label=f"{name} (eval)")
            else:
                raise KeyError(f"nothing logged under {name!r}")
        ax.set_xlabel("training step")
        if logy:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        return ax


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with evaluation_mode(model):`` runs the block with ``model.eval()`` and restores the previous
    train/eval mode afterwards, even when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _check_finite(name: str, value: float, step: int) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{name} became {value} at step {step}; lower the learning rate or clip gradients"
        )


# ------------------------------------------------------------------------------------------------
# several processes (torchrun)
# ------------------------------------------------------------------------------------------------


def _dist():
    """``torch.distributed`` when this build has it, else ``None``."""
    import torch.distributed as dist

    return dist if dist.is_available() else None


def is_distributed() -> bool:
    """True when this process is one of several: a process group of more than one process is
    running, or torchrun's ``WORLD_SIZE`` says there will be one."""
    return get_world_size() > 1


def get_world_size() -> int:
    """Number of training processes (1 without torchrun)."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def get_rank() -> int:
    """This process's rank, 0 ... world size - 1 (0 without torchrun)."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes checkpoints, logs and figures (rank 0; always without torchrun)."""
    return get_rank() == 0


def _select_local_gpu() -> None:
    """Under torchrun with CUDA, make ``cuda`` mean this process's GPU (``LOCAL_RANK``), so that
    ``model.to("cuda")`` before the loop starts already lands on the right device."""
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


_select_local_gpu()  # at import: course_lib's command lines import this module before they build models


def setup_distributed() -> bool:
    """Start the process group from torchrun's environment if it is not running yet; returns
    :func:`is_distributed`. Without torchrun (``WORLD_SIZE`` unset or 1) this does nothing. The
    backend is gloo for CPU tensors and, when CUDA is available, NCCL for CUDA tensors."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist is None:
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    _select_local_gpu()
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return True


def shard_batch(batch: Any, *, rank: int | None = None, world_size: int | None = None) -> Any:
    """This process's share of a global batch: every tensor (also inside tuples, lists and dicts) is
    split along its first dimension into ``world_size`` contiguous chunks, and rank ``r`` gets chunk
    ``r``. Other values pass unchanged; without torchrun the batch is returned as it is. The batch
    size must divide by the number of processes (so that every share is a mean over as many samples
    and the averaged gradient is the global batch's)."""
    n = get_world_size() if world_size is None else world_size
    r = get_rank() if rank is None else rank
    if n == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            return batch
        size = batch.shape[0]
        if size % n:
            raise ValueError(f"a global batch of {size} does not split evenly over {n} processes; "
                             f"choose a batch size divisible by {n}")
        chunk = size // n
        return batch[r * chunk:(r + 1) * chunk]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(b, rank=r, world_size=n) for b in batch)
    if isinstance(batch, Mapping):
        return {k: shard_batch(v, rank=r, world_size=n) for k, v in batch.items()}
    return batch


def batch_noise(shape: Sequence[int], step: int, seed: int | None, *, stream: int = 0, uniform: bool = False,
                rank: int | None = None, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """Noise for this process's share of a global batch, drawn sample by sample so that it does not
    depend on how the batch is split over processes.

    ``shape[0]`` is this process's share; sample ``i`` of the *global* batch (``rank * shape[0] + j``
    for local sample ``j``) gets ``N(0, 1)`` numbers (``U(0, 1)`` with ``uniform``) from a generator
    seeded by ``(seed, step, stream, i)``. So N processes at batch B draw exactly what one process at
    batch N B draws, and a resumed run draws what the uninterrupted one drew (``stream`` tells
    several draws of one step apart).
    """
    n = int(shape[0])
    first = (get_rank() if rank is None else rank) * n
    samples = []
    for i in range(first, first + n):
        key = ((int(seed or 0) * 1_000_003 + int(step)) * 97 + int(stream)) * 1_000_033 + i
        generator = torch.Generator().manual_seed(key % (2**63 - 1))
        draw = torch.rand if uniform else torch.randn
        samples.append(draw(tuple(shape[1:]), generator=generator))
    out = torch.stack(samples) if samples else torch.empty(tuple(shape))
    return out.to(device=device, dtype=dtype or torch.get_default_dtype())


def all_ranks(flag: bool | torch.Tensor) -> bool:
    """True when ``flag`` is true on every process (just ``bool(flag)`` without torchrun). Every process
    must call it at the same point. Use it for decisions that skip work with collectives in it, e.g.
    a step skipped for a non-finite loss: ``if not training.all_ranks(torch.isfinite(loss)): return``,
    so that no process waits in a gradient all-reduce that another one skipped."""
    flag = bool(flag)
    if not is_distributed():
        return flag
    return all(_all_gather(flag))


def _all_gather(obj: Any) -> list[Any]:
    dist = _dist()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any) -> Any:
    """``obj`` of rank 0, on every rank."""
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def _broadcast_modules(modules: Mapping[str, nn.Module]) -> None:
    """Copy rank 0's parameters and floating-point buffers to every rank."""
    dist = _dist()
    with torch.no_grad():
        for module in modules.values():
            for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
                dist.broadcast(t.data, src=0)


def _rng_state() -> dict[str, Any]:
    """This process's random state: the CPU's and its own GPU's (under torchrun, one GPU a process)."""
    return {"cpu": torch.get_rng_state(),
            "cuda_current": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if not torch.cuda.is_available():
        return
    if state.get("cuda_current") is not None:
        torch.cuda.set_rng_state(state["cuda_current"])
    elif state.get("cuda"):  # a single-process checkpoint: every GPU's state
        torch.cuda.set_rng_state_all(state["cuda"])


class _GradientAverager:
    """Averages the gradients of some parameters over the processes at the end of every backward
    pass that reached them (one all-reduce per backward, in a fixed order), for step functions that
    call their modules directly instead of through DistributedDataParallel. Gradients accumulated
    before the backward are already equal on every rank, and averaging leaves them as they are."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.pending: set[int] = set()
        self.queued = False
        self.handles = [p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(params)]

    def _hook(self, index: int):
        def hook(param: torch.Tensor) -> None:
            self.pending.add(index)
            if not self.queued:
                self.queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._reduce)
        return hook

    def _reduce(self) -> None:
        dist = _dist()
        n = dist.get_world_size()
        grads = [self.params[i].grad for i in sorted(self.pending)]
        self.pending.clear()
        self.queued = False
        groups: dict[tuple, list[torch.Tensor]] = {}
        for g in grads:
            if g is not None:
                groups.setdefault((g.device, g.dtype), []).append(g)
        for group in groups.values():
            flat = torch.cat([g.reshape(-1) for g in group])
            dist.all_reduce(flat)
            flat.div_(n)
            offset = 0
            for g in group:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------------------------
# mixed precision
# ------------------------------------------------------------------------------------------------


@contextmanager
def full_precision() -> Iterator[None]:
    """``with full_precision():`` runs the block in float32 even inside an autocast region (autocast
    is switched off for the block, then restored). Use it in loss functions for log-determinants,
    log-likelihoods and loss sums, and cast half-precision inputs with ``.float()``::

        with training.full_precision():
            nll = -(log_prob(z.float()) + logdet.float()).mean()

    Outside autocast it changes nothing. Also usable as a decorator (``@training.full_precision()``)."""
    with ExitStack() as stack:
        for device_type in ("cuda", "cpu", "xpu", "mps"):
            try:
                enabled = torch.is_autocast_enabled(device_type)
            except (RuntimeError, TypeError, ValueError):
                continue
            if enabled:
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class MixedPrecision:
    """Autocast and, for float16, a gradient scaler for one device type.

    Args:
        device: where the model trains (``"cuda"``, ``"cpu"``, a ``torch.device``).
        enabled: ``None``: on for CUDA, off elsewhere.
        dtype: ``torch.float16`` (CUDA default; with a :class:`torch.amp.GradScaler`) or
            ``torch.bfloat16`` (CPU default; bfloat16 has float32's range, so no scaler).

    In a step function: ``with amp.autocast(): loss = ...``, then ``amp.backward(loss)``,
    ``amp.unscale_(opt)`` before gradient clipping, and ``amp.step(opt)`` instead of
    ``opt.step()``. A :class:`Trainer` calls ``update()`` after every step and saves
    ``state_dict()`` in its checkpoints.
    """

    def __init__(self, device: torch.device | str = "cpu", enabled: bool | None = None,
                 dtype: torch.dtype | None = None) -> None:
        self.device_type = torch.device(device).type
        self.enabled = (self.device_type == "cuda") if enabled is None else bool(enabled)
        if dtype is None:
            dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"amp_dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        self.dtype = dtype
        self.scaler = (torch.amp.GradScaler(self.device_type)
                       if self.enabled and dtype == torch.float16 else None)
        self._stepped = False

    def __repr__(self) -> str:
        return (f"MixedPrecision({self.device_type}, enabled={self.enabled}, dtype={self.dtype}, "
                f"scaler={self.scaler is not None})")

    def autocast(self):
        """The autocast context (a no-op context when disabled)."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the loss scale (before clipping them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped by the scaler when a gradient is not finite."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self._stepped = True
        else:
            optimizer.step()

    def update(self) -> None:
        """Adjust the loss scale once per training step (after all :meth:`step` calls)."""
        if self.scaler is not None and self._stepped:
            self.scaler.update()
        self._stepped = False

    def state_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "dtype": str(self.dtype).removeprefix("torch."),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the loss scale; a checkpoint saved without a scaler leaves the current one fresh."""
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(dict(state["scaler"]))


def _module_device(modules: Mapping[str, nn.Module]) -> torch.device:
    for module in modules.values():
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


class _Interrupt:
    """Turns Ctrl-C (SIGINT) into a flag checked after every step, while a loop runs in the main
    thread. A second Ctrl-C in a single process stops at once (``forced``); under torchrun, where
    torchrun also forwards the signal, repeats are ignored and the step finishes."""

    def __init__(self, distributed: bool) -> None:
        self.distributed = distributed
        self.requested = False
        self.forced = False
        self.previous = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:  # a process told to ignore Ctrl-C keeps ignoring it
                self.previous = previous if previous is not None else signal.default_int_handler
                signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        if self.requested and not self.distributed:
            self.forced = True
            signal.signal(signal.SIGINT, self.previous)
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


class Trainer:
    """Run ``step_fn(step)`` for a number of steps with logging, evaluation and checkpoints.

    Args:
        modules: the networks whose weights are trained (saved in checkpoints).
        optimizers: their optimisers (saved in checkpoints).
        step_fn: does one training step (zero grads, loss, backward, optimiser step) and returns
            the scalars to log. Under torchrun it trains on :func:`shard_batch` of its batch; the
            Trainer averages the modules' gradients over the processes after every backward.
        schedulers: learning-rate schedulers stepped once after every training step.
        checkpoint: file to save to and resume from (``None``: no checkpoints).
        checkpoint_every: save every this many steps (and always at the end).
        eval_fn: ``eval_fn(step) -> {name: float}`` run every ``eval_every`` steps and at the end
            (on process 0 only under torchrun).
        tag: names the model a checkpoint belongs to; a checkpoint with another tag is refused.
        desc: label of the progress bar.
        progress: show a tqdm progress bar.
        model_config: the constructor arguments of ``modules["model"]`` (plain Python values),
            saved as the checkpoint's ``model_config`` so that a loader can rebuild the model
            from the file alone (e.g. :func:`course_lib.irn.train.load_irn`).
        amp, amp_dtype: mixed precision, available to ``step_fn`` as ``trainer.amp`` (a
            :class:`MixedPrecision` for the modules' device; default off; ``None``: on for CUDA). Pass a
            :class:`MixedPrecision` itself to share one that ``step_fn`` already holds. The Trainer
            calls ``amp.update()`` after every step and saves the loss scale in checkpoints.
        gradient_sync: under torchrun, average the modules' gradients over the processes
            (``False`` when the step function synchronises them itself, e.g. with
            DistributedDataParallel as :func:`fit` does).
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        step_fn: StepFn,
        *,
        schedulers: Mapping[str, Any] | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 500,
        eval_fn: EvalFn | None = None,
        eval_every: int = 0,
        tag: str | None = None,
        desc: str | None = None,
        progress: bool = True,
        log_every: int = 1,
        model_config: Mapping[str, Any] | None = None,
        amp: bool | None | MixedPrecision = False,
        amp_dtype: torch.dtype | None = None,
        gradient_sync: bool = True,
    ) -> None:
        if not modules:
            raise ValueError("Trainer needs at least one module to train")
        for name, module in modules.items():
            if not isinstance(module, nn.Module):
                raise TypeError(f"modules[{name!r}] is a {type(module).__name__}, not an nn.Module")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        if eval_every < 0 or log_every < 1:
            raise ValueError("eval_every must be >= 0 and log_every >= 1")
        self.modules = dict(modules)
        self.optimizers = dict(optimizers)
        self.schedulers = dict(schedulers or {})
        self.step_fn = step_fn
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.eval_fn = eval_fn
        self.eval_every = eval_every
        self.tag = tag or "+".join(f"{k}:{type(m).__name__}" for k, m in self.modules.items())
        self.desc = desc or self.tag
        self.progress = progress
        self.log_every = log_every
        self.model_config = dict(model_config) if model_config is not None else None
        self.amp = amp if isinstance(amp, MixedPrecision) else MixedPrecision(
            _module_device(self.modules), amp, amp_dtype)
        self.gradient_sync = gradient_sync
        self.distributed = setup_distributed()
        self.rank, self.world_size = get_rank(), get_world_size()
        self.step = 0
        self.history = History()
        if self.checkpoint is not None:
            if self.distributed:  # process 0's file, sent to all (nodes need not share a disk)
                state = _broadcast(load_checkpoint(self.checkpoint, tag=self.tag)
                                   if self.rank == 0 and self.checkpoint.exists() else None)
                if state is not None:
                    self.load_state_dict(state, self.checkpoint)
            elif self.checkpoint.exists():
                self.load(self.checkpoint)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "tag": self.tag,
            "step": self.step,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "amp": self.amp.state_dict(),
            "history": self.history.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and not self.distributed else [],
            "world_size": self.world_size,
        }
        if self.model_config is not None:
            state["model_config"] = self.model_config
        return state

    def save(self, path: str | os.PathLike | None = None, *, _rng_ranks: list | None = None) -> Path:
        """Write a checkpoint atomically (a crash mid-write never leaves a broken file). Under
        torchrun only process 0 writes; the others return the path without touching the file."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path given")
        if not is_main_process():
            return path
        state = self.state_dict()
        if _rng_ranks is not None:
            state["rng_ranks"] = _rng_ranks
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def _save_checkpoint(self) -> None:
        """The loop's checkpoint: every process calls it; the random states of all are saved."""
        if self.distributed:
            ranks = _all_gather(_rng_state())
            self.save(_rng_ranks=ranks)
            _dist().barrier()
        else:
            self.save()

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a checkpoint written by :meth:`save` for the same tag."""
        self.load_state_dict(load_checkpoint(path, tag=self.tag), path)

    def load_state_dict(self, state: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> None:
        """Resume from a loaded checkpoint (:func:`load_checkpoint`)."""
        missing = set(self.modules) ^ set(state["modules"])
        if missing:
            raise ValueError(f"checkpoint {path} holds modules {sorted(state['modules'])}, "
                             f"this trainer has {sorted(self.modules)}")
        for name, module in self.modules.items():
            _load_module(module, state["modules"][name], path, name)
        for name, opt in self.optimizers.items():
            if name in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            if name in state["schedulers"]:
                sched.load_state_dict(state["schedulers"][name])
        if "amp" in state:
            self.amp.load_state_dict(state["amp"])
        self.step = int(state["step"])
        self.history = History.from_state_dict(state["history"])
        saved_world = int(state.get("world_size", 1))
        ranks = state.get("rng_ranks") or [{"cpu": state["rng_cpu"], "cuda": state["rng_cuda"]}]
        if self.rank < len(ranks):
            _set_rng_state(ranks[self.rank])
        else:  # a process the saved run did not have: a fresh stream, fixed by the step and rank
            torch.manual_seed(1_000_003 * self.step + self.rank)
        if saved_world != self.world_size and is_main_process():
            print(f"note: {path} was saved by {saved_world} process(es), resuming on {self.world_size}: the "
                  f"global batch stays the same (per-process batch = batch / {self.world_size}) and so do the "
                  f"weights, optimiser and schedule, but random draws inside the loss (noise, dropout) come "
                  f"from other streams, so the run continues equal in distribution, not bit for bit",
                  flush=True)

    # -- the loop ----------------------------------------------------------------------------
    def _evaluate(self) -> None:
        if self.eval_fn is None:
            return
        values = None
        if is_main_process():
            for m in self.modules.values():
                m.eval()
            with torch.no_grad():
                values = {k: float(v) for k, v in self.eval_fn(self.step).items()}
            for m in self.modules.values():
                m.train()
        if self.distributed:
            values = _broadcast(values)
        self.history.record_eval(self.step, values)

    def _sync(self, values: dict[str, float], *flags: bool) -> tuple[dict[str, float], ...]:
        """Average the logged values over the processes and agree on stopping: each flag is true
        when it is on any process (one collective)."""
        gathered = _all_gather((flags, values))
        n = len(gathered)
        mean = {k: sum(float(g[1].get(k, v)) for g in gathered) / n for k, v in values.items()}
        return (mean, *(any(g[0][i] for g in gathered) for i in range(len(flags))))

    def _interrupted(self, saved: bool, steps: int) -> KeyboardInterrupt:
        """Print the one line saying where training stopped and how to resume; the exception to raise."""
        where = f"training interrupted at step {self.step} of {steps}"
        if self.checkpoint is None:
            line = f"{where} (no checkpoint path was given, so nothing was saved)"
        elif saved:
            line = (f"{where}; checkpoint saved to {self.checkpoint}. To resume, run the same command again "
                    f"(or call fit/Trainer with checkpoint='{self.checkpoint}' again)")
        else:
            line = (f"{where} without saving; {self.checkpoint} holds the last periodic checkpoint. To resume, "
                    f"run the same command again (or call fit/Trainer with checkpoint='{self.checkpoint}' again)")
        if is_main_process():
            print(line, flush=True)
        return KeyboardInterrupt(where)

    def run(self, steps: int, *, max_seconds: float | None = None) -> History:
        """Train until ``steps`` steps in total have been done (a resumed run continues).

        ``max_seconds``: stop after the first step that ends this much wall-clock time after the
        call, write the checkpoint and return the history; calling again resumes, exactly. Under
        torchrun all processes stop at the same step (process 0 need not be the first out of time).
        """
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and not isinstance(max_seconds, bool)
                                            and math.isfinite(max_seconds) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
        session_start = time.perf_counter()
        if self.step >= steps:
            return self.history
        for m in self.modules.values():
            m.train()
        fresh = self.step == 0
        averager = None
        if self.distributed:
            _broadcast_modules(self.modules)
            if fresh:  # process r draws its own random numbers: seed + r
                torch.manual_seed(torch.initial_seed() + self.rank)
            if self.gradient_sync:
                params = list({id(p): p for m in self.modules.values() for p in m.parameters()
                               if p.requires_grad}.values())
                averager = _GradientAverager(params)
        static = is_static_build()  # no live bar in the HTML book: one summary line instead
        bar = tqdm(total=steps, initial=self.step, desc=self.desc,
                   disable=static or not self.progress or not is_main_process(), dynamic_ncols=True, leave=True)
        first_step = self.step
        start = time.perf_counter()
        stopped = timed_out = False
        interrupt = _Interrupt(self.distributed)
        try:
            with interrupt:
                while self.step < steps:
                    values = {k: float(v) for k, v in self.step_fn(self.step).items()}
                    self.amp.update()
                    for name, value in values.items():
                        _check_finite(name, value, self.step)
                    for sched in self.schedulers.values():
                        sched.step()
                    self.step += 1
                    stopped = interrupt.requested
                    timed_out = max_seconds is not None and time.perf_counter() - session_start >= max_seconds
                    if self.distributed:
                        values, stopped, timed_out = self._sync(values, stopped, timed_out)
                        if fresh and self.step == first_step + 1:
                            _broadcast_modules(self.modules)  # data-dependent initialisations agree
                    timed_out = timed_out and self.step < steps
                    if self.step % self.log_every == 0 or self.step == steps:
                        self.history.record(self.step, values)
                    bar.update(1)
                    if values:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:3]}, refresh=False)
                    halt = stopped or timed_out
                    if self.eval_every and self.step % self.eval_every == 0 and self.step < steps and not halt:
                        self._evaluate()
                    if self.checkpoint is not None and (self.step % self.checkpoint_every == 0 or halt):
                        self.history.seconds += time.perf_counter() - start
                        start = time.perf_counter()
                        self._save_checkpoint()
                    if halt:
                        break
        except KeyboardInterrupt:
            # raised inside step_fn, not by the Ctrl-C handling above (a second Ctrl-C, code, a thread):
            # a single process saves the steps done so far; a second Ctrl-C or several processes (which
            # may be anywhere in a step) keep the last periodic checkpoint
            save = self.checkpoint is not None and not (interrupt.forced or self.distributed)
            if save:
                self.history.seconds += time.perf_counter() - start
                self.save()
            bar.close()
            raise self._interrupted(saved=save, steps=steps) from None
        finally:
            bar.close()
            if averager is not None:
                averager.remove()
        if stopped or timed_out:
            if self.checkpoint is None:
                self.history.seconds += time.perf_counter() - start
            if stopped:
                raise self._interrupted(saved=self.checkpoint is not None, steps=steps)
            if is_main_process():
                where = f"; checkpoint {self.checkpoint}: run again to continue" if self.checkpoint else ""
                print(f"{self.desc}: stopped at the time limit ({max_seconds:g} s) after step {self.step} "
                      f"of {steps}{where}", flush=True)
            return self.history
        self._evaluate()
        self.history.seconds += time.perf_counter() - start
        if self.checkpoint is not None:
            self._save_checkpoint()
        elif self.distributed:
            _dist().barrier()
        if static and self.progress and is_main_process():
            last = ", ".join(f"{k} {v[-1]:.4g}" for k, v in list(self.history.logs.items())[:3])
            print(f"{self.desc}: steps {first_step}->{self.step} in "
                  f"{self.history.seconds:.1f} s; {last}")
        return self.history


def _load_module(module: nn.Module, state: Mapping[str, torch.Tensor], path, name: str) -> None:
    own = module.state_dict()
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    unknown = sorted(set(state) - set(own))
    absent = sorted(set(own) - set(state))
    if wrong or unknown or absent:
        detail = []
        if wrong:
            detail.append(f"shape mismatch for {wrong[:3]}")
        if unknown:
            detail.append(f"unexpected keys {unknown[:3]}")
        if absent:
            detail.append(f"missing keys {absent[:3]}")
        raise ValueError(f"checkpoint {path} does not fit module {name!r} "
                         f"({type(module).__name__}): {'; '.join(detail)}")
    module.load_state_dict(state)


def load_checkpoint(path: str | os.PathLike, *, tag: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check it was made for ``tag``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, non-checkpoint files
        raise ValueError(f"{path} is not a readable course_lib checkpoint: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "tag" not in state:
        raise ValueError(f"{path} is not a course_lib checkpoint (format {CHECKPOINT_FORMAT})")
    if tag is not None and state["tag"] != tag:
        raise ValueError(f"checkpoint {path} was made for model {state['tag']!r}, not {tag!r}")
    return state


def load_weights(module: nn.Module, path: str | os.PathLike, *, tag: str | None = None,
                 name: str = "model") -> nn.Module:
    """Load the weights of ``module`` (saved under ``name``) from a checkpoint; returns it."""
    state = load_checkpoint(path, tag=tag)
    if name not in state["modules"]:
        raise ValueError(f"checkpoint {path} holds {sorted(state['modules'])}, not {name!r}")
    _load_module(module, state["modules"][name], path, name)
    return module


def discriminator_step(discriminator: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor) -> float:
    """One update of a GAN discriminator on a batch of real and generated images (non-saturating
    loss, :func:`course_lib.losses.discriminator_loss`); ``fake`` is detached. Returns the loss."""
    from course_lib.losses import discriminator_loss

    optimizer.zero_grad(set_to_none=True)
    loss = discriminator_loss(discriminator(real), discriminator(fake.detach()))
    loss.backward()
    optimizer.step()
    return loss.item()


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy a checkpoint without the optimiser and scheduler state (about a third of the size with
    Adam): the tag, step, history and weights (on the CPU) stay, so the copy still loads with
    :func:`load_weights` (``weights_only=True``) and the models' loaders. Returns ``out``. Under
    torchrun only process 0 writes the copy."""
    out = Path(out)
    if not is_main_process():
        return out
    state = load_checkpoint(checkpoint)
    state = {**state, "optimizers": {}, "schedulers": {}, "rng_cuda": []}
    state.pop("rng_ranks", None)
    state["modules"] = {k: {n: t.detach().cpu() for n, t in m.items()} for k, m in state["modules"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


class _LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module, so that DistributedDataParallel sees the whole loss
    (also calls of ``model.encode``/``model.inverse``) inside its forward."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Any],
    batch_fn: Callable[[int], Any],
    steps: int,
    *,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    grad_clip: float | None = None,
    amp: bool | None = False,
    amp_dtype: torch.dtype | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    eval_fn: EvalFn | None = None,
    eval_every: int = 0,
    seed: int | None = 0,
    tag: str | None = None,
    device: torch.device | str | None = None,
    desc: str | None = None,
    progress: bool = True,
    log_every: int = 1,
    model_config: Mapping[str, Any] | None = None,
    max_seconds: float | None = None,
) -> History:
    """Train ``model`` to minimise ``loss_fn(model, batch_fn(step))`` for ``steps`` steps.

    ``loss_fn`` returns a scalar loss tensor, or ``(loss, {name: float})`` with extra scalars to
    log. ``batch_fn(step)`` must return the same batch for the same step (resume is then exact);
    under torchrun it is the global batch, of which each process trains on its share
    (:func:`shard_batch`; the module docstring says what else changes). The default optimiser is
    Adam(lr). ``grad_clip`` clips the global gradient norm. ``amp`` runs ``loss_fn`` under autocast
    (:class:`MixedPrecision`; default off; ``None``: on for CUDA; ``amp_dtype`` float16, with a
    gradient scaler, or bfloat16); losses of flows compute log-determinants in float32 with
    :func:`full_precision`. With ``checkpoint`` set, an existing file of the same ``tag`` is resumed
    from, and Ctrl-C saves it before stopping. ``seed`` reseeds torch before the first step of a fresh
    run (not on resume). ``model_config`` (the model's constructor arguments) is saved in the
    checkpoint (:class:`Trainer`). ``max_seconds`` stops the session after that much wall-clock time,
    checkpoint written (:meth:`Trainer.run`); calling again resumes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive, got {grad_clip}")
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    distributed = setup_distributed()
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # this process's GPU (LOCAL_RANK)
    model.to(device)
    mixed = MixedPrecision(device, amp, amp_dtype)
    if optimizer is None:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("model has no trainable parameters")
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ddp = None
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(_LossModule(model, loss_fn),
                                      device_ids=[device] if device.type == "cuda" else None)

    def step_fn(step: int) -> dict[str, float]:
        batch = batch_fn(step)
        batch = _move(batch if ddp is None else shard_batch(batch), device)
        optimizer.zero_grad(set_to_none=True)
        with mixed.autocast():
            out = loss_fn(model, batch) if ddp is None else ddp(batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError("loss_fn must return a scalar tensor (or (loss, dict))")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; "
                                     "lower the learning rate or clip gradients")
        mixed.backward(loss)
        mixed.unscale_(optimizer)
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        mixed.step(optimizer)
        return {"loss": loss.item(), **{k: float(v) for k, v in extra.items()}}

    trainer = Trainer(
        {"model": model}, {"optimizer": optimizer}, step_fn,
        schedulers={"scheduler": scheduler} if scheduler is not None else None,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, eval_fn=eval_fn,
        eval_every=eval_every, tag=tag or type(model).__name__, desc=desc, progress=progress,
        log_every=log_every, model_config=model_config, amp=mixed, gradient_sync=False,
    )
    if trainer.step == 0 and seed is not None:
        torch.manual_seed(seed)
    return trainer.run(steps, max_seconds=max_seconds)

"""One training loop for every chapter: progress bar, evaluation hook, checkpoint and resume.

Two levels:

* :func:`fit` trains one model on one loss with one optimiser (most chapters).
* :class:`Trainer` runs any ``step_fn(step) -> {name: float}`` over several modules and
  optimisers (GANs such as AffGAN and KernelGAN); it owns checkpointing, resuming and logging.

Resuming is exact: the batches come from ``batch_fn(step)``, a deterministic function of the step
(see :class:`~course_lib.data.patches.PatchSampler`), and the checkpoint stores the modules, optimisers,
schedulers, the step, the history and torch's random state. A run interrupted and resumed
therefore ends with the same weights as an uninterrupted one (tested in ``tests/test_training.py``).

Checkpoints hold only tensors and plain Python containers, so they load with
``torch.load(..., weights_only=True)``; each records a ``tag`` naming the model it was made for,
and loading it into a different model raises a clear error instead of silently mismatching.
A checkpoint may also hold ``model_config``, the constructor arguments of the model, so that a
loader can rebuild the model from the file alone.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import is_static_build

__all__ = [
    "CHECKPOINT_FORMAT", "EvalFn", "History", "StepFn", "Trainer", "discriminator_step", "evaluation_mode",
    "export_weights", "fit", "load_checkpoint", "load_weights",
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


class Trainer:
    """Run ``step_fn(step)`` for a number of steps with logging, evaluation and checkpoints.

    Args:
        modules: the networks whose weights are trained (saved in checkpoints).
        optimizers: their optimisers (saved in checkpoints).
        step_fn: does one training step (zero grads, loss, backward, optimiser step) and returns
            the scalars to log.
        schedulers: learning-rate schedulers stepped once after every training step.
        checkpoint: file to save to and resume from (``None``: no checkpoints).
        checkpoint_every: save every this many steps (and always at the end).
        eval_fn: ``eval_fn(step) -> {name: float}`` run every ``eval_every`` steps and at the end.
        tag: names the model a checkpoint belongs to; a checkpoint with another tag is refused.
        desc: label of the progress bar.
        progress: show a tqdm progress bar.
        model_config: the constructor arguments of ``modules["model"]`` (plain Python values),
            saved as the checkpoint's ``model_config`` so that a loader can rebuild the model
            from the file alone (e.g. :func:`course_lib.irn.train.load_irn`).
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
        self.step = 0
        self.history = History()
        if self.checkpoint is not None and self.checkpoint.exists():
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
            "history": self.history.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self.model_config is not None:
            state["model_config"] = self.model_config
        return state

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write a checkpoint atomically (a crash mid-write never leaves a broken file)."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path given")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a checkpoint written by :meth:`save` for the same tag."""
        state = load_checkpoint(path, tag=self.tag)
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
        self.step = int(state["step"])
        self.history = History.from_state_dict(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    # -- the loop ----------------------------------------------------------------------------
    def _evaluate(self) -> None:
        if self.eval_fn is None:
            return
        for m in self.modules.values():
            m.eval()
        with torch.no_grad():
            values = dict(self.eval_fn(self.step))
        for m in self.modules.values():
            m.train()
        self.history.record_eval(self.step, values)

    def run(self, steps: int) -> History:
        """Train until ``steps`` steps in total have been done (a resumed run continues)."""
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if self.step >= steps:
            return self.history
        for m in self.modules.values():
            m.train()
        static = is_static_build()  # no live bar in the HTML book: one summary line instead
        bar = tqdm(total=steps, initial=self.step, desc=self.desc,
                   disable=static or not self.progress, dynamic_ncols=True, leave=True)
        first_step = self.step
        start = time.perf_counter()
        try:
            while self.step < steps:
                values = {k: float(v) for k, v in self.step_fn(self.step).items()}
                for name, value in values.items():
                    _check_finite(name, value, self.step)
                for sched in self.schedulers.values():
                    sched.step()
                self.step += 1
                if self.step % self.log_every == 0 or self.step == steps:
                    self.history.record(self.step, values)
                bar.update(1)
                if values:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:3]}, refresh=False)
                if self.eval_every and self.step % self.eval_every == 0 and self.step < steps:
                    self._evaluate()
                if self.checkpoint is not None and self.step % self.checkpoint_every == 0:
                    self.history.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self.save()
        finally:
            bar.close()
        self._evaluate()
        self.history.seconds += time.perf_counter() - start
        if self.checkpoint is not None:
            self.save()
        if static and self.progress:
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
    :func:`load_weights` (``weights_only=True``) and the models' loaders. Returns ``out``."""
    state = load_checkpoint(checkpoint)
    state = {**state, "optimizers": {}, "schedulers": {}, "rng_cuda": []}
    state["modules"] = {k: {n: t.detach().cpu() for n, t in m.items()} for k, m in state["modules"].items()}
    out = Path(out)
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
    amp: bool = False,
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
) -> History:
    """Train ``model`` to minimise ``loss_fn(model, batch_fn(step))`` for ``steps`` steps.

    ``loss_fn`` returns a scalar loss tensor, or ``(loss, {name: float})`` with extra scalars to
    log. ``batch_fn(step)`` must return the same batch for the same step (resume is then exact).
    The default optimiser is Adam(lr). ``grad_clip`` clips the global gradient norm. ``amp``
    turns on mixed precision with a gradient scaler when the model is on CUDA (ignored on CPU).
    With ``checkpoint`` set, an existing file of the same ``tag`` is resumed from.
    ``seed`` reseeds torch before the first step of a fresh run (not on resume).
    ``model_config`` (the model's constructor arguments) is saved in the checkpoint (:class:`Trainer`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive, got {grad_clip}")
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    model.to(device)
    use_amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    if optimizer is None:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("model has no trainable parameters")
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step_fn(step: int) -> dict[str, float]:
        batch = _move(batch_fn(step), device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=use_amp):
            out = loss_fn(model, batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError("loss_fn must return a scalar tensor (or (loss, dict))")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; "
                                     "lower the learning rate or clip gradients")
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return {"loss": loss.item(), **{k: float(v) for k, v in extra.items()}}

    trainer = Trainer(
        {"model": model}, {"optimizer": optimizer}, step_fn,
        schedulers={"scheduler": scheduler} if scheduler is not None else None,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, eval_fn=eval_fn,
        eval_every=eval_every, tag=tag or type(model).__name__, desc=desc, progress=progress,
        log_every=log_every, model_config=model_config,
    )
    if trainer.step == 0 and seed is not None:
        torch.manual_seed(seed)
    return trainer.run(steps)

"""The training loop under torchrun: two CPU processes (gloo) against one.

This file is also the script the tests launch, twice, with the same command::

    python -m torch.distributed.run --nproc_per_node 2 --master_port PORT tests/test_distributed.py OUT

The first launch trains a tiny regression model three times and writes the final weights: with
:func:`~course_lib.training.fit` and with a :class:`~course_lib.training.Trainer` step function
(noise-free losses, compared with one process at the global batch), and with ``fit`` on a loss that
draws noise (the uninterrupted run that resumed runs must reproduce). Every launch then runs the
noisy ``fit`` with a checkpoint, as a command line that is rerun until it finishes: ``INTERRUPT_AT=k``
makes rank 1 send itself SIGINT during step k (Ctrl-C; the first launch stops there),
``CRASH_AT=k`` makes every rank fail in step k (nothing is saved beyond the periodic checkpoint),
after which the script runs the same training again, as a rerun of the command would.

Each launch takes seconds (tiny model, one thread per process); most of it is importing torch.
Deselect with ``-m "not distributed"``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib import training

STEPS = 12
BATCH = 8  # the global batch: 4 per process with two processes
CHECKPOINT_EVERY = 4
TOLERANCE = 1e-6  # two processes add the gradients in another order than one process
W_TRUE = torch.tensor([[1.0, -2.0, 0.5, 3.0]])


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


def batch_fn(step: int):
    crash_at = os.environ.get("CRASH_AT")
    if crash_at is not None and step == int(crash_at):
        raise RuntimeError(f"simulated crash at step {step}")
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, 4, generator=g)
    return x, x @ W_TRUE.T + 0.1 * torch.randn(BATCH, 1, generator=g)


def make_loss(noise: bool, interrupt_at: int | None = None):
    def loss_fn(model, batch):
        x, y = batch
        if interrupt_at is not None and training.get_rank() == 1 and _STEP[0] == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C reaches one process in the middle of a step
        if noise:  # random draws inside the loss: per process, restored on resume
            x = x + 0.05 * torch.randn_like(x)
        err = model(x) - y
        return (err**2).mean(), {"mae": err.abs().mean().item()}
    return loss_fn


_STEP = [0]


def counted(fn):
    def batches(step):
        _STEP[0] = step
        return fn(step)
    return batches


def eval_fn(model):
    x = torch.linspace(-1, 1, 16).unsqueeze(1).repeat(1, 4)
    return lambda step: {"val": ((model(x) - x @ W_TRUE.T) ** 2).mean().item()}


def train_fit(noise: bool, checkpoint=None, steps: int = STEPS, interrupt_at: int | None = None):
    """Adam with a step schedule (counts optimiser steps) and gradient clipping (on the averaged
    gradient: the clip is active for the first steps)."""
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    hist = training.fit(model, make_loss(noise, interrupt_at), counted(batch_fn), steps, optimizer=opt, scheduler=sched,
                        grad_clip=0.3, checkpoint=checkpoint, checkpoint_every=CHECKPOINT_EVERY, seed=1,
                        eval_fn=eval_fn(model), eval_every=5, tag="tiny", progress=False)
    return model, hist


def train_trainer():
    """A Trainer step function that takes its share of the global batch and clips by value and norm."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step_fn(step):
        x, y = training.shard_batch(batch_fn(step))
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        if not training.all_ranks(torch.isfinite(loss)):  # a skip must be agreed (never here)
            return {"loss": 0.0}
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        return {"loss": loss.item()}

    hist = training.Trainer({"model": model}, {"opt": opt}, step_fn, progress=False).run(STEPS)
    return model, hist


def train_irn():
    """Three IRN steps (x2, one coupling) at global batch 4; the reconstruction's fresh z comes from
    training.batch_noise, so it does not depend on the number of processes."""
    from course_lib import irn

    cfg = irn.train_config("test", scale=2, patch=32, batch=4, steps=3, lr=1e-3, dead_leaves_fraction=0.0)
    model, hist = irn.train(2, cfg, seed=0, device="cpu", progress=False, images=PHOTOS)
    return model, hist


def train_hcflow():
    """Three HCFlow SR steps (x4, the test architecture) at global batch 4; dequantisation noise
    from training.batch_noise."""
    from course_lib import hcflow

    cfg = hcflow.train_config("sr", "test", patch=16, batch=4, steps=3, lr=1e-3, dead_leaves_fraction=0.0)
    model, hist = hcflow.train("sr", 4, cfg, seed=0, device="cpu", progress=False, images=PHOTOS)
    return model, hist


PHOTOS = ("rocket", "flower")
MODEL_TOLERANCE = 0.1  # of the distance training moved the weights (measured: IRN 4 %, HCFlow 0.03 %; see the test)


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------------------
# the script (run by torchrun)
# ------------------------------------------------------------------------------------------------


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    real_save, real_trainer_save = torch.save, training.Trainer.save
    log = out / f"saves_rank{rank}.txt"

    def logged_save(obj, f, *args, **kwargs):  # every file torch.save writes in this process
        if isinstance(f, (str, os.PathLike)):
            with open(log, "a") as fh:
                fh.write(f"write {f}\n")
        return real_save(obj, f, *args, **kwargs)

    def logged_trainer_save(self, *args, **kwargs):  # every call of Trainer.save, written or not
        with open(log, "a") as fh:
            fh.write("Trainer.save\n")
        return real_trainer_save(self, *args, **kwargs)

    torch.save, training.Trainer.save = logged_save, logged_trainer_save
    if not (out / f"noisy_rank{rank}.json").exists():  # the first launch: the reference runs
        results = {"fit": train_fit(noise=False), "trainer": train_trainer(), "noisy": train_fit(noise=True),
                   "irn": train_irn(), "hcflow": train_hcflow()}
        for name, (model, hist) in results.items():
            real_save(weights(model), out / f"{name}_rank{rank}.pt")
            (out / f"{name}_rank{rank}.json").write_text(json.dumps(hist.state_dict()))
    checkpoint = out / "run.pt"
    interrupt_at = int(os.environ["INTERRUPT_AT"]) if "INTERRUPT_AT" in os.environ else None
    try:
        model, _ = train_fit(noise=True, checkpoint=checkpoint, interrupt_at=interrupt_at)
    except RuntimeError as err:  # the simulated crash: run the command again
        assert "simulated crash" in str(err), err
        print(f"rank {rank}: {err}; rerunning", flush=True)
        del os.environ["CRASH_AT"]
        model, _ = train_fit(noise=True, checkpoint=checkpoint)
    real_save(weights(model), out / f"resumed_rank{rank}.pt")
    training.export_weights(checkpoint, out / "slim.pt")  # written by rank 0 only


# ------------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, **env) -> subprocess.CompletedProcess:
    """Two processes under torchrun (gloo on the CPU, one thread each)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    environ.update(COURSE_PROFILE="test", OMP_NUM_THREADS="1", COURSE_THREADS="1", PYTHONUNBUFFERED="1",
                   **{k: str(v) for k, v in env.items()})
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), __file__, str(out)]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=180)


def check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The first launch: the reference runs, then the resumable run, Ctrl-C'd in step 5."""
    out = tmp_path_factory.mktemp("distributed")
    interrupted = launch(out, INTERRUPT_AT=5)
    assert interrupted.returncode != 0, "the interrupted run should stop with KeyboardInterrupt"
    assert (out / "noisy_rank1.json").exists(), interrupted.stdout[-3000:] + interrupted.stderr[-3000:]
    return out, interrupted, training.load_checkpoint(out / "run.pt", tag="tiny")


@pytest.fixture(scope="module")
def resumed(reference):
    """The same command again: resumes after the interrupt, crashes in step 9 (the periodic
    checkpoint of step 8 stays) and is rerun to the end."""
    out = reference[0]
    rest = launch(out, CRASH_AT=9)
    check(rest)
    return out, rest


def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Euclidean distance between two lists of weights, as one vector."""
    return sum(((x - y) ** 2).sum() for x, y in zip(a, b)).sqrt().item()


def close(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.distributed
def test_two_processes_match_one_process_at_the_global_batch(reference):
    """(a) fit and a Trainer step function on 2 x 4 samples reach the weights of one process on 8."""
    out = reference[0]
    for name, train in (("fit", lambda: train_fit(noise=False)), ("trainer", train_trainer)):
        model, hist = train()
        one = weights(model)
        ranks = [torch.load(out / f"{name}_rank{r}.pt", weights_only=True) for r in (0, 1)]
        assert close(ranks[0], ranks[1]) == 0.0  # the processes hold the same weights
        assert close(one, ranks[0]) < TOLERANCE, name
        assert close(one, weights(make_model())) > 1e-2  # it trained
        # logged scalars are the global batch's (averaged over the processes), on every process
        logs = [json.loads((out / f"{name}_rank{r}.json").read_text()) for r in (0, 1)]
        assert logs[0]["logs"] == logs[1]["logs"] and logs[0]["steps"] == list(range(1, STEPS + 1))
        assert logs[0]["logs"]["loss"] == pytest.approx(hist.logs["loss"], rel=1e-5)
        if name == "fit":  # evaluation ran on process 0 and reached both histories
            assert logs[0]["eval_steps"] == logs[1]["eval_steps"] == [5, 10, 12]
            assert logs[0]["evals"]["val"] == pytest.approx(hist.evals["val"], rel=1e-4)


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["irn", "hcflow"])
def test_irn_and_hcflow_on_two_processes_match_one_process(reference, name):
    """(a) for the course's models: IRN and HCFlow trained by their own train functions on two
    processes at global batch 4 (2 each) reach the weights of one process at batch 4."""
    out = reference[0]
    model, hist = {"irn": train_irn, "hcflow": train_hcflow}[name]()
    ranks = [torch.load(out / f"{name}_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert close(ranks[0], ranks[1]) == 0.0
    # same initial weights (ActNorm initialised on the global batch), patches and noise: the first
    # step's loss is the same number, and so are the next ones up to float32 summation order
    logs = json.loads((out / f"{name}_rank0.json").read_text())
    assert logs["logs"]["loss"][0] == pytest.approx(hist.logs["loss"][0], rel=1e-6)
    assert logs["logs"]["loss"] == pytest.approx(hist.logs["loss"], rel=1e-5)
    # weights: Adam turns a gradient that is zero up to rounding (a few biases of IRN's couplings)
    # into a full step of either sign, so compare the whole difference with how far training moved
    one = weights(model)
    torch.manual_seed(0)  # the train functions seed the initial weights so
    start = weights(model.__class__(**model.config()))
    moved, apart = distance(one, start), distance(one, ranks[0])
    assert moved > 1e-3 and apart < MODEL_TOLERANCE * moved, (moved, apart)


@pytest.mark.distributed
def test_interrupted_and_crashed_two_process_run_resumes_exactly(reference, resumed, tmp_path, capsys):
    """(b) Ctrl-C and a crash midway, each followed by a rerun of the command: the final weights are
    those of the uninterrupted two-process run, bit for bit (same world size)."""
    _, interrupted, after_interrupt = reference
    out, rest = resumed
    # Ctrl-C reached rank 1 in step 5: both processes finished step 6 and saved it, then stopped
    assert after_interrupt["step"] == 6 and after_interrupt["world_size"] == 2
    assert "To resume, run the same command again" in interrupted.stdout
    assert interrupted.stdout.count("training interrupted at step 6 of 12") == 1  # one line, process 0
    assert "KeyboardInterrupt" in interrupted.stdout + interrupted.stderr
    assert "rank 0: simulated crash at step 9; rerunning" in rest.stdout
    full = torch.load(out / "noisy_rank0.pt", weights_only=True)
    for r in (0, 1):
        assert close(full, torch.load(out / f"resumed_rank{r}.pt", weights_only=True)) == 0.0
    state = training.load_checkpoint(out / "run.pt", tag="tiny")
    assert state["step"] == STEPS and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])  # own streams
    # the same checkpoint resumed by a single process: continues, with a note of what changes
    copy = tmp_path / "run.pt"
    copy.write_bytes((out / "run.pt").read_bytes())
    capsys.readouterr()
    _, hist = train_fit(noise=True, checkpoint=copy, steps=STEPS + 2)
    assert hist.steps[-1] == STEPS + 2 and "saved by 2 process(es), resuming on 1" in capsys.readouterr().out


@pytest.mark.distributed
def test_only_rank_zero_writes_checkpoints(reference, resumed):
    """(c) every process calls the checkpointing, only rank 0 writes a file."""
    out = resumed[0]
    lines = {r: (out / f"saves_rank{r}.txt").read_text().splitlines() for r in (0, 1)}
    assert not [line for line in lines[1] if line.startswith("write")]
    assert lines[1].count("Trainer.save") == lines[0].count("Trainer.save") >= 4
    assert any(line.endswith("run.pt.tmp") for line in lines[0])
    assert any(line.endswith("slim.pt") for line in lines[0])
    assert training.load_weights(make_model(), out / "slim.pt", tag="tiny") is not None


if __name__ == "__main__":
    main(Path(sys.argv[1]))

import os
import warnings

import pytest
import torch
from torch import nn

from course_lib import training


def make_problem(seed=0):
    """A small regression problem whose batches depend only on the step."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
    w_true = torch.tensor([[1.0, -2.0, 0.5, 3.0]])

    def batch_fn(step):
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(32, 4, generator=g)
        return x, x @ w_true.T + 0.01 * torch.randn(32, 1, generator=g)

    def loss_fn(m, batch):
        x, y = batch
        loss = ((m(x) - y) ** 2).mean()
        return loss, {"abs": (m(x) - y).abs().mean().item()}

    return model, batch_fn, loss_fn


def test_fit_reduces_the_loss():
    model, batch_fn, loss_fn = make_problem()
    hist = training.fit(model, loss_fn, batch_fn, 150, lr=1e-2, progress=False)
    assert len(hist.steps) == 150 and hist.steps[-1] == 150
    assert hist.logs["loss"][-1] < 0.1 * hist.logs["loss"][0]
    assert "abs" in hist.logs


def test_resume_reaches_the_same_weights(tmp_path):
    """Interrupt after 30 of 60 steps, resume from the checkpoint: identical final weights."""
    model, batch_fn, loss_fn = make_problem()
    training.fit(model, loss_fn, batch_fn, 60, lr=1e-2, progress=False, seed=5)
    full = [p.detach().clone() for p in model.parameters()]

    ckpt = tmp_path / "run.pt"
    model, batch_fn, loss_fn = make_problem()
    training.fit(model, loss_fn, batch_fn, 30, lr=1e-2, progress=False, seed=5,
                 checkpoint=ckpt, checkpoint_every=10)
    model, batch_fn, loss_fn = make_problem(seed=99)  # fresh weights: must all be restored
    hist = training.fit(model, loss_fn, batch_fn, 60, lr=1e-2, progress=False, seed=5,
                        checkpoint=ckpt, checkpoint_every=10)
    for a, b in zip(full, model.parameters()):
        assert torch.equal(a, b.detach())
    assert hist.steps == list(range(1, 61))


def test_checkpoint_loads_weights_only_and_refuses_other_models(tmp_path):
    model, batch_fn, loss_fn = make_problem()
    ckpt = tmp_path / "m.pt"
    training.fit(model, loss_fn, batch_fn, 5, progress=False, checkpoint=ckpt, tag="regressor")
    state = torch.load(ckpt, weights_only=True)
    assert state["tag"] == "regressor" and state["step"] == 5

    other, *_ = make_problem()
    training.load_weights(other, ckpt, tag="regressor")
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="made for model 'regressor', not 'irn-x4'"):
        training.load_weights(other, ckpt, tag="irn-x4")
    wrong = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 1))
    with pytest.raises(ValueError, match="shape mismatch"):
        training.load_weights(wrong, ckpt)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        training.load_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        training.load_checkpoint(tmp_path / "missing.pt")


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def loss_fn(m, batch):
        return (1e3 * m(batch)).sum()

    training.fit(model, loss_fn, lambda s: torch.ones(1, 3), 1, optimizer=opt, grad_clip=0.5,
                 progress=False)
    assert torch.linalg.norm(model.weight.detach() - before).item() == pytest.approx(0.5, rel=1e-5)


def test_non_finite_loss_is_reported():
    model = nn.Linear(2, 1)
    with pytest.raises(FloatingPointError, match="step 0"):
        training.fit(model, lambda m, b: m(b).sum() * float("nan"), lambda s: torch.ones(1, 2), 3,
                     progress=False)


def test_trainer_with_two_optimisers_and_eval(tmp_path):
    torch.manual_seed(0)
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=5, gamma=0.5)
    x = torch.randn(8, 2)

    def step_fn(step):
        opt_a.zero_grad()
        opt_b.zero_grad()
        la = (a(x) ** 2).mean()
        la.backward()
        opt_a.step()
        lb = ((b(x) - 1) ** 2).mean()
        lb.backward()
        opt_b.step()
        return {"a": la.item(), "b": lb.item()}

    trainer = training.Trainer({"a": a, "b": b}, {"a": opt_a, "b": opt_b}, step_fn,
                               schedulers={"a": sched}, eval_fn=lambda s: {"val": float(s)},
                               eval_every=4, checkpoint=tmp_path / "gan.pt", progress=False)
    hist = trainer.run(10)
    assert hist.eval_steps == [4, 8, 10] and hist.evals["val"] == [4.0, 8.0, 10.0]
    assert opt_a.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 2)
    assert hist.logs["a"][-1] < hist.logs["a"][0]
    resumed = training.Trainer({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)},
                               {"a": torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1),
                                "b": torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)},
                               step_fn, checkpoint=tmp_path / "gan.pt", progress=False)
    assert resumed.step == 10 and resumed.history.evals["val"] == [4.0, 8.0, 10.0]
    with pytest.raises(TypeError):
        training.Trainer({"a": "not a module"}, {}, step_fn)
    with pytest.raises(ValueError):
        trainer.run(-1)


def test_history_helpers():
    h = training.History()
    for i, v in enumerate([4.0, 2.0, 0.0]):
        h.record(i + 1, {"loss": v})
    assert h.smoothed("loss", window=2) == [4.0, 3.0, 1.0]
    assert h.last("loss") == 0.0
    with pytest.raises(KeyError):
        h.last("psnr")
    again = training.History.from_state_dict(h.state_dict())
    assert again.logs == h.logs and again.steps == h.steps


def test_static_build_prints_a_summary_instead_of_a_bar(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_STATIC_BUILD", "1")
    model, batch_fn, loss_fn = make_problem()
    training.fit(model, loss_fn, batch_fn, 3, desc="demo")
    captured = capsys.readouterr()
    assert "demo: steps 0->3 in" in captured.out and "loss" in captured.out
    assert "it/s" not in captured.err  # no tqdm bar was drawn


def test_evaluation_mode_restores_the_mode_even_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    for start in (True, False):
        model.train(start)
        with training.evaluation_mode(model):
            assert not model.training and not model[1].training
        assert model.training is start and model[1].training is start
        with pytest.raises(RuntimeError, match="inside"):
            with training.evaluation_mode(model):
                raise RuntimeError("inside")
        assert model.training is start and model[1].training is start


def test_checkpoints_carry_the_model_config_when_given(tmp_path):
    """``model_config`` (constructor arguments) is saved, survives resume and export, loads weights-only."""
    config = {"in_features": 4, "hidden": [16, 8], "dropout": 0.1, "name": "mlp", "flag": True, "none": None}
    model, batch_fn, loss_fn = make_problem()
    ckpt = tmp_path / "run.pt"
    training.fit(model, loss_fn, batch_fn, 3, progress=False, checkpoint=ckpt, tag="mlp", model_config=config)
    state = training.load_checkpoint(ckpt, tag="mlp")  # weights_only=True: plain containers only
    assert state["model_config"] == config
    training.fit(model, loss_fn, batch_fn, 5, progress=False, checkpoint=ckpt, tag="mlp", model_config=config)
    assert training.load_checkpoint(ckpt)["step"] == 5 and training.load_checkpoint(ckpt)["model_config"] == config
    slim = training.export_weights(ckpt, tmp_path / "slim.pt")
    assert torch.load(slim, weights_only=True)["model_config"] == config
    # without it, a checkpoint has no such entry (older checkpoints look the same: loaders fall back)
    plain = tmp_path / "plain.pt"
    training.fit(make_problem()[0], loss_fn, batch_fn, 1, progress=False, checkpoint=plain)
    assert "model_config" not in training.load_checkpoint(plain)
    trainer = training.Trainer({"model": nn.Linear(2, 1)}, {}, lambda step: {}, model_config={"a": 1})
    assert trainer.state_dict()["model_config"] == {"a": 1}


def _interrupting(loss_fn, at_step, action):
    """``loss_fn`` that calls ``action()`` once, at the start of step ``at_step``."""
    calls = {"n": 0}

    def wrapped(m, batch):
        calls["n"] += 1
        if calls["n"] == at_step + 1:
            action()
        return loss_fn(m, batch)
    return wrapped


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["exception", "signal"])
def test_ctrl_c_saves_a_checkpoint_and_resumes_exactly(tmp_path, capsys, how):
    """A KeyboardInterrupt raised in a step saves the steps done; Ctrl-C (SIGINT) lets the step
    finish first. Both print one line on how to resume, raise KeyboardInterrupt, and the resumed run
    ends with the weights of an uninterrupted one."""
    import signal

    model, batch_fn, loss_fn = make_problem()
    training.fit(model, loss_fn, batch_fn, 20, lr=1e-2, progress=False, seed=5)
    full = [p.detach().clone() for p in model.parameters()]

    ckpt = tmp_path / "run.pt"
    action = _raise_keyboard_interrupt if how == "exception" else lambda: os.kill(os.getpid(), signal.SIGINT)
    handler = signal.getsignal(signal.SIGINT)
    model, batch_fn, loss_fn = make_problem()
    with pytest.raises(KeyboardInterrupt, match="interrupted at step") as info:
        training.fit(model, _interrupting(loss_fn, 7, action), batch_fn, 20, lr=1e-2, progress=False, seed=5,
                     checkpoint=ckpt, checkpoint_every=5)
    assert info.value.__context__ is None or info.value.__suppress_context__  # no chained traceback wall
    assert signal.getsignal(signal.SIGINT) is handler  # the loop's Ctrl-C handler is gone
    stopped = 7 if how == "exception" else 8  # Ctrl-C finishes step 7 (the 8th) before stopping
    assert training.load_checkpoint(ckpt)["step"] == stopped
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"training interrupted at step {stopped} of 20; checkpoint saved to {ckpt}. To resume, run the "
                   f"same command again (or call fit/Trainer with checkpoint='{ckpt}' again)"]
    model, batch_fn, loss_fn = make_problem(seed=99)
    hist = training.fit(model, loss_fn, batch_fn, 20, lr=1e-2, progress=False, seed=5, checkpoint=ckpt,
                        checkpoint_every=5)
    for a, b in zip(full, model.parameters()):
        assert torch.equal(a, b.detach())
    assert hist.steps == list(range(1, 21))


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path, capsys):
    import signal

    def twice():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    model, batch_fn, loss_fn = make_problem()
    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        training.fit(model, _interrupting(loss_fn, 7, twice), batch_fn, 20, progress=False, checkpoint=ckpt,
                     checkpoint_every=5)
    assert training.load_checkpoint(ckpt)["step"] == 5  # the periodic checkpoint stays
    assert "without saving" in capsys.readouterr().out
    # without a checkpoint path the interrupt says that nothing was saved
    with pytest.raises(KeyboardInterrupt, match="step 3"):
        training.fit(make_problem()[0], _interrupting(loss_fn, 3, _raise_keyboard_interrupt), batch_fn, 20,
                     progress=False)
    assert "nothing was saved" in capsys.readouterr().out


def test_mixed_precision_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    """float16 autocast with a GradScaler (on the CPU here): the loss scale backs off from 2**16 in
    the first steps, is saved, and a resumed run continues exactly."""
    def run(steps, ckpt=None, seed_model=0):
        model, batch_fn, loss_fn = make_problem(seed=seed_model)
        training.fit(model, loss_fn, batch_fn, steps, lr=1e-2, progress=False, seed=5, amp=True,
                     amp_dtype=torch.float16, checkpoint=ckpt, checkpoint_every=10)
        return [p.detach().clone() for p in model.parameters()]

    full = run(40)
    ckpt = tmp_path / "amp.pt"
    run(20, ckpt)
    state = training.load_checkpoint(ckpt)
    assert state["amp"]["enabled"] and state["amp"]["dtype"] == "float16"
    assert 0 < state["amp"]["scaler"]["scale"] < 2.0**16  # it backed off: the state matters
    resumed = run(40, ckpt, seed_model=99)
    for a, b in zip(full, resumed):
        assert torch.equal(a, b)


def test_amp_defaults_and_bfloat16():
    model, batch_fn, loss_fn = make_problem()
    assert not training.MixedPrecision("cpu").enabled  # None: off on the CPU
    amp = training.MixedPrecision("cpu", enabled=True)
    assert amp.dtype == torch.bfloat16 and amp.scaler is None
    with warnings.catch_warnings():  # without CUDA, torch's GradScaler warns and disables itself
        warnings.simplefilter("ignore")
        cuda = training.MixedPrecision("cuda")
    assert cuda.enabled and cuda.dtype == torch.float16  # None: on for CUDA, float16 (with a scaler there)
    with pytest.raises(ValueError, match="amp_dtype"):
        training.MixedPrecision("cpu", True, torch.float64)
    dtypes = []

    def loss(m, batch):
        dtypes.append(m(batch[0]).dtype)
        return loss_fn(m, batch)

    hist = training.fit(model, loss, batch_fn, 60, lr=1e-2, progress=False, amp=True)
    assert dtypes[0] == torch.bfloat16 and hist.logs["loss"][-1] < 0.2 * hist.logs["loss"][0]
    dtypes.clear()
    training.fit(model, loss, batch_fn, 1, progress=False)
    assert dtypes == [torch.float32]  # amp=None on the CPU: off


def test_full_precision_switches_autocast_off_for_a_block():
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with training.full_precision():
            assert (a @ a).dtype == torch.float32
        assert (a @ a).dtype == torch.bfloat16
    with training.full_precision():  # outside autocast: nothing changes
        assert (a @ a).dtype == torch.float32


def test_shard_batch_splits_the_global_batch_into_contiguous_chunks():
    x, y = torch.arange(8).view(8, 1), {"z": torch.arange(16).view(8, 2), "name": "b"}
    assert training.shard_batch((x, y)) == (x, y)  # one process: unchanged
    first, second = (training.shard_batch((x, y), rank=r, world_size=2) for r in (0, 1))
    assert torch.equal(torch.cat([first[0], second[0]]), x) and first[1]["name"] == "b"
    assert torch.equal(second[1]["z"], torch.arange(8, 16).view(4, 2))
    with pytest.raises(ValueError, match="divisible by 3"):
        training.shard_batch(x, rank=0, world_size=3)
    assert not training.is_distributed() and training.is_main_process() and training.get_world_size() == 1
    assert training.all_ranks(torch.tensor(True)) is True and training.all_ranks(False) is False


def test_batch_noise_does_not_depend_on_how_the_batch_is_split():
    whole = training.batch_noise((4, 2, 3), step=7, seed=1)  # one process, global batch 4
    shares = [training.batch_noise((2, 2, 3), step=7, seed=1, rank=r) for r in (0, 1)]  # two processes
    assert torch.equal(torch.cat(shares), whole)
    assert torch.equal(training.batch_noise((4, 2, 3), 7, 1), whole)  # deterministic
    for other in (training.batch_noise((4, 2, 3), 8, 1), training.batch_noise((4, 2, 3), 7, 2),
                  training.batch_noise((4, 2, 3), 7, 1, stream=1)):
        assert not torch.equal(other, whole)  # another step, seed or stream: other numbers
    assert not torch.equal(whole[0], whole[1])  # samples differ
    u = training.batch_noise((64, 50), 0, 0, uniform=True)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02
    z = training.batch_noise((64, 50), 0, 0)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_max_seconds_stops_with_a_checkpoint_and_resumes_exactly(tmp_path, capsys):
    import time

    model, batch_fn, loss_fn = make_problem()
    training.fit(model, loss_fn, batch_fn, 20, lr=1e-2, progress=False, seed=5)
    full = [p.detach().clone() for p in model.parameters()]

    def slow(m, batch):
        time.sleep(0.02)
        return loss_fn(m, batch)

    ckpt = tmp_path / "run.pt"
    model, batch_fn, loss_fn = make_problem()
    hist = training.fit(model, slow, batch_fn, 20, lr=1e-2, progress=False, seed=5, checkpoint=ckpt,
                        checkpoint_every=100, max_seconds=0.05, desc="demo")
    stopped = training.load_checkpoint(ckpt)["step"]
    assert 1 <= stopped < 20 and hist.steps[-1] == stopped
    assert f"demo: stopped at the time limit (0.05 s) after step {stopped} of 20; checkpoint {ckpt}" in (
        capsys.readouterr().out)
    model, batch_fn, loss_fn = make_problem(seed=99)
    training.fit(model, loss_fn, batch_fn, 20, lr=1e-2, progress=False, seed=5, checkpoint=ckpt)
    for a, b in zip(full, model.parameters()):
        assert torch.equal(a, b.detach())
    with pytest.raises(ValueError, match="max_seconds"):
        training.Trainer({"m": nn.Linear(1, 1)}, {}, lambda s: {}).run(3, max_seconds=0)

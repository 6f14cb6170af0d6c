"""Tests of course_lib.irn against independent references (box filters, imresize, autograd)."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import irn, training
from course_lib.degradation import imresize
from course_lib.flows import AdditiveAffineCoupling, HaarDownsampling


def perturbed(model, std=0.05, seed=0):
    """Zero-initialised last convs make a fresh IRN the Haar transform; perturb to test the blocks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def rand_img(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("scale", [2, 4])
def test_round_trip_is_exact_for_the_unquantised_lr(scale):
    model = perturbed(irn.IRN(scale, blocks=2, growth=8).double())
    x = rand_img(2, 3, 16, 24, dtype=torch.float64)
    lr, z = model.encode(x)
    assert lr.shape == (2, 3, 16 // scale, 24 // scale)
    assert z.shape == (2, 3 * scale**2 - 3, 16 // scale, 24 // scale)
    assert torch.allclose(model.decode(lr, z), x, atol=1e-12, rtol=0)
    out, _ = model(x)
    assert torch.allclose(model.inverse(out), x, atol=1e-12, rtol=0)


def test_logdet_matches_the_autograd_jacobian():
    model = perturbed(irn.IRN(2, blocks=2, growth=4).double(), std=0.2)
    x = rand_img(1, 3, 4, 4, dtype=torch.float64)
    _, logdet = model(x)
    jac = torch.autograd.functional.jacobian(lambda v: model(v.view(1, 3, 4, 4))[0].reshape(-1), x.reshape(-1))
    assert torch.allclose(logdet[0], torch.linalg.slogdet(jac)[1], atol=1e-8)


@pytest.mark.parametrize("scale", [2, 4])
def test_model_is_haar_stages_then_couplings(scale):
    model = irn.IRN(scale, blocks=[2] * (scale // 2), growth=4)
    layers = list(model.flow)
    per_stage = 1 + 2
    assert len(layers) == per_stage * (scale // 2)
    for k, layer in enumerate(layers):
        expected = HaarDownsampling if k % per_stage == 0 else AdditiveAffineCoupling
        assert isinstance(layer, expected)
        if isinstance(layer, AdditiveAffineCoupling):
            assert layer.split_channels == 3 and layer.clamp == 1.0 and layer.clamp_kind == "sigmoid"
    # a fresh IRN (zero-initialised subnets) is the Haar transform: its LR is the s x s box mean
    x = rand_img(1, 3, 16, 16)
    lr, _ = model.encode(x)
    assert torch.allclose(lr, F.avg_pool2d(x, scale), atol=1e-6)


def test_downscale_and_upscale_shapes_ranks_and_range():
    model = perturbed(irn.IRN(4, blocks=1, growth=4))
    hr = rand_img(3, 32, 16)
    lr = irn.downscale(model, hr)
    assert lr.shape == (3, 8, 4)
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.allclose(lr * 255, torch.round(lr * 255), atol=1e-4)  # 8-bit levels
    assert irn.downscale(model, hr[None]).shape == (1, 3, 8, 4)
    sr = irn.upscale(model, lr, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert sr.shape == (3, 32, 16) and sr.min() >= 0 and sr.max() <= 1
    again = irn.upscale(model, lr, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sr, again)
    mode = irn.upscale(model, lr[None], temperature=0.0, clamp=False)
    expected = model.decode(lr[None], torch.zeros(1, 45, 8, 4))
    assert torch.allclose(mode, expected)


def test_loss_weights_default_to_the_paper():
    assert irn.LossWeights.paper(2) == irn.LossWeights(fit=4.0, rec=1.0, ce=1.0)
    assert irn.LossWeights.paper(4) == irn.LossWeights(fit=16.0, rec=1.0, ce=1.0)
    assert irn.LossWeights.paper(8).fit == 64.0


def test_guide_target_is_matlab_imresize_and_the_loss_combines_the_terms():
    model = irn.IRN(4, blocks=1, growth=4)  # fresh: LR = 4x4 box mean, z = Haar detail bands
    x = rand_img(2, 3, 16, 16)
    assert torch.equal(irn.bicubic_target(x, 4), imresize(x, 0.25))
    loss, logs = irn.irn_loss(model, x, generator=torch.Generator().manual_seed(3))
    box = F.avg_pool2d(x, 4)
    guide = ((box - imresize(x, 0.25)) ** 2).sum() / 2
    assert logs["guide"] == pytest.approx(guide.item(), rel=1e-5)
    _, z = model.encode(x)
    assert logs["distr"] == pytest.approx((z**2).sum().item() / 2, rel=1e-5)
    # reconstruction from the quantised LR and a *fresh* z drawn from the generator
    z_new = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    x_rec = model.inverse(torch.cat([torch.round(box * 255) / 255, z_new], 1))
    recon = torch.sqrt((x - x_rec) ** 2 + 1e-6).sum() / 2
    assert logs["recon"] == pytest.approx(recon.item(), rel=1e-5)
    assert loss.item() == pytest.approx(16 * guide.item() + recon.item() + logs["distr"], rel=1e-5)
    custom, _ = irn.irn_loss(model, x, irn.LossWeights(fit=1.0, rec=0.0, ce=0.0))
    assert custom.item() == pytest.approx(guide.item(), rel=1e-5)
    # the same z given (as the training loop passes training.batch_noise) gives the same loss
    given, given_logs = irn.irn_loss(model, x, z_fresh=z_new)
    assert given_logs["recon"] == pytest.approx(recon.item(), rel=1e-5)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = irn.IRN(2, blocks=1, growth=8)
    x = rand_img(4, 3, 16, 16)
    hist = training.fit(model, lambda m, b: irn.irn_loss(m, b), lambda step: x, 20, lr=2e-3,
                        grad_clip=10.0, progress=False)
    assert hist.logs["loss"][-1] < 0.7 * hist.logs["loss"][0]


def test_train_uses_the_loss_weights_it_is_given():
    cfg = irn.train_config("test", scale=2, steps=2, batch=1)
    _, paper = irn.train(2, cfg, progress=False, device="cpu")
    _, no_ce = irn.train(2, cfg, progress=False, device="cpu", weights=irn.LossWeights(fit=4.0, ce=0.0))
    logs, logs0 = paper.logs, no_ce.logs
    assert logs["loss"][0] == pytest.approx(4 * logs["guide"][0] + logs["recon"][0] + logs["distr"][0], rel=1e-4)
    assert logs0["loss"][0] == pytest.approx(4 * logs0["guide"][0] + logs0["recon"][0], rel=1e-4)
    assert logs0["distr"][0] > 0  # still logged, just not weighted


@pytest.mark.parametrize("scale", [3, 6, 1, 0, 2.0, True])
def test_scale_must_be_a_power_of_two(scale):
    with pytest.raises((ValueError, TypeError), match="power of two"):
        irn.IRN(scale)


def test_bad_images_are_refused_with_clear_messages():
    model = irn.IRN(4, blocks=1, growth=4)
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        irn.downscale(model, rand_img(3, 18, 16))
    with pytest.raises(ValueError, match="3 channels"):
        irn.downscale(model, rand_img(1, 16, 16))
    with pytest.raises(ValueError, match="3 channels"):
        irn.upscale(model, rand_img(4, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        irn.downscale(model, torch.zeros(3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="non-finite"):
        irn.downscale(model, torch.full((3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        irn.downscale(model, rand_img(16, 16))
    with pytest.raises(ValueError, match="temperature"):
        irn.upscale(model, rand_img(3, 4, 4), temperature=-1.0)
    with pytest.raises(ValueError, match="not divisible"):
        irn.irn_loss(model, rand_img(1, 3, 20, 18))


def test_checkpoint_loads_weights_only_and_refuses_another_scale(tmp_path):
    cfg = irn.train_config("test", steps=2)
    ck2, ck4 = tmp_path / "x2.pt", tmp_path / "x4.pt"
    m2, _ = irn.train(2, cfg, checkpoint=ck2, device="cpu", progress=False)
    irn.train(4, irn.train_config("test", scale=4, steps=2), checkpoint=ck4, device="cpu", progress=False)
    state = torch.load(ck2, map_location="cpu", weights_only=True)
    assert state["tag"] == "irn-x2" and state["step"] == 2
    loaded = irn.load_irn(ck2, scale=2)
    assert loaded.blocks == (cfg.blocks,) and loaded.growth == cfg.growth
    for a, b in zip(m2.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="irn-x4"):
        irn.load_irn(ck4, scale=2)
    with pytest.raises(ValueError, match="irn-x4"):
        training.load_weights(irn.IRN(2, cfg.blocks, cfg.growth), ck4, tag="irn-x2")
    slim = irn.export_weights(ck2, tmp_path / "slim.pt")
    assert slim.stat().st_size < ck2.stat().st_size
    assert torch.equal(irn.load_irn(slim).flow[1].phi.out.weight, m2.flow[1].phi.out.weight)


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_checkpoints_load(scale):
    model = irn.load_irn(scale, scale=scale)
    assert model.scale == scale and not model.training
    x = rand_img(1, 3, 32, 32)
    with torch.no_grad():
        lr, z = model.encode(x)
        assert torch.allclose(model.decode(lr, z), x, atol=1e-4)


def test_command_line_trains_and_resumes_when_run_again(tmp_path, capsys):
    out = tmp_path / "run.pt"
    args = ["train", "--scale", "2", "--profile", "test", "--out", str(out), "--device", "cpu"]
    assert irn.main(args + ["--steps", "2"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert irn.main(args + ["--steps", "3"]) == 0
    assert f"resuming from {out}" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["step"] == 3
    with pytest.raises(ValueError, match="x4"):  # another model's checkpoint is never overwritten
        irn.main(["train", "--scale", "4", "--profile", "test", "--out", str(out), "--device", "cpu", "--steps", "4"])
    assert torch.load(out, weights_only=True)["step"] == 3
    tuned = tmp_path / "tuned.pt"  # fine-tuning starts from the weights of another run
    assert irn.main(["train", "--scale", "2", "--profile", "test", "--out", str(tuned), "--device", "cpu",
                     "--steps", "1", "--lr", "1e-12", "--init", str(out)]) == 0
    before, after = irn.load_irn(out).state_dict(), irn.load_irn(tuned).state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert irn.main(["evaluate", "--checkpoint", str(out), "--crop", "48"]) == 0
    printed = capsys.readouterr().out
    assert "astronaut" in printed and "mean" in printed
    assert "irn-x2" in printed and "LR vs bic" in printed  # the shared evaluate command and table


def undecided_discriminator() -> torch.nn.Module:
    """A discriminator whose logits are all 0, i.e. D(x) = 1/2 for every image."""
    conv = torch.nn.Conv2d(3, 1, 3)
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    return conv


def test_irn_plus_loss_adds_a_gan_term_with_the_official_weights():
    model = irn.IRN(2, blocks=1, growth=4)
    zero_logits = undecided_discriminator()
    x = rand_img(2, 3, 16, 16)
    loss, logs, x_rec = irn.irn_plus_loss(model, x, zero_logits, generator=torch.Generator().manual_seed(0))
    assert x_rec.shape == x.shape
    assert logs["gan"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)  # D(x) = 1/2
    assert loss.item() == pytest.approx(4 * logs["guide"] + 0.01 * logs["recon"] + logs["gan"], rel=1e-5)


def test_same_seed_same_run_other_seed_other_run():
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]
    cfg = irn.train_config("test", steps=2, patch=32, batch=2)
    runs = []
    for run, seed in enumerate((3, 3, 4)):
        torch.manual_seed(1000 + run)  # whatever the global random state, the seed decides
        runs.append(irn.train(2, cfg, seed=seed, device="cpu", progress=False, images=images)[0])
    weights = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in runs]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_irn_plus_loss_adds_the_feature_term_when_given():
    model = irn.IRN(2, blocks=1, growth=4)
    zero_logits = undecided_discriminator()
    x = rand_img(2, 3, 16, 16)
    constant = lambda sr, hr: torch.tensor(5.0)  # noqa: E731 - a stand-in feature loss
    loss, logs, _ = irn.irn_plus_loss(model, x, zero_logits, perceptual=constant,
                                      generator=torch.Generator().manual_seed(0))
    assert logs["feature"] == 5.0
    assert loss.item() == pytest.approx(4 * logs["guide"] + 0.01 * logs["recon"] + logs["gan"] + 0.05, rel=1e-5)


def test_irn_plus_fine_tuning_trains_the_discriminator_first_and_resumes(tmp_path):
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]
    cfg = irn.train_config("test", steps=2, patch=32, batch=2)
    model, _ = irn.train(2, cfg, device="cpu", progress=False, images=images)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "plus.pt"
    _, history = irn.train_plus(model, cfg, checkpoint=path, device="cpu", d_init_steps=2, progress=False,
                                images=images)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # only D learned
    for key in ("guide", "recon", "gan", "feature", "d_loss"):
        assert key in history.logs and all(math.isfinite(v) for v in history.logs[key])
    state = torch.load(path, weights_only=True)
    assert set(state["modules"]) == {"model", "discriminator"} and state["tag"] == "irn-x2"
    longer = irn.train_config("test", steps=3, patch=32, batch=2)
    _, history = irn.train_plus(model, longer, checkpoint=path, device="cpu", d_init_steps=2, progress=False,
                                images=images)
    assert history.steps[-1] == 3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # step 3 moved IRN
    assert irn.load_irn(path).scale == 2  # the IRN+ checkpoint still loads as an IRN


def test_command_line_irn_plus_needs_a_trained_irn(tmp_path):
    with pytest.raises(SystemExit, match="--init"):
        irn.main(["train", "--scale", "2", "--profile", "test", "--variant", "plus", "--device", "cpu",
                  "--out", str(tmp_path / "plus.pt")])


def test_training_patches_keep_lr_patches_of_16_pixels():
    assert irn.train_config("cpu", scale=2).patch == 32
    assert irn.train_config("cpu", scale=4).patch == 64
    assert irn.train_config("cpu", scale=4, patch=96).patch == 96
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))]
    with pytest.warns(UserWarning, match="LR patches of 8 px"):
        irn.train(4, irn.train_config("test", steps=1, patch=32, batch=1), device="cpu", progress=False,
                  images=images)


def test_checkpoints_store_the_constructor_arguments_and_load_from_them(tmp_path):
    """The checkpoint's model_config rebuilds the model, even what the weights cannot tell (the clamp)."""
    path = tmp_path / "x4.pt"
    model = irn.IRN(4, blocks=[1, 2], growth=4, clamp=0.5)
    cfg = irn.train_config("test", scale=4, steps=1, patch=64, batch=1)
    images = [rand_img(3, 64, 64)]
    irn.train(4, cfg, checkpoint=path, device="cpu", progress=False, model=model, images=images)
    state = torch.load(path, weights_only=True)
    assert state["model_config"] == {"scale": 4, "blocks": [1, 2], "growth": 4, "clamp": 0.5} == model.config()
    assert irn.IRN(**model.config()).extra_repr() == model.extra_repr()
    loaded = irn.load_irn(path, scale=4)
    assert loaded.config() == model.config()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    slim = irn.export_weights(path, tmp_path / "slim.pt")  # the weights-only copy keeps it
    assert torch.load(slim, weights_only=True)["model_config"] == model.config()


def test_checkpoints_without_a_config_load_through_the_explicit_legacy_fallback(tmp_path):
    # older checkpoints have no model_config: the architecture then comes from the tag and the
    # weights, and for the shipped weights it is the one their loader builds
    for scale in (2, 4):
        state = training.load_checkpoint(irn.pretrained_path(scale))
        legacy = irn.legacy_config(state["tag"], state["modules"]["model"])
        assert legacy == irn.model_config(state) == irn.load_irn(scale).config()
        assert legacy["scale"] == scale and legacy["clamp"] == 1.0 and len(legacy["blocks"]) == scale // 2
    # a new checkpoint with its model_config removed loads the same way
    path = tmp_path / "new.pt"
    model, _ = irn.train(2, irn.train_config("test", steps=1), checkpoint=path, device="cpu", progress=False,
                         images=[rand_img(3, 40, 40)])
    state = torch.load(path, weights_only=True)
    del state["model_config"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    loaded = irn.load_irn(old)
    assert loaded.config() == model.config()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="not an IRN"):
        irn.legacy_config("hcflow-sr-x4", state["modules"]["model"])
    with pytest.raises(ValueError, match="do not look like an IRN"):
        irn.legacy_config("irn-x2", {"flow.layers.0.weight": torch.zeros(1)})


def test_training_configurations_are_named_apart_from_the_run_profiles():
    from course_lib import config

    assert tuple(irn.TRAIN_CONFIGS) == config.PROFILES
    assert all(isinstance(c, irn.TrainConfig) for c in irn.TRAIN_CONFIGS.values())
    assert not hasattr(irn, "PROFILES")
    assert irn.train_config("gpu") == irn.TRAIN_CONFIGS["gpu"]


def test_the_package_keeps_the_names_of_the_old_module():
    import importlib

    model, losses, train = (importlib.import_module(f"course_lib.irn.{m}") for m in ("model", "losses", "train"))
    assert irn.IRN is model.IRN and irn.irn_loss is losses.irn_loss
    assert irn.train is train.train and irn.load_irn is train.load_irn  # irn.train is the function, as before
    for name in irn.__all__:
        assert hasattr(irn, name), name


def _png_folder(path, n=3, size=(72, 88)):
    from course_lib.data.photos import save_png

    path.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        save_png(torch.rand(3, *size, generator=torch.Generator().manual_seed(k)), path / f"p{k}.png")
    return path


def test_command_line_trains_on_a_folder_and_evaluates_on_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))  # the decoded copies go there
    images = _png_folder(tmp_path / "train")
    held_out = _png_folder(tmp_path / "eval", n=2, size=(48, 40))
    out = tmp_path / "run.pt"
    assert irn.main(["train", "--scale", "2", "--profile", "test", "--out", str(out), "--device", "cpu",
                     "--steps", "2", "--data", str(images), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"3 images of {images}" in printed and "done: 2 steps" in printed
    assert irn.main(["evaluate", "--checkpoint", str(out), "--eval", str(held_out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"{held_out} (2 images" in printed and "p0" in printed and "p1" in printed and "astronaut" not in printed
    with pytest.raises(ValueError, match="evaluation set"):
        irn.main(["train", "--scale", "2", "--profile", "test", "--out", str(tmp_path / "x.pt"), "--device", "cpu",
                  "--data", "set5"])


def test_training_on_a_folder_resumes_exactly_with_loader_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    images = _png_folder(tmp_path / "train")
    cfg = irn.train_config("test", steps=4, patch=32, batch=2, milestones=())  # no lr step: 2 + 2 steps = 4 steps
    whole, _ = irn.train(2, cfg, data=str(images), device="cpu", progress=False, workers=1)
    ckpt = tmp_path / "run.pt"
    irn.train(2, irn.train_config("test", steps=2, patch=32, batch=2, milestones=()), data=str(images),
              device="cpu", progress=False, checkpoint=ckpt, workers=0)
    resumed, _ = irn.train(2, cfg, data=str(images), device="cpu", progress=False, checkpoint=ckpt, workers=1)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_time_limit_stops_the_run_and_a_second_call_goes_on(tmp_path, capsys):
    cfg = irn.train_config("test", steps=3)
    ckpt = tmp_path / "run.pt"
    _, history = irn.train(2, cfg, checkpoint=ckpt, device="cpu", progress=False, max_seconds=1e-9)
    assert torch.load(ckpt, weights_only=True)["step"] == 1 and "stopped at the time limit" in capsys.readouterr().out
    _, history = irn.train(2, cfg, checkpoint=ckpt, device="cpu", progress=False, max_seconds=600)
    assert history.steps[-1] == 3



def test_training_steps_train_on_this_process_share_of_the_batch(monkeypatch):
    """Under torchrun each process must train on its shard of the global batch (training.shard_batch).
    Rank 0 of 2 is simulated by a shard function that keeps the first half; the loss records what it sees."""
    import importlib

    irn_train = importlib.import_module("course_lib.irn.train")  # the module (irn.train is the function)
    real_shard, real_loss = training.shard_batch, irn_train.irn_loss
    seen = []
    monkeypatch.setattr(training, "shard_batch", lambda batch: real_shard(batch, rank=0, world_size=2))
    monkeypatch.setattr(irn_train, "irn_loss", lambda model, hr, *a, **k: (seen.append(hr.shape[0]),
                                                                          real_loss(model, hr, *a, **k))[1])
    cfg = irn.train_config("test", scale=2, steps=2, batch=4)
    irn.train(2, cfg, progress=False, device="cpu")
    assert seen == [2, 2]

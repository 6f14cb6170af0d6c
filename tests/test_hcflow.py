"""Tests of course_lib.hcflow: invertibility, log-determinants against autograd, the Dirac LR term,
the coarse-to-fine hierarchy, sampling, input checks and checkpoint tags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib import training
from course_lib.flows import autograd_logdet, check_invertible
from course_lib.hcflow import (
    LR_LOG_SIGMA,
    HCFlow,
    SRLossWeights,
    dequantize,
    dequantized_nll_bits_per_dim,
    dirac_lr_log_prob,
    downscale,
    evaluate,
    load_hcflow,
    log_likelihood,
    nll_parts_bits_per_dim,
    quantize,
    reference_lr,
    rescaling_loss,
    sample,
    sr_loss,
    train,
    train_config,
    upscale,
)
from course_lib.hcflow.__main__ import main as cli_main
from course_lib.losses import gan_critics

TINY = dict(flow_steps=2, cond_steps=1, hidden=4, cond_hidden=4, rrdb_blocks=(1, 0), nf=4, gc=4)


def tiny_model(mode: str = "sr", *, hierarchical: bool = True, dtype=torch.float64, seed: int = 0) -> HCFlow:
    """A tiny HCFlow with every parameter perturbed, so no layer is the identity (zero-initialised
    last convs would otherwise make couplings and Gaussians trivial)."""
    torch.manual_seed(seed)
    model = HCFlow(4, mode, hierarchical=hierarchical, **TINY).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("mode", ["sr", "rescale"])
@pytest.mark.parametrize("hierarchical", [True, False])
def test_whole_model_is_invertible(mode, hierarchical):
    model = tiny_model(mode, hierarchical=hierarchical)
    x = torch.rand(2, 3, 16, 8, dtype=torch.float64)  # non-square on purpose
    z, logdet = model(x)
    assert z.shape == (2, 48, 4, 2) and logdet.shape == (2,)
    assert torch.allclose(model.inverse(z), x, atol=1e-10)
    lr, zz = model.encode(x)
    assert torch.allclose(model.decode(lr, zz), x, atol=1e-10)


@pytest.mark.parametrize("mode", ["sr", "rescale"])
def test_logdet_matches_autograd(mode):
    model = tiny_model(mode)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    _, logdet = model(x)
    reference = autograd_logdet(lambda v: model(v)[0], x)
    assert torch.allclose(logdet, reference, atol=1e-8), (logdet, reference)
    assert logdet.abs().min() > 1.0  # a non-trivial Jacobian was checked


@pytest.mark.parametrize("mode", ["sr", "rescale"])
def test_conditional_layers_logdet_and_inverse(mode):
    model = tiny_model(mode)
    for level in range(model.n_levels):
        a = torch.randn(1, model.off[level], 2, 2, dtype=torch.float64)
        feat = torch.randn(1, model.feat_channels, 2, 2, dtype=torch.float64)
        for layer in (model.cond_flows[level], model.priors[level]):
            errors = check_invertible(layer, a, feat)
            assert errors["reconstruction"] < 1e-10 and errors["logdet"] < 1e-8, errors


def test_dirac_lr_term_matches_scipy():
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    ref = (lr + 0.003 * torch.randn_like(lr)).clamp(0, 1)
    ours = dirac_lr_log_prob(lr, ref)
    sigma = math.exp(-6.0)
    expected = stats.norm.logpdf(ref.numpy(), loc=lr.numpy(), scale=sigma).reshape(2, -1).sum(1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)
    # its maximum is reached at lr == ref: -D (log sigma + log(2 pi) / 2)
    best = dirac_lr_log_prob(lr, lr)
    np.testing.assert_allclose(best.numpy(), -60 * (-6.0 + 0.5 * math.log(2 * math.pi)), rtol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        dirac_lr_log_prob(lr, ref[..., :4])


def test_log_likelihood_is_change_of_variables():
    """log p(x|y) = log N(z; 0, I) + log N(y; LR(x), e^-12) + log|det J| - D log quant, every part
    computed independently (scipy densities, autograd Jacobian)."""
    model = tiny_model("sr")
    hr = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    lr_ref = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    ours = log_likelihood(model, hr, lr_ref, quant=64, quantize_lr=False,
                          generator=torch.Generator().manual_seed(5))
    u = torch.rand(hr.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = hr + u / 64
    out = model(y)[0]
    lr_out, z = out[:, :3], out[:, 3:]
    expected = (stats.norm.logpdf(z.detach().numpy()).sum()
                + stats.norm.logpdf(lr_ref.numpy(), loc=lr_out.detach().numpy(), scale=math.exp(-6)).sum()
                + float(autograd_logdet(lambda v: model(v)[0], y)[0]) - 192 * math.log(64))
    assert float(ours[0].detach()) == pytest.approx(expected, rel=1e-10)


def test_hierarchy_coarse_to_fine():
    """The Gaussian of level l depends on the LR and the coarser latents only."""
    model = tiny_model("sr")
    lr = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    z = torch.randn(1, model.z_channels, 2, 2, dtype=torch.float64)
    base = model.prior_parameters(lr, z)
    eps = model.latents(z)
    fine_changed = model.pack([eps[0] + 1.0, eps[1]])      # perturb the finest latent (level 0)
    coarse_changed = model.pack([eps[0], eps[1] + 1.0])    # perturb the coarsest latent (level 1)
    after_fine = model.prior_parameters(lr, fine_changed)
    after_coarse = model.prior_parameters(lr, coarse_changed)
    for level in range(2):  # nothing depends on the finest latent
        assert all(torch.equal(p, q) for p, q in zip(base[level], after_fine[level]))
    assert all(torch.equal(p, q) for p, q in zip(base[1], after_coarse[1]))  # level 1 sees only the LR
    assert not torch.allclose(base[0][0], after_coarse[0][0])  # level 0 sees level 1's latent

    flat = tiny_model("sr", hierarchical=False)
    base = flat.prior_parameters(lr, z)
    after = flat.prior_parameters(lr, coarse_changed)
    assert torch.equal(base[0][0], after[0][0])  # the ablation: level 0 sees the LR only


def test_pack_and_latents_are_inverse():
    model = tiny_model("sr")
    z = torch.randn(2, 45, 3, 5, dtype=torch.float64)
    eps = model.latents(z)
    assert [tuple(e.shape) for e in eps] == [(2, 6, 6, 10), (2, 21, 3, 5)]
    assert torch.equal(model.pack(eps), z)


@pytest.mark.parametrize("mode", ["sr", "rescale"])
def test_sampling_shapes_and_temperature(mode):
    model = tiny_model(mode, dtype=torch.float32)
    lr = torch.rand(3, 5, 4)
    a = upscale(model, lr, 0.0, generator=torch.Generator().manual_seed(1))
    b = upscale(model, lr, 0.0, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 20, 16) and torch.equal(a, b)  # temperature 0 is deterministic
    many = sample(model, lr, 3, 0.9, generator=torch.Generator().manual_seed(0))
    assert many.shape == (3, 3, 20, 16) and float(many.min()) >= 0 and float(many.max()) <= 1
    assert not torch.allclose(many[0], many[1])
    hr = torch.rand(2, 3, 16, 12)
    small = downscale(model, hr)
    assert small.shape == (2, 3, 4, 3)
    assert torch.allclose(small * 255, torch.round(small * 255), atol=1e-4)  # 8-bit levels


def test_bad_inputs_give_clear_errors():
    model = tiny_model("sr", dtype=torch.float32)
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        downscale(model, torch.rand(3, 18, 16))
    with pytest.raises(ValueError, match="3 channels"):
        downscale(model, torch.rand(1, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        upscale(model, torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="non-finite"):
        upscale(model, torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="temperature"):
        upscale(model, torch.rand(3, 4, 4), -0.5)
    with pytest.raises(ValueError, match="power of two"):
        HCFlow(3)
    with pytest.raises(ValueError, match="mode"):
        HCFlow(4, "denoise")
    with pytest.raises(TypeError, match="unknown HCFlow size"):
        HCFlow(4, "sr", depth=3)
    with pytest.raises(ValueError, match="one LR image"):
        sample(model, torch.rand(2, 3, 4, 4), 2)


def test_losses_are_finite_and_differentiable():
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 16, 16)
    for mode, loss_fn in (("sr", sr_loss), ("rescale", rescaling_loss)):
        model = HCFlow(4, mode, **TINY).train()
        loss, logs = loss_fn(model, hr)
        loss.backward()
        assert math.isfinite(loss.item()) and logs
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    # the rescaling 'z' term is the mean square of the packed latent
    model = HCFlow(4, "rescale", **TINY).eval()
    _, logs = rescaling_loss(model, hr)
    with torch.no_grad():
        _, z = model.encode(hr)
    assert logs["z"] == pytest.approx(float((z**2).mean()), rel=1e-5)


def test_checkpoint_roundtrip_and_tag_refusal(tmp_path):
    cfg = train_config("sr", "test", steps=2)
    path = tmp_path / "sr.pt"
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]  # no photo decoding
    model, history = train("sr", 4, cfg, checkpoint=path, progress=False, images=images)
    assert history.steps[-1] == 2
    loaded = load_hcflow(path, mode="sr", scale=4)
    lr = torch.rand(1, 3, 4, 4)
    assert torch.equal(upscale(model, lr, 0.0), upscale(loaded, lr, 0.0))
    with pytest.raises(ValueError, match="hcflow-sr-x4.*not 'hcflow-rescale-x4'"):
        load_hcflow(path, mode="rescale", scale=4)
    with pytest.raises(ValueError, match="not 'hcflow-sr-x8'"):
        training.load_weights(HCFlow(8, "sr", **TINY), path, tag="hcflow-sr-x8")
    state = torch.load(path, weights_only=True)  # loads without pickled code
    assert state["tag"] == "hcflow-sr-x4"


def test_command_line_and_evaluate(tmp_path, capsys):
    out = tmp_path / "rs.pt"
    assert cli_main(["train", "--mode", "rescale", "--profile", "test", "--out", str(out),
                     "--steps", "2", "--no-progress", "--weights", str(tmp_path / "w.pt")]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    model = load_hcflow(tmp_path / "w.pt")
    assert model.tag == "hcflow-rescale-x4"
    res = evaluate(model, [torch.rand(3, 96, 100)], draws=1)
    assert res["rows"][0]["image"] == "image0" and math.isfinite(res["hr_psnr"])
    assert "lr_vs_bicubic_psnr" in res and "lr_psnr" not in res  # rescaling: the LR against the bicubic LR
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "w.pt"), "--crop", "96", "--nll"]) == 0
    printed = capsys.readouterr().out
    assert "hcflow-rescale-x4" in printed and "LR vs bic" in printed and "no likelihood" in printed


def test_level_terms_add_up_to_the_density():
    model = tiny_model("sr")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    terms = model.level_terms(x)
    out, logdet = model(x)
    total = terms["main flow"] + terms["level 1"] + terms["level 2"]
    expected = logdet + torch.from_numpy(stats.norm.logpdf(out[:, 3:].detach().numpy()).reshape(2, -1).sum(1))
    assert torch.allclose(total, expected, atol=1e-9)
    assert torch.equal(terms["lr"], out[:, :3])


def test_sr_images_are_decoded_without_the_dequantisation_offset():
    sr, rescale = tiny_model("sr"), tiny_model("rescale")
    assert sr.data_offset == 0.5 / 64 and rescale.data_offset == 0.0
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    lr, z = sr.encode(x)
    out, _ = sr(x + 0.5 / 64)  # the flow sees dequantised images, whose mean offset is 1/(2 quant)
    assert torch.allclose(torch.cat([lr, z], 1), out, atol=1e-12)
    assert torch.allclose(sr.decode(lr, z), x, atol=1e-10)  # still the exact inverse of encode
    assert torch.allclose(sr.decode(lr, z), sr.inverse(out) - 0.5 / 64, atol=1e-12)
    # so the flow's own downscaler returns the input from a decoded sample: F_y(decode(y, z) + offset) = y
    y = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    sample = sr.decode(y, sr.sample_z(y, 0.9, torch.Generator().manual_seed(0)))
    assert torch.allclose(sr.encode(sample)[0], y, atol=1e-10)
    lr_r, z_r = rescale.encode(x)
    assert torch.allclose(torch.cat([lr_r, z_r], 1), rescale(x)[0], atol=1e-12)


def test_nll_parts_add_up_to_the_nll_and_hr_given_lr_leaves_out_the_lr_term():
    model = tiny_model("sr")
    hr = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    parts = nll_parts_bits_per_dim(model, hr, generator=torch.Generator().manual_seed(5))
    total = dequantized_nll_bits_per_dim(model, hr, generator=torch.Generator().manual_seed(5))
    assert set(parts) == {"main flow", "level 1", "level 2", "dequantization", "hr given lr", "lr"}
    assert torch.allclose(parts["hr given lr"] + parts["lr"], total, atol=1e-9)
    bands = parts["main flow"] + parts["level 1"] + parts["level 2"] + parts["dequantization"]
    assert torch.allclose(parts["hr given lr"], bands, atol=1e-12)
    assert torch.allclose(parts["dequantization"], torch.full((2,), 6.0, dtype=torch.float64))  # log2 64
    # the LR term alone, by hand: -log N(y*; Q(F_y(x)), e^-12 I) in bits per HR dimension
    x_deq, _ = dequantize(hr, 64, torch.Generator().manual_seed(5))
    lr_out = quantize(model(x_deq)[0][:, :3])
    ref = reference_lr(hr, 4)
    sigma = math.exp(LR_LOG_SIGMA)
    by_hand = torch.from_numpy(-stats.norm.logpdf(ref.numpy(), lr_out.detach().numpy(), sigma).reshape(2, -1).sum(1))
    assert torch.allclose(parts["lr"], by_hand / (3 * 64 * math.log(2)), rtol=1e-9)


def test_same_seed_same_run_other_seed_other_run():
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]
    cfg = train_config("rescale", "test", steps=2)
    runs = [train("rescale", 4, cfg, seed=seed, progress=False, images=images)[0] for seed in (3, 3, 4)]
    weights = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in runs]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_hcflow_plusplus_fine_tunes_with_a_discriminator_and_resumes(tmp_path):
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]
    nll_model, _ = train("sr", 4, train_config("sr", "test", steps=2), progress=False, images=images)
    cfg = train_config("sr", "test", steps=3, variant="plusplus")
    with pytest.raises(ValueError, match="fine-tuning a likelihood-trained HCFlow"):
        train("sr", 4, cfg, progress=False, images=images)
    path = tmp_path / "pp.pt"
    start = {k: v.clone() for k, v in nll_model.state_dict().items()}
    short = train_config("sr", "test", steps=2, variant="plusplus")
    model, history = train("sr", 4, short, checkpoint=path, model=nll_model, progress=False, images=images)
    for key in ("gan", "perceptual", "l1", "nll_bpd", "d_loss"):
        assert key in history.logs and all(math.isfinite(v) for v in history.logs[key])
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())
    state = torch.load(path, weights_only=True)
    assert set(state["modules"]) == {"model", "discriminator"}
    # the discriminator learns: after 2 steps its weights differ from the initial ones (seed 0)
    torch.manual_seed(0)
    _, fresh_d = gan_critics()
    assert any(not torch.equal(fresh_d.state_dict()[k], v) for k, v in state["modules"]["discriminator"].items()
               if k in fresh_d.state_dict() and v.dtype.is_floating_point)
    # resume the adversarial run from its checkpoint (no model needed) and go one step further
    resumed, history2 = train("sr", 4, cfg, checkpoint=path, progress=False, images=images)
    assert history2.steps[-1] == 3 and len(history2.logs["d_loss"]) == 3


def test_hcflow_plus_loss_is_the_weighted_sum_of_nll_and_l1_at_temperature_0():
    torch.manual_seed(0)
    model = HCFlow(4, "sr", **TINY).eval()
    hr = torch.rand(2, 3, 16, 16)
    total, logs = sr_loss(model, hr, SRLossWeights.paper("plus"), generator=torch.Generator().manual_seed(1))
    lr = reference_lr(hr, 4)
    with torch.no_grad():
        sr0 = model.decode(lr, torch.zeros(2, model.z_channels, 4, 4))
    bpd = dequantized_nll_bits_per_dim(model, hr, lr, generator=torch.Generator().manual_seed(1)).mean()
    assert logs["l1"] == pytest.approx(float((sr0 - hr).abs().mean()), rel=1e-5)
    assert total.item() == pytest.approx(2e-3 * bpd.item() + float((sr0 - hr).abs().mean()), rel=1e-5)


def test_sr_evaluation_reports_the_lr_consistency_and_the_dequantized_nll():
    model = tiny_model("sr", dtype=torch.float32)
    images = [torch.rand(3, 32, 24, generator=torch.Generator().manual_seed(0))]
    res = evaluate(model, images, nll=dequantized_nll_bits_per_dim, seed=3)
    assert "lr_psnr" in res and "lr_vs_bicubic_psnr" not in res and "lr_vs_bicubic_ssim" not in res
    assert res["temperature"] == 0.9 and res["mode"] == "sr" and res["model"] == "HCFlow"
    # the NLL is drawn after the samples from the same seeded generator: recompute it independently
    gen = torch.Generator().manual_seed(3)
    hr, lr = images[0][None], reference_lr(images[0][None], 4)
    with torch.no_grad():
        upscale(model, lr, 0.9, generator=gen)
        expected = float(dequantized_nll_bits_per_dim(model, hr, lr, generator=gen).mean())
    assert res["nll_bpd"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(TypeError, match="dequantized_nll_bits_per_dim"):
        evaluate(model, images, nll=True)
    with pytest.raises(ValueError, match="SR models only"):
        evaluate(tiny_model("rescale", dtype=torch.float32), images, nll=dequantized_nll_bits_per_dim)


def test_checkpoints_store_the_constructor_arguments_and_load_from_them(tmp_path):
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]
    cfg = train_config("rescale", "test", steps=1, hierarchical=False)
    path = tmp_path / "rs.pt"
    model, _ = train("rescale", 4, cfg, checkpoint=path, progress=False, images=images)
    state = torch.load(path, weights_only=True)
    assert state["model_config"] == model.config()
    assert state["model_config"]["hierarchical"] is False and state["model_config"]["rrdb_blocks"] == [1, 0]
    assert "arch_code" not in state["modules"]["model"]  # the sizes live in model_config only
    assert HCFlow(**model.config()).extra_repr() == model.extra_repr()
    loaded = load_hcflow(path, mode="rescale", scale=4)
    assert loaded.config() == model.config()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_checkpoints_without_a_config_load_through_the_explicit_legacy_fallback(tmp_path):
    from course_lib.hcflow import legacy_config, model_config, pretrained_path

    # the shipped rescaling checkpoint predates model_config: its weights carry the sizes as an arch_code buffer
    state = training.load_checkpoint(pretrained_path("rescale"))
    assert "model_config" not in state and "arch_code" in state["modules"]["model"]
    legacy = legacy_config(state["modules"]["model"])
    assert legacy == model_config(state) and legacy["mode"] == "rescale" and legacy["scale"] == 4
    assert load_hcflow("rescale").config() == legacy
    # the shipped SR checkpoint (run 3) stores model_config, and no arch_code
    state = training.load_checkpoint(pretrained_path("sr"))
    assert "arch_code" not in state["modules"]["model"] and load_hcflow("sr").config() == model_config(state)
    # a checkpoint written the old way (arch_code in the weights, no model_config) loads the same way
    model = tiny_model("sr", hierarchical=False, dtype=torch.float32)
    old_code = torch.tensor([4, 0, 0, 2, 1, 4, 4, 1, 0, 4, 4])  # scale, mode index, hierarchical, sizes
    state = {"format": training.CHECKPOINT_FORMAT, "tag": model.tag, "step": 0,
             "modules": {"model": {**model.state_dict(), "arch_code": old_code}}}
    path = tmp_path / "old.pt"
    torch.save(state, path)
    loaded = load_hcflow(path)
    assert loaded.config() == model.config()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="neither a model_config nor"):
        legacy_config({})
    with pytest.raises(ValueError, match="architecture code"):
        legacy_config({"arch_code": torch.tensor([4, 5])})


def test_training_configurations_are_named_apart_from_the_run_profiles():
    from course_lib import config, hcflow

    for mode in ("sr", "rescale"):
        assert tuple(hcflow.TRAIN_CONFIGS[mode]) == config.PROFILES
    assert not hasattr(hcflow, "PROFILES") and not hasattr(hcflow, "nll_bits_per_dim")


def test_command_line_trains_on_a_folder_and_evaluates_on_one(tmp_path, capsys, monkeypatch):
    from course_lib.data.photos import save_png

    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    for folder, n in (("train", 2), ("eval", 1)):
        (tmp_path / folder).mkdir()
        for k in range(n):
            save_png(torch.rand(3, 64, 72, generator=torch.Generator().manual_seed(k)), tmp_path / folder / f"i{k}.png")
    out = tmp_path / "sr.pt"
    assert cli_main(["train", "--mode", "sr", "--profile", "test", "--out", str(out), "--steps", "2",
                     "--no-progress", "--data", str(tmp_path / "train"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "2 images of" in printed and "done: 2 steps" in printed
    assert cli_main(["evaluate", "--checkpoint", str(out), "--eval", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "(1 images" in printed and "i0" in printed and "LR consist" in printed


def test_hierarchy_ablation_variants_share_all_but_the_finest_conditioning_and_train_only_it(tmp_path):
    from course_lib.hcflow import ablation

    base = HCFlow(4, "sr", flow_steps=1, cond_steps=1, hidden=8, cond_hidden=8, rrdb_blocks=(1, 0), nf=8, gc=4)
    with pytest.raises(ValueError, match="untrained"):
        ablation.conditioning_variants(base)
    base.train()
    base(torch.rand(2, 3, 16, 16))  # one forward pass in training mode initialises the ActNorms
    variants = ablation.conditioning_variants(base, seed=3)
    hier, flat = variants["hierarchical"], variants["flat (LR only)"]
    assert hier.hierarchical and not flat.hierarchical
    base_state = base.state_dict()
    for model in (hier, flat):
        for name, p in model.named_parameters():
            finest = name.startswith(("cond_nets.0.", "cond_flows.0.", "priors.0."))
            assert p.requires_grad == finest, name
            if not finest:
                assert torch.equal(p, base_state[name]), name  # shared: the bijection and the coarser level
    h, f = hier.state_dict(), flat.state_dict()
    differ = sorted(k for k in h if h[k].shape != f[k].shape)
    assert differ and all(k.startswith("cond_nets.0.") for k in differ)  # only the finest extractor's input
    assert all(torch.equal(h[k], f[k]) for k in h if k not in differ)
    # the finest band's conditional parts start afresh (not base's)
    assert any(not torch.equal(p, q) for p, q in zip(hier.priors[0].parameters(), base.priors[0].parameters())) or \
        any(not torch.equal(p, q) for p, q in zip(hier.cond_flows[0].parameters(), base.cond_flows[0].parameters()))

    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))]
    cfg = train_config("sr", "test", steps=2, patch=16, batch=2)
    trained = ablation.train_variants(base, cfg, (0, 1), progress=False, runs=tmp_path / "runs")
    assert sorted(trained) == [("flat (LR only)", 0), ("flat (LR only)", 1), ("hierarchical", 0), ("hierarchical", 1)]
    model = trained["hierarchical", 0]
    assert all(torch.equal(v, base_state[k]) for k, v in model.state_dict().items()
               if not k.startswith(("cond_nets.0.", "cond_flows.0.", "priors.0.")))
    fresh = ablation.conditioning_variants(base, seed=0)["hierarchical"]
    assert any(not torch.equal(p, q) for p, q in zip(model.cond_nets[0].parameters(), fresh.cond_nets[0].parameters()))
    path = ablation.save_variants(tmp_path / "ab.pt", trained, "base.pt", cfg)
    loaded, cfg_dict = ablation.load_variants(path)
    assert cfg_dict["steps"] == 2 and sorted(loaded) == sorted(trained)
    for key, m in trained.items():  # stored in float16
        assert all(torch.allclose(a.float(), b, rtol=1e-3, atol=1e-4) if a.is_floating_point() else torch.equal(a, b)
                   for a, b in zip(m.state_dict().values(), loaded[key].state_dict().values()))
    x = images[0][:, :32, :32]
    bits = ablation.band_bits(loaded["flat (LR only)", 1], [x])
    with torch.no_grad():
        expected = nll_parts_bits_per_dim(trained["flat (LR only)", 1], x[None],
                                          generator=torch.Generator().manual_seed(0))
        other = nll_parts_bits_per_dim(trained["hierarchical", 1], x[None], generator=torch.Generator().manual_seed(0))
    assert bits["hr given lr"] == pytest.approx(float(expected["hr given lr"]), abs=1e-3)
    # everything but the finest band is shared, so the two NLLs differ by the bits of a_1 only
    for part in ("lr", "main flow", "level 2", "dequantization"):
        assert torch.allclose(expected[part], other[part], atol=1e-6), part
    with pytest.raises(ValueError, match="not a hierarchy-ablation file"):
        torch.save({"format": "other"}, tmp_path / "bad.pt")
        ablation.load_variants(tmp_path / "bad.pt")


def test_paired_difference_matches_scipy():
    from course_lib.hcflow.ablation import paired_difference

    a, b = [3.1, 2.9, 3.4, 3.0], [3.3, 3.0, 3.45, 3.2]
    mean, se = paired_difference(a, b)
    t = stats.ttest_rel(a, b).statistic
    assert mean == pytest.approx(np.mean(np.subtract(a, b))) and mean / se == pytest.approx(t)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0], [1.0, 2.0])


def test_ablation_compare_pairs_the_variants_by_seed_and_test_sets_are_held_out():
    from course_lib import data
    from course_lib.hcflow import ablation

    base = tiny_model("sr", dtype=torch.float32).train()
    base(torch.rand(2, 3, 16, 16))  # initialise the ActNorms
    runs = {(name, seed): model.eval() for seed in (0, 1)
            for name, model in ablation.conditioning_variants(base, seed=seed).items()}
    images = [torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    bits, effects = ablation.compare(runs, images, ("level 1", "hr given lr"))
    for part in ("level 1", "hr given lr"):
        expected = ablation.paired_difference([bits["hierarchical", s][part] for s in (0, 1)],
                                              [bits["flat (LR only)", s][part] for s in (0, 1)])
        assert effects[part] == pytest.approx(expected)
    assert bits["hierarchical", 0] == ablation.band_bits(runs["hierarchical", 0], images)
    sets = ablation.test_sets(32, leaves=2, leaf_size=16)
    assert [tuple(x.shape) for x in sets["held-out photos"]] == [(3, 32, 32)] * len(data.EVAL_PHOTOS)
    assert [tuple(x.shape) for x in sets["dead leaves"]] == [(3, 16, 16)] * 2
    assert not torch.equal(*sets["dead leaves"])


def test_given_noise_replaces_the_drawn_noise_in_the_losses():
    """The training loops pass the step's noise (training.batch_noise); a loss given the numbers
    a generator would draw equals the loss that draws them, and a wrong shape is refused."""
    torch.manual_seed(0)
    model = HCFlow(4, "sr", arch=train_config("sr", "test").architecture())
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    u = torch.rand(hr.shape, generator=torch.Generator().manual_seed(5))
    drawn = sr_loss(model, hr, generator=torch.Generator().manual_seed(5))[0]
    assert sr_loss(model, hr, u=u)[0].item() == pytest.approx(drawn.item(), rel=1e-6)
    with pytest.raises(ValueError, match="shape of hr"):
        dequantize(hr, 64, u=u[:1])
    rescaler = HCFlow(4, "rescale", arch=train_config("rescale", "test").architecture())
    z = rescaler.sample_z(torch.zeros(2, 3, 4, 4), 1.0, torch.Generator().manual_seed(7))
    drawn = rescaling_loss(rescaler, hr, generator=torch.Generator().manual_seed(7))[0]
    assert rescaling_loss(rescaler, hr, z_fresh=z)[0].item() == pytest.approx(drawn.item(), rel=1e-6)

"""Tests of course_lib.rescaling (what IRN and HCFlow share) against independent references: numpy
rounding, block means and nearest-neighbour enlargement for a Haar-only rescaler, plain slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import data, evaluation, hcflow, irn, metrics, rescaling, training
from course_lib.degradation import bicubic_downscale, imresize, quantize_8bit
from course_lib.flows import HaarDownsampling
from course_lib.rescaling import (
    RescalingFlow,
    as_rgb_batch,
    center_crop,
    check_divisible,
    check_scale,
    check_temperature,
    downscale,
    evaluation_images,
    quantize,
    report_training,
    round_8bit,
    upscale,
)


class HaarRescaler(RescalingFlow):
    """The smallest rescaling flow: one Haar level (LL = 2x2 block mean, then 9 detail bands)."""

    def __init__(self):
        super().__init__()
        self.scale, self.out_channels = 2, 12
        self.haar = HaarDownsampling(3)

    def _forward(self, x, cond):
        self._check_hr(x, "HaarRescaler.forward")
        return self.haar._forward(x, None)

    def _inverse(self, z, cond):
        self._check_packed(z, "HaarRescaler.inverse")
        return self.haar._inverse(z, None)

    def config(self):
        return {}


class HaarUpscaler(HaarRescaler):
    """The same bijection used as an SR model: it upscales the given bicubic LR image."""

    mode = "sr"


def rand_img(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def block_means(x: np.ndarray) -> np.ndarray:
    """Mean of every 2x2 block of (..., H, W), by reshaping."""
    *lead, h, w = x.shape
    return x.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def test_both_models_share_one_implementation_under_their_old_names():
    for name in ("downscale", "upscale", "quantize"):
        assert getattr(irn, name) is getattr(hcflow, name) is getattr(rescaling, name)
    assert hcflow.center_crop is center_crop
    assert irn.make_batch_fn is hcflow.make_batch_fn is data.training_sampler
    assert irn.export_weights is hcflow.export_weights is training.export_weights
    assert issubclass(irn.IRN, RescalingFlow) and issubclass(hcflow.HCFlow, RescalingFlow)
    assert irn.evaluate is hcflow.evaluate is evaluation.evaluate  # one evaluation for both models
    assert irn.format_results is hcflow.format_results is evaluation.format_results


def test_encode_decode_and_z_channels_of_a_haar_rescaler():
    model = HaarRescaler()
    x = rand_img(2, 3, 6, 10)
    lr, z = model.encode(x)
    assert model.z_channels == 9 and z.shape == (2, 9, 3, 5)
    np.testing.assert_allclose(lr.numpy(), block_means(x.numpy()), atol=1e-12)
    assert torch.allclose(model.decode(lr, z), x, atol=1e-12)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 9, h, w\)"):
        model.decode(lr, z[:, :8])
    with pytest.raises(ValueError, match="expects \\(N, 3, H, W\\)"):
        model(rand_img(2, 4, 6, 10))
    with pytest.raises(ValueError, match="not divisible by the scale 2"):
        model(rand_img(1, 3, 5, 10))
    with pytest.raises(ValueError, match=r"\(N, 12, h, w\) = \[LR \| z\]"):
        model.inverse(rand_img(1, 11, 3, 5))


def test_downscale_is_the_8bit_block_mean_and_keeps_the_rank():
    model = HaarRescaler()
    x = rand_img(3, 8, 12, seed=1)
    lr = downscale(model, x)
    expected = np.round(np.clip(block_means(x.numpy()), 0, 1) * 255) / 255
    assert lr.shape == (3, 4, 6)
    np.testing.assert_array_equal(lr.numpy(), expected)
    assert torch.equal(downscale(model, x[None])[0], lr)


def test_upscale_at_temperature_zero_is_nearest_neighbour_and_z_keeps_the_block_means():
    model = HaarRescaler()
    lr = rand_img(3, 4, 5, seed=2)
    nearest = np.repeat(np.repeat(lr.numpy(), 2, axis=-2), 2, axis=-1)
    np.testing.assert_allclose(upscale(model, lr, 0.0).numpy(), nearest, atol=1e-12)
    hr = upscale(model, lr[None], 0.8, torch.Generator().manual_seed(0), clamp=False)
    assert hr.shape == (1, 3, 8, 10) and (hr[0] - torch.from_numpy(nearest)).abs().max() > 0.1  # details
    np.testing.assert_allclose(block_means(hr.numpy()), lr[None].numpy(), atol=1e-12)
    clamped = upscale(model, lr[None], 0.8, torch.Generator().manual_seed(0))
    assert torch.equal(clamped, hr.clamp(0, 1))


def test_sample_z_scales_with_the_temperature_and_follows_the_lr():
    model = HaarRescaler()
    lr = rand_img(2, 3, 4, 5, dtype=torch.float32)
    z1 = model.sample_z(lr, 1.0, torch.Generator().manual_seed(3))
    z_half = model.sample_z(lr, 0.5, torch.Generator().manual_seed(3))
    assert z1.shape == (2, 9, 4, 5) and z1.dtype == torch.float32
    assert torch.equal(z_half, 0.5 * z1)
    assert torch.equal(model.sample_z(lr, 0), torch.zeros_like(z1))
    many = model.sample_z(rand_img(1, 3, 100, 100), 2.0, torch.Generator().manual_seed(4))
    assert float(many.std()) == pytest.approx(2.0, rel=0.02)
    for bad in (-0.1, True, "1", float("nan")):
        with pytest.raises(ValueError, match="temperature must be a number >= 0"):
            model.sample_z(lr, bad)


def test_round_8bit_and_quantize_match_numpy_with_a_straight_through_gradient():
    values = np.array([-0.2, 0.0, 0.1, 0.5, 0.50196, 0.999, 1.3, 0.5 / 255, 1.5 / 255])
    expected = np.round(np.clip(values, 0, 1) * 255) / 255  # numpy also rounds halves to even
    x = torch.tensor(values, requires_grad=True)
    np.testing.assert_array_equal(round_8bit(x.detach()).numpy(), expected)
    q = quantize(x)
    np.testing.assert_array_equal(q.detach().numpy(), expected)
    weights = torch.arange(len(values), dtype=torch.float64)
    (q * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # the identity, even where the forward clamps
    # the MATLAB-style rounding of the degradation module differs at exact halves only
    half = torch.tensor([[[0.5 / 255]]], dtype=torch.float64)
    assert float(round_8bit(half)) == 0.0 and float(quantize_8bit(half)) == pytest.approx(1 / 255)


def test_center_crop_is_the_middle_then_a_multiple_of_the_scale():
    img = torch.arange(2 * 3 * 37 * 41, dtype=torch.float32).reshape(2, 3, 37, 41)
    # 30x30 from the middle: rows 3..32, cols 5..34; then the first 28 of each (multiples of 4)
    assert torch.equal(center_crop(img, 30, 4), img[..., 3:31, 5:33])
    assert torch.equal(center_crop(img, None, 4), img[..., :36, :40])
    assert torch.equal(center_crop(img[0], 1000, 1), img[0])


def test_input_checks_give_clear_messages():
    x, added = as_rgb_batch(rand_img(3, 4, 4), "hr", "f")
    assert x.shape == (1, 3, 4, 4) and added
    for bad, err, text in (
        (np.zeros((3, 4, 4)), TypeError, "f: hr must be a torch.Tensor"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), TypeError, "floating"),
        (rand_img(4, 4), ValueError, "shape"),
        (rand_img(1, 4, 4, 4), ValueError, "3 channels"),
        (torch.full((3, 2, 2), float("inf")), ValueError, "non-finite"),
    ):
        with pytest.raises(err, match=text):
            as_rgb_batch(bad, "hr", "f")
    check_divisible(rand_img(1, 3, 8, 12), 4, "f")
    with pytest.raises(ValueError, match="f: image size 8x10 is not divisible by the scale 4"):
        check_divisible(rand_img(1, 3, 8, 10), 4, "f")
    assert check_scale(8, "why") == 8
    with pytest.raises(ValueError, match="got 6: one level per x2"):
        check_scale(6, "one level per x2")
    with pytest.raises(TypeError, match="power of two"):
        check_scale(4.0, "why")
    assert check_temperature(1) == 1.0 and isinstance(check_temperature(1), float)
    with pytest.raises(ValueError, match="IRN downscales by x2"):
        irn.check_scale(12)
    with pytest.raises(ValueError, match="HCFlow halves the resolution"):
        hcflow.check_scale(1)


def test_evaluation_images_name_crop_and_batch_them():
    model = HaarRescaler()
    images = [rand_img(3, 50, 41, dtype=torch.float32), rand_img(3, 20, 25, dtype=torch.float32)]
    out = list(evaluation_images(model, images, 32))
    assert [name for name, _ in out] == ["image0", "image1"]
    assert torch.equal(out[0][1], images[0][None, :, 9:41, 4:36])
    assert torch.equal(out[1][1], images[1][None, :, :, :24])
    names = [name for name, _ in evaluation_images(model, None, 16, "cpu")]
    assert names == list(data.EVAL_PHOTOS)


def test_training_sampler_refuses_held_out_photos_and_defaults_to_the_training_ones():
    with pytest.raises(ValueError, match="held-out"):
        data.training_sampler(32, 2, images=["rocket", data.EVAL_PHOTOS[0]])
    sampler = data.training_sampler(32, 2, scale=4)
    assert set(sampler.source.names) == set(data.TRAIN_PHOTOS)
    batch = sampler(7)
    assert batch.shape == (2, 3, 32, 32) and torch.equal(batch, sampler(7))
    images = [rand_img(3, 40, 40, dtype=torch.float32)]
    ours = data.training_sampler(16, 3, scale=4, seed=5, dead_leaves_fraction=0.5, images=images)
    direct = data.PatchSampler(images, 16, 3, seed=5, augment=True, scale=4, dead_leaves_fraction=0.5)
    assert torch.equal(ours(2), direct(2))


def test_report_training_prints_the_summary_and_exports_the_weights(tmp_path, capsys):
    model = torch.nn.Linear(3, 2)
    checkpoint = tmp_path / "run.pt"
    history = training.fit(model, lambda m, b: ((m(b) ** 2).mean(), {"extra": 1.0}),
                           lambda step: torch.ones(4, 3), 3, checkpoint=checkpoint, progress=False)
    report_training(model, history, 12.4, checkpoint)
    printed = capsys.readouterr().out
    assert printed.startswith("done: 3 steps, 8 parameters, 12 s this session (")
    assert printed.rstrip().endswith(f"training in total); checkpoint {checkpoint}")
    slim = tmp_path / "sub" / "slim.pt"
    report_training(model, history, 1.0, checkpoint, slim, last_logs=True)
    printed = capsys.readouterr().out
    assert f"last logs {{'loss': {round(history.logs['loss'][-1], 4)}, 'extra': 1.0}}; " in printed
    assert printed.rstrip().endswith(f"weights-only copy: {slim}")
    full = torch.load(checkpoint, weights_only=True)
    copy = torch.load(slim, weights_only=True)
    assert full["optimizers"] and copy["optimizers"] == {} and copy["schedulers"] == {}
    assert copy["tag"] == full["tag"] and copy["step"] == 3
    loaded = training.load_weights(torch.nn.Linear(3, 2), slim, tag=full["tag"])
    assert torch.equal(loaded.weight, model.weight)


def nearest_up(lr: torch.Tensor) -> torch.Tensor:
    """Each LR pixel repeated 2x2: what a Haar-only rescaler decodes at temperature 0."""
    return lr.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_shared_evaluate_rescaling_figures_match_an_independent_computation():
    hr = rand_img(3, 48, 46, dtype=torch.float32)
    res = evaluation.evaluate(HaarRescaler(), [hr], temperature=0.0, draws=2)
    assert res["model"] == "HaarRescaler" and res["mode"] == "rescale" and res["temperature"] == 0.0
    assert "lr_psnr" not in res  # the LR consistency is an SR figure
    lr = torch.from_numpy(np.round(block_means(hr.numpy().astype(np.float64)) * 255) / 255).float()[None]
    sr = round_8bit(nearest_up(lr))
    lr_bic = bicubic_downscale(hr[None], 2, quantize=True)
    up = round_8bit(imresize(lr_bic, 2))
    expected = {
        "hr_psnr": metrics.psnr(sr, hr[None], shave=2), "hr_ssim": metrics.ssim(sr, hr[None], shave=2),
        "lr_vs_bicubic_psnr": metrics.psnr(lr, lr_bic, shave=2),
        "lr_vs_bicubic_ssim": metrics.ssim(lr, lr_bic, shave=2),
        "bicubic_psnr": metrics.psnr(up, hr[None], shave=2), "bicubic_ssim": metrics.ssim(up, hr[None], shave=2),
    }
    for key, value in expected.items():
        assert res[key] == pytest.approx(float(value), abs=1e-4), key
        assert res["rows"][0][key] == res[key]


def test_shared_evaluate_sr_figures_are_the_lr_consistency_of_the_samples():
    hr = rand_img(3, 48, 46, dtype=torch.float32)
    res = evaluation.evaluate(HaarUpscaler(), [hr], temperature=0.0)
    assert res["mode"] == "sr" and "lr_vs_bicubic_psnr" not in res and "lr_vs_bicubic_ssim" not in res
    lr_bic = bicubic_downscale(hr[None], 2, quantize=True)  # SR: the input is the bicubic LR
    sr = round_8bit(nearest_up(lr_bic))
    assert res["hr_psnr"] == pytest.approx(float(metrics.psnr(sr, hr[None], shave=2)), abs=1e-4)
    assert res["lr_psnr"] == pytest.approx(float(metrics.lr_psnr(sr, lr_bic, 2)), abs=1e-4)
    assert evaluation.evaluate(HaarUpscaler(), [hr], temperature=None)["temperature"] == evaluation.SR_TEMPERATURE
    calls = []

    def fake_nll(model, hr, lr, generator=None):
        calls.append((tuple(hr.shape), tuple(lr.shape)))
        return torch.full((hr.shape[0],), 2.5)

    res = evaluation.evaluate(HaarUpscaler(), [hr, hr[:, :32, :30]], nll=fake_nll)
    assert res["nll_bpd"] == 2.5 and calls == [((1, 3, 48, 46), (1, 3, 24, 23)), ((1, 3, 32, 30), (1, 3, 16, 15))]


def test_one_loop_evaluates_irn_and_both_hcflow_modes():
    torch.manual_seed(0)
    models = [irn.IRN(4, blocks=1, growth=4), hcflow.HCFlow(4, "rescale", flow_steps=1, cond_steps=1, hidden=4,
                                                           cond_hidden=4, rrdb_blocks=(1, 0), nf=4, gc=4),
              hcflow.HCFlow(4, "sr", flow_steps=1, cond_steps=1, hidden=4, cond_hidden=4, rrdb_blocks=(1, 0),
                            nf=4, gc=4)]
    images = [rand_img(3, 84, 80, dtype=torch.float32)]  # x4: LR 21x20, enough for SSIM after the shave
    results = [evaluation.evaluate(m.eval(), images, draws=2, seed=1) for m in models]
    for model, res in zip(models, results):
        lr_key = evaluation.lr_key(model)
        assert lr_key == ("lr_psnr" if model.mode == "sr" else "lr_vs_bicubic_psnr")
        assert res["draws"] == 2 and [r["image"] for r in res["rows"]] == ["image0"]
        assert np.isfinite([res["hr_psnr"], res["hr_ssim"], res[lr_key]]).all()
        assert evaluation.evaluate(model, images, draws=2, seed=1) == res  # seeded: the same figures again
        table = evaluation.format_results(res)
        assert table.splitlines()[0].split()[1] == type(model).__name__
        assert ("LR consist" if model.mode == "sr" else "LR vs bic") in table
        logs = evaluation.training_logs(model, crop=80)
        assert set(logs) == {"eval_psnr", f"eval_{lr_key}"}
    assert results[0]["bicubic_psnr"] == results[1]["bicubic_psnr"] == results[2]["bicubic_psnr"]
    with pytest.raises(ValueError, match="draws"):
        evaluation.evaluate(models[0], images, draws=0)


def test_both_command_lines_share_the_flags_and_the_evaluate_command():
    from course_lib.hcflow.__main__ import parser as hcflow_parser
    from course_lib.irn.__main__ import parser as irn_parser

    shared = ["evaluate", "--checkpoint", "run.pt", "--crop", "64", "--draws", "2", "--temperature", "0.5",
              "--threads", "1"]
    a, b = irn_parser().parse_args(shared), hcflow_parser().parse_args(shared)
    for key in ("command", "checkpoint", "crop", "draws", "temperature", "threads"):
        assert getattr(a, key) == getattr(b, key)
    train = ["--out", "x.pt", "--profile", "test", "--steps", "3", "--seed", "2", "--device", "cpu",
             "--eval-every", "5", "--init", "y.pt", "--weights", "w.pt", "--no-progress"]
    a = irn_parser().parse_args(["train", "--scale", "2", *train])
    b = hcflow_parser().parse_args(["train", "--mode", "sr", *train])
    for key in ("out", "profile", "steps", "seed", "device", "eval_every", "init", "weights", "no_progress"):
        assert getattr(a, key) == getattr(b, key)
    assert irn_parser().parse_args(["evaluate", "--scale", "4"]).scale == 4
    assert hcflow_parser().parse_args(["evaluate", "--mode", "sr", "--nll"]).nll


def test_evaluation_sets_photos_a_folder_and_a_missing_test_set(tmp_path, monkeypatch):
    what, images = evaluation.evaluation_set("photos")
    assert images is None and "astronaut" in what
    data.photos.save_png(torch.rand(1, 40, 48), tmp_path / "gray.png")  # gray images become RGB
    data.photos.save_png(torch.rand(3, 32, 32), tmp_path / "b.png")
    what, images = evaluation.evaluation_set(tmp_path)
    assert list(images) == ["b", "gray"] and images["gray"].shape == (3, 40, 48) and "2 images" in what
    rows = evaluation.evaluate(HaarRescaler(), images)["rows"]
    assert [r["image"] for r in rows] == ["b", "gray"]
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match="set5"):  # offline: not cached, and no download asked for
        evaluation.evaluation_set("set5", download=False)
    with pytest.raises(FileNotFoundError, match="nor a folder"):
        evaluation.evaluation_set(tmp_path / "missing")


def test_lpips_is_optional_and_its_column_shows_when_given(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "lpips", None)  # neither package importable: None and a reason
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.setitem(sys.modules, "torchmetrics.image", None)
    monkeypatch.setitem(sys.modules, "torchmetrics.image.lpip", None)
    fn, why = evaluation.lpips_metric()
    assert fn is None and "pip install lpips" in why

    class FakeLPIPS(torch.nn.Module):  # the lpips package's interface: LPIPS(net=...)(x, y, normalize=True)
        def __init__(self, net, verbose):
            super().__init__()

        def forward(self, x, y, normalize=False):
            assert normalize
            return ((x - y) ** 2).mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS, __version__="0.1.4"))
    fn, source = evaluation.lpips_metric()
    assert "lpips package" in source
    results = evaluation.evaluate(HaarRescaler(), [rand_img(3, 32, 32, dtype=torch.float32)], lpips=fn)
    assert results["lpips"] >= 0 and "LPIPS" in evaluation.format_results(results)

    def broken(net, verbose):
        raise OSError("no network")

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=broken))
    fn, why = evaluation.lpips_metric()
    assert fn is None and "no network" in why


def test_upcast_makes_half_precision_float32_and_leaves_the_rest():
    assert rescaling.upcast(torch.zeros(1, dtype=torch.float16)).dtype == torch.float32
    assert rescaling.upcast(torch.zeros(1, dtype=torch.bfloat16)).dtype == torch.float32
    assert rescaling.upcast(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


def test_losses_take_their_sums_in_float32_under_autocast():
    torch.manual_seed(0)
    model = irn.IRN(2, blocks=1, growth=4)
    hr = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = irn.irn_loss(model, hr, generator=torch.Generator().manual_seed(0))
        rs = hcflow.HCFlow(4, "rescale", flow_steps=1, cond_steps=1, hidden=8, cond_hidden=8, rrdb_blocks=(1, 0),
                           nf=8, gc=4)
        nll = hcflow.log_likelihood(rs, hr, generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32 and nll.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(nll).all()


def test_command_lines_take_the_data_eval_time_and_precision_flags():
    from course_lib.hcflow.__main__ import parser as hcflow_parser
    from course_lib.irn.__main__ import parser as irn_parser

    for p, extra in ((irn_parser(), ["--scale", "4"]), (hcflow_parser(), ["--mode", "sr"])):
        a = p.parse_args(["train", *extra, "--out", "x.pt"])
        assert (a.data, a.workers, a.max_seconds, a.amp) == ("photos", None, None, None)
        a = p.parse_args(["train", *extra, "--out", "x.pt", "--data", "div2k", "--workers", "3", "--max-seconds",
                          "60", "--no-amp"])
        assert (a.data, a.workers, a.max_seconds, a.amp) == ("div2k", 3, 60.0, False)
        e = p.parse_args(["evaluate", "--checkpoint", "x.pt"])
        assert e.eval == "photos" and not e.lpips
        assert p.parse_args(["evaluate", "--checkpoint", "x.pt", "--eval", "set5", "--lpips"]).eval == "set5"


def test_only_the_command_lines_ask_for_a_download(monkeypatch, tmp_path):
    """The library never fetches by default; ``--data`` and ``--eval`` on a command line name a data
    set to fetch, so the commands pass ``download=True`` on to the data layer."""
    import inspect

    from course_lib.data import datasets, loader

    for fn in (datasets.dataset_path, datasets.load_dataset_images, loader.training_batches,
               evaluation.evaluation_set, irn.train, irn.train_plus, hcflow.train):
        assert inspect.signature(fn).parameters["download"].default is False, fn.__name__

    class StopError(Exception):
        pass

    seen = {}

    def fake_set(name, **kwargs):
        seen["eval"] = (name, kwargs.get("download"))
        raise StopError

    from course_lib.hcflow import __main__ as hcflow_cli
    from course_lib.irn import __main__ as irn_cli

    monkeypatch.setattr(evaluation, "evaluation_set", fake_set)
    with pytest.raises(StopError):
        hcflow_cli.main(["evaluate", "--mode", "sr", "--eval", "set5", "--device", "cpu"])
    assert seen["eval"] == ("set5", True)

    def fake_train(*args, **kwargs):
        seen["train"] = (kwargs.get("data"), kwargs.get("download"))
        raise StopError

    for module, argv in ((hcflow_cli, ["train", "--mode", "sr"]), (irn_cli, ["train", "--scale", "2"])):
        monkeypatch.setattr(module, "train", fake_train)
        with pytest.raises(StopError):
            module.main([*argv, "--profile", "test", "--out", str(tmp_path / "x.pt"), "--data", "div2k",
                         "--device", "cpu"])
        assert seen.pop("train") == ("div2k", True)

"""FKP: the kernel flow (contract, encode/decode, the shipped checkpoint), KernelGAN-FKP, the
schematics."""

import matplotlib

matplotlib.use("Agg")

from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import kernelgan as kg  # noqa: E402
from course_lib.degradation import kernel_covariance, random_div2krk_kernel  # noqa: E402
from course_lib.kernelgan import fkp  # noqa: E402

TINY = fkp.FKPConfig(kernel_size=5, couplings=2, hidden=8, layers=1, kernels=64, steps=6, batch_size=16)


def tiny_kernels(n=64, size=5):
    g = torch.Generator().manual_seed(0)
    return torch.stack([random_div2krk_kernel(2, size, generator=g) for _ in range(n)])


def test_flow_is_invertible_and_its_logdet_is_exact():
    from course_lib.flows import autograd_logdet

    flow = fkp.KernelFlow(TINY, normalization=0.5).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 25, dtype=torch.float64)
    z, logdet = flow.model(x)
    torch.testing.assert_close(flow.model.inverse(z), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logdet, autograd_logdet(lambda v: flow.model(v)[0], x), rtol=1e-6, atol=1e-6)


def test_encode_then_decode_gives_the_kernel_back():
    flow = fkp.KernelFlow(TINY, normalization=float(tiny_kernels().max()) + 0.01).double()
    k = tiny_kernels(4).double()
    z, _ = flow.model(flow.encode(k))
    back = flow.decode(z)
    torch.testing.assert_close(back, k / k.sum((1, 2), keepdim=True), rtol=1e-6, atol=1e-8)


def test_decoded_kernels_are_nonnegative_and_sum_to_one():
    flow = fkp.KernelFlow(TINY, normalization=0.3)
    k = flow.decode(torch.randn(5, 25, generator=torch.Generator().manual_seed(1)))
    assert k.shape == (5, 5, 5) and (k >= 0).all()
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(5))


def test_training_checkpoints_and_reloads(tmp_path):
    kernels = tiny_kernels()
    flow, history = fkp.train_kernel_flow(TINY, kernels=kernels, validation=kernels[:16], progress=False,
                                          checkpoint=tmp_path / "work.pt")
    assert history.steps[-1] == TINY.steps and "nll" in history.logs and "val_nll" in history.evals
    loaded = fkp.load_kernel_flow(tmp_path / "work.pt")
    z = torch.randn(2, 25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.decode(z), flow.decode(z))


def test_shipped_checkpoint_models_div2krk_kernels():
    """The shipped flow's samples have the size statistics of the generator it was trained on."""
    flow = kg.load_kernel_flow()
    assert flow.config.kernel_size == 11 and not any(p.requires_grad for p in flow.parameters())
    with torch.no_grad():
        samples = flow.decode(torch.randn(200, flow.dim, generator=torch.Generator().manual_seed(0)))
        g = torch.Generator().manual_seed(1)
        truth = torch.stack([random_div2krk_kernel(2, 11, generator=g) for _ in range(200)])
        size = lambda ks: torch.stack([kernel_covariance(k).trace() for k in ks])  # noqa: E731
        assert size(samples).mean().item() == pytest.approx(size(truth).mean().item(), rel=0.15)
        # real kernels are more likely under the flow than random non-negative blobs
        blobs = torch.rand(200, 11, 11, generator=g)
        blobs = blobs / blobs.sum((1, 2), keepdim=True)
        assert flow.log_prob(truth).mean() > flow.log_prob(blobs).mean() + 50


def test_kernelgan_fkp_optimises_only_the_latent():
    flow = kg.load_kernel_flow()
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    config = kg.KernelGANConfig(iterations=4, g_channels=4, d_channels=8, d_layers=3, crop_size=32)
    gan = kg.KernelGANFKP(image, config, flow=flow, device="cpu", critic="kernelgan", latent_radius=None,
                          crops_per_step=1)
    assert torch.equal(gan.G.z.detach(), torch.zeros_like(gan.G.z))  # no sphere: z starts at the mode
    before = {n: p.clone() for n, p in gan.G.flow.named_parameters()}
    z0 = gan.G.z.detach().clone()
    history = gan.fit(progress=False)
    assert not torch.equal(gan.G.z.detach(), z0)
    for n, p in gan.G.flow.named_parameters():
        assert torch.equal(p, before[n]), n
    assert gan.config.regularizers == () and gan.config.noise_real == gan.config.noise_fake
    k = gan.final_kernel()
    assert k.shape == (13, 13) and k.sum().item() == pytest.approx(1.0, abs=1e-5) and (k >= 0).all()
    assert "z_norm" in history.logs
    k4, _ = kg.estimate_kernel_fkp(image, 3, flow=flow, config=replace(config, crop_size=40), device="cpu",
                                   progress=False)  # the defaults: the official WGAN-GP critic on the sphere
    assert k4.shape == (13, 13)


def test_latent_radius_keeps_z_on_the_sphere_from_a_seeded_draw():
    """FKP's spherical optimiser: z starts as a seeded N(0, I) draw scaled to the radius and stays
    on the sphere after every update of G; a non-positive radius is refused."""
    flow = kg.load_kernel_flow()
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    config = kg.KernelGANConfig(iterations=3, g_channels=4, d_channels=8, d_layers=3, crop_size=32)
    gan = kg.KernelGANFKP(image, config, flow=flow, device="cpu", latent_radius=10.0, seed=3, critic="kernelgan")
    draw = torch.randn(1, flow.dim, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gan.G.z.detach(), draw * 10.0 / draw.norm())
    z0 = gan.G.z.detach().clone()
    history = gan.fit(progress=False)
    assert not torch.equal(gan.G.z.detach(), z0)
    assert history.logs["z_norm"] == pytest.approx([10.0] * 3, rel=1e-5)
    with pytest.raises(ValueError, match="latent_radius"):
        kg.KernelGANFKP(image, config, flow=flow, device="cpu", latent_radius=0.0, critic="kernelgan")


def test_crops_per_step_batches_the_crops_of_an_iteration():
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    config = kg.KernelGANConfig(iterations=5, g_channels=4, d_channels=8, d_layers=3, crop_size=32)
    one = kg.KernelGAN(image, config, device="cpu")
    (gt, gl), (dt, dl) = one.g_corners[2].tolist(), one.d_corners[2].tolist()
    g_in, d_in = one.crops(2)  # one crop: the image (in [-1, 1]) at the step's corners
    torch.testing.assert_close(g_in[0], 2 * image[:, gt:gt + 32, gl:gl + 32] - 1)
    torch.testing.assert_close(d_in[0], 2 * image[:, dt:dt + one.d_crop, dl:dl + one.d_crop] - 1)
    four = kg.KernelGAN(image, kg.KernelGANConfig(**{**config.__dict__, "crops_per_step": 4}), device="cpu")
    g_in, d_in = four.crops(7)  # steps wrap around the prepared iterations
    assert g_in.shape == (4, 3, 32, 32) and d_in.shape == (4, 3, four.d_crop, four.d_crop)
    assert len(four.g_corners) == 20
    four.fit(2, progress=False)  # trains on the batch
    with pytest.raises(ValueError, match="crops_per_step"):
        kg.KernelGANConfig(crops_per_step=0)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    """For D(x) = <w, x> the gradient is w at every x_hat: the penalty is weight * (|w| - 1)^2."""
    w = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    penalty = fkp.gradient_penalty(critic, real, fake, 0.1)
    assert penalty.item() == pytest.approx(0.1 * (w.norm().item() - 1) ** 2, rel=1e-5)


def test_wgan_gp_critic_trains_z_only_and_refuses_unknown_critics():
    flow = kg.load_kernel_flow()
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    config = kg.KernelGANConfig(iterations=2, crop_size=40)
    gan = kg.KernelGANFKP(image, config, flow=flow, device="cpu", crops_per_step=2)  # defaults: WGAN-GP, sphere
    assert gan.config.crops_per_step == 2 and gan.crops(0)[0].shape[0] == 2
    assert isinstance(gan.D, fkp.WGANCritic) and gan.D(torch.zeros(1, 3, 11, 11)).shape == (1, 1, 1, 1)
    d_before = [p.clone() for p in gan.D.parameters()]
    z0 = gan.G.z.detach().clone()
    history = gan.fit(progress=False)
    assert not torch.equal(gan.G.z.detach(), z0)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, gan.D.parameters()))
    assert history.logs["z_norm"] == pytest.approx([10.0, 10.0], rel=1e-5)
    with pytest.raises(ValueError, match="critic"):
        kg.KernelGANFKP(image, config, flow=flow, device="cpu", critic="hinge")
    with pytest.raises(ValueError, match="receptive field"):
        kg.KernelGANFKP(image, kg.KernelGANConfig(iterations=2, crop_size=32), flow=flow)


@pytest.mark.parametrize("draw", [kg.draw_kernelgan_fkp])
def test_schematics_render(draw):
    import matplotlib.pyplot as plt

    fig = draw()
    fig.canvas.draw()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "64x64" in texts and "26x26" in texts and "16x16" in texts  # sizes from the config
    assert "critic score" in texts and "|z| = 10" in texts and "8 LR crops" in texts  # the defaults
    plt.close(fig)
    kernelgan_d = draw(critic="kernelgan", latent_radius=None, crops_per_step=1)
    texts = " ".join(t.get_text() for t in kernelgan_d.axes[0].texts)
    assert "20x20" in texts and "P(real patch)" in texts and "|z|" not in texts  # KernelGAN's 7x7 D
    plt.close(kernelgan_d)
    with pytest.raises(ValueError, match="critic"):
        draw(critic="hinge")
    small = draw(kg.KernelGANConfig(crop_size=48))
    assert "48x48" in " ".join(t.get_text() for t in small.axes[0].texts)
    plt.close(small)

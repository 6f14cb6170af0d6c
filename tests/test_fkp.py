"""FKP: the kernel flow (contract, encode/decode, the shipped checkpoint), KernelGAN-FKP, the
schematics."""

import matplotlib

matplotlib.use("Agg")

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
    gan = kg.KernelGANFKP(image, config, flow=flow, device="cpu")
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
    k4, _ = kg.estimate_kernel_fkp(image, 3, flow=flow, config=config, device="cpu", progress=False)
    assert k4.shape == (13, 13)


@pytest.mark.parametrize("draw", [kg.draw_kernelgan_fkp])
def test_schematics_render(draw):
    import matplotlib.pyplot as plt

    fig = draw()
    fig.canvas.draw()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "64x64" in texts and "26x26" in texts and "20x20" in texts  # sizes from the config
    plt.close(fig)
    small = draw(kg.KernelGANConfig(crop_size=48))
    assert "48x48" in " ".join(t.get_text() for t in small.axes[0].texts)
    plt.close(small)

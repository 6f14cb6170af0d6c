"""Every concept and architecture figure of course_lib.viz.diagrams renders (to PNG) and says what it should."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_lib import flows, hcflow, irn  # noqa: E402
from course_lib import kernelgan as kg  # noqa: E402
from course_lib.models import build_framework  # noqa: E402
from course_lib.viz import diagrams  # noqa: E402


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def _render(fig) -> int:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=60)
    plt.close(fig)
    return buffer.tell()


@pytest.mark.parametrize("make, expected", [
    (lambda: diagrams.degradation_pipeline(4), "keep 1 pixel\nin 4×4"),
    (lambda: diagrams.degradation_pipeline(2, noise=False, jpeg=True), "JPEG"),
    (lambda: diagrams.projection_layer(4), "(×1/4)"),
    (diagrams.story_map, "7 KernelGAN"),
    (lambda: diagrams.irn_architecture(irn.IRN(4, blocks=[2, 3], growth=4)), "3 couplings\n48 channels"),
    (diagrams.sr_frameworks, "post-upsampling\n(PostUpsamplingSR)"),
    (lambda: diagrams.range_null_space((64, 256)), "n - m = 192"),
    (diagrams.coupling_layer, "$\\mathbf{x}_b = (\\mathbf{z}_b - t) \\odot e^{-s}$"),
    (lambda: diagrams.multiscale_glow(flows.Glow(3, levels=3, steps=2, hidden=8), (3, 16, 16)),
     "level 3: 2 × flow step\non 48×2×2"),
    (lambda: diagrams.kernelgan_architecture(kg.DeepLinearGenerator(), kg.KernelGANDiscriminator()),
     "20×20 map: P(real)\nfor every 7×7 patch"),
])
def test_figures_render_and_show_their_parts(make, expected):
    fig = make()
    assert expected in _texts(fig)
    assert _render(fig) > 1000


def test_degradation_pipeline_lists_only_the_steps_asked_for():
    assert "noise" not in _texts(diagrams.degradation_pipeline(2, noise=False))
    assert "JPEG" not in _texts(diagrams.degradation_pipeline(2))


def test_box_refuses_an_unknown_kind():
    fig, ax = diagrams.new_diagram(2, 2)
    with pytest.raises(ValueError, match="kind must be one of"):
        diagrams.box(ax, 1, 1, "x", kind="magic")
    plt.close(fig)


def test_irn_architecture_follows_the_model():
    texts = _texts(diagrams.irn_architecture(irn.IRN(2, blocks=5, growth=4)))
    assert "5 couplings\n12 channels" in texts
    assert "z}$: 9 channels" in texts  # z of x2: 12 - 3 channels
    assert "48 channels" not in texts  # one stage only
    with pytest.raises(TypeError, match="needs an IRN"):
        diagrams.irn_architecture(object())


def test_sr_frameworks_follows_the_models():
    models = {"pre-upsampling": build_framework("pre-upsampling", 2, kernel_sizes=(9, 3, 5)),
              "iterative": build_framework("iterative", 2, features=4, stages=3)}
    fig = diagrams.sr_frameworks(models, scale=2)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "3×3 conv\n32 ch" in texts and "bicubic ×2\n(fixed)" in texts
    assert texts.count("up-\nprojection ↑") == 3 and texts.count("down-\nprojection ↓") == 2
    assert not any("progressive" in t for t in texts)  # only the frameworks asked for
    plt.close(fig)
    with pytest.raises(ValueError, match="upscales x2"):
        diagrams.sr_frameworks(models, scale=4)
    with pytest.raises(TypeError, match="must be a PostUpsamplingSR"):
        diagrams.sr_frameworks({"post-upsampling": models["iterative"]}, scale=2)


def test_range_null_space_labels_the_operator_it_is_given():
    assert "n - m" not in _texts(diagrams.range_null_space())
    assert "mathbb{R}^{16}" in _texts(diagrams.range_null_space((4, 16)))
    with pytest.raises(ValueError, match="operator_shape"):
        diagrams.range_null_space((16, 4))


def test_coupling_layer_reads_the_layer():
    layer = flows.AffineCoupling(5, flows.subnet("mlp", hidden=8), split_channels=2, clamp_kind="atan")
    texts = _texts(diagrams.coupling_layer(layer))
    assert "$\\mathbf{x}_a$\n2 ch" in texts and "$\\mathbf{x}_b$\n3 ch" in texts
    assert "subnet\nMLP" in texts and "soft-clamped (atan, 2)" in texts
    assert "soft-clamped" not in _texts(diagrams.coupling_layer())
    with pytest.raises(TypeError, match="needs an AffineCoupling"):
        diagrams.coupling_layer(object())


def test_multiscale_glow_follows_the_model():
    texts = _texts(diagrams.multiscale_glow(flows.Glow(3, levels=1, steps=3, hidden=8)))
    assert "level 1: 3 × flow step\non 12 channels" in texts
    assert "split" not in texts and "L = 1 level, K = 3" in texts
    texts = _texts(diagrams.multiscale_glow(flows.Glow(3, levels=2, steps=1, hidden=8), (3, 8, 8)))
    assert "split\nkeep 6" in texts and "6×4×4" in texts and "24×2×2" in texts
    with pytest.raises(TypeError, match="multi-scale flow"):
        diagrams.multiscale_glow(irn.IRN(2, blocks=1, growth=4))


def test_kernelgan_architecture_follows_the_networks():
    fig = diagrams.kernelgan_architecture(kg.DeepLinearGenerator((7, 5, 3, 1), channels=8),
                                          kg.KernelGANDiscriminator(channels=16, layers=4), crop=32)
    texts = _texts(fig)
    assert "5×5\n8→8" in texts and "1×1\n8→1\nstride 2" in texts
    assert "13 = 7 + 5 + 3 − 2" in texts and "2 × (1×1 conv, BN, ReLU)" in texts
    assert "10×10" in texts and "4×4 map" in texts  # (32 - 13) // 2 + 1 = 10, then 10 - 7 + 1 = 4
    plt.close(fig)
    one_layer = _texts(diagrams.kernelgan_architecture(kg.DeepLinearGenerator((13,)), kg.KernelGANDiscriminator()))
    assert "13×13\n1→1\nstride 2" in one_layer and " = 13" not in one_layer
    with pytest.raises(ValueError, match="too small"):
        diagrams.kernelgan_architecture(kg.DeepLinearGenerator(), kg.KernelGANDiscriminator(), crop=24)
    with pytest.raises(TypeError, match="DeepLinearGenerator"):
        diagrams.kernelgan_architecture(irn.IRN(2, blocks=1, growth=4), kg.KernelGANDiscriminator())


def _hcflow(scale: int = 4, hierarchical: bool = True) -> hcflow.HCFlow:
    return hcflow.HCFlow(scale, "sr", hierarchical=hierarchical, flow_steps=3, cond_steps=2, hidden=8,
                         cond_hidden=8, rrdb_blocks=(1, 0), nf=8, gc=4)


def test_hcflow_hierarchy_follows_the_model():
    texts = _texts(diagrams.hcflow_hierarchy(_hcflow()))
    assert "squeeze + 3 steps\n12 ch" in texts and "squeeze + 3 steps\n24 ch" in texts
    assert "21 ch" in texts and "2 cond. steps" in texts and "\\uparrow u_{2}" in texts  # a_2; E_1 sees u_2
    assert "coarser levels' latents" in texts
    flat = _texts(diagrams.hcflow_hierarchy(_hcflow(hierarchical=False)))
    assert "LR image only" in flat and "u_{2}" not in flat.split("$E_{1}")[1][:20]
    three = _texts(diagrams.hcflow_hierarchy(_hcflow(scale=8)))
    assert "a}_3" in three and "H/8" in three
    with pytest.raises(TypeError, match="needs an HCFlow"):
        diagrams.hcflow_hierarchy(irn.IRN(4, blocks=[1, 1], growth=4))


def test_image_sr_network_follows_the_model():
    from course_lib.amortised_map.baselines import SRNet
    from course_lib.amortised_map.projection import ProjectedNetwork, blur_operator
    from course_lib.degradation import gaussian_kernel

    texts = _texts(diagrams.image_sr_network(SRNet(4, 1, 8, 3, hr_features=6, hr_layers=3)))
    assert "3 × 3×3 conv\n8 ch, ReLU\n(at LR)" in texts  # layers=3 convolutions at LR
    assert "3 × 3×3 conv\n(at HR)\n6 → 1 ch" in texts
    assert "projection" not in texts
    plain = _texts(diagrams.image_sr_network(SRNet(2, 3, 8, 2)))
    assert "(at HR)" not in plain
    assert "sub-pixel\nshuffle ×2\n3 ch" in plain
    projected = ProjectedNetwork(SRNet(4, 1, 8, 2, hr_layers=2), blur_operator(gaussian_kernel(8, 1.0), 4))
    fig = diagrams.image_sr_network(projected)
    assert "affine\nprojection" in _texts(fig)
    assert _render(fig) > 1000
    with pytest.raises(TypeError, match="needs an SRNet"):
        diagrams.image_sr_network(object())

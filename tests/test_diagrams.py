"""Every concept and architecture figure of course_lib.viz.diagrams renders (to PNG) and says what it should."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_lib import irn  # noqa: E402
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

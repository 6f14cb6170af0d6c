import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import viz  # noqa: E402


def test_to_display_layouts():
    chw = torch.rand(3, 5, 7)
    assert viz.to_display(chw).shape == (5, 7, 3)
    assert np.allclose(viz.to_display(chw), chw.permute(1, 2, 0).numpy())
    assert viz.to_display(torch.rand(1, 5, 7)).shape == (5, 7)
    assert viz.to_display(torch.full((1, 3, 2, 2), 2.0)).max() == 1.0
    with pytest.raises(ValueError, match="shape"):
        viz.to_display(torch.rand(4, 5, 7))


def test_compare_crops_scales_the_box_for_smaller_images():
    hr = torch.zeros(3, 40, 40)
    hr[:, 8:20, 20:28] = 1.0
    lr = hr[:, ::4, ::4]
    fig = viz.compare_crops([hr, lr], ["HR", "LR"], box=(8, 20, 12, 8), metrics=["a", "b"])
    crop_hr = fig.axes[2].images[0].get_array()
    crop_lr = fig.axes[3].images[0].get_array()
    assert crop_hr.shape[:2] == (12, 8) and np.all(crop_hr == 1.0)
    assert crop_lr.shape[:2] == (3, 2) and np.all(crop_lr == 1.0)
    plt.close(fig)
    with pytest.raises(ValueError, match="does not fit"):
        viz.compare_crops([hr], ["HR"], box=(35, 0, 10, 10))


def test_density_grid_matches_the_function():
    xs, ys, lp = viz.density_grid(lambda p: -(p ** 2).sum(1), ((-1, 1), (-2, 2)), n=5)
    assert lp.shape == (5, 5)
    assert lp[2, 2] == pytest.approx(0.0) and lp[0, 0] == pytest.approx(-(1 + 4))
    ax = viz.plot_density_2d(lambda p: -(p ** 2).sum(1), ((-1, 1), (-1, 1)), n=10)
    plt.close(ax.figure)


def test_kernel_and_samples_validate_shapes():
    with pytest.raises(ValueError):
        viz.plot_kernel(torch.ones(3, 3, 3))
    with pytest.raises(ValueError):
        viz.plot_samples_2d(torch.ones(5, 3))
    ax = viz.plot_kernel(torch.ones(5, 5) / 25)
    x, y = ax.lines[0].get_data()
    assert (x[0], y[0]) == (pytest.approx(2.0), pytest.approx(2.0))  # centre of a flat kernel
    plt.close("all")


def test_js_animation_embeds_every_frame():
    def draw(fig, i):
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, i])

    html = viz.js_animation(draw, 3, figsize=(2, 2)).data
    assert "<script" in html and html.count("data:image/png;base64") == 3
    assert "https://" not in html  # no CDN links: the static book works offline
    with pytest.raises(ValueError):
        viz.js_animation(draw, 0)


def test_show_images_and_slider():
    fig = viz.show_images([torch.rand(3, 4, 4)] * 3, ["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="titles"):
        viz.show_images([torch.rand(3, 4, 4)], ["a", "b"])
    calls = []
    widget = viz.slider_explorer(lambda fig, v: calls.append(v), start=0, stop=1, step=0.5)
    assert widget is not None and calls == [0]
    widget.children[0].value = 1.0
    assert calls == [0, 1.0]
    plt.close("all")


def test_slider_explorer_is_skipped_in_the_static_book(monkeypatch):
    monkeypatch.setenv("COURSE_STATIC_BUILD", "1")
    assert viz.slider_explorer(lambda fig, v: None, start=0, stop=1, step=0.5) is None


def test_table_renders_markdown_with_formats_and_names_bad_values():
    rows = {"bicubic": {"PSNR": 27.0123, "params": 0, "extra": "x"}, "net": {"PSNR": 28.5, "params": 12345}}
    md = viz.table(rows, {"params": ",d", "PSNR": ".2f"}, corner="model").data
    lines = md.splitlines()
    assert lines[0] == "| model | params | PSNR |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| bicubic | 0 | 27.01 |" and lines[3] == "| net | 12,345 | 28.50 |"
    assert viz.table({"a": {}}, {"PSNR": ".2f"}).data.splitlines()[2] == "| a | – |"
    with pytest.raises(ValueError, match="row 'a', column 'PSNR'"):
        viz.table({"a": {"PSNR": "high"}}, {"PSNR": ".2f"})
    with pytest.raises(ValueError, match="at least one column"):
        viz.table(rows, {})


def test_plot_continued_run_numbers_the_new_steps_on_from_the_shipped_run():
    from course_lib.training import History

    before, after = History(), History()
    for s in range(1, 101):
        before.record(s, {"loss": 2.0 + 0.01 * (s % 3)})
    for s in range(1, 6):
        after.record(s, {"loss": 1.5})
    ax = viz.plot_continued_run(before, after, label="shipped", ylabel="NLL", zoom=30, log=True)
    lines = ax.get_lines()
    assert list(lines[1].get_xdata()) == [101, 102, 103, 104, 105]  # numbered on from step 100
    assert list(lines[1].get_ydata()) == [1.5] * 5
    assert ax.get_xlim() == (70, 115) and ax.get_yscale() == "log"
    assert "shipped: its last run" in [t.get_text() for t in ax.get_legend().get_texts()][0]
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="logged steps"):
        viz.plot_continued_run(History(), after, label="x", ylabel="y")

"""Tests of the shared figures (companion.plotting): image grids, history curves, figures with alt text."""

from __future__ import annotations

import base64

import matplotlib
import pytest
import torch

from companion import plotting

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------ tile_images and show_grid


def test_tile_images_lays_images_out_row_by_row_with_one_pixel_gutters():
    images = torch.arange(5).float().reshape(5, 1, 1, 1).expand(5, 1, 2, 3) / 10  # image i is filled with i / 10
    canvas = plotting.tile_images(images, 2)
    assert canvas.shape == (2 * 3 + 1, 3 * 4 + 1)  # 2 rows, ceil(5 / 2) = 3 columns of 2 x 3 images
    for i in range(5):
        r, c = divmod(i, 3)
        cell = canvas[1 + 3 * r : 3 * (r + 1), 1 + 4 * c : 4 * (c + 1)]
        assert torch.equal(cell, torch.full((2, 3), i / 10)), i
    assert torch.all(canvas[0] == 1) and torch.all(canvas[:, 0] == 1) and torch.all(canvas[3] == 1)  # gutters
    assert torch.all(canvas[4:6, 9:12] == 1)  # the empty sixth cell is blank (ink value 1)
    # (N, H, W) is read as grey images
    torch.testing.assert_close(plotting.tile_images(images[:, 0], 2), canvas, rtol=0, atol=0)


@pytest.mark.parametrize("images, nrow, error, message", [
    ([[0.0]], 1, TypeError, "must be a torch.Tensor"),
    (torch.zeros(4, 3, 8, 8), 2, ValueError, r"shape \(N, 1, H, W\)"),
    (torch.zeros(0, 1, 8, 8), 1, ValueError, "N >= 1"),
    (torch.zeros(4, 1, 8, 8), 0, ValueError, "nrow must be a positive int"),
    (torch.zeros(4, 1, 8, 8), 1.5, ValueError, "nrow must be a positive int"),
])
def test_tile_images_rejects_bad_input(images, nrow, error, message):
    with pytest.raises(error, match=message):
        plotting.tile_images(images, nrow)


def test_show_grid_labels_rows_and_columns_at_the_cell_centres():
    fig, ax = plt.subplots()
    images = torch.rand(6, 1, 28, 28)
    out = plotting.show_grid(images, 2, "six", ax=ax, row_labels=["a", "b"], col_labels=["0", "1", "2"])
    assert out is ax and ax.get_title() == "six"
    assert list(ax.get_yticks()) == [15, 44] and [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert list(ax.get_xticks()) == [15, 44, 73] and [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    with pytest.raises(ValueError, match="row_labels needs 2 labels, got 3"):
        plotting.show_grid(images, 2, ax=ax, row_labels=["a", "b", "c"])


# ------------------------------------------------------------------ save_image_grid


@pytest.mark.parametrize("labels", [None, torch.arange(12) % 10])
def test_save_image_grid_writes_a_png(tmp_path, labels):
    path = plotting.save_image_grid(torch.rand(12, 1, 28, 28), tmp_path / "grid.png", "twelve", labels)
    assert path == tmp_path / "grid.png" and path.read_bytes().startswith(PNG_MAGIC)
    assert plt.get_fignums() == []  # the figure is closed
    with pytest.raises(ValueError, match="one entry per image"):
        plotting.save_image_grid(torch.rand(3, 1, 28, 28), tmp_path / "bad.png", "", torch.arange(2))


# ------------------------------------------------------------------ plot_history


def test_plot_history_draws_running_means_and_names_missing_keys():
    fig, ax = plt.subplots()
    plotting.plot_history({"loss": [4.0, 2.0, 0.0], "acc": [0.0, 1.0, 1.0]}, ["loss", "acc"], smooth=2, ax=ax)
    (loss, acc) = ax.get_lines()
    assert list(loss.get_ydata()) == [4.0, 3.0, 1.0] and list(acc.get_xdata()) == [1, 2, 3]
    assert ax.get_legend() is not None
    with pytest.raises(KeyError, match="history has no"):
        plotting.plot_history({"loss": [1.0]}, ["kl"], ax=ax)
    with pytest.raises(ValueError, match="smooth must be >= 1"):
        plotting.plot_history({"loss": [1.0]}, ["loss"], smooth=0, ax=ax)


# ------------------------------------------------------------------ figures with alt text


def test_show_figure_with_alt_displays_an_img_with_escaped_alt_text(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs: shown.extend(objs))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plotting.show_figure_with_alt(fig, 'A falling line from "1" to 0 & back')
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.HTML)
    html = shown[0].data
    assert html.startswith('<img alt="A falling line from &quot;1&quot; to 0 &amp; back" src="data:image/png;base64,')
    data = html.split("base64,", 1)[1].rstrip('">')
    assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert not plt.fignum_exists(fig.number)  # closed, so Jupyter does not show it a second time


@pytest.mark.parametrize("alt", ["", "   "])
def test_show_figure_with_alt_rejects_an_empty_description(alt):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="alt must describe the figure"):
        plotting.show_figure_with_alt(fig, alt)

"""Figures shared by the notebooks and the command line: sample grids, training curves, accessible display.

* :func:`tile_images` and :func:`show_grid` lay images ``(N, 1, H, W)`` in [0, 1] out as one
  picture of ``nrow`` rows, with one-pixel gutters, optionally with row and column labels
  (for conditional models: one row per requested digit).
* :func:`save_image_grid` writes such a grid to a PNG file (``python -m companion sample``).
* :func:`plot_history` draws the per-step curves of a :class:`companion.train.History`,
  smoothed by a running mean.
* :func:`plot_reliability_diagram` draws a classifier's per-bin accuracy against confidence
  (:mod:`companion.calibration`), with the diagonal of perfect calibration and the ECE.
* :func:`show_figure_with_alt` displays a figure as an HTML ``<img>`` with alt text, for
  figures inside interactive widgets, whose saved state keeps no other description of the
  image for screen readers.
* :func:`glue` records a number for the book's prose (myst-nb's ``glue``), and works in a plain
  Jupyter session too, where myst-nb may not be installed (e.g. on Colab).

matplotlib is imported inside the functions, so ``import companion.plotting`` costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["tile_images", "show_grid", "save_image_grid", "plot_history", "plot_reliability_diagram",
           "show_figure_with_alt", "figure_png", "glue"]


def _check_grid_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, 1, H, W) with N >= 1 (grey images), got {tuple(images.shape)}")
    return images.detach().float().cpu()


def tile_images(images: Tensor, nrow: int) -> Tensor:
    """Tile ``images: (N, 1, H, W)`` row by row into one ``(nrow (H + 1) + 1, ncol (W + 1) + 1)`` canvas.

    ``ncol = ceil(N / nrow)``; gutters and empty cells are 1, the value of ink: drawn with
    ``cmap="gray_r"`` (ink dark on a light page), they are thin dark lines between the images.
    """
    images = _check_grid_images(images)
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    n, _, h, w = images.shape
    ncol = math.ceil(n / nrow)
    canvas = torch.ones(nrow * (h + 1) + 1, ncol * (w + 1) + 1)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[1 + (h + 1) * r : (h + 1) * (r + 1), 1 + (w + 1) * c : (w + 1) * (c + 1)] = images[i, 0]
    return canvas


def show_grid(images: Tensor, nrow: int, title: str = "", ax=None, *, row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None):
    """Draw ``images: (N, 1, H, W)`` in [0, 1] as a grid of ``nrow`` rows on ``ax`` (default: the current axes).

    Digits are drawn dark on light (``cmap="gray_r"``). Returns the axes.

    Args:
        row_labels: one label per row (e.g. the requested digit), drawn as y tick labels.
        col_labels: one label per column, drawn as x tick labels.
    """
    import matplotlib.pyplot as plt

    canvas = tile_images(images, nrow)
    h, w = images.shape[-2:]
    ncol = math.ceil(images.shape[0] / nrow)
    for name, labels, count in (("row_labels", row_labels, nrow), ("col_labels", col_labels, ncol)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{name} needs {count} labels, got {len(labels)}")
    ax = ax if ax is not None else plt.gca()
    ax.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=1)
    if title:
        ax.set_title(title)
    ax.set_yticks([] if row_labels is None else [(h + 1) * r + (h + 2) // 2 for r in range(nrow)],
                  labels=[] if row_labels is None else list(row_labels))
    ax.set_xticks([] if col_labels is None else [(w + 1) * c + (w + 2) // 2 for c in range(ncol)],
                  labels=[] if col_labels is None else list(col_labels))
    return ax


def save_image_grid(images: Tensor, path: str | Path, title: str, labels: Tensor | None = None) -> Path:
    """Write ``images: (N, 1, 28, 28)`` in [0, 1] as a PNG grid (8 columns; 10 with ``labels``, one per digit).

    With ``labels`` (what a conditional model was asked for) every image is titled with its label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = _check_grid_images(images)
    n = images.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}")
    cols = min(n, 10 if labels is not None else 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i, 0].numpy(), cmap="gray_r", vmin=0, vmax=1)
            if labels is not None:
                ax.set_title(str(int(labels[i])), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _running_mean(values: Sequence[float], k: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= k:
            total -= values[i - k]
        out.append(total / min(i + 1, k))
    return out


def plot_history(history, keys: Sequence[str], *, smooth: int = 1, ax=None, title: str = "",
                 xlabel: str = "step", ylabel: str = ""):
    """Plot the per-step values of ``keys`` of a :class:`~companion.train.History` (or a dict of lists).

    Args:
        smooth: running mean over this many steps (1 = raw values).
    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    metrics = getattr(history, "metrics", history)
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise KeyError(f"history has no {missing}; it records {sorted(metrics)}")
    ax = ax if ax is not None else plt.gca()
    for k in keys:
        values = [float(v) for v in metrics[k]]
        ax.plot(range(1, len(values) + 1), _running_mean(values, smooth), label=k)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if len(keys) > 1:
        ax.legend()
    return ax


def plot_reliability_diagram(probs: Tensor, targets: Tensor, n_bins: int = 15, *, ax=None, title: str = ""):
    """Bars of per-bin accuracy over equal-width confidence bins, the diagonal, and the ECE in the legend.

    A bar below the diagonal is an overconfident bin, above it an underconfident one; empty
    bins have no bar. ``probs: (N, K)`` class probabilities, ``targets: (N,)`` class indices
    (see :func:`companion.calibration.reliability_diagram`). Returns the axes.
    """
    import matplotlib.pyplot as plt

    from companion.calibration import expected_calibration_error, reliability_diagram

    _, accuracy, count = reliability_diagram(probs, targets, n_bins)
    ece = expected_calibration_error(probs, targets, n_bins)
    ax = ax if ax is not None else plt.gca()
    full = count > 0
    left = torch.arange(n_bins, dtype=torch.float64)[full] / n_bins
    ax.bar(left.numpy(), accuracy[full].numpy(), width=1 / n_bins, align="edge", edgecolor="black",
           label=f"accuracy per bin (ECE = {ece:.3f}, {n_bins} bins)")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy",
           title=title or "Reliability diagram")
    ax.legend(loc="upper left")
    return ax


def figure_png(fig, *, close: bool = True) -> bytes:
    """The PNG bytes of a matplotlib figure (tight bounding box); closes it unless ``close=False``."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    if close:
        plt.close(fig)
    return buffer.getvalue()


def show_figure_with_alt(fig, alt: str) -> None:
    """Display ``fig`` in Jupyter as ``<img alt="...">`` (a base64 PNG) and close it.

    Use inside ``ipywidgets.interactive_output`` callbacks: the widget manager renders an Output
    widget's ``image/png`` as an ``<img>`` without alt text, while this HTML keeps the description.
    """
    import base64
    import html

    from IPython.display import HTML, display

    if not alt or not alt.strip():
        raise ValueError("alt must describe the figure (what is plotted and what it shows), got an empty string")
    from companion import figure_translation

    catalog = figure_translation.active_catalog()
    if catalog is not None:  # the book's build: both languages' pictures (companion.figure_translation)
        png_zh, used, missed = figure_translation.render_translated(fig, catalog)
        alt_zh, template, ok = figure_translation.translate_text(alt, catalog)
        if template is not None:
            (used if ok else missed).append(template)
        html_both = figure_translation.dual_image_html(figure_png(fig), png_zh, alt, alt_zh)
        display(HTML(html_both), metadata={figure_translation.MIME: {"texts": used, "untranslated": missed}})
        return
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    display(HTML(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'))


def glue(name: str, value, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the page's prose (``{glue:text}`name:.2f```), as myst-nb's ``glue``.

    The book's build has myst-nb and pastes the value into the text. Without myst-nb (a reader's
    own Jupyter or Colab) nothing needs recording: the value is shown if ``display`` is true.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)

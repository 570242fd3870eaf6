"""Accessibility of the book's sources: alt text for every image, colour maps that colour-blind
readers can read.

Static checks over ``book/*.md``, the Markdown cells of ``notebooks/*.ipynb`` and the plotting
code of the notebooks and the package. Plots that notebooks *produce* are checked in the built
site by ``tests/test_site.py`` (their alt text comes from the cell metadata
``{"mystnb": {"image": {"alt": "..."}}}``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Rainbow-like maps (not perceptually ordered) and red-green maps (unreadable with deuteranopia).
_BAD = ["jet", "rainbow", "gist_rainbow", "hsv", "nipy_spectral", "gist_ncar", "gist_stern", "prism", "flag",
        "spectral", "rdylgn", "piyg"]
BAD_COLORMAPS = set(_BAD) | {f"{name}_r" for name in _BAD}

MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)[^)]*\)")
HTML_IMG = re.compile(r"<img\b[^>]*>", re.I)
DIRECTIVE = re.compile(r"^([`:]{3,})\{(image|figure)\}\s*(\S*)[^\n]*\n((?::[^\n]*\n)*)", re.M)
CMAP = re.compile(r"""(?:cmap\s*=\s*|get_cmap\(\s*|colormaps\[\s*)["']([A-Za-z0-9_]+)["']""")


def _notebook_cells(kind: str) -> dict[str, str]:
    """``{"notebooks/NAME.ipynb cell I": source}`` for every cell of ``kind`` ("markdown" or "code")."""
    out = {}
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == kind:
                out[f"{nb_path.relative_to(ROOT)} cell {i}"] = "".join(cell["source"])
    return out


def markdown_sources() -> dict[str, str]:
    """``{name: markdown}`` for the book pages and every notebook's Markdown cells."""
    out = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted((ROOT / "book").glob("*.md"))}
    return out | _notebook_cells("markdown")


def code_sources() -> dict[str, str]:
    """``{name: code}`` for every notebook code cell and every module of the package."""
    out = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted((ROOT / "companion").rglob("*.py"))}
    return out | _notebook_cells("code")


def images_without_alt(markdown: str) -> list[str]:
    """Images in Markdown, HTML or MyST directives that have no (or an empty) alt text."""
    bad = [f"![]({src})" for alt, src in MD_IMAGE.findall(markdown) if not alt.strip()]
    for tag in HTML_IMG.findall(markdown):
        alt = re.search(r"""\balt\s*=\s*(["'])(.*?)\1""", tag, re.S)
        if not alt or not alt.group(2).strip():
            bad.append(tag)
    for _, kind, target, options in DIRECTIVE.findall(markdown):
        if not re.search(r"^:alt:\s*\S", options, re.M):
            bad.append(f"{{{kind}}} {target} (no :alt: option)")
    return bad


def bad_colormaps(code: str) -> list[str]:
    return [name for name in CMAP.findall(code) if name.lower() in BAD_COLORMAPS]


def generic_alt_texts() -> list[str]:
    """Notebook cells whose figure alt text is generated filler ("Figure for: <the section's
    first words>") instead of a description of what the figure shows."""
    bad = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for number, cell in enumerate(json.loads(notebook.read_text(encoding="utf-8"))["cells"]):
            alt = cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt", "")
            if re.match(r"\s*figure\s+for\b", alt, re.I) or 0 < len(alt.split()) < 5:
                bad.append(f"{notebook.name} cell {number}: {alt[:60]!r}")
    return bad


def test_figure_alt_texts_describe_the_figure():
    bad = generic_alt_texts()
    assert not bad, "alt texts that do not describe their figure:\n" + "\n".join(bad)


def test_every_image_in_the_sources_has_alt_text():
    failures = {name: bad for name, text in markdown_sources().items() if (bad := images_without_alt(text))}
    assert not failures, "images without alt text:\n" + "\n".join(f"{k}: {v}" for k, v in failures.items())


def test_plots_use_colour_blind_friendly_colour_maps():
    failures = {name: bad for name, code in code_sources().items() if (bad := bad_colormaps(code))}
    assert not failures, (
        "rainbow or red-green colour maps (use viridis, cividis, magma, gray, or a ColorBrewer "
        "colour-blind-safe map):\n" + "\n".join(f"{k}: {v}" for k, v in failures.items())
    )


@pytest.mark.parametrize(
    ("markdown", "n_bad"),
    [
        ("![A plot of the loss](loss.png)", 0),
        ("![](loss.png)", 1),
        ("![  ](loss.png 'title')", 1),
        ('<img src="a.png" alt="The model">', 0),
        ('<img src="a.png">', 1),
        ('<img src="a.png" alt="">', 1),
        ("```{figure} a.png\n:alt: A grid of digits\n:width: 50%\n\nCaption.\n```\n", 0),
        ("```{figure} a.png\n:width: 50%\n\nCaption.\n```\n", 1),
        (":::{image} a.png\n:::\n", 1),
    ],
)
def test_alt_text_check_finds_images_without_alt(markdown, n_bad):
    assert len(images_without_alt(markdown)) == n_bad


@pytest.mark.parametrize(
    ("code", "bad"),
    [
        ('plt.imshow(x, cmap="viridis")', []),
        ("ax.pcolormesh(z, cmap='jet')", ["jet"]),
        ('plt.get_cmap("RdYlGn")', ["RdYlGn"]),
        ('matplotlib.colormaps["hsv"]', ["hsv"]),
        ('plt.imshow(img, cmap="gray_r")', []),
    ],
)
def test_colour_map_check_flags_rainbow_and_red_green_maps(code, bad):
    assert bad_colormaps(code) == bad

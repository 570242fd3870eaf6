"""The built book as a reader sees it, in a real browser (headless Chromium).

Opens every page of the built site, served from 127.0.0.1, and checks: math typeset by MathJax
(no raw ``$$`` or ``\\(`` left), every image loaded and described by alt text, no console
errors or failed requests, a dropdown solution opens on click, the search page finds a term,
saved widgets render. Screenshots of each chapter's first screen go to ``_build/screenshots/``.

Which site: ``$COMPANION_SITE`` or ``_build/html``. The test runs on request, since it takes
about a minute: with ``COMPANION_REQUIRE_SITE=1`` (CI, after ``make book``; a missing site,
browser or ``playwright`` package then FAILS) or with ``COMPANION_SITE`` set (a missing site
then skips, saying why). Locally: ``make book && COMPANION_SITE=_build/html pytest tests/test_site.py``.
The browser is the system's (``apt-get install chromium``) driven by playwright with
``executable_path``; ``playwright install`` is not needed.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.tools_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("COMPANION_SITE", ROOT / "_build" / "html"))
SCREENSHOTS = Path(os.environ.get("COMPANION_SCREENSHOTS", SITE.parent / "screenshots"))
REQUIRE = os.environ.get("COMPANION_REQUIRE_SITE") == "1"
REQUESTED = REQUIRE or "COMPANION_SITE" in os.environ

pytestmark = pytest.mark.slow  # starts a browser and a server


bc = load_tool("browser_check")


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (COMPANION_REQUIRE_SITE=1 requires the browser test to run)")
    pytest.skip(reason)


def _format(failures: dict[str, list[str]]) -> str:
    return "\n".join(f"{page}:\n  " + "\n  ".join(items) for page, items in failures.items())


@pytest.fixture(scope="module")
def site():
    """Check every page once (one browser, one server); the tests below read the reports."""
    if not REQUESTED:
        pytest.skip("the browser test runs on request: set COMPANION_SITE=_build/html (or COMPANION_REQUIRE_SITE=1)")
    if not (SITE / "index.html").exists():
        _unavailable(f"no built site at {SITE} (run `make book`, or set COMPANION_SITE)")
    if importlib.util.find_spec("playwright") is None:
        _unavailable("the `playwright` package is not installed (pip install playwright; no `playwright install`)")
    if bc.find_chromium() is None:
        _unavailable("no system Chromium (apt-get install chromium, or set COMPANION_CHROMIUM)")
    pages = bc.site_pages(SITE)
    chapters = set(bc.chapter_pages(pages))
    with bc.SiteChecker(SITE) as checker:
        reports = {
            path: checker.check_page(
                path, screenshot=SCREENSHOTS / bc.screenshot_name(path) if path in chapters else None)
            for path in pages
        }
        yield {"checker": checker, "reports": reports, "pages": pages, "chapters": sorted(chapters)}


def _content(site):
    """Reports of the pages that were loaded (redirect stubs excluded)."""
    return {p: r for p, r in site["reports"].items() if r.redirect is None}


def test_site_has_chapters_and_a_working_front_page(site):
    assert site["chapters"], f"no chapter pages (book/ or notebooks/) in {SITE}"
    index = site["reports"]["index.html"]
    if index.redirect is not None:
        target = (SITE / index.redirect).resolve()
        assert target.exists(), f"index.html redirects to {index.redirect}, which does not exist"


def test_math_is_typeset_on_every_page(site):
    failures = {}
    for path, r in _content(site).items():
        problems = []
        if r.math_elements and not r.mathjax:
            problems.append(f"MathJax did not load; {r.math_elements} math elements left as TeX")
        problems += [f"not typeset: {t!r}" for t in r.untypeset[:5]]
        problems += [f"TeX error: {t}" for t in r.tex_errors]
        if problems:
            failures[path] = problems
    assert not failures, "math not typeset:\n" + _format(failures)
    assert any(r.mjx_containers for r in _content(site).values()), "no page has any typeset math at all"


def test_no_raw_tex_delimiters_in_visible_text(site):
    failures = {p: [f"...{t}..." for t in r.raw_tex] for p, r in _content(site).items() if r.raw_tex}
    assert not failures, "raw TeX delimiters ($$, \\(, \\[, \\begin) in the text:\n" + _format(failures)


def test_no_code_box_needs_a_horizontal_scrollbar(site):
    """Code cells, their outputs and code blocks (solutions opened) fit the page's column at 1280 px."""
    failures = {p: r.scrolling_code for p, r in _content(site).items() if r.scrolling_code}
    assert not failures, (
        "code boxes wider than the column (format notebook code with `ruff format notebooks`, 80 columns; "
        "break long lines in Markdown code blocks by hand):\n" + _format(failures)
    )


def test_every_image_loads(site):
    failures = {p: r.broken_images for p, r in _content(site).items() if r.broken_images}
    assert not failures, "images that did not load (naturalWidth 0):\n" + _format(failures)


def test_every_image_has_descriptive_alt_text(site):
    """Alt text must exist and say something: docutils fills in the file's path when a figure has none."""
    failures = {p: r.images_without_alt for p, r in _content(site).items() if r.images_without_alt}
    assert not failures, (
        "images without alt text (for notebook plots set the cell metadata "
        '{"mystnb": {"image": {"alt": "..."}}}; for Markdown images write ![alt](src)):\n' + _format(failures)
    )


def test_no_console_errors_or_failed_requests(site):
    failures = {}
    for path, r in _content(site).items():
        problems = [f"console: {m}" for m in r.console_errors]
        problems += [f"failed: {u}" for u in r.failed_requests]
        problems += [f"needs the network: {u}" for u in r.external_requests]
        if problems:
            failures[path] = problems
    assert not failures, "browser errors:\n" + _format(failures)


def test_screenshot_of_every_chapter(site):
    shots = {p: SCREENSHOTS / bc.screenshot_name(p) for p in site["chapters"]}
    missing = [p for p, shot in shots.items() if not shot.exists() or shot.stat().st_size < 1000]
    assert not missing, f"no screenshot (or an empty one) in {SCREENSHOTS} for: {missing}"


def test_dropdown_solution_opens_on_click(site):
    with_dropdowns = [p for p, r in _content(site).items() if r.dropdowns]
    assert with_dropdowns, "no page has a dropdown (exercise solutions are written as `:class: dropdown`)"
    path = next((p for p in with_dropdowns if p.startswith("notebooks/")), with_dropdowns[0])
    hidden_before, visible_after, title = site["checker"].open_first_dropdown(path)
    assert hidden_before, f"{path}: the dropdown {title!r} shows its content before any click"
    assert visible_after, f"{path}: clicking the dropdown {title!r} did not show its content"


def test_search_finds_a_chapter_by_a_word_of_its_title(site):
    chapters = [p for p in site["chapters"] if p.startswith("notebooks/")] or site["chapters"]
    path = chapters[0]
    words = re.findall(r"[A-Za-z]{6,}", site["reports"][path].h1)
    assert words, f"{path} has no title word to search for (h1: {site['reports'][path].h1!r})"
    term = max(words, key=len).lower()
    results = site["checker"].search(term)
    found = [r.split("#")[0].split("?")[0] for r in results]
    assert path in found, f"searching {term!r} did not find {path}; results: {results[:10]}"


def test_saved_widgets_render(site):
    pages = {p: r for p, r in _content(site).items() if r.widget_views}
    if not pages:
        pytest.skip("no page of this site has a saved ipywidget")
    failures = {p: [f"{r.widget_views} saved widget view(s), none rendered"]
                for p, r in pages.items() if not r.widgets_rendered}
    assert not failures, "widgets not rendered (widget manager JavaScript missing?):\n" + _format(failures)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_is_readable_in_light_and_dark_mode(site, scheme):
    """WCAG AA: body text at least 4.5:1 against its background, for a reader whose system is in dark mode too."""
    path = next((p for p in site["chapters"] if p.startswith("notebooks/")), site["chapters"][0])
    shot = SCREENSHOTS / bc.screenshot_name(path).replace(".png", f"-{scheme}.png")
    result = site["checker"].text_contrast(path, color_scheme=scheme, screenshot=shot)
    assert result["theme"] == scheme, f"{path}: the theme did not follow the reader's {scheme} mode ({result})"
    assert result["ratio"] >= 4.5, f"{path} in {scheme} mode: text contrast {result['ratio']:.2f} < 4.5 ({result})"


# -- the Chinese edition (tools/i18n.py): same pages under zh/, a switch between them ------------------
CJK_FONT = re.compile(r"CJK|WenQuanYi|Hei|Song|Ming|Kai|Source Han|Noto Sans SC|Noto Serif SC|PingFang|YaHei", re.I)


def _english_chapters(site):
    return [p for p in site["chapters"] if not p.startswith("zh/")]


def test_every_english_page_has_a_chinese_page(site):
    english = [p for p in site["pages"] if not p.startswith("zh/")]
    missing = [p for p in english if f"zh/{p}" not in site["pages"]]
    assert not missing, f"pages without a Chinese edition under zh/: {missing}"


def test_language_switch_leads_to_the_same_page_in_the_other_edition(site):
    path = next(p for p in _english_chapters(site) if p.startswith("notebooks/"))
    assert site["checker"].follow_language_switch(path) == f"zh/{path}"
    assert site["checker"].follow_language_switch(f"zh/{path}") == path


def test_chinese_pages_are_in_chinese_and_drawn_in_a_cjk_font(site):
    path = next(p for p in site["chapters"] if p.startswith("zh/notebooks/"))
    h1 = site["reports"][path].h1
    assert re.search(r"[\u4e00-\u9fff]", h1), f"{path}: the title is not in Chinese: {h1!r}"
    fonts = site["checker"].fonts_of(path, "main p")  # the first paragraph's own text
    cjk = [f for f in fonts if CJK_FONT.search(f.get("familyName", "")) and f.get("glyphCount", 0) > 0]
    assert cjk, f"{path}: the first paragraph's Chinese is drawn without a CJK font: {fonts}"


def test_chinese_search_finds_a_chapter_by_a_chinese_word(site):
    """Sphinx segments Chinese with jieba: a two-character word of a title finds its chapter."""
    path = "zh/notebooks/02_1_attention.html"
    h1 = site["reports"][path].h1
    assert "注意力" in h1, f"{path}: expected the Chinese title to name 注意力 (attention), got {h1!r}"
    results = site["checker"].search("注意力", search_page="zh/search.html")
    found = [r.split("#")[0].split("?")[0] for r in results]
    assert path in found, f"searching 注意力 on the Chinese site did not find {path}; results: {results[:10]}"


def _figure_files(report) -> set[str]:
    """The file names of a page's figures made by code cells (myst-nb names them by their content's hash)."""
    return {Path(urlsplit(img["src"]).path).name for img in report.images if "/_images/" in img["src"]
            and re.fullmatch(r"[0-9a-f]{64}\.png", Path(urlsplit(img["src"]).path).name)}


def test_chinese_pages_show_figures_drawn_with_chinese_words(site):
    """companion.figure_translation: the Chinese page of a chapter shows its own pictures, not the English ones."""
    path = "notebooks/05_1_elbo.html"
    english, chinese = _figure_files(site["reports"][path]), _figure_files(site["reports"][f"zh/{path}"])
    assert english, f"{path}: no figure made by a code cell"
    assert len(chinese) == len(english), f"{path}: {len(english)} figures in English, {len(chinese)} in Chinese"
    assert chinese.isdisjoint(english), f"{path}: the Chinese page shows English pictures: {chinese & english}"


def test_each_edition_shows_its_own_picture_inside_widgets(site):
    """A figure inside a saved widget carries both pictures; the page's language decides which one is seen."""
    path = "notebooks/02_3_transformer.html"
    for page, shown, hidden in [(path, "en", "zh"), (f"zh/{path}", "zh", "en")]:
        images = [img for img in site["reports"][page].images if "companion-lang-" in img["classes"]]
        assert images, f"{page}: no widget figure with pictures in both languages"
        assert all(img["visible"] for img in images if f"companion-lang-{shown}" in img["classes"]), page
        assert not any(img["visible"] for img in images if f"companion-lang-{hidden}" in img["classes"]), page

"""The book as one PDF per language, printed by Chromium from a one-page HTML build.

Route (chosen by measurement; see the README): Jupyter Book 1's ``singlehtml`` builder writes the
whole book as one page, with the notebooks' outputs from the same execution cache as the site;
the system Chromium (the one the browser test drives) loads it from a local server, waits for
MathJax to typeset every formula, opens every solution, and prints it to PDF with page numbers,
a bookmark outline (the table of contents, with links) and tagged text. Fonts are embedded by
Chromium, the CJK ones included. LaTeX is not needed, and neither is a downloaded browser.

Usage (``make book`` runs both, after the HTML sites)::

    python tools/build_pdf.py en      # -> _build/html/generative-models-from-first-principles.pdf
    python tools/build_pdf.py zh_CN   # -> _build/html/zh/generative-models-from-first-principles-zh.pdf
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import browser_check  # noqa: E402
import i18n  # noqa: E402

NAME = "generative-models-from-first-principles"
TARGETS = {
    "en": ROOT / "_build" / "html" / f"{NAME}.pdf",
    "zh_CN": ROOT / "_build" / "html" / "zh" / f"{NAME}-zh.pdf",
}
TITLES = {"en": "Generative models from first principles", "zh_CN": "从第一性原理出发的生成模型"}

# What the printed page leaves out (navigation, buttons) and shows (every solution, each chapter
# on a new page). Injected before printing.
PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
html { font-size: 13px !important; }
html, body, .bd-page-width, .bd-container, .bd-container__inner, .bd-main, .bd-content,
.bd-article-container, .bd-article {
  width: auto !important; max-width: none !important; min-width: 0 !important;
  margin: 0 !important; padding: 0 !important; overflow: visible !important;
}
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article, .bd-footer,
.bd-footer-article, .prev-next-area, .headerlink, .toggle-button, .skip-link,
#pst-back-to-top, .bd-header-announcement, .sidebar-toggle { display: none !important; }
.toggle-hidden, details.toggle-details > *:not(summary) {
  display: block !important; visibility: visible !important; opacity: 1 !important; height: auto !important;
}
.bd-article h1 { break-before: page; }
pre, .highlight, .cell_output img, figure, table, mjx-container[display="true"] { break-inside: avoid; }
pre { white-space: pre-wrap; word-break: break-word; }
img { max-width: 100% !important; height: auto !important; }
mjx-container[display="true"] { overflow: visible !important; max-width: 100%; }
"""

FOOTER = (
    '<div style="width:100%;font-size:8px;color:#555;text-align:center;">'
    '<span class="title"></span> · <span class="pageNumber"></span> / <span class="totalPages"></span></div>'
)


def build_single_page(language: str) -> Path:
    """The whole book as one HTML page (``singlehtml``), same execution cache as the site."""
    from jupyter_book.sphinx import build_sphinx

    outdir = ROOT / "_build" / "pdf" / language
    if language == "en":
        overrides = {"external_toc_path": "_toc.yml", "latex_individualpages": False, "nitpicky": True}
    else:
        overrides = i18n.build_overrides()
    overrides["nb_execution_cache_path"] = str(ROOT / "_build" / ".jupyter_cache")
    doctrees = ROOT / "_build" / f".doctrees-pdf-{language}"
    result = build_sphinx(
        str(ROOT),
        str(outdir),
        noconfig=True,
        path_config=str(ROOT / "_config.yml"),
        confoverrides=overrides,
        doctreedir=str(doctrees),
        builder="singlehtml",
        warningiserror=True,
        keep_going=True,
        quiet=True,
    )
    if result:
        raise SystemExit(f"the one-page build for {language} failed (see the warnings above)")
    # The page is written at book/preface.html (the book's root page), but every path in it
    # (figures, styles, MathJax) is relative to the top folder: read it from there.
    (outdir / "book.html").write_bytes((outdir / "book" / "preface.html").read_bytes())
    return outdir


def print_pdf(site: Path, target: Path, title: str) -> dict:
    """Print the one-page book to ``target``; returns what was printed (pages are counted later)."""
    from playwright.sync_api import sync_playwright

    chromium = browser_check.find_chromium()
    if chromium is None:
        raise SystemExit("no system Chromium (apt-get install chromium, or set COMPANION_CHROMIUM)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with browser_check.serve(site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=browser_check.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=browser_check.VIEWPORT)
            page.set_default_timeout(600_000)
            page.goto(base + "book.html", wait_until="load")
            facts = page.evaluate(
                """async () => {
                  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
                  document.querySelectorAll('details').forEach(d => { d.open = true; });
                  const imgs = Array.from(document.images);
                  await Promise.all(imgs.map(i => { i.loading = 'eager'; return i.decode().catch(() => null); }));
                  return {math: document.querySelectorAll('.math').length,
                          typeset: document.querySelectorAll('mjx-container').length,
                          images: imgs.length,
                          broken: imgs.filter(i => !i.naturalWidth).map(i => i.src)};
                }"""
            )
            page.add_style_tag(content=PRINT_CSS)
            page.emulate_media(media="print")
            page.evaluate("t => { document.title = t; }", title)
            page.pdf(
                path=str(target),
                format="A4",
                print_background=True,
                display_header_footer=True,
                header_template="<div></div>",
                footer_template=FOOTER,
                margin={"top": "16mm", "bottom": "18mm", "left": "14mm", "right": "14mm"},
                outline=True,
                tagged=True,
            )
        finally:
            browser.close()
    if facts["broken"]:
        raise SystemExit(f"images that did not load: {facts['broken'][:5]}")
    return facts


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in TARGETS:
        print(__doc__)
        return 2
    language = argv[0]
    t0 = time.perf_counter()
    site = build_single_page(language)
    t1 = time.perf_counter()
    facts = print_pdf(site, TARGETS[language], TITLES[language])
    t2 = time.perf_counter()
    from pypdf import PdfReader

    pages = len(PdfReader(TARGETS[language]).pages)
    size = TARGETS[language].stat().st_size / 1e6
    print(
        f"{TARGETS[language].relative_to(ROOT)}: {pages} pages, {size:.1f} MB; one-page build "
        f"{t1 - t0:.0f} s, printing {t2 - t1:.0f} s; {facts['typeset']} formulas typeset, {facts['images']} images"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

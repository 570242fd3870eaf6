"""The PDFs of the book (tools/build_pdf.py), read back as text: every chapter is in them, no
reference is left unresolved, the Chinese survives, the outline lists the chapters, and every
page of the site links to its edition's PDF.

Like the browser test, this runs on request: with ``COMPANION_REQUIRE_SITE=1`` (CI, after
``make book``; missing PDFs then FAIL) or with ``COMPANION_SITE`` set (missing PDFs skip).
The page count and size of each PDF are printed (``pytest -s``) and attached to the report.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

import pytest

from tests.tools_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("COMPANION_SITE", ROOT / "_build" / "html"))
REQUIRE = os.environ.get("COMPANION_REQUIRE_SITE") == "1"
REQUESTED = REQUIRE or "COMPANION_SITE" in os.environ

pytestmark = pytest.mark.slow  # reads two PDFs of several hundred pages


i18n = load_tool("i18n")
EDITIONS = {"en": ("", "generative-models-from-first-principles.pdf"),
            "zh_CN": ("zh/", "generative-models-from-first-principles-zh.pdf")}


def _squash(text: str) -> str:
    """Text without white space (a PDF breaks lines and words where the HTML has none), with
    ligatures spelled out (the PDF's "ﬁ" is "fi")."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


@pytest.fixture(scope="module", params=list(EDITIONS))
def edition(request):
    if not REQUESTED:
        pytest.skip("the PDF test runs on request: set COMPANION_SITE=_build/html (or COMPANION_REQUIRE_SITE=1)")
    pypdf = pytest.importorskip("pypdf")
    prefix, name = EDITIONS[request.param]
    pdf = SITE / prefix / name
    if not pdf.exists():
        message = f"no PDF at {pdf} (make book builds it when Chromium is installed)"
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    reader = pypdf.PdfReader(pdf)
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    outline = []

    def walk(items):
        for item in items:
            if isinstance(item, list):
                walk(item)
            else:
                outline.append(item.title)

    walk(reader.outline)
    size = pdf.stat().st_size / 1e6
    print(f"\n{pdf.name}: {len(reader.pages)} pages, {size:.1f} MB")
    return {"language": request.param, "prefix": prefix, "name": name, "pages": len(reader.pages),
            "text": text, "squashed": _squash(text), "outline": outline}


def _chapter_titles(prefix: str) -> dict[str, str]:
    """{page: its title} for every page of the table of contents, from the built site."""
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    pages = [re.search(r"root:\s*(\S+)", toc).group(1)] + re.findall(r"file:\s*(\S+)", toc)
    titles = {}
    for page in pages:
        html = (SITE / prefix / f"{page}.html").read_text(encoding="utf-8")
        h1 = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S)
        titles[page] = re.sub(r"<[^>]+>|#|¶", "", h1.group(1)).strip()
    return titles


def test_the_pdf_has_every_chapter(edition):
    titles = _chapter_titles(edition["prefix"])
    missing = {p: t for p, t in titles.items() if _squash(t) not in edition["squashed"]}
    assert not missing, f"{edition['name']}: chapter titles not found in the text: {missing}"
    assert edition["pages"] > 10 * len(titles) // 2, f"only {edition['pages']} pages for {len(titles)} chapters"


def test_the_outline_lists_every_chapter(edition):
    titles = _chapter_titles(edition["prefix"])
    # Chromium names each bookmark after its heading's text, sometimes twice over
    outline = [_squash(t) for t in edition["outline"]]
    missing = [t for t in titles.values() if not any(_squash(t) in item for item in outline)]
    assert not missing, f"{edition['name']}: chapters missing from the PDF's outline (bookmarks): {missing}"


def test_no_unresolved_reference(edition):
    bad = [edition["text"][max(0, m.start() - 40): m.end() + 40] for m in re.finditer(r"\?\?", edition["text"])]
    assert not bad, f"{edition['name']}: unresolved references ('??'): {bad[:5]}"


def test_the_chinese_terms_are_intact(edition):
    """Every Chinese term of the glossary is in the text of both PDFs (the English edition gives
    the Chinese term beside each key term): CJK glyphs embedded and extractable."""
    terms = [chinese.split(",")[0].strip() for _, chinese in i18n.glossary_terms()]
    terms = [t for t in terms if re.search(r"[\u4e00-\u9fff]", t)]
    missing = [t for t in terms if _squash(t) not in edition["squashed"]]
    assert len(terms) > 50
    assert not missing, f"{edition['name']}: glossary terms not found: {missing[:10]}"


def test_every_page_links_to_its_pdf(edition):
    prefix, name = edition["prefix"], edition["name"]
    pages = [p for p in (SITE / prefix).rglob("*.html")
             if p.relative_to(SITE / prefix).parts[0] in {"book", "notebooks"}]
    assert pages
    without = [str(p.relative_to(SITE)) for p in pages if name not in p.read_text(encoding="utf-8")]
    assert not without, f"pages without a link to {name}: {without[:10]}"

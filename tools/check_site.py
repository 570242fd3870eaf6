"""Check a built book: every page exists, no page loads a script from outside the site, no page
shows a path of the machine that built it (the weight cache, the data folder, the checkout, $HOME, a
kernel's temporary cell files), and no Markdown table is shown as a paragraph of pipes (a cell's
``display(Markdown(...))`` output rendered without table support).

Usage: python tools/check_site.py _build/html
"""

import os
import re
import sys
from pathlib import Path

EXTERNAL_SCRIPT = re.compile(r"""<script[^>]*\ssrc=["'](?:https?:)?//""", re.IGNORECASE)
TAG = re.compile(r"<[^>]+>")
# the temporary file a Jupyter kernel compiles each cell into (shown by warnings and tracebacks)
KERNEL_FILE = re.compile(r"\S*/ipykernel_\d+/\d+\.py")
# a table's header separator left in a paragraph: "|---|" ("|—|" after smart quotes)
RAW_TABLE = re.compile(r"<p>\|[^<]{0,3000}?\|\s*(?:-{3,}|—)\s*\|")


def raw_tables(html: str) -> list[str]:
    """The starts of Markdown tables that a page shows as text instead of as tables."""
    return [" ".join(m.group(0)[3:80].split()) for m in RAW_TABLE.finditer(html)]


def machine_paths() -> list[str]:
    """Folders of this machine that a published page must not show (longest first)."""
    root = Path(__file__).resolve().parents[1]
    candidates = [str(root), str(Path.home())]
    candidates += [os.environ[v] for v in ("COMPANION_CACHE", "COMPANION_DATA", "VIRTUAL_ENV") if os.environ.get(v)]
    found = {str(Path(c).resolve()) for c in candidates} | set(candidates)
    return sorted((c for c in found if len(c) > 1), key=len, reverse=True)


def shown_paths(html: str, paths: list[str]) -> list[str]:
    """The machine paths that occur in the page's text (tags removed: links and scripts do not count)."""
    text = TAG.sub(" ", html)
    hits = []
    for p in paths:
        i = text.find(p)
        if i >= 0:
            hits.append(" ".join(text[max(0, i - 40): i + len(p) + 40].split()))
    hits += [m.group(0) for m in KERNEL_FILE.finditer(text)]
    return hits


def main(site: str) -> int:
    root = Path(site)
    pages = sorted(root.rglob("*.html"))
    if not (root / "index.html").exists() or not pages:
        print(f"no built site in {root}")
        return 1
    bad = [(p, m.group(0)) for p in pages for m in EXTERNAL_SCRIPT.finditer(p.read_text(encoding="utf-8"))]
    for page, tag in bad:
        print(f"{page.relative_to(root)} loads a script from outside the site: {tag}")
    paths = machine_paths()
    leaks = [(p, hit) for p in pages if "_sources" not in p.parts
             for hit in shown_paths(p.read_text(encoding="utf-8"), paths)]
    for page, hit in leaks:
        print(f"{page.relative_to(root)} shows a path of the build machine: ...{hit}...")
    tables = [(p, t) for p in pages if "_sources" not in p.parts for t in raw_tables(p.read_text(encoding="utf-8"))]
    for page, start in tables:
        print(f"{page.relative_to(root)} shows a Markdown table as text: {start}...")
    mathjax = root / "mathjax" / "tex-mml-chtml.js"
    if not mathjax.exists():
        print(f"MathJax is not served by the site ({mathjax} is missing)")
        return 1
    failed = bool(bad or leaks or tables)
    print(f"{len(pages)} pages checked: "
          f"{'FAIL' if failed else 'no external scripts, no machine paths, no tables shown as text'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))

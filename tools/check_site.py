"""Check a built book: every page exists, no page loads a script from outside the site.

Usage: python tools/check_site.py _build/html
"""

import re
import sys
from pathlib import Path

EXTERNAL_SCRIPT = re.compile(r"""<script[^>]*\ssrc=["'](?:https?:)?//""", re.IGNORECASE)


def main(site: str) -> int:
    root = Path(site)
    pages = sorted(root.rglob("*.html"))
    if not (root / "index.html").exists() or not pages:
        print(f"no built site in {root}")
        return 1
    bad = [(p, m.group(0)) for p in pages for m in EXTERNAL_SCRIPT.finditer(p.read_text(encoding="utf-8"))]
    for page, tag in bad:
        print(f"{page.relative_to(root)} loads a script from outside the site: {tag}")
    mathjax = root / "mathjax" / "tex-mml-chtml.js"
    if not mathjax.exists():
        print(f"MathJax is not served by the site ({mathjax} is missing)")
        return 1
    print(f"{len(pages)} pages checked: {'FAIL' if bad else 'no external scripts'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))

"""Code on the book's pages fits the page's column (issue 18): no line of a notebook's code cells,
or of a code block in a notebook's Markdown or in a prose page, is longer than 80 characters.

80 is what the code column shows at a 1280 px wide window with ``book/_static/code.css`` (13 px
monospace); the browser test (``tests/test_site.py``) checks the built pages themselves, and
``ruff format notebooks`` (``notebooks/ruff.toml``) formats notebook code to this width.
Outputs are not checked here: ``code.css`` wraps them.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 80
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
# fences whose content is shown as code (directives such as {exercise} or {solution} hold prose)
CODE_INFO = re.compile(
    r"^(python|py|bash|sh|text|console|pycon|ipython3?|\{code-block\}.*|\{code-cell\}.*|\{code\}.*|)$"
)


def code_lines_of_markdown(text: str) -> list[str]:
    """The lines inside code fences of a MyST Markdown text (fences nest; directives are not code)."""
    stack: list[tuple[str, bool]] = []  # (fence, holds code)
    out = []
    for line in text.split("\n"):
        m = FENCE.match(line)
        if m:
            fence, info = m.group(1), m.group(2).strip()
            if stack and fence[0] == stack[-1][0][0] and len(fence) >= len(stack[-1][0]) and not info:
                stack.pop()
                continue
            if not (stack and stack[-1][1]):
                stack.append((fence, bool(CODE_INFO.match(info))))
                continue
        if stack and stack[-1][1]:
            out.append(line)
    return out


def test_the_markdown_reader_finds_code_inside_directives_but_not_their_prose():
    text = "````{solution} ex\n:class: dropdown\n\nprose " + "x" * 90 + "\n```python\ncode()\n```\n````\n"
    assert code_lines_of_markdown(text) == ["code()"]
    assert code_lines_of_markdown("```bash\nmake book\n```\nafter\n") == ["make book"]


def _wide(lines):
    return [f"{len(line)} chars: {line[:90]}" for line in lines if len(line) > WIDTH]


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))


@pytest.mark.parametrize("path", NOTEBOOKS + PAGES, ids=lambda p: p.name)
def test_code_fits_the_page_column(path):
    if path.suffix == ".md":
        wide = _wide(code_lines_of_markdown(path.read_text(encoding="utf-8")))
    else:
        wide = []
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            src = "".join(cell["source"])
            lines = src.split("\n") if cell["cell_type"] == "code" else code_lines_of_markdown(src)
            wide += [f"cell {i}: {w}" for w in _wide(lines)]
    assert not wide, f"{path.name}: code lines wider than the page's {WIDTH} columns:\n" + "\n".join(wide)

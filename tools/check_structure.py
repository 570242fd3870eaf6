"""Check that every chapter of the book reads as a course chapter.

Usage: python tools/check_structure.py [--toc _toc.yml] [--all-parts]

A chapter is a file listed in ``_toc.yml`` (chapters and their sections) under a part whose
caption is not "Getting started" or "Reference", other than the few pages that are not chapters
(``NOT_CHAPTERS``: the changelog, an appendix of release notes); ``--all-parts`` checks those
too. Each must have

* near the top, before the first content heading: **learning objectives**, **prerequisites**,
  and a **sources** line naming the source-article sections it covers (``000``-``004``, e.g.
  ``**Sources.** Article `002`, section 2.1``);
* after the content: a **summary**, **exercises** (at least one ``{exercise}`` directive, every
  ``{solution}`` folded away with ``:class: dropdown``) and **references** (a section with at least
  one ``{cite}`` into ``references.bib``).

A section counts as a Markdown heading (``## Summary``), a bold label at the start of a line
(``**Learning objectives.**``) or an admonition title (``{admonition} Prerequisites``), in any
letter case. Every failure is reported, not just the first; the exit status is 1 if any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

SKIPPED_PARTS = {"getting started", "reference"}
NOT_CHAPTERS = {"book/changelog"}  # toc entries (without extension) in chapter parts that teach nothing
FRONT = ("learning objectives", "prerequisites", "sources")
BACK = ("summary", "exercises", "references")
ARTICLE = re.compile(r"`?\b00[0-4]\b`?")
SECTION_NUMBER = re.compile(r"(§\s*\d|\bsections?\s+\d|\b\d+\.\d+\b)", re.I)
CITE = re.compile(r"\{cite(:[a-z]+)?\}`[^`]+`|```\{bibliography\}")


@dataclass
class Page:
    """A chapter's Markdown text; ``first_code`` is the offset where its first code cell would be."""

    path: Path
    text: str
    first_code: int | None = None


def read_page(path: Path) -> Page:
    """Markdown of a ``.md`` page, or the Markdown cells of a notebook joined in order."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        parts, first_code, offset = [], None, 0
        for cell in nb.get("cells", []):
            source = "".join(cell.get("source", ""))
            if cell.get("cell_type") == "markdown":
                parts.append(source)
                offset += len(source) + 2
            elif cell.get("cell_type") == "code" and first_code is None:
                first_code = offset
        return Page(path, "\n\n".join(parts), first_code)
    text = path.read_text(encoding="utf-8")
    if text.startswith("---\n"):  # front matter
        end = text.find("\n---", 4)
        text = text[end + 4:] if end > 0 else text
    return Page(path, text)


def _strip_code(text: str) -> str:
    """Blank out fenced code blocks (```python ... ```) so their lines are not read as headings.

    Fences are tracked line by line, so the closing fence of a directive (```{exercise} ... ```)
    is not mistaken for the opening of a code block. Directive bodies are kept (they are prose).
    """
    out, stack = [], []  # stack of (fence string, is_code)
    for line in text.split("\n"):
        m = re.match(r"^(`{3,}|~{3,})(.*)$", line)
        in_code = any(code for _, code in stack)
        if m:
            fence, rest = m.group(1), m.group(2).strip()
            if stack and not rest and fence[0] == stack[-1][0][0] and len(fence) >= len(stack[-1][0]):
                stack.pop()
                out.append(re.sub(r"[^\n]", " ", line) if in_code else line)
                continue
            if not in_code:
                stack.append((fence, not rest.startswith("{")))
                out.append(line)
                continue
        out.append(re.sub(r"[^\n]", " ", line) if in_code else line)
    return "\n".join(out)


def find_section(text: str, name: str) -> int | None:
    """Offset of the first heading, bold label or admonition title called ``name``, else None."""
    n = re.escape(name)
    patterns = [
        rf"^#{{1,6}}\s+{n}\b",  # ## Summary
        rf"^\*\*{n}\b[^*\n]*\*\*",  # **Learning objectives.**
        rf"^[`:]{{3,}}\{{admonition\}}\s+{n}\b",  # ```{admonition} Prerequisites
    ]
    hits = [m.start() for p in patterns for m in re.finditer(p, text, re.I | re.M)]
    return min(hits) if hits else None


def first_content_heading(text: str) -> int | None:
    """Offset of the first ``##``-or-deeper heading that is not one of the structural sections."""
    for m in re.finditer(r"^#{2,6}\s+(.+)$", text, re.M):
        if not any(m.group(1).strip().lower().startswith(f) for f in FRONT + BACK):
            return m.start()
    return None


def section_text(text: str, start: int) -> str:
    """From ``start`` to the next heading of the same or a higher level (or the end)."""
    line_end = text.find("\n", start)
    body_start = len(text) if line_end < 0 else line_end + 1
    m = re.match(r"(#{1,6})\s", text[start:])
    if m:
        stop = re.compile(rf"^#{{1,{len(m.group(1))}}}\s", re.M)
    else:  # a bold label or an admonition: up to the next heading or bold label
        stop = re.compile(r"^(#{1,6}\s|\*\*[A-Z])", re.M)
    end = stop.search(text, body_start)
    return text[start: end.start() if end else len(text)]


def check_page(page: Page) -> list[str]:
    """Every structural problem of one chapter page, as readable sentences."""
    text = _strip_code(page.text)
    problems = []
    content = first_content_heading(text)
    where = {name: find_section(text, name) for name in FRONT + BACK}
    for name in FRONT:
        pos = where[name]
        if pos is None:
            problems.append(f"no '{name}' section or label near the top")
        elif content is not None and pos > content:
            problems.append(f"'{name}' comes after the chapter's first content heading; move it to the top")
    if where["sources"] is not None:
        line = text[where["sources"]:].split("\n\n")[0]
        if not ARTICLE.search(line) or not SECTION_NUMBER.search(line):
            problems.append("the sources line names no source-article section (e.g. `002` section 2.1)")
    for name in BACK:
        pos = where[name]
        if pos is None:
            problems.append(f"no '{name}' section")
        elif content is not None and pos < content:
            problems.append(f"'{name}' comes before the chapter's content; it belongs at the end")
    if where["exercises"] is not None and not re.search(r"^[`:]{3,}\{exercise\}", text, re.M):
        problems.append("an exercises section but no {exercise} directive")
    for m in re.finditer(r"^([`:]{3,})\{solution\}[^\n]*\n((?::[^\n]*\n)*)", text, re.M):
        if not re.search(r"^:class:.*\bdropdown\b", m.group(2), re.M):
            label = m.group(0).split("\n")[0]
            problems.append(f"solution not folded away (add ':class: dropdown'): {label.strip()}")
    if where["references"] is not None and not CITE.search(section_text(text, where["references"])):
        problems.append("the references section has no {cite} into references.bib")
    return problems


def toc_chapters(toc_path: Path, all_parts: bool = False) -> list[str]:
    """Files (as written in the toc) of the chapter parts, chapters and their sections, in order."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))

    def files(entries):
        out = []
        for entry in entries or []:
            if "file" in entry:
                out.append(entry["file"])
            out += files(entry.get("sections"))
        return out

    chapters = []
    for part in toc.get("parts", []):
        if all_parts or str(part.get("caption", "")).strip().lower() not in SKIPPED_PARTS:
            chapters += files(part.get("chapters"))
    chapters += files(toc.get("chapters"))  # a toc without parts
    if not all_parts:
        chapters = [c for c in chapters if re.sub(r"\.(md|ipynb)$", "", c) not in NOT_CHAPTERS]
    return chapters


def resolve(root: Path, entry: str) -> Path | None:
    path = root / entry
    if path.suffix in {".md", ".ipynb"}:
        return path if path.exists() else None
    for suffix in (".ipynb", ".md"):
        if path.with_suffix(suffix).exists():
            return path.with_suffix(suffix)
    return None


def check_book(root: Path, toc: Path | None = None, all_parts: bool = False) -> dict[str, list[str]]:
    """``{toc entry: [problems]}`` for every chapter of the toc (an empty list when it passes)."""
    root = Path(root)
    results = {}
    for entry in toc_chapters(toc or root / "_toc.yml", all_parts):
        path = resolve(root, entry)
        results[entry] = ["file not found"] if path is None else check_page(read_page(path))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the repository (default: .)")
    parser.add_argument("--toc", help="table of contents (default: ROOT/_toc.yml)")
    parser.add_argument("--all-parts", action="store_true", help="also check 'Getting started' and 'Reference'")
    parser.add_argument("files", nargs="*", help="check these pages instead of the toc's chapters")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.files:
        results = {f: check_page(read_page(Path(f))) for f in args.files}
    else:
        results = check_book(root, Path(args.toc) if args.toc else None, args.all_parts)
    for entry, problems in results.items():
        print(f"{'ok' if not problems else 'FAIL':4s}  {entry}")
        for p in problems:
            print(f"      - {p}")
    n_bad = sum(bool(p) for p in results.values())
    print(f"{len(results)} chapters checked, {n_bad} with problems")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())

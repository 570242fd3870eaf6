"""Every chapter reads as a course chapter (``tools/check_structure.py``).

The book's chapters (``_toc.yml``, parts other than "Getting started" and "Reference") open with
learning objectives, prerequisites and the source-article sections they cover, and end with a
summary, exercises with folded-away solutions, and references. The checker is also tested on
small pages that break each rule, so it can be seen to fail.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_structure", ROOT / "tools" / "check_structure.py")
cs = importlib.util.module_from_spec(_spec)
sys.modules["check_structure"] = cs
_spec.loader.exec_module(cs)

GOOD = """# A chapter

Intro.

**Learning objectives.** After this chapter you can
- do a thing.

**Prerequisites.** The previous chapter.

**Sources.** Article `002`, section 2.1.

## The content

Text with a formula $x$.

```python
# ## Summary  (a comment in a code block is not a heading)
```

## Summary

- A point.

## Exercises

```{exercise} One
:label: ex-one
Do it.
```

````{solution} ex-one
:class: dropdown
Done.
````

## References

See {cite}`vaswani2017attention`.
"""


def problems_of(text: str, tmp_path: Path, suffix: str = ".md") -> list[str]:
    path = tmp_path / f"page{suffix}"
    if suffix == ".ipynb":
        cells = [{"cell_type": "markdown", "metadata": {}, "source": part} for part in text.split("\n\n\n")]
        path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    else:
        path.write_text(text)
    return cs.check_page(cs.read_page(path))


def test_every_toc_chapter_has_objectives_prerequisites_sources_summary_exercises_references():
    results = cs.check_book(ROOT)
    assert results, "the toc lists no chapters outside 'Getting started' and 'Reference'"
    failures = {entry: problems for entry, problems in results.items() if problems}
    report = "\n".join(f"{e}:\n  - " + "\n  - ".join(p) for e, p in failures.items())
    assert not failures, f"chapters that do not follow the course structure:\n{report}"


def test_a_complete_page_passes(tmp_path):
    assert problems_of(GOOD, tmp_path) == []


def test_a_complete_notebook_passes(tmp_path):
    assert problems_of(GOOD.replace("\n## ", "\n\n\n## "), tmp_path, ".ipynb") == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("**Learning objectives.**", "Objectives:"), "no 'learning objectives'"),
        (lambda t: t.replace("**Prerequisites.** The previous chapter.\n", ""), "no 'prerequisites'"),
        (lambda t: t.replace("## Summary\n", "## Recap\n"), "no 'summary'"),
        (lambda t: t.replace("## References\n\nSee {cite}`vaswani2017attention`.\n", ""), "no 'references'"),
        (lambda t: t.replace("{cite}`vaswani2017attention`", "Vaswani et al. 2017"), "has no {cite}"),
        (lambda t: t.replace(":class: dropdown\n", ""), "solution not folded away"),
        (lambda t: t.replace("```{exercise} One\n:label: ex-one\nDo it.\n```\n", "Try it.\n"), "no {exercise}"),
        (lambda t: t.replace("Article `002`, section 2.1.", "the articles."), "names no source-article section"),
        (
            lambda t: t.replace("**Prerequisites.** The previous chapter.\n", "").replace(
                "## Summary", "**Prerequisites.** Late.\n\n## Summary"
            ),
            "'prerequisites' comes after",
        ),
        (lambda t: t.replace("## The content", "## Summary\n\nEarly.\n\n## The content"), "'summary' comes before"),
    ],
    ids=["objectives", "prerequisites", "summary", "references", "cite", "dropdown", "exercise", "sources",
         "prerequisites-late", "summary-early"],
)
def test_the_checker_reports_each_missing_or_misplaced_part(tmp_path, edit, expected):
    problems = problems_of(edit(GOOD), tmp_path)
    assert any(expected in p for p in problems), problems


def test_all_failures_are_reported_at_once(tmp_path):
    problems = problems_of("# Only a title\n\nSome text.\n", tmp_path)
    assert len(problems) == 6, problems  # three front sections and three back sections


def test_only_chapter_parts_are_checked(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/preface\nparts:\n"
        "  - caption: Getting started\n    chapters:\n      - file: book/setup\n"
        "  - caption: Foundations\n    chapters:\n      - file: notebooks/01_a\n"
        "        sections:\n          - file: notebooks/01_b\n"
        "  - caption: Reference\n    chapters:\n      - file: book/glossary\n"
    )
    assert cs.toc_chapters(toc) == ["notebooks/01_a", "notebooks/01_b"]
    assert cs.toc_chapters(toc, all_parts=True) == ["book/setup", "notebooks/01_a", "notebooks/01_b", "book/glossary"]


def test_the_changelog_is_not_checked_as_a_chapter_but_the_other_appendices_are(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/preface\nparts:\n"
        "  - caption: Appendices\n    chapters:\n      - file: notebooks/90_errata\n"
        "      - file: book/changelog.md\n      - file: book/scale_out\n"
    )
    assert cs.toc_chapters(toc) == ["notebooks/90_errata", "book/scale_out"]
    assert cs.toc_chapters(toc, all_parts=True) == ["notebooks/90_errata", "book/changelog.md", "book/scale_out"]

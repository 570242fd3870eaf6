"""A release is one version everywhere, citable, and its changelog is part of the book (issue 16).

The version's one source is ``version`` in ``pyproject.toml``; ``companion.__version__`` (read from
the installed package's metadata), ``CITATION.cff``, the newest release of ``CHANGELOG.md`` and the
footer of every page (``html.extra_footer`` in ``_config.yml``) must say the same. ``CITATION.cff``
must have the keys that CFF 1.2.0 requires (``cffconvert --validate`` checks the whole schema; it is
not a dependency of the course), and the BibTeX entries of the preface and the README must agree
with it. Each reader below is also tested on a small wrong input, so that the checks can be seen
to fail.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CFF_REQUIRED = ("cff-version", "message", "title", "authors", "version", "date-released")
SEMVER = r"\d+\.\d+\.\d+"


# ----------------------------------------------------------------------------- readers


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def footer_version(config: dict) -> str | None:
    """The version that ``html.extra_footer`` shows ("Version 1.0.0 ..."), or None."""
    footer = str((config.get("html") or {}).get("extra_footer") or "")
    m = re.search(rf"\bVersion ({SEMVER})\b", footer)
    return m.group(1) if m else None


def without_code(markdown: str) -> str:
    """The Markdown with the lines of fenced blocks blanked (a ``# comment`` there is no heading)."""
    out, fence = [], None
    for line in markdown.split("\n"):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip()[len(fence):].strip():
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def changelog_releases(markdown: str) -> list[tuple[str, str]]:
    """``[(version, date)]`` of the release headings (``## [1.0.0] - 2026-12-07``), newest first."""
    return re.findall(rf"^## \[({SEMVER})\] - (\d{{4}}-\d{{2}}-\d{{2}})\s*$", without_code(markdown), re.M)


def h1_headings(markdown: str) -> list[str]:
    return re.findall(r"^# (.+)$", without_code(markdown), re.M)


def bibtex_entries(markdown: str) -> list[dict[str, str]]:
    """The fields of every ```` ```bibtex ```` block, one ``name = {value}`` per line, braces removed."""
    entries = []
    for block in re.findall(r"^```bibtex\s*\n(.*?)^```\s*$", markdown, re.M | re.S):
        fields = {}
        for name, value in re.findall(r"^\s*(\w+)\s*=\s*(.*?),?\s*$", block, re.M):
            while value.startswith("{") and value.endswith("}"):  # {{The course authors}}: an entity
                value = value[1:-1]
            fields[name.lower()] = value
        entries.append(fields)
    return entries


def cff_problems(cff: dict) -> list[str]:
    """What CFF 1.2.0 requires and ``cff`` lacks (the required keys; authors with a name)."""
    problems = [f"no '{key}'" for key in CFF_REQUIRED if key not in cff]
    if cff.get("cff-version") is not None and str(cff["cff-version"]) != "1.2.0":
        problems.append(f"cff-version is {cff['cff-version']!r}, not '1.2.0'")
    authors = cff.get("authors")
    if "authors" in cff and not (isinstance(authors, list) and authors
                                 and all(isinstance(a, dict) and (a.get("name") or a.get("family-names"))
                                         for a in authors)):
        problems.append(f"authors must be a list of persons or entities with a name: {authors!r}")
    if "date-released" in cff:
        try:
            date.fromisoformat(str(cff["date-released"]))
        except ValueError:
            problems.append(f"date-released is not a date: {cff['date-released']!r}")
    return problems


def bibtex_mismatches(entry: dict[str, str], cff: dict) -> list[str]:
    """Where a BibTeX entry disagrees with CITATION.cff: title, version, URL, year, author."""
    version = str(cff["version"])
    expected = {
        "title": cff["title"],
        "version": version,
        "url": cff["repository-code"],
        "year": str(cff["date-released"])[:4],
        "author": cff["authors"][0].get("name"),
    }
    problems = [f"{field} is {entry.get(field)!r}, CITATION.cff says {value!r}"
                for field, value in expected.items() if entry.get(field) != value]
    if "note" in entry and version not in entry["note"]:
        problems.append(f"note {entry['note']!r} names another version than {version!r}")
    return problems


def toc_parts(toc: dict) -> dict[str, list[str]]:
    """``{part caption: [files of its chapters]}`` of a jupyter-book table of contents."""
    return {part["caption"]: [c["file"] for c in part.get("chapters", [])] for part in toc.get("parts", [])}


# ----------------------------------------------------------------------------- the release


def test_pyproject_companion_citation_changelog_and_footer_name_the_same_version():
    import companion

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    releases = changelog_releases((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
    versions = {
        "pyproject.toml": pyproject_version(),
        "companion.__version__": companion.__version__,
        "CITATION.cff": str(citation().get("version")),
        "CHANGELOG.md, newest release": releases[0][0] if releases else None,
        "_config.yml, html.extra_footer": footer_version(config),
    }
    assert re.fullmatch(SEMVER, versions["pyproject.toml"]), versions
    assert companion.__version__ == versions["pyproject.toml"], (
        f"companion.__version__ is {companion.__version__}, pyproject.toml says {versions['pyproject.toml']}: "
        "the installed metadata are stale; reinstall (make env, or pip install -e .)"
    )
    assert len(set(versions.values())) == 1, f"the versions disagree: {versions}"


def test_the_newest_release_is_dated_as_citation_cff_and_links_to_its_tag():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    (version, released), *_ = changelog_releases(text)
    assert released == str(citation()["date-released"]), (released, citation()["date-released"])
    link = re.search(rf"^\[{re.escape(version)}\]:\s*(\S+)$", text, re.M)
    assert link and link.group(1).endswith(f"/v{version}"), f"no link definition [{version}]: .../v{version}"


def test_citation_cff_has_the_keys_cff_1_2_0_requires():
    assert cff_problems(citation()) == []
    cff = citation()
    assert cff["title"] == "Generative models from first principles"
    assert cff["authors"] == [{"name": "The course authors"}], "the authors are one entity"
    assert cff["license"] == "MIT"
    repository = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    assert cff["repository-code"] == repository, (cff["repository-code"], repository)


def test_the_changelog_is_a_page_of_the_appendices_with_one_title():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert "book/changelog" in toc_parts(toc).get("Appendices", []), toc_parts(toc)
    page = (ROOT / "book" / "changelog.md").read_text(encoding="utf-8")
    assert re.search(r"^```\{include\} \.\./CHANGELOG\.md\s*$", page, re.M), "the page must include ../CHANGELOG.md"
    assert h1_headings(page) == [], "the page's title is the changelog's own heading"
    assert h1_headings((ROOT / "CHANGELOG.md").read_text(encoding="utf-8")) == ["Changelog"]


@pytest.mark.parametrize("name", ["book/preface.md", "README.md"])
def test_the_bibtex_entry_agrees_with_citation_cff(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    entries = bibtex_entries(text)
    assert len(entries) == 1, f"{name}: {len(entries)} BibTeX entries, expected one"
    assert bibtex_mismatches(entries[0], citation()) == []
    words = " ".join(text.split())
    assert "How to cite" in words and f"version {citation()['version']}" in words, f"{name}: no text citation"


# ----------------------------------------------------------------------------- the readers can fail


def test_the_footer_reader_finds_the_version_or_nothing():
    assert footer_version({"html": {"extra_footer": '<p>Version 2.1.0 · <a href="x">changelog</a></p>'}}) == "2.1.0"
    assert footer_version({"html": {"extra_footer": "<p>Changelog</p>"}}) is None
    assert footer_version({"html": {}}) is None


def test_the_changelog_reader_skips_unreleased_and_code():
    text = ("# Changelog\n\n## [Unreleased]\n\n```text\n## [9.9.9] - 2030-01-01\n```\n\n"
            "## [1.1.0] - 2027-01-02\n\n### Fixed\n\n## [1.0.0] - 2026-12-07\n")
    assert changelog_releases(text) == [("1.1.0", "2027-01-02"), ("1.0.0", "2026-12-07")]
    assert changelog_releases("# Changelog\n\n## [Unreleased]\n") == []
    assert h1_headings("# A\n\n```python\n# a comment\n```\n\n# B\n") == ["A", "B"]


@pytest.mark.parametrize("key", CFF_REQUIRED)
def test_the_cff_check_reports_a_missing_key(key):
    cff = citation()
    del cff[key]
    assert any(key in p for p in cff_problems(cff)), cff_problems(cff)


def test_the_cff_check_reports_bad_authors_version_and_date():
    assert any("authors" in p for p in cff_problems({**citation(), "authors": []}))
    assert any("authors" in p for p in cff_problems({**citation(), "authors": [{"affiliation": "x"}]}))
    assert any("cff-version" in p for p in cff_problems({**citation(), "cff-version": "1.1.0"}))
    assert any("date-released" in p for p in cff_problems({**citation(), "date-released": "December 2026"}))


@pytest.mark.parametrize(("field", "wrong"), [("title", "Generative models"), ("version", "0.9.0"),
                                              ("url", "https://github.com/someone/else"), ("year", "2025"),
                                              ("author", "Someone")])
def test_the_bibtex_check_finds_a_wrong_field(field, wrong):
    (entry,) = bibtex_entries((ROOT / "book" / "preface.md").read_text(encoding="utf-8"))
    problems = bibtex_mismatches({**entry, field: wrong}, citation())
    assert any(p.startswith(field) for p in problems), problems
    assert bibtex_mismatches({k: v for k, v in entry.items() if k != field}, citation()), "a missing field"


def test_the_bibtex_check_finds_a_note_with_another_version():
    (entry,) = bibtex_entries((ROOT / "book" / "preface.md").read_text(encoding="utf-8"))
    assert any("note" in p for p in bibtex_mismatches({**entry, "note": "Version 0.1.0"}, citation()))

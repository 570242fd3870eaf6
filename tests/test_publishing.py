"""Publishing: the GitHub Pages workflow, the table of contents, and the launch buttons.

The workflow must build with the README's book command and deploy ``_build/html``; every file
the table of contents names must exist, with notebooks as ``.ipynb`` files under
``notebooks/``; the Binder and Colab buttons of the built pages (when a site is built) must open
exactly those notebooks in the configured repository.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
SITE = Path(os.environ.get("COMPANION_SITE", ROOT / "_build" / "html"))
REQUIRE = os.environ.get("COMPANION_REQUIRE_SITE") == "1"


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def readme_book_command() -> str:
    """The README's command that builds the book (a code line containing 'book')."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    in_fence = False
    for line in lines:
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        code = in_fence or line.startswith("    ")
        if code and re.fullmatch(r"\s*make book\s*", line):
            return "make book"
    raise AssertionError("README.md shows no `make book` command")


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def toc_files(entries) -> list[str]:
    """Every ``file:`` of a jupyter-book table of contents, depth first (parts, chapters, sections)."""
    out = []
    for entry in entries or []:
        if "file" in entry:
            out.append(entry["file"])
        for key in ("parts", "chapters", "sections"):
            out += toc_files(entry.get(key))
    return out


def resolve(entry: str) -> Path | None:
    """The source file of a toc entry (jupyter-book accepts it with or without extension)."""
    path = ROOT / entry
    if path.suffix in {".md", ".ipynb"}:
        return path if path.exists() else None
    found = [p for p in (path.with_suffix(".md"), path.with_suffix(".ipynb")) if p.exists()]
    return found[0] if len(found) == 1 else None


# ----------------------------------------------------------------------------- the workflow


def test_book_workflow_is_valid_yaml_with_build_and_deploy_jobs():
    workflow = load_yaml(WORKFLOW)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers and "main" in triggers["push"]["branches"], "the book must be published on push to main"
    assert {"build", "deploy"} <= set(workflow["jobs"]), f"jobs: {list(workflow['jobs'])}"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"


def test_book_workflow_builds_with_the_readme_command_and_uploads_the_site():
    workflow = load_yaml(WORKFLOW)
    command = readme_book_command()
    runs = [s.get("run", "") for s in steps(workflow)]
    lines = [line.split() for run in runs for line in run.split("\n")]
    assert any(words[: len(command.split())] == command.split() for words in lines), (
        f"no step runs the README's `{command}`: {runs}"
    )
    uses = {s.get("uses", "").split("@")[0]: s for s in steps(workflow)}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "actions/deploy-pages" in uses
    browser = [s for s in steps(workflow) if "tests/test_site.py" in s.get("run", "")]
    assert browser and browser[0]["env"]["COMPANION_REQUIRE_SITE"] == "1", "the browser test must run, and may not skip"


def test_the_build_step_comes_before_the_upload():
    names = [s.get("run", s.get("uses", "")) for s in load_yaml(WORKFLOW)["jobs"]["build"]["steps"]]
    build = next(i for i, n in enumerate(names) if n.split()[:2] == ["make", "book"])
    upload = next(i for i, n in enumerate(names) if n.startswith("actions/upload-pages-artifact"))
    assert build < upload


# ----------------------------------------------------------------------------- toc and launch buttons


def test_every_toc_entry_exists_and_notebooks_live_in_notebooks():
    toc = load_yaml(ROOT / "_toc.yml")
    entries = [toc["root"], *toc_files(toc.get("parts") or toc.get("chapters"))]
    missing = [e for e in entries if resolve(e) is None]
    assert not missing, f"_toc.yml names files that do not exist (or exist as both .md and .ipynb): {missing}"
    for entry in entries:
        path = resolve(entry).relative_to(ROOT)
        if path.suffix == ".ipynb":
            assert path.parts[0] == "notebooks", f"notebook {path} is not under notebooks/"
        if path.parts[0] == "notebooks":
            assert path.suffix == ".ipynb", f"{path}: pages under notebooks/ must be notebooks (.ipynb)"
    assert len(entries) == len(set(entries)), "a file appears twice in _toc.yml"


def test_launch_buttons_are_configured_for_a_github_repository():
    config = load_yaml(ROOT / "_config.yml")
    url = urlsplit(config["repository"]["url"])
    assert url.scheme == "https" and url.netloc == "github.com" and len(url.path.strip("/").split("/")) == 2
    assert config["repository"].get("branch")
    buttons = config["launch_buttons"]
    assert buttons["binderhub_url"].startswith("https://") and buttons["colab_url"].startswith("https://")


def launch_links(html: str) -> list[str]:
    return re.findall(r'href="(https://[^"]*(?:/v2/gh/|colab\.research\.google\.com/github/)[^"]*)"', html)


def notebook_path_of(link: str, repo: str, branch: str) -> str:
    """The repository path a Binder or Colab link opens, after checking repository and branch."""
    url = urlsplit(link.replace("&amp;", "&"))
    if "/v2/gh/" in url.path:
        prefix = f"/v2/gh/{repo}/{branch}"
        assert url.path == prefix, f"Binder link for another repository or branch: {link}"
        (urlpath,) = parse_qs(url.query)["urlpath"]
        return re.sub(r"^(lab/tree|tree)/", "", urlpath)
    prefix = f"/github/{repo}/blob/{branch}/"
    assert url.path.startswith(prefix), f"Colab link for another repository or branch: {link}"
    return url.path[len(prefix):]


def test_built_launch_buttons_open_the_page_s_own_notebook():
    pages = sorted((SITE / "notebooks").glob("*.html")) if SITE.is_dir() else []
    if not pages:
        if REQUIRE:
            pytest.fail(f"no built notebook pages in {SITE} (COMPANION_REQUIRE_SITE=1)")
        pytest.skip(f"no built site with notebook pages at {SITE} (run `make book`)")
    config = load_yaml(ROOT / "_config.yml")
    repo = urlsplit(config["repository"]["url"]).path.strip("/")
    branch = config["repository"]["branch"]
    failures = []
    for page in pages:
        own = f"notebooks/{page.stem}.ipynb"
        links = launch_links(page.read_text(encoding="utf-8"))
        kinds = {"binder" if "/v2/gh/" in link else "colab" for link in links}
        if kinds != {"binder", "colab"}:
            failures.append(f"{page.name}: launch buttons {sorted(kinds)}, expected binder and colab")
        for link in links:
            target = notebook_path_of(link, repo, branch)
            if target != own:
                failures.append(f"{page.name}: {link} opens {target}, expected {own}")
            elif not (ROOT / target).exists():
                failures.append(f"{page.name}: {link} opens {target}, which is not in the repository")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- internal links of the built site

_LINK = re.compile(r"""<(a|img|link|script)\b[^>]*?\s(href|src)=["']([^"']+)["']""", re.I)
_ID = re.compile(r"""\s(?:id|name)=["']([^"']+)["']""")


def internal_link_problems(site: Path) -> list[str]:
    """Relative links and sources of every built page that point at a missing file or anchor."""
    from html import unescape
    from urllib.parse import unquote

    skip = {"_static", "_sources", "mathjax", "widgets"}

    def edition_folder(page: Path) -> str:  # the Chinese edition's assets are under zh/
        parts = page.relative_to(site).parts
        return parts[1] if parts[0] == "zh" and len(parts) > 1 else parts[0]

    pages = [p for p in site.rglob("*.html") if edition_folder(p) not in skip]
    ids: dict[Path, set[str]] = {}

    def anchors(path: Path) -> set[str]:
        if path not in ids:
            ids[path] = set(_ID.findall(path.read_text(encoding="utf-8", errors="replace")))
        return ids[path]

    problems = []
    for page in pages:
        html = page.read_text(encoding="utf-8", errors="replace")
        for tag, _, raw in _LINK.findall(html):
            link = unescape(raw)
            if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith("//"):
                continue  # absolute URL, mailto:, javascript:, data:
            path_part, _, fragment = link.partition("#")
            path_part = unquote(path_part.split("?")[0])
            target = page if not path_part else (page.parent / path_part).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: <{tag}> {link} -> missing file")
            elif (fragment and tag.lower() == "a" and target.suffix == ".html"
                  and unquote(fragment) not in anchors(target)):
                problems.append(f"{page.relative_to(site)}: <a> {link} -> no anchor #{fragment}")
    return problems


def test_internal_links_of_the_built_site_resolve():
    if not (SITE / "index.html").exists():
        if REQUIRE:
            pytest.fail(f"no built site at {SITE} (COMPANION_REQUIRE_SITE=1)")
        pytest.skip(f"no built site at {SITE} (run `make book`)")
    problems = internal_link_problems(SITE)
    assert not problems, f"{len(problems)} broken internal links:\n" + "\n".join(problems[:50])


def test_the_link_check_finds_a_missing_page_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.html").write_text(
        '<p id="here">x</p><a href="b.html">b</a><a href="#gone">g</a><a href="a.html#here">ok</a>')
    (tmp_path / "c.html").write_text('<img src="img/none.png"><a href="https://example.org/x">ext</a>')
    problems = internal_link_problems(tmp_path)
    assert len(problems) == 3, problems
    assert any("b.html -> missing file" in p for p in problems)
    assert any("no anchor #gone" in p for p in problems)
    assert any("none.png -> missing file" in p for p in problems)


def _check_site_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_check_finds_a_machine_path_in_a_page_text_but_not_in_a_link():
    cs = _check_site_module()
    paths = ["/home/builder/.cache/companion", "/home/builder"]
    page = '<p>Loaded cached weights from /home/builder/.cache/companion/gpt.pt</p><a href="/home/builder/x">x</a>'
    hits = cs.shown_paths(page, paths)
    assert hits and "/home/builder/.cache/companion/gpt.pt" in hits[0]
    assert cs.shown_paths('<a href="/home/builder/x">a link</a>', paths) == []
    assert str(ROOT) in cs.machine_paths()


def test_the_site_check_finds_a_kernel_cell_file_and_the_fallback_warning_names_no_file():
    cs = _check_site_module()
    page = "<pre>/tmp/ipykernel_6144/2093162824.py:1: MNISTFallbackWarning: ...</pre>"
    assert cs.shown_paths(page, []) == ["/tmp/ipykernel_6144/2093162824.py"]
    assert cs.shown_paths("<p>a kernel runs each cell</p>", []) == []


def test_the_site_check_finds_a_markdown_table_shown_as_text_but_not_a_rendered_one():
    cs = _check_site_module()
    raw = "<p>| model | FID | |—|—| | vae | 190 |</p>"
    assert cs.raw_tables(raw) and cs.raw_tables(raw)[0].startswith("| model")
    assert cs.raw_tables("<p>| a | b | |---|---| | 1 | 2 |</p>")
    assert cs.raw_tables("<table><tr><th>model</th></tr></table><p>a | b</p>") == []

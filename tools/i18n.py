"""The Chinese edition (中文版): one source, two languages, through Sphinx's gettext translation.

The English pages and notebooks are the only source. Their prose is split into messages
(paragraphs, headings, list items, captions); ``locales/zh_CN/LC_MESSAGES/**/*.po`` holds a
Chinese translation of every message. The Chinese site is built from the same sources with
``language = "zh_CN"`` and the same notebook execution cache, so every notebook runs once for
both editions, and code, outputs and figures are shared.

Usage (``make book`` runs ``build`` and ``check``; a translator runs ``extract`` and ``update``):

    python tools/i18n.py extract   # the English messages -> _build/gettext/**/*.pot (no execution)
    python tools/i18n.py update    # merge them into locales/zh_CN/LC_MESSAGES/**/*.po
    python tools/i18n.py build     # the Chinese site -> _build/html/zh
    python tools/i18n.py check     # every current message translated, none fuzzy, none altered

Translating by hand (plain text, so that LaTeX needs no escaping):

    python tools/i18n.py dump locales/zh_CN/LC_MESSAGES/notebooks/05_1_elbo.po > 05_1.txt
    # write the Chinese under each "=== N" header (keep the headers; drop the English)
    python tools/i18n.py load locales/zh_CN/LC_MESSAGES/notebooks/05_1_elbo.po 05_1.txt
    python tools/i18n.py check locales/zh_CN/LC_MESSAGES/notebooks/05_1_elbo.po

Jupyter Book 1's command line cannot pass the language (jupyter-book issue 1791); ``build``
calls its Python entry point ``jupyter_book.sphinx.build_sphinx`` with the language as a
configuration override instead, exactly as ``jupyter-book build`` calls it otherwise.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = "zh_CN"
LOCALES = ROOT / "locales"
CATALOGS = LOCALES / LANGUAGE / "LC_MESSAGES"
POT_DIR = ROOT / "_build" / "gettext"
SITE = ROOT / "_build" / "html"
ZH_SITE = SITE / "zh"
FIGURE_MIME = "image/vnd.companion.zh-cn+png"  # companion.figure_translation.MIME (tests check they agree)
EXECUTION_CACHE = ROOT / "_build" / ".jupyter_cache"  # the English build's executions (shared by both editions)

# Messages taken from the package's docstrings (the API reference) are code documentation shared
# by both editions, as the code is: the Chinese API page translates its own prose only.

# -- what must survive translation unchanged ---------------------------------------------------
DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.DOTALL)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(?:\\.|[^$\\])+?\$")
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
CODE = re.compile(r"(?<![}`])(`+)(?!`)(.+?)(?<!`)\1(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
WORD = re.compile(r"[A-Za-z]{2,}")


def role_target(content: str) -> str:
    """The target of a role: ``text <target>`` -> ``target``; ``target`` -> ``target``."""
    m = re.fullmatch(r"(?s).*<([^<>]+)>\s*", content)
    return (m.group(1) if m else content).strip()


def invariants(text: str) -> dict[str, Counter]:
    """The parts of a message a translation must keep exactly: math, role targets, code, links."""
    display = DISPLAY_MATH.findall(text)
    rest = DISPLAY_MATH.sub(" ", text)
    roles = [(name, role_target(content)) for name, content in ROLE.findall(rest)]
    rest_no_roles = ROLE.sub(" ", rest)
    code = [m.group(2) for m in CODE.finditer(rest_no_roles)]
    rest_plain = CODE.sub(" ", rest_no_roles)
    math = INLINE_MATH.findall(rest_plain)
    return {
        "math": Counter(display + math),
        "roles": Counter(roles),
        "code": Counter(code),
        "links": Counter(LINK.findall(rest_plain)),
    }


def prose_words(text: str) -> int:
    """English words outside math, roles, code and links: what a reader would need translated."""
    text = DISPLAY_MATH.sub(" ", text)
    text = ROLE.sub(" ", text)
    text = CODE.sub(" ", text)
    text = INLINE_MATH.sub(" ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"https?://\S+", " ", text)
    return len(WORD.findall(text))


def is_display_math(msgid: str) -> bool:
    """A math block's message: the source of a ``$$ ... $$`` block or a math directive, which
    starts with the space or line break after the opening ``$$`` (prose never starts so)."""
    return msgid[:1].isspace() and not CJK.search(msgid)


@dataclass
class Problem:
    catalog: str
    msgid: str
    why: str

    def __str__(self) -> str:
        short = " ".join(self.msgid.split())[:90]
        return f"{self.catalog}: {self.why}: {short!r}"


def check_message(msgid: str, msgstr: str, fuzzy: bool = False) -> list[str]:
    """What is wrong with one translation ([] when nothing is)."""
    if fuzzy:
        return ["fuzzy (the English changed since it was translated; re-translate it)"]
    if not msgstr.strip():
        return ["untranslated"]
    if is_display_math(msgid):
        return [] if msgstr == msgid else ["a math block must be copied unchanged"]
    why = []
    source, target = invariants(msgid), invariants(msgstr)
    for kind in source:
        if source[kind] != target[kind]:
            lost = list((source[kind] - target[kind]).elements())
            added = list((target[kind] - source[kind]).elements())
            why.append(f"{kind} differ (missing {lost}, added {added})")
    if not CJK.search(msgstr) and prose_words(msgid) >= 4:
        why.append("no Chinese in the translation of a sentence")
    return why


def read_catalogs(catalogs: Path = CATALOGS):
    """{catalog name: babel Catalog} for every .po file under ``catalogs``."""
    from babel.messages.pofile import read_po

    result = {}
    for po in sorted(catalogs.rglob("*.po")):
        with po.open("rb") as f:
            result[po.relative_to(catalogs).with_suffix("").as_posix()] = read_po(f)
    return result


def needs_translation(message) -> bool:
    """True for messages of the book's pages and notebooks; False for those that come only from
    the package's docstrings (babel splits their location, ``x.py:docstring of y:3``, at spaces)."""
    return any(path.endswith((".md", ".ipynb")) for path, _ in message.locations)


def check_catalogs(catalogs: Path = CATALOGS, pot_dir: Path | None = None) -> list[Problem]:
    """Every problem of the translation; with ``pot_dir``, also every current English message
    (from ``extract``) that has no translation at all."""
    problems = []
    po = read_catalogs(catalogs)
    for name, catalog in po.items():
        for message in catalog:
            if not message.id or not needs_translation(message):
                continue
            for why in check_message(message.id, message.string, message.fuzzy):
                problems.append(Problem(name, message.id, why))
    if pot_dir is not None:
        from babel.messages.pofile import read_po

        for pot in sorted(pot_dir.rglob("*.pot")):
            name = pot.relative_to(pot_dir).with_suffix("").as_posix()
            with pot.open("rb") as f:
                template = read_po(f)
            translated = po.get(name)
            for message in template:
                if not message.id or not needs_translation(message):
                    continue
                if translated is None or message.id not in translated:
                    problems.append(Problem(name, message.id, "no translation (run 'update')"))
    return problems


# -- terminology ---------------------------------------------------------------------------------
TERM_LINE = re.compile(r"^(\S[^(]*?) \((.+)\)\s*$")


def glossary_terms() -> list[tuple[str, str]]:
    """(English, Chinese) of every entry of the glossary, the single source of terminology."""
    text = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    body = text[text.index("```{glossary}") :]
    return [(m.group(1).strip(), m.group(2).strip()) for m in map(TERM_LINE.match, body.splitlines()) if m]


def write_terminology() -> Path:
    """locales/zh_CN/terminology.tsv from the glossary (a test keeps the two equal)."""
    target = LOCALES / LANGUAGE / "terminology.tsv"
    lines = [
        "# The terminology the Chinese edition follows: English term<TAB>Chinese term.",
        "# Generated from book/glossary.md, the single source of terminology; translations use these.",
        "# (The glossary's own definitions are translated in locales/zh_CN/LC_MESSAGES/book/glossary.po.)",
    ]
    target.write_text("\n".join(lines + [f"{e}\t{c}" for e, c in glossary_terms()]) + "\n", encoding="utf-8")
    return target


# -- translating by hand: messages as plain-text blocks -----------------------------------------
BLOCK = re.compile(r"^=== (\d+)[^\n]*\n", re.MULTILINE)


def dump(po: Path, everything: bool = False) -> str:
    """The messages of one catalog that still need work, as ``=== N`` blocks (English text)."""
    from babel.messages.pofile import read_po

    with po.open("rb") as f:
        catalog = read_po(f)
    out = []
    for n, message in enumerate(m for m in catalog if m.id):
        if not needs_translation(message):
            continue
        if everything or check_message(message.id, message.string, message.fuzzy):
            out.append(f"=== {n}\n{message.id}\n")
    return "\n".join(out)


def load(po: Path, blocks: str) -> int:
    """Set the translations of ``=== N`` blocks into one catalog; returns how many were set."""
    from babel.messages.pofile import read_po, write_po

    with po.open("rb") as f:
        catalog = read_po(f)
    messages = [m for m in catalog if m.id]
    parts = BLOCK.split(blocks)
    count = 0
    for index, text in zip(parts[1::2], parts[2::2], strict=True):
        message = messages[int(index)]
        text = text.strip()
        if is_display_math(message.id):
            text = message.id
        elif text:  # keep the message's own leading and trailing white space (a math block's)
            stripped = message.id.strip()
            start = message.id.index(stripped) if stripped else 0
            text = message.id[:start] + text + message.id[start + len(stripped) :]
        if text:
            message.string = text
            message.flags.discard("fuzzy")
            count += 1
    with po.open("wb") as f:
        write_po(f, catalog, width=0)
    return count


# -- the builds -----------------------------------------------------------------------------------
def extract() -> None:
    """Write the English messages to _build/gettext (notebooks are not executed for this)."""
    from jupyter_book.sphinx import build_sphinx

    overrides = {
        "nb_execution_mode": "off",
        "gettext_compact": False,
        "gettext_uuid": False,
        "gettext_location": True,
        "external_toc_path": "_toc.yml",
        "latex_individualpages": False,
    }
    sys.path.insert(0, str(ROOT / "tools"))
    result = build_sphinx(
        str(ROOT),
        str(POT_DIR),
        noconfig=True,
        path_config=str(ROOT / "_config.yml"),
        confoverrides=overrides,
        doctreedir=str(ROOT / "_build" / ".doctrees-gettext"),
        builder="gettext",
        quiet=True,
        freshenv=True,  # every page read again: some messages are collected as pages are read
    )
    if result:
        raise SystemExit(f"extracting the messages failed: {result}")
    write_figures_pot(POT_DIR / "figures.pot")
    write_terminology()


def figure_alt_texts() -> list[tuple[str, int, str]]:
    """(notebook, cell number, alt text) of every figure made by a code cell."""
    import json

    found = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells):
            alt = cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt")
            if alt:
                found.append((f"notebooks/{notebook.name}", number, alt))
    return found


def _figure_records(node, found: list) -> None:
    """Every record of :mod:`companion.figure_translation` in an executed notebook's JSON (outputs,
    glued values and the outputs inside saved widget states alike)."""
    if isinstance(node, dict):
        record = node.get("metadata", {}).get(FIGURE_MIME) if isinstance(node.get("metadata"), dict) else None
        if isinstance(record, dict):
            found.append(record)
        for value in node.values():
            _figure_records(value, found)
    elif isinstance(node, list):
        for value in node:
            _figure_records(value, found)


def figure_texts() -> list[tuple[str, int, str, bool]]:
    """(notebook, cell number, template, drawn translated?) of every word-bearing text drawn inside a
    figure by the English build's execution (its cache, ``_build/.jupyter_cache``; see companion.figure_translation)."""
    import nbformat
    from jupyter_cache import get_cache

    if not EXECUTION_CACHE.is_dir():
        raise SystemExit(f"no execution cache in {EXECUTION_CACHE}: build the English book first "
                         "(the words inside figures are collected from its execution)")
    cache = get_cache(str(EXECUTION_CACHE))
    found = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        try:  # the cached execution of the notebook as it is now (matched by its code)
            record = cache.match_cache_notebook(nbformat.read(notebook, as_version=4))
        except KeyError:
            raise SystemExit(f"{notebook.name} has no cached execution: build the English book first") from None
        nb = cache.get_cache_bundle(record.pk).nb
        outputs = [o for cell in nb["cells"] for o in cell.get("outputs", [])]
        if any("image/png" in o.get("data", {}) for o in outputs) and not any(
                FIGURE_MIME in o.get("data", {}) for o in outputs):
            raise SystemExit(f"{notebook.name} was executed without drawing its figures in Chinese: execute it with "
                             "COMPANION_FIGURE_TRANSLATIONS set (make book does), after removing _build/.jupyter_cache")
        # each cell's outputs, then the saved widgets' outputs (listed under cell 0)
        parts = [(number, cell.get("outputs", [])) for number, cell in enumerate(nb["cells"])]
        for number, part in parts + [(0, nb.get("metadata", {}).get("widgets", {}))]:
            records: list = []
            _figure_records(part, records)
            for record in records:
                found += [(f"notebooks/{notebook.name}", number, t, ok)
                          for ok, key in ((True, "texts"), (False, "untranslated")) for t in record.get(key, [])]
    return found


def write_figures_pot(target: Path) -> None:
    """The catalog template ``figures``: the alt texts that the pages' prose does not contain
    (translated in the Chinese build by ``tools/sphinx_i18n_extras.py``) and the words drawn inside
    the figures (translated while the notebooks execute, by companion.figure_translation)."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    catalog = Catalog(project="figures", charset="utf-8")
    for notebook, number, alt in figure_alt_texts():
        catalog.add(alt, locations=[(f"../{notebook}", number)])
    for notebook, number, text, _ in figure_texts():
        if text in catalog:
            catalog[text].locations.append((f"../{notebook}", number))
        else:
            catalog.add(text, locations=[(f"../{notebook}", number)])
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as f:
        write_po(f, catalog, width=0)


def update() -> None:
    """Merge the extracted messages into the catalogs (new ones empty, changed ones fuzzy)."""
    cmd = [sys.executable, "-m", "sphinx_intl", "update", "-p", str(POT_DIR)]
    cmd += ["-l", LANGUAGE, "-d", str(LOCALES), "-w", "0"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    from babel.messages.pofile import read_po, write_po

    for po in CATALOGS.rglob("*.po"):  # messages the English no longer has are not kept
        with po.open("rb") as f:
            catalog = read_po(f)
        if catalog.obsolete:
            catalog.obsolete.clear()
            with po.open("wb") as f:
                write_po(f, catalog, width=0, ignore_obsolete=True)


def build_overrides() -> dict:
    """The Sphinx configuration of the Chinese edition (shared by its site and its PDF)."""
    return {
        "language": LANGUAGE,
        "locale_dirs": [str(LOCALES)],
        "gettext_compact": False,
        "nb_execution_cache_path": str(ROOT / "_build" / ".jupyter_cache"),
        "external_toc_path": "_toc.yml",
        "latex_individualpages": False,
        "nitpicky": True,
        "html_title": "从第一性原理出发的生成模型",
        "html_search_language": "zh",
        # every figure's picture with its words translated (companion.figure_translation), stored
        # beside the English one by the shared execution, comes first
        "nb_mime_priority_overrides": [("*", FIGURE_MIME, 15)],
    }


ZH_DOCTREES = ROOT / "_build" / ".doctrees-zh"


def build(warnings_are_errors: bool = True) -> int:
    """Build the Chinese site into _build/html/zh with the English build's execution cache."""
    from jupyter_book.sphinx import build_sphinx

    sys.path.insert(0, str(ROOT / "tools"))
    return build_sphinx(
        str(ROOT),
        str(ZH_SITE),
        noconfig=True,
        path_config=str(ROOT / "_config.yml"),
        confoverrides=build_overrides(),
        doctreedir=str(ZH_DOCTREES),
        builder="html",
        warningiserror=warnings_are_errors,
        keep_going=True,
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"extract", "update", "build", "check", "dump", "load"}:
        print(__doc__)
        return 2
    command = argv[0]
    if command == "dump":
        print(dump(Path(argv[1]), everything="--all" in argv))
    elif command == "load":
        print(f"{load(Path(argv[1]), Path(argv[2]).read_text(encoding='utf-8'))} messages set")
    elif command == "check" and len(argv) > 1:
        problems = []
        for po in argv[1:]:
            catalogs = read_catalogs(Path(po).parent)
            name = Path(po).stem
            for message in catalogs[name]:
                if message.id and needs_translation(message):
                    for why in check_message(message.id, message.string, message.fuzzy):
                        problems.append(Problem(name, message.id, why))
        for p in problems:
            print(p)
        print(f"{len(problems)} problems")
        return 1 if problems else 0
    elif command == "extract":
        extract()
    elif command == "update":
        update()
    elif command == "build":
        return 1 if build() else 0
    else:
        problems = check_catalogs(CATALOGS, POT_DIR if POT_DIR.exists() else None)
        if EXECUTION_CACHE.is_dir():  # a picture of the Chinese edition drawn with English words in it
            problems += [Problem("figures", text, f"drawn untranslated inside a figure of {notebook} (translate it "
                                 "in figures.po, then build again)")
                         for notebook, _, text, translated in figure_texts() if not translated]
        for p in problems[:200]:
            print(p)
        count = sum(
            1 for c in read_catalogs().values() for m in c if m.id and needs_translation(m)
        )
        print(f"{count} messages to translate, {len(problems)} problems")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

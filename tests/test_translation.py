"""The Chinese edition's catalogs (locales/zh_CN): complete, not fuzzy, and faithful to the English
in everything that is not prose (math, reference targets, code spans, link targets).

The checker itself is tested first on messages whose verdict is known, so that a checker that
passes everything would fail here. Whether the catalogs cover the *current* English text is
checked by ``make book`` (``tools/i18n.py extract`` then ``check``), which needs a Sphinx run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tools_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]


i18n = load_tool("i18n")
pytest.importorskip("babel")


# -- the checker, on known cases -------------------------------------------------------------------
GOOD = [
    ("The posterior $p(z \\mid x)$ is intractable.", "后验 $p(z \\mid x)$ 难以计算。"),
    ("See {doc}`01_generative_vs_discriminative` and {ref}`the proof <thm-kl>`.",
     "见 {doc}`01_generative_vs_discriminative` 与{ref}`证明 <thm-kl>`。"),
    ("Call `companion.vae.elbo` with [the data](https://example.org/a).",
     "用[数据](https://example.org/a)调用 `companion.vae.elbo`。"),
    ("It reaches {glue:text}`fid_dcgan:.1f` after {cite}`goodfellow2014gan`.",
     "它在 {cite}`goodfellow2014gan` 之后达到 {glue:text}`fid_dcgan:.1f`。"),
    ("GPT", "GPT"),  # a name needs no Chinese
]
BAD = [
    ("The mean is $\\mu$ and the variance $\\sigma^2$.", "均值为 $\\mu$，方差为 $\\sigma$。", "math"),
    ("See {ref}`the proof <thm-kl>`.", "见{ref}`证明 <thm-js>`。", "roles"),
    ("Use `torch.no_grad`.", "使用 `no_grad`。", "code"),
    ("Read [this](https://a.org).", "阅读[这里](https://b.org)。", "links"),
    ("This sentence was not translated at all.", "This sentence was not translated at all.", "no Chinese"),
    ("Untranslated message here.", "", "untranslated"),
]


@pytest.mark.parametrize("msgid, msgstr", GOOD)
def test_checker_accepts_faithful_translations(msgid, msgstr):
    assert i18n.check_message(msgid, msgstr) == []


@pytest.mark.parametrize("msgid, msgstr, why", BAD)
def test_checker_rejects_damaged_translations(msgid, msgstr, why):
    problems = i18n.check_message(msgid, msgstr)
    assert any(why in p for p in problems), problems


def test_checker_rejects_fuzzy_and_altered_math_blocks():
    assert i18n.check_message("A sentence of the book.", "书中的一句话。", fuzzy=True)
    block = "\nx = \\frac{a}{b}\n"
    assert i18n.check_message(block, block) == []
    assert i18n.check_message(block, "\nx = a/b\n")


def test_dump_then_load_sets_exactly_the_given_blocks(tmp_path):
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po, write_po

    catalog = Catalog(locale="zh_CN")
    catalog.add("First sentence with $x^2$.", locations=[("../../notebooks/a.ipynb", 1)])
    catalog.add("Second sentence, left alone.", locations=[("../../notebooks/a.ipynb", 2)])
    catalog.add("\n\\int_0^1 x\\,dx\n", locations=[("../../notebooks/a.ipynb", 3)])
    po = tmp_path / "a.po"
    with po.open("wb") as f:
        write_po(f, catalog)
    blocks = i18n.dump(po)
    assert blocks.count("=== ") == 3 and "$x^2$" in blocks
    assert i18n.load(po, "=== 0\n第一句，含 $x^2$。\n\n=== 2\nignored\n") == 2
    with po.open("rb") as f:
        loaded = {m.id: m.string for m in read_po(f) if m.id}
    assert loaded["First sentence with $x^2$."] == "第一句，含 $x^2$。"
    assert loaded["Second sentence, left alone."] == ""
    assert loaded["\n\\int_0^1 x\\,dx\n"] == "\n\\int_0^1 x\\,dx\n"  # math blocks are copied


# -- the catalogs ------------------------------------------------------------------------------------
def test_every_message_is_translated_faithfully():
    assert i18n.CATALOGS.exists(), f"no catalogs at {i18n.CATALOGS}"
    problems = i18n.check_catalogs(i18n.CATALOGS)
    assert not problems, f"{len(problems)} problems, e.g.:\n" + "\n".join(map(str, problems[:15]))


def test_every_page_of_the_book_has_a_catalog():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    pages = re.findall(r"file:\s*(\S+)", toc) + [re.search(r"root:\s*(\S+)", toc).group(1)]
    catalogs = i18n.read_catalogs()
    missing = [p for p in pages if p not in catalogs]
    assert not missing, f"pages without a catalog (run tools/i18n.py extract and update): {missing}"


def test_every_figure_alt_text_has_a_translation():
    catalogs = i18n.read_catalogs()
    assert "figures" in catalogs, "no catalog 'figures' (tools/i18n.py extract, then update)"
    translated = {m.id for m in catalogs["figures"] if m.id and m.string}
    missing = [(nb, cell) for nb, cell, alt in i18n.figure_alt_texts() if alt not in translated]
    assert not missing, f"figures whose alt text has no Chinese: {missing[:10]}"


def test_terminology_list_is_the_glossary():
    """locales/zh_CN/terminology.tsv is generated from the glossary and must not drift from it."""
    listed = [
        tuple(line.split("\t"))
        for line in (i18n.LOCALES / "zh_CN" / "terminology.tsv").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert listed == i18n.glossary_terms()


def test_the_glossary_keeps_each_chinese_term():
    """The Chinese glossary shows the same Chinese term the English one gives for each entry."""
    glossary = i18n.read_catalogs()["book/glossary"]
    strings = {m.id: m.string for m in glossary if m.id}
    wrong = []
    for english, chinese in i18n.glossary_terms():
        msgid = f"{english} ({chinese})"
        if msgid in strings and strings[msgid] and chinese.split(",")[0] not in strings[msgid]:
            wrong.append((msgid, strings[msgid]))
    assert not wrong, f"glossary entries whose Chinese term changed: {wrong[:10]}"

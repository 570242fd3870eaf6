"""The words inside figures, drawn a second time in Chinese (companion.figure_translation)."""

from __future__ import annotations

import io
import os

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from companion import figure_translation as ft  # noqa: E402
from tests.tools_loader import load_tool  # noqa: E402

i18n = load_tool("i18n")

CATALOG = {"training step": "训练步数", "loss at step {0}": "第 {0} 步的损失", "real": "真实", "fake": "生成",
           "FID {0} after {1} steps": "训练 {1} 步后 FID 为 {0}"}


@pytest.mark.parametrize("text, template, numbers", [
    ("step 300, FID 34.8", "step {0}, FID {1}", ["300", "34.8"]),
    ("1,000 samples at lr 1e-3 (95.4%)", "{0} samples at lr {1} ({2}%)", ["1,000", "1e-3", "95.4"]),
    ("guidance $w = 2$ on 100 clusters", "guidance $w = 2$ on {0} clusters", ["100"]),  # math kept
    ("conv2d", "conv2d", []),  # a digit inside a word is part of the word
])
def test_template_replaces_numbers_outside_math_and_fill_inverts_it(text, template, numbers):
    assert ft.template_of(text) == (template, numbers)
    assert ft.fill(template, numbers) == text


def test_fill_leaves_braces_inside_math_alone_and_rejects_a_missing_number():
    assert ft.fill("$x^{2}$ after {0} steps", ["5"]) == "$x^{2}$ after 5 steps"
    with pytest.raises(ValueError, match=r"asks for number \{1\}"):
        ft.fill("{0} and {1}", ["3"])


@pytest.mark.parametrize("template, needed", [
    ("training step", True), ("$\\log p(x)$", False), ("{0}", False), ("t = {0}", False),
    ("$\\beta$ schedule", True), ("x", False),
])
def test_only_texts_with_words_outside_math_need_translation(template, needed):
    assert ft.needs_translation(template) is needed


def test_translate_text_fills_the_translation_with_the_texts_numbers():
    assert ft.translate_text("FID 34.8 after 800 steps", CATALOG) == ("训练 800 步后 FID 为 34.8",
                                                                     "FID {0} after {1} steps", True)
    assert ft.translate_text("$p(x)$", CATALOG) == ("$p(x)$", None, True)
    assert ft.translate_text("unknown words", CATALOG) == ("unknown words", "unknown words", False)
    with pytest.raises(ValueError, match="must keep its placeholders"):
        ft.translate_text("loss at step 3", {"loss at step {0}": "损失"})


def test_load_catalog_reads_translated_messages_and_names_a_missing_file(tmp_path):
    po = tmp_path / "figures.po"
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                  'msgid "real"\nmsgstr "真实"\n\nmsgid "fake"\nmsgstr ""\n\n'
                  '#, fuzzy\nmsgid "old"\nmsgstr "旧"\n', encoding="utf-8")
    assert ft.load_catalog(po) == {"real": "真实"}
    with pytest.raises(FileNotFoundError, match="not a file"):
        ft.load_catalog(tmp_path / "missing.po")


def _cjk_font_or_skip():
    try:
        return ft.cjk_font()
    except RuntimeError:
        if os.environ.get("CI"):
            raise  # CI installs fonts-wqy-microhei: the Chinese pictures must be drawable there
        pytest.skip("no font with Chinese glyphs on this machine")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def test_render_translated_draws_chinese_words_and_restores_the_figure():
    _cjk_font_or_skip()
    fig, (ax, bars) = plt.subplots(1, 2)
    ax.plot([0, 1], label="loss at step 300")
    ax.set_xlabel("training step")
    ax.set_title("untranslated title")
    ax.legend()
    bars.bar(["real", "fake"], [1, 2])
    before = _png(fig)
    png, used, missed = ft.render_translated(fig, CATALOG)
    assert used == ["fake", "loss at step {0}", "real", "training step"]
    assert missed == ["untranslated title"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png != before
    # the English figure is unchanged: texts, tick labels, fonts and the picture itself
    assert ax.get_xlabel() == "training step" and ax.get_legend().get_texts()[0].get_text() == "loss at step 300"
    fig.canvas.draw()
    assert [t.get_text() for t in bars.get_xticklabels()] == ["real", "fake"]
    assert _png(fig) == before
    plt.close(fig)


def test_chinese_words_beside_math_are_drawn_without_missing_glyphs():
    """mathtext has no font fall-back: words around $...$ must be drawn in a font that has Chinese glyphs
    (a missing glyph is an error of render_translated, see the next test)."""
    _cjk_font_or_skip()
    fig, ax = plt.subplots()
    ax.set_xlabel("$m_1$ (mean of q)")
    ax.set_title("training step")
    catalog = {"$m_1$ (mean of q)": "$m_1$（q 的均值）", "training step": "训练步数"}
    _, used, missed = ft.render_translated(fig, catalog)
    assert missed == [] and used == ["$m_1$ (mean of q)", "training step"]  # the number inside math is kept
    plt.close(fig)


def test_a_glyph_that_no_font_has_is_an_error_not_a_broken_picture():
    _cjk_font_or_skip()
    fig, ax = plt.subplots()
    ax.set_xlabel("training step")
    with pytest.raises(RuntimeError, match="lacks glyphs"):
        ft.render_translated(fig, {"training step": "训练 \U0001FAE8"})
    assert ax.get_xlabel() == "training step"  # restored all the same
    plt.close(fig)


def test_the_chinese_picture_differs_only_where_words_were_translated():
    """A figure whose words are all language-neutral is drawn identically."""
    _cjk_font_or_skip()
    fig, ax = plt.subplots()
    ax.plot([0, 1, 4])
    ax.set_xlabel("$t$")
    png, used, missed = ft.render_translated(fig, CATALOG)
    assert used == [] and missed == []
    assert png == _png(fig)
    plt.close(fig)


def test_dual_image_html_marks_each_language():
    html = ft.dual_image_html(b"en", b"zh", 'a "plot"', "一张图")
    assert 'class="companion-lang-en" alt="a &quot;plot&quot;"' in html
    assert 'class="companion-lang-zh" alt="一张图"' in html


def test_the_figure_mime_type_is_the_one_the_chinese_build_ranks_first():
    assert i18n.FIGURE_MIME == ft.MIME
    assert ("*", ft.MIME, 15) in i18n.build_overrides()["nb_mime_priority_overrides"]


def test_enable_in_ipython_does_nothing_outside_a_kernel():
    assert ft.enable_in_ipython() is False


def test_figure_records_are_found_in_outputs_glue_and_widget_states():
    record = {"texts": ["real"], "untranslated": ["fake"]}
    notebook_part = [{"output_type": "display_data", "metadata": {ft.MIME: record}},
                     {"state": {"outputs": [{"metadata": {ft.MIME: {"texts": ["x y"], "untranslated": []}}}]}}]
    found = []
    i18n._figure_records(notebook_part, found)
    assert found == [record, {"texts": ["x y"], "untranslated": []}]


def test_without_a_chinese_font_the_error_names_the_font_to_install(monkeypatch):
    monkeypatch.setattr(ft, "CJK_FONTS", ("No Such Font Sans CJK",))
    with pytest.raises(RuntimeError, match="apt-get install fonts-wqy-microhei"):
        ft.cjk_font()

r"""The words inside figures, translated: every figure of the book is drawn once per language.

The book has an English and a Chinese edition built from one execution of each notebook
(``tools/i18n.py``). Its prose is translated by Sphinx's gettext catalogs, but the words that
matplotlib draws into a figure (titles, axis labels, legends, tick labels, annotations) are
pixels of a PNG. This module draws each figure a second time with its words translated, while
the notebook runs, and adds that picture to the output under its own MIME type
(``MIME``); the Chinese build shows it in place of the English ``image/png``
(``tools/sphinx_i18n_extras.py``), the English build and JupyterLab ignore it.

A text is looked up as a *template*: every number in it becomes a numbered placeholder, so
``"step 300, FID 34.8"`` is the message ``"step {0}, FID {1}"``, and its translation
``"第 {0} 步，FID {1}"`` is filled with the same numbers. Texts without a word of two or more
Latin letters outside ``$...$`` (numbers, symbols, math) are language-neutral and drawn as they
are. The translations are the catalog ``figures`` (``locales/zh_CN/LC_MESSAGES/figures.po``);
each output records the templates it needed and those without a translation
(``tools/i18n.py extract`` collects them, ``tools/i18n.py check`` fails on a missing one).

Active only where the book is built: the ``make book`` sets ``COMPANION_FIGURE_TRANSLATIONS`` to
the catalog's path, and ``import companion`` then calls :func:`enable_in_ipython`. A reader's
JupyterLab draws each figure once, as before.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MIME", "ENV", "CJK_FONTS", "cjk_font", "template_of", "fill", "placeholders", "needs_translation",
           "translate_text", "load_catalog", "render_translated", "enable_in_ipython", "dual_image_html",
           "active_catalog"]

MIME = "image/vnd.companion.zh-cn+png"
ENV = "COMPANION_FIGURE_TRANSLATIONS"
# fonts with Chinese glyphs, the first one installed is the fall-back for the glyphs a text's own font lacks
# (Debian: fonts-wqy-microhei, as in CI; then Noto/Source Han, macOS and Windows fonts)
CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei")

NUMBER = re.compile(r"(?<![A-Za-z])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")
PLACEHOLDER = re.compile(r"\{(\d+)\}")
MATH = re.compile(r"(?<!\\)\$(?:\\.|[^$\\])+?\$")
WORD = re.compile(r"[A-Za-z]{2,}")
CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")


def _outside_math(text: str, fn) -> str:
    """``fn`` applied to the parts of ``text`` outside ``$...$`` (math is kept as it is)."""
    parts, end = [], 0
    for m in MATH.finditer(text):
        parts += [fn(text[end:m.start()]), m.group(0)]
        end = m.end()
    return "".join(parts + [fn(text[end:])])


def template_of(text: str) -> tuple[str, list[str]]:
    """``text`` with its numbers outside ``$...$`` replaced by ``{0}, {1}, ...``, and the numbers in order.

    >>> template_of("step 300, FID 34.8")
    ('step {0}, FID {1}', ['300', '34.8'])
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    numbers: list[str] = []

    def replace(m: re.Match) -> str:
        numbers.append(m.group(0))
        return "{" + str(len(numbers) - 1) + "}"

    return _outside_math(text, lambda part: NUMBER.sub(replace, part)), numbers


def fill(template: str, numbers: list[str]) -> str:
    """The inverse of :func:`template_of`: ``{i}`` outside math replaced by ``numbers[i]``."""

    def replace(m: re.Match) -> str:
        i = int(m.group(1))
        if i >= len(numbers):
            raise ValueError(f"template {template!r} asks for number {{{i}}} but only {len(numbers)} came with it")
        return numbers[i]

    return _outside_math(template, lambda part: PLACEHOLDER.sub(replace, part))


def placeholders(template: str) -> list[str]:
    """The placeholders ``{i}`` of a template, outside math, sorted."""
    found: list[str] = []
    _outside_math(template, lambda part: found.extend(PLACEHOLDER.findall(part)) or part)
    return sorted(found)


def needs_translation(template: str) -> bool:
    """True when the text has a word (two or more Latin letters) outside ``$...$`` math."""
    return bool(WORD.search(MATH.sub(" ", template)))


def translate_text(text: str, catalog: Mapping[str, str]) -> tuple[str, str | None, bool]:
    """``(drawn text, template or None, translated?)``: the template is None for a language-neutral text."""
    template, numbers = template_of(text)
    if not needs_translation(template):
        return text, None, True
    translation = catalog.get(template)
    if not translation:
        return text, template, False
    if placeholders(translation) != placeholders(template):
        raise ValueError(f"the translation {translation!r} of {template!r} must keep its placeholders "
                         f"{placeholders(template)}")
    return fill(translation, numbers), template, True


def load_catalog(path: str | Path) -> dict[str, str]:
    """``{English template: translation}`` of the translated, non-fuzzy messages of a ``.po`` file."""
    from babel.messages.pofile import read_po

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{ENV} names {str(path)!r}, which is not a file (expected the catalog figures.po)")
    with path.open("rb") as f:
        catalog = read_po(f)
    return {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}


def cjk_font() -> str:
    """The first of ``CJK_FONTS`` that matplotlib finds; a clear error when there is none."""
    from matplotlib import font_manager

    for family in CJK_FONTS:
        try:
            font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
            return family
        except ValueError:
            continue
    raise RuntimeError(f"translated figures need a font with Chinese glyphs, one of {', '.join(CJK_FONTS)} "
                       "(Debian: apt-get install fonts-wqy-microhei); matplotlib finds none of them")


def render_translated(fig, catalog: Mapping[str, str], **print_kwargs) -> tuple[bytes, list[str], list[str]]:
    """A PNG of ``fig`` with its words translated, and the templates it ``used`` and ``missed``.

    Every text artist (titles, labels, legend entries, annotations) and every tick label is
    looked up; the figure is restored afterwards, so the English picture drawn from it is unchanged.
    """
    import matplotlib
    import matplotlib.text
    import matplotlib.ticker as ticker
    from IPython.core.pylabtools import print_figure

    used: list[str] = []
    missed: list[str] = []

    def translated(text: str) -> str:
        drawn, template, ok = translate_text(text, catalog)
        if template is not None:
            (used if ok else missed).append(template)
        return drawn

    fig.canvas.draw()  # tick labels and legends get their texts
    restore = []
    tick_texts = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_texts.update({id(tick.label1), id(tick.label2)})
            locs = list(axis.get_majorticklocs())
            labels = [str(label) for label in axis.get_major_formatter().format_ticks(locs)] if locs else []
            new = [translated(label) for label in labels]
            if new != labels:
                state = (axis.get_major_locator(), axis.get_major_formatter(), axis.isDefault_majloc,
                         axis.isDefault_majfmt)
                axis.set_major_locator(ticker.FixedLocator(locs))
                axis.set_major_formatter(ticker.FixedFormatter(new))

                def undo(axis=axis, state=state):
                    axis.set_major_locator(state[0])
                    axis.set_major_formatter(state[1])
                    axis.isDefault_majloc, axis.isDefault_majfmt = state[2], state[3]

                restore.append(undo)
    for artist in fig.findobj(matplotlib.text.Text):
        if id(artist) in tick_texts:
            continue
        text = artist.get_text()
        if text:
            new = translated(text)
            if new != text:
                artist.set_text(new)
                restore.append(lambda artist=artist, text=text: artist.set_text(text))
    font = cjk_font()
    for artist in fig.findobj(matplotlib.text.Text):  # glyphs the text's own font lacks come from the CJK font
        family = list(artist.get_fontfamily())
        if font not in family:
            text = artist.get_text()
            # mathtext draws the words around $...$ in the text's first font, without fall-back: the CJK font
            # comes first there (it has Latin letters too); elsewhere it only fills in the missing glyphs
            first = "$" in text and CJK.search(text)
            artist.set_fontfamily([font] + family if first else family + [font])
            restore.append(lambda artist=artist, family=family: artist.set_fontfamily(family))
    try:
        with _missing_glyphs() as glyphs:
            png = print_figure(fig, fmt="png", base64=False, **{"bbox_inches": "tight", **print_kwargs})
    finally:
        for undo in reversed(restore):
            undo()
    if glyphs:
        raise RuntimeError(f"the translated figure lacks glyphs ({len(glyphs)} reports, e.g. {glyphs[0]!r}): "
                           f"its fonts, with {font} as the fall-back, do not cover them")
    return png, sorted(set(used)), sorted(set(missed))


class _missing_glyphs:
    """Collects the characters matplotlib reports as missing from its fonts (as warnings or log records) instead
    of letting the reports reach the notebook's output."""

    def __enter__(self) -> list[str]:
        import logging
        import warnings

        self.found: list[str] = []
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        outer = self

        class Collect(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                if "glyph" in record.getMessage().lower():
                    outer.found.append(record.getMessage())
                    return False
                return True

        self._filter = Collect()
        self._loggers = [logging.getLogger("matplotlib.mathtext")]  # where mathtext reports a missing glyph
        for logger in self._loggers:
            logger.addFilter(self._filter)
        return self.found

    def __exit__(self, *exc) -> None:
        import warnings

        for logger in self._loggers:
            logger.removeFilter(self._filter)
        self._warnings.__exit__(*exc)
        for w in self._caught:
            if "glyph" in str(w.message).lower():
                self.found.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def dual_image_html(png_en: bytes, png_zh: bytes, alt: str, alt_zh: str) -> str:
    """Two ``<img>``: the page's language shows one (``book/_static/code.css``: ``html[lang|="zh"]``)."""
    import html

    def img(png: bytes, text: str, lang: str) -> str:
        data = base64.b64encode(png).decode("ascii")
        return f'<img class="companion-lang-{lang}" alt="{html.escape(text)}" src="data:image/png;base64,{data}">'

    return img(png_en, alt, "en") + img(png_zh, alt_zh, "zh")


_CATALOG: dict[str, str] | None = None


def active_catalog() -> dict[str, str] | None:
    """The catalog named by ``ENV`` (read once), or None when figures are drawn once."""
    global _CATALOG
    path = os.environ.get(ENV)
    if not path:
        return None
    if _CATALOG is None:
        _CATALOG = load_catalog(path)
    return _CATALOG


def _print_kwargs() -> dict:
    try:  # the inline backend's own settings, so that both pictures have the same size and margins
        from matplotlib_inline.backend_inline import InlineBackend

        return dict(InlineBackend.instance().print_figure_kwargs)
    except Exception:  # noqa: BLE001 - outside a kernel: matplotlib's defaults
        return {}


def _format_figure(fig):
    catalog = active_catalog()
    if catalog is None or not fig.axes and not fig.texts:
        return None
    kwargs = {k: v for k, v in _print_kwargs().items() if k not in ("format", "fmt", "base64")}
    png, used, missed = render_translated(fig, catalog, **kwargs)
    return base64.b64encode(png).decode("ascii"), {"texts": used, "untranslated": missed}


def enable_in_ipython() -> bool:
    """Register the second picture for every matplotlib figure displayed in this kernel.

    Returns False outside IPython (nothing to do). Raises if the catalog or the font is missing.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    from IPython.core.formatters import BaseFormatter
    from traitlets import Unicode

    active_catalog()
    cjk_font()
    formatters = shell.display_formatter.formatters
    if MIME not in formatters:

        class TranslatedFigureFormatter(BaseFormatter):
            """Formats matplotlib figures only. It does not use the type registry: the inline backend
            clears every formatter's entry for ``Figure`` when it starts (IPython's select_figure_formats)."""

            format_type = Unicode(MIME)

            def __call__(self, obj):
                matplotlib_figure = sys.modules.get("matplotlib.figure")
                if not self.enabled or matplotlib_figure is None or not isinstance(obj, matplotlib_figure.Figure):
                    return None
                return _format_figure(obj)

        formatters[MIME] = TranslatedFigureFormatter(parent=shell.display_formatter)
    return True

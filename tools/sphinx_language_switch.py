"""Sphinx extension: a link on every page to the same page in the other edition.

The English site is at the root of ``_build/html``, the Chinese one under ``_build/html/zh``
(``tools/i18n.py build``). The template ``book/_templates/language-switch.html`` is placed in the
article header, before the theme's buttons (sphinx-book-theme's ``article_header_end``): on an
English page it links to ``zh/<page>.html``, on a Chinese page back to ``../<page>.html``, with
paths relative to the page, so the link works from a web server and from files on disk.

Enable in ``_config.yml``::

    sphinx:
      local_extensions:
        sphinx_language_switch: tools/
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = str(Path(__file__).resolve().parents[1] / "book" / "_templates")
TEMPLATE = "language-switch.html"


def add_switch(app, config) -> None:
    if TEMPLATES not in config.templates_path:
        config.templates_path.append(TEMPLATES)
    options = dict(config.html_theme_options or {})
    end = options.get("article_header_end", ["article-header-buttons.html"])
    end = [end] if isinstance(end, str) else list(end)
    if TEMPLATE not in end:
        options["article_header_end"] = [TEMPLATE, *end]
    # The footer (_config.yml's html.extra_footer: the version and the changelog link) is raw HTML
    # that gettext does not see; the Chinese edition says the same in Chinese.
    footer = options.get("extra_footer")
    if footer and (config.language or "").startswith("zh"):
        footer = re.sub(r"Version\s+(\S+)", r"版本 \1", footer)
        options["extra_footer"] = re.sub(r"changelog\s+and\s+errata", "更新日志与勘误", footer)
    config.html_theme_options = options


def setup(app):
    app.connect("config-inited", add_switch)
    app.add_css_file("language-switch.css")  # book/_static (html_static_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx extension: translate the alternative text of the notebooks' figures.

A figure made by a code cell takes its alt text from the cell's metadata
(``mystnb: image: alt: ...``), not from the page's prose, so Sphinx's gettext translation does not
see it. ``tools/i18n.py extract`` collects these texts into the catalog ``figures``; in a build
whose ``language`` is not English this extension replaces each image's ``alt`` by its translation
from that catalog (the same ``.mo`` files Sphinx compiles for the pages). Texts without a
translation are left as they are (``tools/i18n.py check`` fails on them).

Enable in ``_config.yml``::

    sphinx:
      local_extensions:
        sphinx_translated_alt: tools/
"""

from __future__ import annotations

from os import path

from docutils import nodes

DOMAIN = "figures"


def translate_alt(app, doctree) -> None:
    language = app.config.language
    if not language or language.startswith("en"):
        return
    from sphinx.locale import init as init_locale

    dirs = [path.join(app.srcdir, d) for d in app.config.locale_dirs]
    catalog, has_catalog = init_locale(dirs, language, DOMAIN)
    if not has_catalog:
        return
    for image in doctree.findall(nodes.image):
        alt = image.get("alt")
        if alt:
            image["alt"] = catalog.gettext(alt)


def setup(app):
    app.connect("doctree-read", translate_alt)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

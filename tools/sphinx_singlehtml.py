"""Sphinx extension: let the whole book be written as one HTML page (the PDF's source).

sphinx-proof and sphinx-exercise register how their nodes (theorems, proofs, exercises,
solutions) are written for the ``html`` builder only; the ``singlehtml`` builder, which
``tools/build_pdf.py`` uses, writes HTML with the same translator, so it gets the same handlers.

Enable in ``_config.yml``::

    sphinx:
      local_extensions:
        sphinx_singlehtml: tools/
"""

from __future__ import annotations


def share_html_handlers(app) -> None:
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)


def setup(app):
    app.connect("builder-inited", share_html_handlers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

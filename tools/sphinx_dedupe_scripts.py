"""Sphinx extension: two fixes to the pages of the built book that readers' browsers reported.

1. Write each ``<script>`` of a page once. sphinx-thebe 0.3.1 registers its inline
   configuration (``const THEBE_JS_URL = ...``) with ``app.add_js_file`` during
   ``env-before-read-docs``; under Sphinx 7.4 the script reaches every page twice, and the second
   ``const`` declaration throws "Identifier 'THEBE_JS_URL' has already been declared" in the
   reader's browser. Identical script entries (same file or inline body, same attributes) are
   dropped, keeping the first, just before each page is written.

2. Give the theme a default colour mode. pydata-sphinx-theme (under sphinx-book-theme) starts
   each page with ``dataset.mode = localStorage.getItem("mode") || "{{ default_mode }}"``; with
   ``default_mode`` unset, a first visit logs "Got invalid theme mode: . Resetting to auto." as a
   console error. ``html_context["default_mode"]`` is set to ``"auto"`` (follow the reader's
   system, light or dark) unless the book configures it.

Enable in ``_config.yml``::

    sphinx:
      local_extensions:
        sphinx_dedupe_scripts: tools/
"""

from __future__ import annotations


def _key(script) -> tuple:
    # An inline script is registered once with filename None and once with '' (both "no file").
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {})
    return (str(filename), tuple(sorted((str(k), str(v)) for k, v in attributes.items())))


def dedupe_script_files(app, pagename, templatename, context, doctree) -> None:
    """Remove repeated entries (same file or inline body, same attributes) from ``script_files``."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    context["script_files"] = unique


def default_colour_mode(app, config) -> None:
    """``html_context["default_mode"] = "auto"`` unless the configuration sets it."""
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "auto")
    config.html_context = context


def setup(app):
    app.connect("config-inited", default_colour_mode)
    app.connect("html-page-context", dedupe_script_files, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

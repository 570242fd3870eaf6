"""Sphinx extension: write each ``<script>`` of a page once.

sphinx-thebe 0.3.1 registers its inline configuration (``const THEBE_JS_URL = ...``) with
``app.add_js_file`` during ``env-before-read-docs``; under Sphinx 7.4 the script reaches every
page twice, and the second ``const`` declaration throws "Identifier 'THEBE_JS_URL' has already
been declared" in the reader's browser. Identical script entries (same file or inline body,
same attributes) are dropped here, keeping the first, just before each page is written.

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


def setup(app):
    app.connect("html-page-context", dedupe_script_files, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

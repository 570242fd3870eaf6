"""Sphinx extension: what Sphinx's gettext translation does not reach on its own.

1. **Exercise titles.** sphinx-exercise builds the subtitle of ``:::{exercise} Title`` without a
   source, and Sphinx only extracts (and translates) text nodes that have one. The directive is
   wrapped to give the subtitle its source, line and raw text, so the title is translated; and
   when the gettext builder runs, the title is added to the page's catalog as it is read
   (sphinx-exercise's post-transforms later rebuild the title from copies without a source,
   which the builder would skip). The solutions' titles, written
   from sphinx-exercise's copy of each exercise, get the translated copy.

2. **Glued values inside translated text.** A translated paragraph is parsed as a small document
   of its own, which lacks the notebook's outputs, so ``{glue:text}`key``` in it would not find
   its value. The notebook's renderer is remembered on the settings that both documents share,
   and a failed glue lookup is retried with it.

3. **The table of contents' part captions**, which sphinx-external-toc inserts after Sphinx has
   translated the page.

4. **Alt text of figures.** A figure made by a code cell takes its alt text from the cell's metadata
(``mystnb: image: alt: ...``), not from the page's prose, so Sphinx's gettext translation does not
see it. ``tools/i18n.py extract`` collects these texts into the catalog ``figures``; in a build
whose ``language`` is not English this extension replaces each image's ``alt`` by its translation
from that catalog (the same ``.mo`` files Sphinx compiles for the pages). Texts without a
   translation are left as they are (``tools/i18n.py check`` fails on them).

5. **Words inside figures.** While the English build executes the notebooks, every figure is drawn a
   second time with its words translated (:mod:`companion.figure_translation`) and stored beside
   the English ``image/png`` under its own MIME type. A build whose ``language`` is not English
   ranks that type first (``nb_mime_priority_overrides``, set by ``tools/i18n.py``) and renders it
   as the PNG it is.

Enable in ``_config.yml``::

    sphinx:
      local_extensions:
        sphinx_i18n_extras: tools/
"""

from __future__ import annotations

from os import path

from docutils import nodes

DOMAIN = "figures"


def make_exercise_titles_translatable() -> None:
    from sphinx_exercise import directive
    from sphinx_exercise.nodes import exercise_subtitle

    for cls in {directive.ExerciseDirective, getattr(directive, "ExerciseStartDirective", None)} - {None}:
        if getattr(cls.run, "_translatable_titles", False):
            continue
        original = cls.run

        def run(self, _original=original):
            result = _original(self)
            if self.arguments:
                source, line = self.state_machine.get_source_and_line(self.lineno)
                for node in result:
                    for subtitle in node.findall(exercise_subtitle):
                        subtitle.rawsource = self.arguments[0]
                        subtitle.source, subtitle.line = source, line
            return result

        run._translatable_titles = True
        cls.run = run


def let_translations_read_glued_values() -> None:
    """A notebook's renderer (which holds its outputs) is remembered on the document's settings,
    which the translated messages' documents share; a glue lookup that fails in such a document
    is retried with the notebook's renderer."""
    from myst_nb import sphinx_
    from myst_nb.ext.glue import roles, utils

    if getattr(utils.retrieve_glue_data, "_falls_back", False):
        return
    load_renderer, parse = sphinx_.load_renderer, sphinx_.Parser.parse
    original = utils.retrieve_glue_data

    def remembering_parse(self, inputstring, document):
        created = []

        def capturing_load_renderer(name):
            renderer_class = load_renderer(name)

            def make(*args, **kwargs):
                created.append(renderer_class(*args, **kwargs))
                return created[-1]

            return make

        sphinx_.load_renderer = capturing_load_renderer
        try:
            parse(self, inputstring, document)
        finally:
            sphinx_.load_renderer = load_renderer
        if created and "<translated>" not in str(document.get("source", "")):  # the notebook itself
            document.settings.i18n_nb_renderer = created[0]

    def retrieve_glue_data(document, key):
        try:
            return original(document, key)
        except utils.RetrievalError:
            notebook = getattr(document.settings, "i18n_nb_renderer", None)
            if notebook is None or document.get("nb_renderer") is notebook:
                raise
            own = document.attributes.get("nb_renderer")
            document["nb_renderer"] = notebook
            try:
                return original(document, key)
            finally:
                if own is None:
                    document.attributes.pop("nb_renderer", None)
                else:
                    document["nb_renderer"] = own

    retrieve_glue_data._falls_back = True
    sphinx_.Parser.parse = remembering_parse
    utils.retrieve_glue_data = roles.retrieve_glue_data = retrieve_glue_data


def render_translated_figures() -> None:
    """The translated picture of a figure (``companion.figure_translation.MIME``) is a PNG."""
    import dataclasses

    from myst_nb.core.render import NbElementRenderer

    from companion.figure_translation import MIME

    for name in ("render_mime_type", "render_mime_type_inline"):
        original = getattr(NbElementRenderer, name)
        if getattr(original, "_translated_figures", False):
            continue

        def render(self, data, _original=original, _name=name):
            if data.mime_type == MIME:
                data = dataclasses.replace(data, mime_type="image/png")
                if _name == "render_mime_type_inline":
                    return self.render_image_inline(data)
                return self.render_image(data)
            return _original(self, data)

        render._translated_figures = True
        setattr(NbElementRenderer, name, render)


def register_translated_exercises(app, doctree) -> None:
    """sphinx-exercise keeps a copy of each exercise, made before translation, from which the
    solutions' titles ("Solution to Exercise 3 (title)") are written: copy the translated one."""
    registry = getattr(app.env, "sphinx_exercise_registry", None)
    if not registry:
        return
    from sphinx_exercise.nodes import exercise_enumerable_node, exercise_node

    for node in doctree.findall(lambda n: isinstance(n, (exercise_node, exercise_enumerable_node))):
        entry = registry.get(node.get("label"))
        if entry is not None:
            entry["node"] = node.deepcopy()


def translate_toctree_captions(app, doctree) -> None:
    """The part captions of the table of contents (``caption:`` in _toc.yml): sphinx-external-toc
    inserts its toctrees after Sphinx's translation has run, so they are translated here."""
    language = app.config.language
    if not language or language.startswith("en"):
        return
    from sphinx import addnodes
    from sphinx.locale import init as init_locale
    from sphinx.util.i18n import docname_to_domain

    toctrees = [t for t in doctree.findall(addnodes.toctree) if t.get("caption")]
    if not toctrees:
        return
    dirs = [path.join(app.srcdir, d) for d in app.config.locale_dirs]
    domain = docname_to_domain(app.env.docname, app.config.gettext_compact)
    catalog, has_catalog = init_locale(dirs, language, domain)
    if has_catalog:
        for toctree in toctrees:
            toctree["caption"] = toctree["rawcaption"] = catalog.gettext(toctree["caption"])


def forget_notebook_renderer(app, doctree) -> None:
    """Drop the remembered renderer once the page is read (the page's doctree is pickled)."""
    if hasattr(doctree.settings, "i18n_nb_renderer"):
        del doctree.settings.i18n_nb_renderer


def collect_exercise_titles(app, doctree) -> None:
    if app.builder.name != "gettext":
        return
    from sphinx.builders.gettext import MsgOrigin
    from sphinx.util.i18n import docname_to_domain
    from sphinx_exercise.nodes import exercise_subtitle

    catalog = app.builder.catalogs[docname_to_domain(app.env.docname, app.config.gettext_compact)]
    for subtitle in doctree.findall(exercise_subtitle):
        message = subtitle.rawsource.replace("\n", " ").strip()
        if message and subtitle.source:
            catalog.add(message, MsgOrigin(subtitle.source, subtitle.line))


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
    make_exercise_titles_translatable()
    let_translations_read_glued_values()
    render_translated_figures()
    app.connect("doctree-read", translate_alt)
    app.connect("doctree-read", collect_exercise_titles)
    app.connect("doctree-read", register_translated_exercises)
    app.connect("doctree-read", translate_toctree_captions, priority=900)  # after sphinx-external-toc
    app.connect("doctree-read", forget_notebook_renderer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Training recipes: how each model family of the book is trained, evaluated and sampled.

One module per family (``companion.recipes.vae``, ``.gan``, ``.gpt``, ...), each with a
``Config`` dataclass, ``build_model(cfg)``, ``train(cfg, model, ...)``, ``evaluate(cfg, model)``
and ``sample(cfg, model, n)``. Notebooks and the command-line trainer call the same recipe,
so a model trained briefly in a chapter and one trained for hours by ``python -m companion``
differ only in their ``Config``.
"""

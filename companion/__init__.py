"""companion: the code of the course "Generative models from first principles".

One module per concept, named after it (``divergences``, ``data``, ``train``, ...);
each module's docstring states the equations it implements and names the chapter
that derives them.

Importing the package before torch (as ``python -m companion`` and the benchmarks do) sets
``GOMP_SPINCOUNT=1000`` unless it is set already: OpenMP threads then spin only briefly before
they sleep while waiting for each other, which keeps small models from slowing down three-fold
on a busy machine, at no cost on an idle one (README, "A busy machine"). The notebooks' kernel
gets the same setting from its kernel spec (the Makefile installs it).
"""

import os as _os
from importlib import metadata as _metadata

_os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # read once, when torch loads its OpenMP runtime

from companion.train import seed_everything  # noqa: E402

# The version of the course (book and package). Its one source is `version` in pyproject.toml, which
# reaches the installed metadata when the package is (re)installed: `make` does it when pyproject.toml
# changes, or `pip install -e .`; tests/test_release.py checks that the two agree.
try:
    __version__ = _metadata.version("companion")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["seed_everything", "__version__"]

# The book's build draws every figure a second time with its words in Chinese (companion.figure_translation).
if _os.environ.get("COMPANION_FIGURE_TRANSLATIONS"):
    from companion.figure_translation import enable_in_ipython as _enable_in_ipython

    _enable_in_ipython()

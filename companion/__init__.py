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

_os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # read once, when torch loads its OpenMP runtime

from companion.train import seed_everything  # noqa: E402

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]

"""companion: the code of the course "Generative models from first principles".

One module per concept, named after it (``divergences``, ``data``, ``train``, ...);
each module's docstring states the equations it implements and names the chapter
that derives them.

Importing the package before torch (as ``python -m companion`` and the benchmarks do) sets
``OMP_WAIT_POLICY=PASSIVE`` unless it is set already: OpenMP threads then sleep while they
wait instead of spinning, which keeps small models from slowing down five-fold on a busy
machine (README, "A busy machine"). The notebooks' kernel gets the same setting from its
kernel spec (the Makefile installs it).
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads its OpenMP runtime

from companion.train import seed_everything  # noqa: E402

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]

"""companion: the code of the course "Generative models from first principles".

One module per concept, named after it (``divergences``, ``data``, ``train``, ...);
each module's docstring states the equations it implements and names the chapter
that derives them.
"""

from companion.train import seed_everything

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]

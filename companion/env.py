"""Environment switches of the package (``COMPANION_OFFLINE``, ``COMPANION_MNIST_FALLBACK``, ``COMPANION_RETRAIN``).

A switch is on for ``1``, ``true``, ``yes`` or ``on`` and off for ``0``, ``false``, ``no``,
``off`` or an empty or unset variable (any case); anything else is an error that names the
variable, the value and the accepted spellings, so that ``COMPANION_OFFLINE=no`` can never
switch a behaviour *on* by accident.
"""

from __future__ import annotations

import os

__all__ = ["TRUE", "FALSE", "env_flag"]

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is switched on (see the module docstring).

    Raises:
        ValueError: a value that is neither on nor off.
    """
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"environment variable {name}={os.environ[name]!r} is not a switch: use one of "
                     f"{', '.join(TRUE)} (on) or {', '.join(repr(v) for v in FALSE)} (off)")

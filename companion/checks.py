"""The verdict that every exercise checker (``check_...``) prints and returns.

A checker compares a reader's answer with the package's own implementation and reports
in one line whether it is right, and if not, what differs: ``Correct: ...`` or
``Not yet: ...``. Checkers live in the module of their concept; this is their one shared
helper.
"""

from __future__ import annotations

__all__ = ["verdict"]


def verdict(ok: bool, message: str) -> bool:
    """Print ``Correct: message`` or ``Not yet: message`` and return ``ok`` as a bool.

    Args:
        ok: whether the reader's answer passed the check.
        message: what was checked, or what is wrong (expected value and the value given).
    """
    ok = bool(ok)
    print(("Correct: " if ok else "Not yet: ") + message)
    return ok

"""The optional dependencies (the extras in pyproject.toml) and the one error for a missing one.

Every feature that needs an optional package says which extra installs it, in the same words:
``<feature> needs <package>: pip install 'admission[<extra>]'``.
"""

from __future__ import annotations

import importlib

__all__ = ["require"]


def require(module: str, extra: str, feature: str) -> None:
    """Imports ``module``; if it is not installed, raises `ModuleNotFoundError` naming the extra.

    ``feature`` is what needs it, as the user called it (``"admission.metrics.serve()"``).
    A module that is installed but fails to import raises its own error unchanged.

    >>> require("json", "none", "this example")
    >>> require("admission_no_such_module", "demo", "this example")
    Traceback (most recent call last):
    ModuleNotFoundError: this example needs admission_no_such_module: pip install 'admission[demo]'
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise  # something the module itself imports is missing: its own message says what
        raise ModuleNotFoundError(
            f"{feature} needs {module}: pip install 'admission[{extra}]'", name=module
        ) from None

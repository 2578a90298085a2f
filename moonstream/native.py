"""The optional compiled inner loops (``moonstream._native``, from ``moonstream/native_src/``), or None.

``pip install`` compiles the extension where a C compiler is present; without one the install still
succeeds and everything runs in Python. Each compiled function does exactly what the Python function
it replaces does (same operations on the same objects, in the same order), so outputs are
byte-identical either way; ``tests/unit/test_native.py`` runs both on real and generated inputs.

``MOONSTREAM_NATIVE=0`` in the environment turns the compiled loops off (read once, at import).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

ENV_SWITCH = "MOONSTREAM_NATIVE"


def _load() -> ModuleType | None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    try:
        from moonstream import _native
    except ImportError:
        logger.debug("moonstream._native is not built: the inner loops run in Python")
        return None
    return _native


native: ModuleType | None = _load()
"""``moonstream._native`` when built and not switched off, else None."""


def not_built(*args: object) -> object:
    """What a compiled function stands in for when it is not there: NotImplemented, so the caller
    runs its Python code."""
    return NotImplemented


def compiled(name: str) -> Callable[..., Any]:
    """``moonstream._native.<name>``, or :func:`not_built` when the module is not loaded."""
    return not_built if native is None else getattr(native, name)


__all__ = ["ENV_SWITCH", "compiled", "native", "not_built"]

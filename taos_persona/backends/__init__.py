"""Backends: one module per provider, all registered in the plain dict ``BACKENDS``.

Built-in backend modules are imported on first lookup, not at package
import, and none of them imports aiohttp before it makes a request.
"""
from __future__ import annotations

import importlib

from .base import BACKENDS, Backend, Lease, backend_class, class_path, load_class, register

__all__ = ["BACKENDS", "Backend", "Lease", "register", "backend_class", "class_path", "load_class"]

_BUILTIN_MODULES = (
    "sql",
    "mailtm",
    "mailsac",
    "sms_activate",
    "twilio",
    "oauth",
    "rest",
)


def load_builtin() -> None:
    """Import the built-in backend modules so that they fill ``BACKENDS``."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")

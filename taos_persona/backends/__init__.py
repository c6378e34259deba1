"""Backends: one module per provider, all registered in the plain dict ``BACKENDS``.

Built-in backend modules are imported on first lookup, not at package
import, and none of them imports aiohttp before it makes a request.
"""
from __future__ import annotations

import importlib
from typing import Dict

from .base import BACKENDS, Backend, Lease, backend_class, class_path, load_class, register

__all__ = ["BACKENDS", "Backend", "Lease", "register", "backend_class", "class_path", "load_class",
           "BUILTIN_NAMES", "load_builtin", "load_builtin_for"]

_BUILTIN_MODULES = (
    "sql",
    "mailtm",
    "mailsac",
    "sms_activate",
    "twilio",
    "oauth",
    "rest",
)
BUILTIN_NAMES: Dict[str, str] = {
    "sql": "sql", "mailtm": "mailtm", "mailsac": "mailsac", "sms_activate": "sms_activate",
    "twilio": "twilio", "github": "oauth", "google": "oauth", "oauth_rfc7009": "oauth",
    "rest_user": "rest", "rest_token": "rest",
}
"""Built-in backend name -> the one module that registers it (a test pins this map)."""


def load_builtin_for(name: str) -> None:
    """Import the built-in module that defines backend ``name``, if there is one."""
    module = BUILTIN_NAMES.get(name)
    if module is not None:
        importlib.import_module(f"{__name__}.{module}")


def load_builtin() -> None:
    """Import the built-in backend modules so that they fill ``BACKENDS``."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")

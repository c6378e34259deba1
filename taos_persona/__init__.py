"""taos-persona: persona-driven end-to-end tests that leave nothing behind.

Importing this package imports only the standard library, and only what a
name needs when it is first used; the HTTP backends import aiohttp when they
make their first request.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

from .errors import (ConfigurationError, InvalidNameError, PersonaError, ProviderAuthError, ProviderError,
                     RegistryError, ResourceLeftWarning, RetryableProviderError, UnknownBackendError,
                     UnsafeRegistryError, WaitTimeout)

if TYPE_CHECKING:  # pragma: no cover - what the lazy names below resolve to, for type checkers
    from .backends import BACKENDS, Backend, Lease, register
    from .fixture import PersonaFixture
    from .naming import Persona
    from .resources import ApiToken, Mailbox, Message, OAuthGrant, PhoneNumber, UserAccount
    from .sweeper import SweepReport, sweep_async, sweep_registry
    from .testcase import PersonaMixin, PersonaTestCase
    from .sync import SyncPersonaFixture

_LAZY: Dict[str, str] = {
    "PersonaFixture": "fixture", "SyncPersonaFixture": "sync", "PersonaTestCase": "testcase", "PersonaMixin": "testcase",
    "Persona": "naming", "Backend": "backends", "Lease": "backends", "BACKENDS": "backends",
    "register": "backends", "sweep_registry": "sweeper", "sweep_async": "sweeper", "SweepReport": "sweeper",
    "Mailbox": "resources", "Message": "resources", "PhoneNumber": "resources",
    "OAuthGrant": "resources", "UserAccount": "resources", "ApiToken": "resources",
}
"""Public name -> the submodule that defines it, imported on first use (PEP 562).

The sweep function is ``sweep_registry``, never ``sweep``: ``taos_persona.sweep`` is the
CLI module, and importing it sets that attribute of the package to the module.

``import taos_persona`` stays as cheap as the errors module: the fixture pulls
in asyncio, which alone costs tens of milliseconds, only when it is used.
"""

__all__ = [
    "PersonaFixture", "SyncPersonaFixture", "PersonaTestCase", "PersonaMixin", "Persona",
    "Backend", "Lease", "BACKENDS", "register",
    "sweep_registry", "sweep_async", "SweepReport",
    "Mailbox", "Message", "PhoneNumber", "OAuthGrant", "UserAccount", "ApiToken",
    "PersonaError", "InvalidNameError", "UnknownBackendError", "ConfigurationError", "RegistryError",
    "UnsafeRegistryError", "ProviderError", "ProviderAuthError", "RetryableProviderError",
    "WaitTimeout", "ResourceLeftWarning",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access, and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

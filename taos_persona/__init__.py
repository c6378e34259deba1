"""taos-persona: persona-driven end-to-end tests that leave nothing behind.

Importing this package imports only the standard library; the HTTP
backends import aiohttp when they make their first request.
"""
from __future__ import annotations

from .backends import BACKENDS, Backend, Lease, register
from .errors import (ConfigurationError, InvalidNameError, PersonaError, ProviderAuthError, ProviderError,
                     RegistryError, ResourceLeftWarning, RetryableProviderError, UnknownBackendError,
                     UnsafeRegistryError, WaitTimeout)
from .fixture import PersonaFixture
from .naming import Persona
from .resources import ApiToken, Mailbox, Message, OAuthGrant, PhoneNumber, UserAccount
from .sweeper import SweepReport, sweep, sweep_async
from .testcase import PersonaMixin, PersonaTestCase

__all__ = [
    "PersonaFixture", "PersonaTestCase", "PersonaMixin", "Persona",
    "Backend", "Lease", "BACKENDS", "register",
    "sweep", "sweep_async", "SweepReport",
    "Mailbox", "Message", "PhoneNumber", "OAuthGrant", "UserAccount", "ApiToken",
    "PersonaError", "InvalidNameError", "UnknownBackendError", "ConfigurationError", "RegistryError",
    "UnsafeRegistryError", "ProviderError", "ProviderAuthError", "RetryableProviderError",
    "WaitTimeout", "ResourceLeftWarning",
]
__version__ = "0.1.0"

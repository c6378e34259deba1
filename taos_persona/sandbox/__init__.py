"""A loopback server that speaks each provider's real API, for tests and demos.

Point every backend at it with ``TAOS_PERSONA_SANDBOX=http://127.0.0.1:PORT``
(``SandboxThread.env()`` gives that and the fake credentials it accepts).
With ``per_provider_ports=True`` each provider is also served on a port of
its own laid out as its real host (``.provider_urls``), for clients that
derive one URL from another.
Unlike the rest of the package, this subpackage imports aiohttp at once.
"""
from __future__ import annotations

from .app import PROVIDER_MODULES, make_app
from .credentials import sandbox_credentials, sandbox_env
from .server import Sandbox, SandboxRequestError, SandboxThread, check_loopback
from .store import SandboxStore

__all__ = ["Sandbox", "SandboxThread", "SandboxRequestError", "SandboxStore", "make_app", "PROVIDER_MODULES",
           "sandbox_credentials", "sandbox_env", "check_loopback"]

"""Backend tests against the sandbox: :class:`tests._sandbox.SandboxTestCase` plus request helpers."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from taos_persona.backends import Backend, backend_class

from ._sandbox import SandboxTestCase

_SECRET_WORDS = ("SECRET", "TOKEN", "KEY", "AUTH")
"""Env var names with these words hold secrets; client ids (in URL paths) are not secrets."""


class BackendSandboxCase(SandboxTestCase):
    """``self.sarah``: one persona per test; ``backend()``, ``http()``, ``assert_no_secrets()``."""

    def setUp(self) -> None:
        super().setUp()
        self.sarah = self.persona()

    def backend(self, name: str) -> Backend:
        """A fresh backend instance (as the sweep would build one), closed after the test."""
        backend = backend_class(name)()
        self.addAsyncCleanup(backend.aclose)
        return backend

    def http(self, method: str, path: str, *, body: Any = None, form: Optional[Dict[str, str]] = None,
             headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
        """``(status, JSON or text)`` of one request, as the app or the persona's browser makes it."""
        return self.sandbox.request(method, path, body=body, form=form, headers=headers)

    def assert_no_secrets(self, exc: BaseException, *extra: str) -> None:
        """No sandbox secret (client secret, API key, admin token) nor ``extra`` value is in ``exc``."""
        text = f"{exc} {exc!r}"
        secrets = [v for k, v in self.sandbox.env().items() if any(w in k for w in _SECRET_WORDS)]
        for value in [*secrets, *extra]:
            self.assertNotIn(value, text)


if TYPE_CHECKING:
    ContractBase = BackendSandboxCase
else:
    ContractBase = object
"""Base of a contract mixin: typed as the test case, but not itself collected as one."""

"""Test plumbing for code that talks to the sandbox: one server per test class, fast retries.

``SandboxTestCase`` starts a :class:`SandboxThread` once per class, points
every backend at it through the environment (with retries shrunk so that
failure paths take milliseconds), and clears injected faults after each test.
Backend tests run real HTTP against it; nothing of ours is mocked.
"""
from __future__ import annotations

import os
import unittest
from typing import Any, ClassVar, Dict, Iterable, List
from unittest import mock

from taos_persona.naming import Persona, new_run_id

FAST_RETRIES = {
    "TAOS_PERSONA_HTTP_RETRIES": "3",
    "TAOS_PERSONA_HTTP_BACKOFF": "0.01",
    "TAOS_PERSONA_HTTP_TIMEOUT": "5",
    "TAOS_PERSONA_MAILTM_MAX_RATE": "0",
}
"""Retry knobs for tests: 4 attempts, ~10 ms backoff, no client-side throttle."""


class SandboxEnvironment:
    """Mixin for a TestCase: one sandbox per class; each test's environment points at it."""

    sandbox: ClassVar[Any]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        from taos_persona.sandbox import SandboxThread

        cls.sandbox = SandboxThread().start()
        cls.addClassCleanup(cls.sandbox.close)

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        overrides = [k for k in os.environ if k.startswith("TAOS_PERSONA_") and k.endswith("_URL")]
        patcher = mock.patch.dict(os.environ, dict(self.sandbox.env(), **FAST_RETRIES))
        patcher.start()
        self.addCleanup(patcher.stop)
        for name in overrides:  # a developer's real-provider override must not leak in
            del os.environ[name]
        self.addCleanup(self.sandbox.clear_faults)


class SandboxTestCase(SandboxEnvironment, unittest.IsolatedAsyncioTestCase):
    """An async test case with ``self.sandbox`` running and the environment pointing at it."""

    def persona(self) -> Persona:
        """A persona with a run id of its own, so that its resources can be told apart."""
        return Persona("tester", new_run_id())  # a default run id: discovery knows its names

    def queued_faults(self) -> List[Dict[str, Any]]:
        return self.sandbox.call("GET", "/_sandbox/faults")["queued"]

    def assertNoSecrets(self, exc: BaseException, *extra: str) -> None:
        """Neither the sandbox credentials nor ``extra`` values appear in ``str(exc)``."""
        from taos_persona.sandbox import sandbox_credentials

        secrets: Iterable[str] = list(sandbox_credentials().values()) + [e for e in extra if e]
        text = f"{exc!s} {exc!r}"
        for secret in secrets:
            self.assertNotIn(secret, text)

"""Sandbox tests that speak the providers' wire protocols with urllib: one sandbox per class."""
from __future__ import annotations

import base64
import unittest
import urllib.parse
from typing import Any, ClassVar, Dict


class WireCase(unittest.TestCase):
    """``self.sandbox`` (a SandboxThread) and ``self.env``; requests that must answer a given status."""

    sandbox: ClassVar[Any]
    env: ClassVar[Dict[str, str]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        from taos_persona.sandbox import SandboxThread

        cls.sandbox = SandboxThread().start()
        cls.addClassCleanup(cls.sandbox.close)
        cls.env = cls.sandbox.env()

    def expect(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        """The answer (JSON or text) of a request that must answer ``status``."""
        got, answer = self.sandbox.request(method, path, **kwargs)
        self.assertEqual(got, status, f"{method} {path}: {answer}")
        return answer

    def twilio(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        """A Twilio request under the sandbox account (``path`` after ``/Accounts/{Sid}``)."""
        sid, token = self.env["TWILIO_ACCOUNT_SID"], self.env["TWILIO_AUTH_TOKEN"]
        auth = {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}
        return self.expect(status, method, f"/twilio/2010-04-01/Accounts/{sid}{path}", headers=auth, **kwargs)

    def sms(self, **params: str) -> Any:
        """One sms-activate action (always status 200, as the protocol answers)."""
        query = urllib.parse.urlencode(dict(params, api_key=self.env["SMS_ACTIVATE_API_KEY"]))
        return self.expect(200, "GET", f"/sms_activate/stubs/handler_api.php?{query}")

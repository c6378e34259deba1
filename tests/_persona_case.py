"""PersonaTestCases run by test_testcase.py in a child process, under unittest or pytest.

Not collected by default (no test_ prefix). After acquiring, the test holds for
up to TAOS_TEST_HOLD seconds or until its persona was released from outside,
which gives the parent time to press Ctrl-C (and, on Python < 3.11, whose
IsolatedAsyncioTestCase lets an interrupted test run to its end before the
loop closes, ends it soon after the release); the test's own
``finally`` prints ``TEST FINALLY``, which must still happen after a Ctrl-C.
"""
from __future__ import annotations

import asyncio
import os
import time
import unittest.signals
from typing import Dict

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import PersonaTestCase


class SignupCase(PersonaTestCase):
    persona_name = "novice_sarah"
    persona_options = {"registry_dir": os.environ.get("TAOS_TEST_REGISTRY"), "backends": {"user": "file"}}

    async def test_signup(self) -> None:
        try:
            for _ in range(3):
                await self.persona.user_account(**self.user_options())
            print("HOLDING", flush=True)
            deadline = time.monotonic() + float(os.environ.get("TAOS_TEST_HOLD", "0"))
            while self.persona.resource_count() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # until a signal releases it; Python < 3.11 lets the test run on
        finally:
            print("TEST FINALLY", flush=True)

    def user_options(self) -> Dict[str, str]:
        return {"directory": os.environ["TAOS_TEST_FILES"]}


class HttpSignupCase(SignupCase):
    """The same with users at the sandbox's example app (``rest_user``): an HTTP session to close."""

    persona_options = dict(SignupCase.persona_options, backends={"user": "rest_user"})

    def user_options(self) -> Dict[str, str]:
        return {}


class CatchBreakCase(SignupCase):
    """Under ``python -m unittest -c``: Ctrl-C mid-test, and the test goes on using its persona."""

    async def test_signup(self) -> None:
        files = os.environ["TAOS_TEST_FILES"]
        for _ in range(3):
            await self.persona.user_account(directory=files)
        print("HOLDING", flush=True)
        deadline = time.monotonic() + 60
        while not self.interrupted() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the parent presses Ctrl-C now
        self.assertTrue(self.interrupted(), "no Ctrl-C reached unittest's handler")
        await self.persona.user_account(directory=files)  # still open: the run stops after this test
        self.assertEqual(len(os.listdir(files)), 4, "nothing released under the running test")
        print("STILL OPEN", flush=True)

    def test_then_the_run_stops(self) -> None:
        print("RAN AFTER CTRL-C", flush=True)

    @staticmethod
    def interrupted() -> bool:
        handler = unittest.signals._interrupt_handler  # type: ignore[attr-defined]
        return bool(handler is not None and handler.called)

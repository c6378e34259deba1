"""An example persona test: novice_sarah signs up with a throwaway email and phone number.

Copy this file to start your own. Whatever happens to the test (it passes,
fails, is interrupted, or its process is SIGKILLed), the mailbox and the
rented number it acquires are released: at the end of the test, or by the
next run's sweep.

It runs against the sandbox (fake mail.tm, sms-activate and an example app
on 127.0.0.1), so it needs no account anywhere::

    python -m taos_persona.sandbox --url-file /tmp/sandbox-url &
    # export TAOS_PERSONA_SANDBOX=<that URL> and the sandbox credentials
    # (taos_persona.sandbox.sandbox_env(url) lists them), then:
    python -m unittest examples/test_signup.py

``make demo`` does all of that for you. ``DEMO_HOLD_SECONDS=N`` makes the
test stop for N seconds once it holds its resources, so that the demo can
kill it there.
"""
from __future__ import annotations

import asyncio
import os
import unittest
from typing import Any, Dict, Tuple

from taos_persona import PersonaTestCase


async def post_json(url: str, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """POST ``body`` as JSON, as the persona's browser would; returns (status, JSON answer)."""
    import aiohttp  # taos-persona's one dependency

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url, json=body) as response:
            return response.status, await response.json()


def app_url() -> str:
    """The example app's base URL, inside the sandbox."""
    sandbox = os.environ.get("TAOS_PERSONA_SANDBOX")
    if not sandbox:
        raise unittest.SkipTest("TAOS_PERSONA_SANDBOX is not set: start python -m taos_persona.sandbox "
                                "and export its URL, or run make demo")
    return sandbox.rstrip("/") + "/example_app"


async def hold_if_asked(*held: object) -> None:
    """For the demo: pause while holding resources, so that the process can be killed here."""
    seconds = float(os.environ.get("DEMO_HOLD_SECONDS") or 0)
    if seconds > 0:
        print("HOLDING", *held, flush=True)
        await asyncio.sleep(seconds)


class SignupTest(PersonaTestCase):
    persona_name = "novice_sarah"

    async def test_signup_verifies_email_and_phone(self) -> None:
        app = app_url()
        email = await self.persona.disposable_email()  # mail.tm by default
        phone = await self.persona.sms_number()        # sms-activate by default
        await hold_if_asked(email.address, phone.number)

        status, answer = await post_json(f"{app}/signup", {"email": email.address, "phone": phone.number})
        self.assertEqual(status, 201, answer)

        message = await email.wait_for_message(subject="Verify your email", timeout=30)
        code, link = message.code(), message.link("/verify")
        self.assertIsNotNone(code, message.text)
        self.assertIn(f"code={code}", link or "", "the link carries the same code")
        status, answer = await post_json(f"{app}/verify", {"email": email.address, "code": code})
        self.assertEqual((status, answer.get("verified")), (200, "email"), answer)

        sms_code = await phone.wait_for_code(timeout=30)
        status, answer = await post_json(f"{app}/verify", {"phone": phone.number, "code": sms_code})
        self.assertEqual((status, answer.get("verified")), (200, "phone"), answer)


if __name__ == "__main__":
    unittest.main()

"""A PersonaTestCase run by test_testcase.py in a child process, under unittest or pytest.

Not collected by default (no test_ prefix). TAOS_TEST_HOLD seconds of sleep
after acquiring gives the parent time to press Ctrl-C.
"""
from __future__ import annotations

import asyncio
import os

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import PersonaTestCase


class SignupCase(PersonaTestCase):
    persona_name = "novice_sarah"
    persona_options = {"registry_dir": os.environ.get("TAOS_TEST_REGISTRY"), "backends": {"user": "file"}}

    async def test_signup(self) -> None:
        for _ in range(3):
            await self.persona.user_account(directory=os.environ["TAOS_TEST_FILES"])
        print("HOLDING", flush=True)
        await asyncio.sleep(float(os.environ.get("TAOS_TEST_HOLD", "0")))

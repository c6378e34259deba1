"""The mailsac backend against the sandbox's mailsac, over real HTTP."""
from __future__ import annotations

import os
from typing import Any, Dict

from taos_persona.errors import ConfigurationError, ProviderAuthError
from tests._email_contract import EmailBackendContract
from tests._sandbox import SandboxTestCase
from tests._support import needs_aiohttp

WRONG_KEY = "wrong-mailsac-key-4242"


@needs_aiohttp
class MailsacTest(EmailBackendContract, SandboxTestCase):
    provider = "mailsac"
    create = ("POST", "/mailsac/addresses/")

    def provider_id(self, token: Dict[str, Any]) -> str:
        return token["address"]

    def test_plan_chooses_a_prefixed_mailsac_address(self) -> None:
        persona = self.persona()
        planned = self.make_backend().plan(persona)
        self.assertRegex(planned["address"], "^" + persona.prefix + r"-[0-9a-f]{6}@mailsac\.com$")
        with self.assertRaisesRegex(ConfigurationError, "colour"):
            self.make_backend().plan(persona, colour="red")

    async def test_wrong_key_is_an_auth_error_naming_the_variable(self) -> None:
        backend = await self.new_backend()
        persona = self.persona()
        os.environ["MAILSAC_API_KEY"] = WRONG_KEY
        with self.assertRaises(ProviderAuthError) as caught:
            await backend.acquire(persona, **backend.plan(persona))
        self.assertIn("MAILSAC_API_KEY", str(caught.exception))
        self.assertIn("401", str(caught.exception))
        self.assertNoSecrets(caught.exception, WRONG_KEY)
        self.assertEqual(self.alive(persona), [])

    async def test_release_with_a_wrong_key_fails_and_keeps_the_address(self) -> None:
        backend, persona, _, lease = await self.acquire()
        os.environ["MAILSAC_API_KEY"] = WRONG_KEY
        with self.assertRaisesRegex(ProviderAuthError, "MAILSAC_API_KEY") as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception, WRONG_KEY)
        self.assertEqual(len(self.alive(persona)), 1)
        os.environ.update(self.sandbox.env())
        await backend.release(lease.token)
        self.assertEqual(self.alive(persona), [])

    async def test_missing_key_is_a_configuration_error_naming_it(self) -> None:
        backend = await self.new_backend()
        del os.environ["MAILSAC_API_KEY"]
        with self.assertRaisesRegex(ConfigurationError, "MAILSAC_API_KEY"):
            await backend.release({"address": "taos-x-000000@mailsac.com"})

    async def test_someone_elses_inbox_is_read_but_not_recovered(self) -> None:
        backend = await self.new_backend()
        planned = backend.plan(self.persona())
        self.sandbox.deliver_email(planned["address"], "public", "mail to an unreserved address")
        self.assertIsNone(await backend.recover(planned))

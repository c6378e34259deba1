"""The mail.tm backend against the sandbox's mail.tm, over real HTTP."""
from __future__ import annotations

from typing import Any, Dict

from taos_persona.errors import ConfigurationError, ProviderError
from tests._email_contract import EmailBackendContract
from tests._sandbox import SandboxTestCase
from tests._support import needs_aiohttp


@needs_aiohttp
class MailTmTest(EmailBackendContract, SandboxTestCase):
    provider = "mailtm"
    create = ("POST", "/mailtm/accounts")

    def provider_id(self, token: Dict[str, Any]) -> str:
        return token["id"]

    def test_plan_chooses_names_before_any_provider_call(self) -> None:
        backend = self.make_backend()
        persona = self.persona()
        planned = backend.plan(persona)
        self.assertTrue(planned["local"].startswith(persona.prefix + "-"))
        self.assertGreaterEqual(len(planned["password"]), 16)
        self.assertIsNone(planned["domain"])
        self.assertNotEqual(backend.plan(persona), planned)
        self.assertEqual(backend.plan(persona, domain="x.test")["domain"], "x.test")
        with self.assertRaisesRegex(ConfigurationError, "colour"):
            backend.plan(persona, colour="red")

    async def test_address_on_the_offered_domain(self) -> None:
        from taos_persona.sandbox.providers.mailtm import DOMAIN

        _, _, _, lease = await self.acquire()
        self.assertTrue(lease.value.address.endswith("@" + DOMAIN))
        self.assertEqual(set(lease.token), {"address", "password", "id", "origin"})

    async def test_taken_address_is_an_error_without_the_password(self) -> None:
        backend, persona, planned, lease = await self.acquire()
        local = lease.value.address.split("@")[0]
        with self.assertRaises(ProviderError) as caught:
            await backend.acquire(persona, local=local, password="another-password-123")
        self.assertIn("already used", str(caught.exception))
        self.assertNoSecrets(caught.exception, "another-password-123", planned["password"])

    async def test_reading_a_mailbox_deleted_behind_our_back(self) -> None:
        _, _, _, lease = await self.acquire()
        self.assertEqual(await lease.value.messages(), [])
        self.sandbox.drop("mailtm", lease.token["id"])
        with self.assertRaisesRegex(ProviderError, "no longer exists") as caught:
            await lease.value.messages()
        self.assertNoSecrets(caught.exception, lease.token["password"])

    async def test_recover_tries_the_current_domains_when_none_was_planned(self) -> None:
        backend, _, planned, lease = await self.acquire()
        self.assertIsNone(planned["domain"])
        self.assertEqual(await backend.recover(dict(planned, domain="elsewhere.test")), None)
        self.assertEqual(await backend.recover(planned), lease.token)

"""The mailsac backend against the sandbox's mailsac, over real HTTP."""
from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from typing import Any, Dict

from taos_persona import PersonaFixture, sweep_async
from taos_persona.backends.mailsac import MailsacBackend
from taos_persona.registry import Registry
from taos_persona.errors import ConfigurationError, EndpointMismatchError, ProviderAuthError, ProviderError
from tests._email_contract import EmailBackendContract
from tests._openapi import OpenApiConformance, spec_path
from tests._front import start_front
from tests._sandbox import SandboxTestCase
from tests._support import needs_aiohttp

WRONG_KEY = "wrong-mailsac-key-4242"
SPEC = spec_path("TAOS_PERSONA_MAILSAC_SPEC", "mailsac_openapi.json")
ROUTES = {("POST", "/addresses/{email}"), ("GET", "/addresses/{email}"),
          ("DELETE", "/addresses/{email}"), ("GET", "/addresses/{email}/messages"),
          ("GET", "/text/{email}/{messageId}")}
"""(method, path template as in mailsac's OpenAPI description) of every call the backend makes."""


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
        os.environ["MAILSAC_API_KEY"] = WRONG_KEY  # another account's key: refused before any request
        with self.assertRaisesRegex(EndpointMismatchError, "in account key:.*MAILSAC_API_KEY") as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception, WRONG_KEY)
        self.assertEqual(len(self.alive(persona)), 1)
        os.environ.update(self.sandbox.env())
        await backend.release(lease.token)
        self.assertEqual(self.alive(persona), [])

    async def test_a_create_answered_404_by_a_wrong_base_url_leaves_no_record(self) -> None:
        """A route that does not exist (404/405) created nothing: the intent is dropped, the error raised."""
        registry_dir = tempfile.mkdtemp(prefix="taos-nope-")
        self.addCleanup(shutil.rmtree, registry_dir, True)
        os.environ["TAOS_PERSONA_MAILSAC_URL"] = self.sandbox.url.rstrip("/") + "/nope"
        async with PersonaFixture("novice_sarah", registry_dir=registry_dir, sweep=False) as persona:
            with self.assertRaisesRegex(ProviderError, "40[45]"):
                await persona.acquire("mailsac")
            self.assertEqual(Registry(registry_dir).read(persona.run_id).resources, {})
        self.assertEqual([name for name in os.listdir(registry_dir) if name.endswith(".json")], [])
        self.assertEqual((await sweep_async(registry_dir)).exit_status, 0)

    async def test_missing_key_is_a_configuration_error_naming_it(self) -> None:
        backend = await self.new_backend()
        del os.environ["MAILSAC_API_KEY"]
        with self.assertRaisesRegex(ConfigurationError, "MAILSAC_API_KEY"):
            await backend.release({"address": "taos-x-000000@mailsac.com"})

    async def test_a_400_on_release_is_gone_only_if_the_account_no_longer_owns_it(self) -> None:
        """Kind 7: mailsac's 400 means "already released" and "not owned by this account" alike."""
        await start_front(self, self.sandbox.url, "TAOS_PERSONA_MAILSAC_URL", "/mailsac", "DELETE",
                          "/addresses/", 400, {"message": "not currently owned by the account, or already deleted"})
        backend, persona, _, lease = await self.acquire()
        with self.assertRaisesRegex(ProviderError, "still owns"):
            await backend.release(lease.token)
        self.assertEqual(len(self.alive(persona)), 1, "kept: the account still owns it")
        self.sandbox.drop(self.provider, self.provider_id(lease.token))
        await backend.release(lease.token)  # 400, and the account does not own it: gone

    async def test_someone_elses_inbox_is_read_but_not_recovered(self) -> None:
        backend = await self.new_backend()
        planned = backend.plan(self.persona())
        self.sandbox.deliver_email(planned["address"], "public", "mail to an unreserved address")
        self.assertIsNone(await backend.recover(planned))


@needs_aiohttp
@unittest.skipUnless(os.path.exists(SPEC), f"needs mailsac's OpenAPI description at {SPEC} "
                     "(or set TAOS_PERSONA_MAILSAC_SPEC)")
class MailsacSpecTest(OpenApiConformance, SandboxTestCase):
    """Every request the backend makes, and every answer the sandbox gives, against mailsac's spec.

    mailsac's answers may leave fields out (``owner`` of an address this
    account does not own, ``encryptedInbox``), so an answer may carry fewer
    fields than its schema, never others.
    """

    provider = "mailsac"
    spec_file = SPEC
    exact_fields = False
    error_schema = {"$ref": "#/components/schemas/ErrorResponseBody"}

    def test_the_backends_base_url_is_the_specs_server(self) -> None:
        self.assertEqual(MailsacBackend.default_base_url, self.server_url())
        for method, template in ROUTES:
            self.assertIn(method.lower(), self.spec["paths"][template])

    async def test_requests_and_answers_match_the_spec(self) -> None:
        records = await self.start_recorder(MailsacBackend.base_url_env)
        backend, persona = MailsacBackend(), self.persona()
        self.addAsyncCleanup(backend.aclose)
        planned = backend.plan(persona)
        lease = await backend.acquire(persona, **planned)  # POST: 200
        await backend.acquire(persona, **planned)  # POST: 400 "already yours", then GET: owned
        self.sandbox.deliver_email(lease.value.address, "Verify", "Your code is 482913")
        self.assertEqual((await lease.value.wait_for_message(timeout=5)).code(), "482913")
        self.assertEqual(await backend.recover(planned), lease.token)  # GET: owned
        await backend.release(lease.token)  # DELETE: 200
        await backend.release(lease.token)  # DELETE: 400, already released
        self.assertIsNone(await backend.recover(planned))  # GET: not owned, no "owner"
        self.assertEqual(self.check_records(records), ROUTES)
        for record in records:
            self.assertNotIn("_mailsacKey", record["query"])  # the key never goes in the URL
        self.assertEqual([r["status"] for r in records if r["method"] != "GET"], [200, 400, 200, 400])

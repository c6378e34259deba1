"""The twilio backend against the sandbox's Twilio, over real HTTP, checked against Twilio's spec."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from typing import Any, Dict, List, Tuple
from unittest import mock

from taos_persona.backends import Lease, backend_class
from taos_persona.backends.twilio import (ACCOUNT_SID_ENV, AUTH_TOKEN_ENV, MAGIC_NUMBER, ROUTES,
                                          TEST_CREDENTIALS_ENV, TwilioBackend)
from taos_persona.errors import (ConfigurationError, EndpointMismatchError, InvalidTokenError,
                                 ProviderAuthError, ProviderError,
                                 RetryableProviderError)
from taos_persona.naming import Persona
from tests._openapi import OpenApiConformance, spec_path
from tests._sandbox import SandboxTestCase
from tests._support import REPO, needs_aiohttp

WRONG_TOKEN = "wrong-twilio-auth-token-4242"
OTHER_ACCOUNT = "AC" + "0" * 32
SPEC = spec_path("TAOS_PERSONA_TWILIO_SPEC", "twilio_api_v2010.json")


class TwilioOfflineTest(unittest.TestCase):
    """What needs no server: the plan, registration, lazy aiohttp."""

    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, {ACCOUNT_SID_ENV: OTHER_ACCOUNT, AUTH_TOKEN_ENV: WRONG_TOKEN})
        patcher.start()
        self.addCleanup(patcher.stop)
        os.environ.pop(TEST_CREDENTIALS_ENV, None)
        self.persona = Persona("novice_sarah", "20250101T000000-0123456789ab")

    def test_registered_and_can_recover(self) -> None:
        self.assertIs(backend_class("twilio"), TwilioBackend)
        self.assertTrue(TwilioBackend.can_recover())

    def test_plan_names_the_number_after_the_persona(self) -> None:
        planned = TwilioBackend().plan(self.persona, country="gb", area_code="415")
        self.assertRegex(planned["friendly_name"], "^" + self.persona.prefix + "-[0-9a-f]{6}$")
        self.assertEqual({k: v for k, v in planned.items() if k != "friendly_name"},
                         {"account_sid": OTHER_ACCOUNT, "country": "GB", "area_code": "415",
                          "test_credentials": False,
                          "origin": {"endpoint": "https://api.twilio.com", "account": OTHER_ACCOUNT}})
        self.assertNotEqual(TwilioBackend().plan(self.persona)["friendly_name"], planned["friendly_name"])

    def test_plan_refuses_what_twilio_would_refuse(self) -> None:
        backend = TwilioBackend()
        for options, pattern in (({"colour": "red"}, "colour"), ({"country": "USA"}, "alpha-2"),
                                 ({"phone_number": "5551234"}, "E.164")):
            with self.subTest(options=options), self.assertRaisesRegex(ConfigurationError, pattern):
                backend.plan(self.persona, **options)
        with self.assertRaisesRegex(ConfigurationError, "64"):
            backend.plan(Persona("p", "r" * 64))
        os.environ[ACCOUNT_SID_ENV] = "not-a-sid"
        with self.assertRaisesRegex(ConfigurationError, ACCOUNT_SID_ENV):
            backend.plan(self.persona)

    def test_import_does_not_import_aiohttp(self) -> None:
        code = "import sys, taos_persona.backends.twilio; print('aiohttp' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=REPO, check=True).stdout
        self.assertEqual(out.strip(), "False")


class TwilioCase(SandboxTestCase):
    provider = "twilio"

    def new_backend(self) -> TwilioBackend:
        backend = TwilioBackend()
        self.addAsyncCleanup(backend.aclose)
        return backend

    async def acquire(self, **options: Any) -> Tuple[TwilioBackend, Dict[str, Any], Lease]:
        backend, persona = self.new_backend(), self.persona()
        planned = backend.plan(persona, **options)
        return backend, planned, await backend.acquire(persona, **planned)

    def alive(self) -> List[Dict[str, Any]]:
        return [r["data"] for r in self.sandbox.resources(self.provider)]

    def assertNoSecrets(self, exc: BaseException, *extra: str) -> None:
        """No auth token (live, test, ``extra``) nor other provider's key is in ``exc``.

        The account SID is Twilio's user name, in every URL and resource URI,
        and is not a secret: it may be named.
        """
        from taos_persona.sandbox import sandbox_credentials
        from taos_persona.sandbox.providers.twilio import TEST_CREDENTIALS

        values = dict(sandbox_credentials(), TEST=TEST_CREDENTIALS[AUTH_TOKEN_ENV])
        values.pop(ACCOUNT_SID_ENV)
        text = f"{exc!s} {exc!r}"
        for secret in [*values.values(), *extra]:
            self.assertNotIn(secret, text)

    def use_test_credentials(self, flag: bool = True) -> None:
        from taos_persona.sandbox.providers.twilio import TEST_CREDENTIALS

        os.environ.update(TEST_CREDENTIALS)
        if flag:
            os.environ[TEST_CREDENTIALS_ENV] = "1"


@needs_aiohttp
class TwilioTest(TwilioCase):

    def setUp(self) -> None:
        super().setUp()
        os.environ.pop(TEST_CREDENTIALS_ENV, None)

    async def test_a_token_naming_another_number_deletes_nothing(self) -> None:
        """Kind 7: the number is fetched first; a FriendlyName other than the record's is not ours."""
        backend, _, mine = await self.acquire()
        _, _, other = await self.acquire()
        with self.assertRaisesRegex(InvalidTokenError, "not deleted"):
            await backend.release(dict(mine.token, sid=other.token["sid"]))
        self.assertEqual(len([n for n in self.alive() if n["sid"] in (mine.token["sid"], other.token["sid"])]), 2)
        for lease in (mine, other):
            await backend.release(lease.token)

    async def test_acquire_read_code_release_twice(self) -> None:
        before = len(self.alive())
        backend, planned, lease = await self.acquire()
        self.assertRegex(lease.value.number, r"^\+1\d{10}$")
        self.assertEqual(lease.token["friendly_name"], planned["friendly_name"])
        [mine] = [n for n in self.alive() if n["sid"] == lease.token["sid"]]
        self.assertEqual((mine["friendly_name"], mine["phone_number"]),
                         (planned["friendly_name"], lease.value.number))
        self.assertNotIn(self.sandbox.env()[AUTH_TOKEN_ENV], json.dumps(lease.token))
        self.sandbox.deliver_sms("+15550001111", "Your code is 999999")  # another number's SMS
        self.sandbox.deliver_sms(lease.value.number, "Welcome!", sender="+15550002222")
        self.sandbox.deliver_sms(lease.value.number, "Your code is 482913", sender="+15550002222")
        self.assertEqual(await lease.value.reader(), ["Your code is 482913", "Welcome!"])
        self.assertEqual(await lease.value.wait_for_code(timeout=5), "482913")
        await backend.release(lease.token)
        self.assertEqual(len(self.alive()), before)
        await backend.release(lease.token)  # Twilio's 20404: already gone, a no-op
        await self.new_backend().release(lease.token)  # the sweep's fresh instance

    async def test_release_after_the_provider_dropped_it(self) -> None:
        backend, _, lease = await self.acquire()
        self.assertTrue(self.sandbox.drop(self.provider, lease.token["sid"]))
        await backend.release(lease.token)

    async def test_a_404_that_is_not_twilios_is_not_already_gone(self) -> None:
        backend, _, lease = await self.acquire()
        os.environ["TAOS_PERSONA_TWILIO_URL"] = self.sandbox.url + "/elsewhere"
        with self.assertRaisesRegex(EndpointMismatchError, "created at .*/twilio, .*/elsewhere"):
            await backend.release(lease.token)
        self.assertIn(lease.token["sid"], [n["sid"] for n in self.alive()])
        del os.environ["TAOS_PERSONA_TWILIO_URL"]
        await backend.release(lease.token)

    async def test_wrong_token_is_an_auth_error_naming_the_variables(self) -> None:
        os.environ[AUTH_TOKEN_ENV] = WRONG_TOKEN
        before = len(self.alive())
        with self.assertRaises(ProviderAuthError) as caught:
            await self.acquire()
        self.assertIn("401", str(caught.exception))
        self.assertIn(AUTH_TOKEN_ENV, str(caught.exception))
        self.assertNoSecrets(caught.exception, WRONG_TOKEN)
        self.assertEqual(len(self.alive()), before)

    async def test_release_with_a_wrong_token_fails_and_keeps_the_number(self) -> None:
        backend, _, lease = await self.acquire()
        os.environ[AUTH_TOKEN_ENV] = WRONG_TOKEN
        with self.assertRaisesRegex(ProviderAuthError, AUTH_TOKEN_ENV) as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception, WRONG_TOKEN)
        self.assertIn(lease.token["sid"], [n["sid"] for n in self.alive()])
        os.environ.update(self.sandbox.env())
        await backend.release(lease.token)
        self.assertNotIn(lease.token["sid"], [n["sid"] for n in self.alive()])

    async def test_release_with_another_accounts_credentials_is_refused(self) -> None:
        backend, _, lease = await self.acquire()
        os.environ[ACCOUNT_SID_ENV] = OTHER_ACCOUNT
        with self.assertRaisesRegex(EndpointMismatchError, f"in account AC.*open account {OTHER_ACCOUNT}"):
            await backend.release(lease.token)
        self.assertIn(lease.token["sid"], [n["sid"] for n in self.alive()])

    async def test_missing_token_is_a_configuration_error_naming_it(self) -> None:
        del os.environ[AUTH_TOKEN_ENV]
        with self.assertRaisesRegex(ConfigurationError, AUTH_TOKEN_ENV):
            await self.acquire()

    async def test_429_then_success(self) -> None:
        self.sandbox.inject("429", count=2, retry_after=0, provider=self.provider)
        backend, _, lease = await self.acquire()
        self.assertEqual(self.queued_faults(), [])
        await backend.release(lease.token)

    async def test_500s_past_the_budget_are_retryable_errors(self) -> None:
        before = len(self.alive())
        self.sandbox.inject("500", count=50, provider=self.provider)
        with self.assertRaises(RetryableProviderError) as caught:
            await self.acquire()
        self.assertEqual(self.queued_faults()[0]["count"], 46)  # 1 try + 3 retries
        self.assertNoSecrets(caught.exception)
        self.sandbox.clear_faults()
        self.assertEqual(len(self.alive()), before)

    async def test_release_failing_past_the_budget_keeps_it_alive(self) -> None:
        backend, _, lease = await self.acquire()
        self.sandbox.inject("500", count=50, provider=self.provider)
        with self.assertRaises(RetryableProviderError) as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception)
        self.sandbox.clear_faults()
        self.assertIn(lease.token["sid"], [n["sid"] for n in self.alive()])
        await backend.release(lease.token)

    async def test_buy_whose_answer_was_lost_is_still_ours(self) -> None:
        before = len(self.alive())
        self.sandbox.inject("drop_after", count=1, provider=self.provider)
        backend, planned, lease = await self.acquire(phone_number="+15557654321")
        self.assertEqual(len(self.alive()), before + 1)  # one number, not a second one
        self.assertEqual((lease.value.number, lease.token["friendly_name"]),
                         ("+15557654321", planned["friendly_name"]))
        await backend.release(lease.token)
        self.assertEqual(len(self.alive()), before)

    async def test_a_number_someone_else_owns_is_not_bought(self) -> None:
        backend, _, lease = await self.acquire()
        with self.assertRaisesRegex(ProviderError, "could not be bought.*21422"):
            await self.acquire(phone_number=lease.value.number)
        await backend.release(lease.token)

    async def test_recover_finds_created_but_unrecorded(self) -> None:
        backend, planned, lease = await self.acquire()
        fresh = self.new_backend()
        self.assertEqual(await fresh.recover(planned), lease.token)
        await fresh.release(await fresh.recover(planned))
        self.assertIsNone(await fresh.recover(planned))  # released: nothing left to recover
        self.assertIsNone(await fresh.recover(fresh.plan(self.persona())))  # never created

    async def test_test_credentials_buy_the_magic_number_and_release_nothing(self) -> None:
        self.use_test_credentials()
        before = len(self.alive())
        backend, planned, lease = await self.acquire()
        self.assertEqual(lease.value.number, MAGIC_NUMBER)
        self.assertTrue(lease.token["test_credentials"])
        self.assertEqual(len(self.alive()), before)  # nothing real was bought
        self.sandbox.inject("500", count=5, provider=self.provider)
        del os.environ[TEST_CREDENTIALS_ENV]  # the token, not the flag, says what it was
        with self.assertLogs("taos_persona.backends.twilio", "INFO"):
            await self.new_backend().release(lease.token)
        self.assertEqual(self.queued_faults()[0]["count"], 5)  # no request was made
        self.assertIsNone(await backend.recover(planned))
        with self.assertRaisesRegex(ConfigurationError, "test credentials cannot read"):
            await lease.value.wait_for_code(timeout=1)

    async def test_test_credentials_without_the_flag_say_how_to_fix_it(self) -> None:
        self.use_test_credentials(flag=False)
        with self.assertRaisesRegex(ProviderAuthError, "403.*20008.*" + TEST_CREDENTIALS_ENV):
            await self.acquire()

    async def test_a_name_outside_the_runs_prefix_is_refused(self) -> None:
        backend = self.new_backend()
        planned = dict(backend.plan(self.persona()), friendly_name="someone-elses-number")
        with self.assertRaisesRegex(ConfigurationError, "prefix"):
            await backend.acquire(self.persona(), **planned)

    async def test_tampered_token_cannot_reach_another_path(self) -> None:
        backend = self.new_backend()
        with self.assertRaisesRegex(InvalidTokenError, "no valid IncomingPhoneNumber sid"):
            await backend.release({"sid": "../../Messages", "account_sid": OTHER_ACCOUNT})


@needs_aiohttp
@unittest.skipUnless(os.path.exists(SPEC), f"needs Twilio's OpenAPI description at {SPEC}")
class TwilioSpecTest(OpenApiConformance, TwilioCase):
    """Every request the backend makes, and every answer the sandbox gives, against Twilio's spec.

    A recording proxy between the backend and the sandbox sees the real
    requests; each is matched to the spec's path template and operation.
    """

    spec_file = SPEC
    error_schema = {"properties": dict.fromkeys(("code", "message", "more_info", "status"), {})}
    """Twilio's error body, which its description does not give."""

    def test_every_route_the_backend_uses_is_in_the_spec(self) -> None:
        self.assertEqual(TwilioBackend.default_base_url, self.server_url())
        for name, (method, template) in ROUTES.items():
            with self.subTest(route=name):
                self.assertIn(method.lower(), self.spec["paths"][template])

    async def test_requests_and_answers_match_the_spec(self) -> None:
        records = await self.start_recorder("TAOS_PERSONA_TWILIO_URL")
        self.use_test_credentials()  # test mode: the buy alone, with the magic number
        await self.acquire()
        os.environ.update(self.sandbox.env())
        del os.environ[TEST_CREDENTIALS_ENV]
        backend, planned, lease = await self.acquire(area_code="415")
        self.sandbox.deliver_sms(lease.value.number, "code 123456")
        await lease.value.wait_for_code(timeout=5)
        await backend.recover(planned)
        await backend.release(lease.token)
        await backend.release(lease.token)  # the 404 answer
        self.assertEqual(self.check_records(records), set(ROUTES.values()))


if __name__ == "__main__":
    unittest.main()

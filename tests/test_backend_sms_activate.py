"""The sms_activate backend against the sandbox's SMS-Activate protocol, over real HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import unittest
from typing import Any, Dict, Tuple
from unittest import mock

from taos_persona.backends import Lease, backend_class
from taos_persona.backends.sms_activate import (API_KEY_ENV, CANCEL_WAIT_ENV, DEFAULT_URL, URL_ENV,
                                                SmsActivateBackend)
from taos_persona.backends._origin import account_of
from taos_persona.errors import (ConfigurationError, EndpointMismatchError, InvalidTokenError, ProviderAuthError, ProviderError,
                                 RetryableProviderError)
from taos_persona.naming import Persona
from tests._sandbox import SandboxTestCase
from tests._support import REPO, needs_aiohttp

WRONG_KEY = "wrong-sms-activate-key-4242"
EARLY_CANCEL_ENV = "TAOS_PERSONA_SANDBOX_SMS_ACTIVATE_EARLY_CANCEL"


class SmsActivateOfflineTest(unittest.TestCase):
    """What needs no server: options, the handler URL, registration, lazy aiohttp."""

    def test_registered_and_cannot_recover(self) -> None:
        self.assertIs(backend_class("sms_activate"), SmsActivateBackend)
        self.assertFalse(SmsActivateBackend.can_recover())

    def test_plan_defaults_and_refuses_unknown_options(self) -> None:
        persona = Persona("novice_sarah", "run1")
        backend = SmsActivateBackend()
        with mock.patch.dict(os.environ, {API_KEY_ENV: "k" * 32, URL_ENV: "https://sms.example"}):
            where = {"endpoint": "https://sms.example/stubs/handler_api.php", "account": account_of("k" * 32)}
            self.assertEqual(backend.plan(persona), {"service": "ot", "origin": where})
            self.assertEqual(backend.plan(persona, service="tg", country=187, max_price=None),
                             {"service": "tg", "country": 187, "origin": where})
        with self.assertRaisesRegex(ConfigurationError, "colour.*known: country, max_price"):
            backend.plan(persona, colour="red")

    def test_handler_url_setting(self) -> None:
        cases = [({}, DEFAULT_URL),
                 ({"TAOS_PERSONA_SANDBOX": "http://127.0.0.1:9/"},
                  "http://127.0.0.1:9/sms_activate/stubs/handler_api.php"),
                 ({URL_ENV: "https://hero.example/stubs/handler_api.php"},
                  "https://hero.example/stubs/handler_api.php"),
                 ({URL_ENV: "https://hero.example/", "TAOS_PERSONA_SANDBOX": "http://127.0.0.1:9"},
                  "https://hero.example/stubs/handler_api.php")]
        for env, expected in cases:
            with mock.patch.dict(os.environ, env, clear=True):
                self.assertEqual(SmsActivateBackend().base_url, expected)

    def test_import_does_not_import_aiohttp(self) -> None:
        code = ("import sys, taos_persona.backends.sms_activate; "
                "print('aiohttp' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=REPO, check=True).stdout
        self.assertEqual(out.strip(), "False")


@needs_aiohttp
class SmsActivateTest(SandboxTestCase):
    provider = "sms_activate"

    async def acquire(self, **options: Any) -> Tuple[SmsActivateBackend, Lease]:
        backend = SmsActivateBackend()
        self.addAsyncCleanup(backend.aclose)
        persona = self.persona()
        return backend, await backend.acquire(persona, **backend.plan(persona, **options))

    def alive(self) -> int:
        return self.sandbox.alive().get(self.provider, 0)

    async def test_acquire_wait_for_code_release_twice(self) -> None:
        backend, lease = await self.acquire(service="tg", country=187)
        self.assertRegex(lease.value.number, r"^\+\d{11}$")
        self.assertEqual(self.alive(), 1)
        self.assertEqual(json.loads(json.dumps(lease.token)), lease.token)
        self.assertNotIn(self.sandbox.env()[API_KEY_ENV], json.dumps(lease.token))
        self.assertEqual(await lease.value.reader(), [])
        self.sandbox.deliver_sms(lease.value.number, "Your code is 482913, valid 5 minutes")
        self.assertEqual(await lease.value.wait_for_code(timeout=5), "482913")
        await backend.release(lease.token)  # a code came: finished, not cancelled
        self.assertEqual(self.alive(), 0)
        await backend.release(lease.token)  # already over: a no-op
        fresh = SmsActivateBackend()  # the sweep releases from a new instance
        self.addAsyncCleanup(fresh.aclose)
        await fresh.release(lease.token)

    async def test_release_without_a_code_cancels(self) -> None:
        backend, lease = await self.acquire()
        await backend.release(lease.token)
        self.assertEqual(self.alive(), 0)
        with self.assertRaisesRegex(ProviderError, "over.*no code"):
            await lease.value.wait_for_code(timeout=1)

    async def test_release_after_the_provider_dropped_it(self) -> None:
        backend, lease = await self.acquire()
        self.assertTrue(self.sandbox.drop(self.provider, lease.token["id"]))
        await backend.release(lease.token)
        await backend.release(backend.stamp({"id": "123456789"}))  # NO_ACTIVATION: never ours, nothing to do

    async def test_a_wrong_url_is_not_already_gone(self) -> None:
        backend, lease = await self.acquire()
        os.environ[URL_ENV] = self.sandbox.url + "/elsewhere/stubs/handler_api.php"
        with self.assertRaisesRegex(EndpointMismatchError, "created at .*/sms_activate/") as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception)
        self.assertEqual(self.alive(), 1)
        del os.environ[URL_ENV]
        await backend.release(lease.token)
        self.assertEqual(self.alive(), 0)

    async def test_early_cancel_denied_keeps_it_for_the_sweep(self) -> None:
        os.environ[EARLY_CANCEL_ENV] = "60"
        backend, lease = await self.acquire()
        with self.assertRaises(RetryableProviderError) as caught:
            await backend.release(lease.token)
        self.assertIn("EARLY_CANCEL_DENIED", str(caught.exception))
        self.assertIn(CANCEL_WAIT_ENV, str(caught.exception))
        self.assertNoSecrets(caught.exception)
        self.assertEqual(self.alive(), 1)
        os.environ[EARLY_CANCEL_ENV] = "0"  # the window has passed by the next sweep
        await backend.release(lease.token)
        self.assertEqual(self.alive(), 0)

    async def test_early_cancel_denied_waited_out_within_the_bound(self) -> None:
        os.environ.update({EARLY_CANCEL_ENV: "0.4", CANCEL_WAIT_ENV: "5"})
        backend, lease = await self.acquire()
        started = time.monotonic()
        await backend.release(lease.token)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertEqual(self.alive(), 0)

    async def test_wrong_key_is_an_auth_error_naming_the_variable(self) -> None:
        os.environ[API_KEY_ENV] = WRONG_KEY
        with self.assertRaises(ProviderAuthError) as caught:
            await self.acquire()
        self.assertIn(API_KEY_ENV, str(caught.exception))
        self.assertIn("BAD_KEY", str(caught.exception))
        self.assertNoSecrets(caught.exception, WRONG_KEY)
        self.assertEqual(self.alive(), 0)

    async def test_release_with_a_wrong_key_fails_and_keeps_it(self) -> None:
        backend, lease = await self.acquire()
        os.environ[API_KEY_ENV] = WRONG_KEY  # another account's key: refused before any request
        with self.assertRaisesRegex(EndpointMismatchError, API_KEY_ENV) as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception, WRONG_KEY)
        self.assertEqual(self.alive(), 1)
        os.environ.update(self.sandbox.env())
        await backend.release(lease.token)
        self.assertEqual(self.alive(), 0)

    async def test_missing_key_is_a_configuration_error_naming_it(self) -> None:
        del os.environ[API_KEY_ENV]
        with self.assertRaisesRegex(ConfigurationError, API_KEY_ENV):
            await self.acquire()

    async def test_provider_refusals_are_final_errors(self) -> None:
        for options, word in (({"service": "no such"}, "BAD_SERVICE"),
                              ({"country": 999}, "NO_NUMBERS")):
            with self.subTest(word=word):
                with self.assertRaises(ProviderError) as caught:
                    await self.acquire(**options)
                self.assertNotIsInstance(caught.exception, RetryableProviderError)
                self.assertIn(word, str(caught.exception))
                self.assertIn(f"at {self.sandbox.url}", str(caught.exception))  # kind 8: the host
                self.assertNoSecrets(caught.exception)
        self.assertEqual(self.alive(), 0)

    async def test_429_then_success(self) -> None:
        self.sandbox.inject("429", count=2, retry_after=0, provider=self.provider)
        backend, lease = await self.acquire()
        self.assertEqual(self.queued_faults(), [])
        self.assertEqual(self.alive(), 1)
        await backend.release(lease.token)

    async def test_a_500_on_the_create_is_not_retried(self) -> None:
        """A 500 may come after the provider acted; getNumber cannot be looked up, so no retry."""
        self.sandbox.inject("500", count=50, provider=self.provider)
        with self.assertRaisesRegex(ProviderError, "not retried") as caught:
            await self.acquire()
        self.assertNotIsInstance(caught.exception, RetryableProviderError)
        self.assertIn("500", str(caught.exception))
        self.assertEqual(self.queued_faults()[0]["count"], 49)  # 1 try, no retry
        self.assertNoSecrets(caught.exception)
        self.sandbox.clear_faults()
        self.assertEqual(self.alive(), 0)

    async def test_release_failing_past_the_budget_keeps_it_alive(self) -> None:
        backend, lease = await self.acquire()
        self.sandbox.inject("500", count=50, provider=self.provider)
        with self.assertRaises(RetryableProviderError) as caught:
            await backend.release(lease.token)
        self.assertNoSecrets(caught.exception)
        self.sandbox.clear_faults()
        self.assertEqual(self.alive(), 1)
        await backend.release(lease.token)
        self.assertEqual(self.alive(), 0)

    async def test_recover_is_not_offered(self) -> None:
        backend = SmsActivateBackend()
        with self.assertRaises(NotImplementedError):
            await backend.recover(backend.plan(self.persona()))

    async def test_tampered_token_cannot_inject_query(self) -> None:
        backend = SmsActivateBackend()
        self.addAsyncCleanup(backend.aclose)
        token: Dict[str, Any] = {"id": "1&action=getNumber"}
        with self.assertRaisesRegex(InvalidTokenError, "no valid activation id"):
            await backend.release(token)


if __name__ == "__main__":
    unittest.main()

"""HttpBackend against the sandbox with faults injected: retries, backoff, 429, 401, redaction."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import traceback
import unittest
from email.utils import formatdate

from taos_persona.backends._http import HttpBackend, redact_url, retry_after_seconds, retry_delay
from taos_persona.errors import (ConfigurationError, ProviderAuthError, ProviderError,
                                 RetryableProviderError)
from taos_persona.naming import Persona
from tests._sandbox import SandboxTestCase
from tests._support import REPO, needs_aiohttp

SECRET = "query-secret-value-77"
HEADER_SECRET = "header-secret-value-88"


class MailTmProbe(HttpBackend):
    """A bare client of the sandbox's mail.tm routes (no credentials needed)."""

    provider = "mailtm"
    default_base_url = "https://api.mail.tm"
    base_url_env = "TAOS_PERSONA_PROBE_URL"


class MailsacProbe(HttpBackend):
    """A bare client of the sandbox's mailsac routes (key in MAILSAC_API_KEY)."""

    provider = "mailsac"
    default_base_url = "https://mailsac.com/api"

    async def get(self, path: str, **kwargs):
        headers = {"Mailsac-Key": self.credential("MAILSAC_API_KEY")}
        return await self.request("GET", path, headers=headers, credential_env=("MAILSAC_API_KEY",), **kwargs)


class PureFunctionsTest(unittest.TestCase):
    """The parts that need no server: Retry-After parsing, backoff bounds, URL redaction."""

    def test_retry_after_seconds_date_and_cap(self) -> None:
        self.assertEqual(retry_after_seconds("3"), 3.0)
        self.assertEqual(retry_after_seconds("3600"), 60.0)
        self.assertAlmostEqual(retry_after_seconds(formatdate(time.time() + 10, usegmt=True)), 10, delta=2)
        self.assertEqual(retry_after_seconds(formatdate(time.time() - 100, usegmt=True)), 0.0)
        self.assertIsNone(retry_after_seconds("soon"))
        self.assertIsNone(retry_after_seconds(None))

    def test_backoff_is_capped_with_full_jitter(self) -> None:
        delays = [retry_delay(attempt, 0.5) for attempt in range(12) for _ in range(20)]
        self.assertTrue(all(0 <= d <= 30 for d in delays))
        self.assertGreater(max(delays), 15)  # it does grow towards the cap
        self.assertLess(min(delays), 1)  # full jitter: anywhere from zero
        self.assertTrue(all(retry_delay(0, 0.5) <= 0.5 for _ in range(50)))

    def test_redact_url_masks_secret_parameters_only(self) -> None:
        url = f"https://x.test/api/a?api_key={SECRET}&page=2&_mailsacKey={SECRET}&access_token={SECRET}"
        redacted = redact_url(url)
        self.assertNotIn(SECRET, redacted)
        self.assertIn("page=2", redacted)
        self.assertTrue(redacted.startswith("/api/a?api_key=***"))

    def test_base_url_precedence(self) -> None:
        from unittest import mock

        with mock.patch.dict(os.environ, {"TAOS_PERSONA_SANDBOX": "http://127.0.0.1:9/"}):
            self.assertEqual(MailTmProbe().base_url, "http://127.0.0.1:9/mailtm")
            os.environ["TAOS_PERSONA_PROBE_URL"] = "http://127.0.0.1:8/x/"
            self.assertEqual(MailTmProbe().base_url, "http://127.0.0.1:8/x")
            del os.environ["TAOS_PERSONA_PROBE_URL"], os.environ["TAOS_PERSONA_SANDBOX"]
            self.assertEqual(MailTmProbe().base_url, "https://api.mail.tm")

    def test_missing_credential_names_the_variable(self) -> None:
        from unittest import mock

        with mock.patch.dict(os.environ, {"MAILSAC_API_KEY": ""}):
            with self.assertRaisesRegex(ConfigurationError, "MAILSAC_API_KEY"):
                MailsacProbe().credential("MAILSAC_API_KEY")

    def test_importing_backends_does_not_import_aiohttp(self) -> None:
        code = ("import sys, taos_persona, taos_persona.backends._http, taos_persona.backends.mailtm, "
                "taos_persona.backends.mailsac; sys.exit('aiohttp' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)


@needs_aiohttp
class EventLoopTest(unittest.TestCase):
    def test_an_instance_works_from_a_second_event_loop(self) -> None:
        import asyncio
        import warnings
        from unittest import mock

        from taos_persona.sandbox import SandboxThread

        probe = MailTmProbe()

        async def status() -> int:
            return (await probe.request("GET", "/domains")).status

        with SandboxThread() as sandbox, mock.patch.dict(os.environ, sandbox.env()):
            self.assertEqual(asyncio.run(status()), 200)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)  # the first loop's session is lost
                self.assertEqual(asyncio.run(status()), 200)  # as an atexit release would
            asyncio.run(probe.aclose())
            asyncio.run(probe.aclose())


@needs_aiohttp
class RetryTest(SandboxTestCase):
    """What ``request`` retries, what it raises, and what its messages never contain."""

    async def asyncSetUp(self) -> None:
        self.mailtm = MailTmProbe()
        self.mailsac = MailsacProbe()
        self.addAsyncCleanup(self.mailtm.aclose)
        self.addAsyncCleanup(self.mailsac.aclose)

    async def test_one_session_reused_and_closed_twice(self) -> None:
        await self.mailtm.request("GET", "/domains")
        session = await self.mailtm._session()
        await self.mailtm.request("GET", "/domains")
        self.assertIs(await self.mailtm._session(), session)
        await self.mailtm.aclose()
        await self.mailtm.aclose()
        self.assertTrue(session.closed)
        self.assertEqual((await self.mailtm.request("GET", "/domains")).status, 200)

    async def test_one_session_per_fixture_shared_by_its_backends_closed_on_exit(self) -> None:
        import tempfile

        from taos_persona import PersonaFixture

        with tempfile.TemporaryDirectory() as registry:
            async with PersonaFixture("p", registry_dir=os.path.join(registry, "r"), sweep=False) as persona:
                await persona.acquire("mailtm")
                await persona.acquire("rest_user")
                backends = [persona._backend(name) for name in ("mailtm", "rest_user", "mailsac")]
                sessions = {id(await backend._session()) for backend in backends}
                self.assertEqual(len(sessions), 1, "one ClientSession for the whole fixture")
                session = await backends[0]._session()
            self.assertTrue(session.closed, "closed when the fixture exits")

    async def test_500s_are_retried_until_success(self) -> None:
        self.sandbox.inject("500", count=3)
        response = await self.mailtm.request("GET", "/domains")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["hydra:totalItems"], 1)
        self.assertEqual(self.queued_faults(), [])

    async def test_500s_past_the_budget(self) -> None:
        self.sandbox.inject("500", count=10)
        with self.assertRaises(RetryableProviderError) as caught:
            await self.mailtm.request("GET", "/domains")
        self.assertRegex(str(caught.exception), r"GET http://127\.0\.0\.1:\d+/mailtm/domains kept failing after 4 attempts.*500")
        self.assertEqual(self.queued_faults()[0]["count"], 6)

    async def test_429_honours_retry_after(self) -> None:
        self.sandbox.inject("429", count=1, retry_after=1)
        started = time.monotonic()
        self.assertEqual((await self.mailtm.request("GET", "/domains")).status, 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)  # backoff alone would be ~10 ms

    async def test_429_past_the_budget(self) -> None:
        self.sandbox.inject("429", count=10, retry_after=0)
        with self.assertRaisesRegex(RetryableProviderError, "429"):
            await self.mailtm.request("GET", "/domains")

    async def test_timeouts_are_retried(self) -> None:
        os.environ["TAOS_PERSONA_HTTP_TIMEOUT"] = "0.2"
        self.sandbox.inject("delay", count=1, delay=1)
        self.assertEqual((await self.mailtm.request("GET", "/domains")).status, 200)
        self.sandbox.inject("delay", count=10, delay=1)
        with self.assertRaisesRegex(RetryableProviderError, "timed out"):
            await self.mailtm.request("GET", "/domains")

    async def test_dropped_connections_are_retried(self) -> None:
        self.sandbox.inject("drop", count=2)
        self.assertEqual((await self.mailtm.request("GET", "/domains")).status, 200)
        self.sandbox.inject("drop", count=50)
        with self.assertRaisesRegex(RetryableProviderError, "ServerDisconnected"):
            await self.mailtm.request("GET", "/domains")

    async def test_refused_connections_are_retryable(self) -> None:
        with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        os.environ["TAOS_PERSONA_PROBE_URL"] = f"http://127.0.0.1:{port}"
        with self.assertRaisesRegex(RetryableProviderError, "after 4 attempts.*connection failed"):
            await self.mailtm.request("GET", "/domains")

    async def test_401_names_the_variable_and_is_not_retried(self) -> None:
        os.environ["MAILSAC_API_KEY"] = HEADER_SECRET
        self.sandbox.inject("delay", count=5, delay=0, provider="mailsac")  # counts the attempts
        with self.assertRaises(ProviderAuthError) as caught:
            await self.mailsac.get("/addresses")
        message = str(caught.exception)
        self.assertIn(f"GET {self.sandbox.url}/mailsac/addresses was refused with 401", message)
        self.assertIn("check MAILSAC_API_KEY", message)
        self.assertNotIn(HEADER_SECRET, message)
        self.assertEqual(self.queued_faults()[0]["count"], 4)  # one attempt only

    async def test_other_statuses_are_final_provider_errors(self) -> None:
        with self.assertRaises(ProviderError) as caught:
            await self.mailsac.get("/text/a@mailsac.com/nope")
        self.assertNotIsInstance(caught.exception, (ProviderAuthError, RetryableProviderError))
        self.assertIn("404", str(caught.exception))
        self.assertIn("Message not found", str(caught.exception))
        self.assertEqual((await self.mailsac.get("/text/a@mailsac.com/nope", gone=(404,))).status, 404)

    async def test_messages_never_hold_secret_params_or_headers(self) -> None:
        self.sandbox.inject("500", count=10)
        with self.assertRaises(RetryableProviderError) as caught:
            await self.mailtm.request("GET", "/domains", params={"api_key": SECRET, "page": "1"},
                                      headers={"X-Anything": HEADER_SECRET}, auth=("user", SECRET))
        text = f"{caught.exception!s} {caught.exception!r}"
        self.assertIn("api_key=***", text)
        self.assertIn("page=1", text)
        self.assertNotIn(SECRET, text)
        self.assertNotIn(HEADER_SECRET, text)

    async def test_bad_retry_setting_names_the_variable(self) -> None:
        os.environ["TAOS_PERSONA_HTTP_RETRIES"] = "many"
        with self.assertRaisesRegex(ConfigurationError, "TAOS_PERSONA_HTTP_RETRIES"):
            await self.mailtm.request("GET", "/domains")

    async def test_throttle_spaces_requests(self) -> None:
        os.environ["TAOS_PERSONA_MAILTM_MAX_RATE"] = "20"
        started = time.monotonic()
        for _ in range(6):
            await self.mailtm.request("GET", "/domains")
        self.assertGreaterEqual(time.monotonic() - started, 0.24)  # 5 gaps of 50 ms
        os.environ["TAOS_PERSONA_MAILTM_MAX_RATE"] = "0"
        started = time.monotonic()
        for _ in range(6):
            await self.mailtm.request("GET", "/domains")
        self.assertLess(time.monotonic() - started, 0.24)

    async def test_a_hanging_provider_names_its_host_and_the_wait_settings(self) -> None:
        """Kind 8: the error says which host hung and which settings (with their values) set the wait."""
        os.environ.update({"TAOS_PERSONA_HTTP_TIMEOUT": "0.2", "TAOS_PERSONA_HTTP_RETRIES": "1"})
        self.sandbox.inject("delay", count=2, delay=3, provider="mailtm")
        with self.assertRaises(RetryableProviderError) as caught:
            await self.mailtm.request("GET", "/domains")
        message = str(caught.exception)
        self.assertIn(f"{self.sandbox.url}/mailtm/domains", message)
        self.assertIn("timed out", message)
        for setting in ("TAOS_PERSONA_HTTP_TIMEOUT=0.2s", "TAOS_PERSONA_HTTP_RETRIES=1",
                        "TAOS_PERSONA_HTTP_BACKOFF=0.01s"):
            self.assertIn(setting, message)

    async def test_a_missing_credential_under_the_sandbox_does_not_say_set_the_sandbox(self) -> None:
        """Kind 7: the hint named TAOS_PERSONA_SANDBOX, which was set; it names the missing variable."""
        del os.environ["MAILSAC_API_KEY"]
        with self.assertRaises(ConfigurationError) as caught:
            await self.mailsac.get("/addresses")
        message = str(caught.exception)
        self.assertIn("MAILSAC_API_KEY", message)
        self.assertNotIn("point TAOS_PERSONA_SANDBOX", message)
        self.assertIn(f"TAOS_PERSONA_SANDBOX is set ({self.sandbox.url})", message)

    def test_mailtm_default_rate_is_under_its_limit(self) -> None:
        from taos_persona.backends.mailtm import MailTmBackend

        del os.environ["TAOS_PERSONA_MAILTM_MAX_RATE"]
        self.assertTrue(0 < MailTmBackend().rate <= 8)


class _Recorder:
    """A loopback listener that records every request head it receives and answers ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.heads: "list[bytes]" = []
        self.server: "asyncio.AbstractServer | None" = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.answer)
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@needs_aiohttp
class ClientErrorTest(SandboxTestCase):
    """Kind 6: no aiohttp error escapes; ours is built from the redacted request."""

    async def test_a_malformed_answer_never_shows_the_key_in_the_query(self) -> None:
        from taos_persona.backends.sms_activate import API_KEY_ENV, URL_ENV, SmsActivateBackend

        os.environ[API_KEY_ENV] = SECRET
        os.environ["TAOS_PERSONA_HTTP_RETRIES"] = "1"
        for answer in (b"HTTP/1.1 abc\r\n\r\n", b"garbage\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello"):
            with self.subTest(answer=answer):
                async with _Recorder(answer) as url:
                    os.environ[URL_ENV] = url
                    backend = SmsActivateBackend()
                    self.addAsyncCleanup(backend.aclose)
                    with self.assertRaises(ProviderError) as caught:
                        await backend.acquire(Persona("novice_sarah", "run1"))
                printed = "".join(traceback.format_exception(type(caught.exception), caught.exception,
                                                             caught.exception.__traceback__))
                chain = [caught.exception.__cause__, caught.exception.__context__]
                for text in (printed, repr(caught.exception), repr(caught.exception.args), repr(chain)):
                    self.assertNotIn(SECRET, text)
                self.assertIsNone(caught.exception.__context__)
                self.assertIn("api_key=***", str(caught.exception))
                self.assertIn(url, str(caught.exception))


@needs_aiohttp
class RedirectTest(unittest.IsolatedAsyncioTestCase):
    """Kind 5: a credential header never follows a redirect to another host."""

    async def test_a_302_to_another_host_is_refused_and_nothing_arrives_there(self) -> None:
        from unittest import mock

        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"
        recorder = _Recorder(ok)
        async with recorder as capture:
            moved = (f"HTTP/1.1 302 Found\r\nLocation: {capture}/steal\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n").encode()
            async with _Recorder(moved) as origin:
                env = {"MAILSAC_API_KEY": HEADER_SECRET, "TAOS_PERSONA_MAILSAC_URL": origin,
                       "TAOS_PERSONA_HTTP_RETRIES": "0"}
                with mock.patch.dict(os.environ, env):
                    from taos_persona.backends.mailsac import MailsacBackend

                    backend = MailsacBackend()
                    self.addAsyncCleanup(backend.aclose)
                    with self.assertRaises(ProviderError) as caught:
                        await backend.acquire(Persona("novice_sarah", "run1"))
        self.assertEqual(recorder.heads, [], "nothing may reach the host the redirect names")
        self.assertIn("302", str(caught.exception))
        self.assertIn(capture, str(caught.exception))
        self.assertNotIn(HEADER_SECRET, str(caught.exception))


class ReprTest(unittest.TestCase):
    """Kind 6: ``pytest -l`` or a debugger prints reprs; none shows a persona's credential."""

    def test_leases_and_values_hide_credentials(self) -> None:
        from taos_persona.backends import Lease
        from taos_persona.resources import Mailbox, OAuthGrant, UserAccount

        async def reader() -> list:
            return []

        values = [Mailbox("a@b.test", reader), OAuthGrant("github", SECRET, extra={"refresh_token": SECRET}),
                  UserAccount(1, "taos_u", SECRET)]
        for value in values:
            lease = Lease(value, {"address": "a@b.test", "password": SECRET, "access_token": SECRET})
            self.assertNotIn(SECRET, repr(lease))
            self.assertNotIn(SECRET, repr(value))

    def test_records_hide_tokens_and_plans(self) -> None:
        from taos_persona.records import RunRecord

        run = RunRecord("run1", "novice_sarah", "host", 1)
        record = run.add_intent("mailtm", "x:Y", {"password": SECRET})
        record.token = {"password": SECRET}
        self.assertNotIn(SECRET, repr(run))
        self.assertNotIn(SECRET, repr(record))


_FIRST_REQUESTS = """
import asyncio, sys
from taos_persona import PersonaFixture
async def main():
    async with PersonaFixture("p", registry_dir=sys.argv[1], sweep=False) as persona:
        assert "aiohttp" not in sys.modules
        values = await asyncio.gather(persona.acquire("mailtm"), persona.acquire("rest_user"),
                                      persona.acquire("mailsac"))
        print(len(values))
asyncio.run(main())
"""


@needs_aiohttp
class FirstImportTest(SandboxTestCase):
    """Regression: concurrent first requests used to see a half-imported aiohttp module."""

    def test_concurrent_first_requests_in_a_fresh_interpreter(self) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as registry:
            result = subprocess.run([sys.executable, "-c", _FIRST_REQUESTS, os.path.join(registry, "r")],
                                    capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=60)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "3"), result.stderr)

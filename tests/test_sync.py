"""SyncPersonaFixture against the sandbox: blocking resources, released at exit, counted at the provider."""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from tests._sandbox import SandboxEnvironment
from taos_persona import lifetime
from tests._support import TempDirTestCase, child_env, needs_aiohttp, posix_only, reap, signal_status, wait_for_line


@needs_aiohttp
class SyncPersonaTest(SandboxEnvironment, unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.registry_dir = tempfile.mkdtemp(prefix="taos-sync-test-")
        self.addCleanup(shutil.rmtree, self.registry_dir, True)

    def open(self, name: str = "novice_sarah", **options: object):  # type: ignore[no-untyped-def]
        from taos_persona import SyncPersonaFixture

        return SyncPersonaFixture(name, registry_dir=self.registry_dir, **options)

    def test_blocking_mail_and_sms_then_nothing_survives(self) -> None:
        with self.open() as persona:
            email = persona.disposable_email()
            phone = persona.sms_number()
            self.assertEqual(self.sandbox.alive().get("mailtm"), 1)
            self.sandbox.deliver_email(email.address, "Verify your email", "code 482913 https://app.test/v?c=1")
            message = email.wait_for_message(subject="Verify", timeout=30)
            self.assertEqual(message.code(), "482913")
            self.sandbox.deliver_sms(phone.number, "Your code is 5521")
            self.assertEqual(phone.wait_for_code(timeout=30), "5521")
            self.assertEqual(str(email), email.address)
        self.assertEqual(sum(self.sandbox.alive().values()), 0)

    def test_released_when_the_block_raises(self) -> None:
        with self.assertRaises(ZeroDivisionError):
            with self.open() as persona:
                persona.disposable_email()
                persona.acquire("rest_user")
                1 / 0  # noqa: B018
        self.assertEqual(sum(self.sandbox.alive().values()), 0)

    def test_works_where_an_event_loop_is_already_running(self) -> None:
        """Sync Playwright runs a loop in the caller's thread; asyncio.run() would refuse it."""

        async def inside_a_running_loop() -> str:
            with self.open() as persona:
                return str(persona.disposable_email().address)

        address = asyncio.run(inside_a_running_loop())
        self.assertIn("@", address)
        self.assertEqual(sum(self.sandbox.alive().values()), 0)

    def test_closed_persona_says_so_and_closes_twice(self) -> None:
        from taos_persona import PersonaError

        persona = self.open()
        with persona:
            email = persona.disposable_email()
        persona.close()
        with self.assertRaisesRegex(PersonaError, "inside its 'with' block|not open"):
            email.wait_for_message(timeout=1)
        with self.assertRaisesRegex(PersonaError, "not open|closed"):
            persona.disposable_email()


HOLDS_A_SYNC_PERSONA = """
import sys, time
from taos_persona import SyncPersonaFixture

with SyncPersonaFixture("sync_sam", registry_dir=sys.argv[1]) as persona:
    print("HOLDING", persona.disposable_email().address, flush=True)
    while True:
        time.sleep(0.1)
"""


@needs_aiohttp
@posix_only
@unittest.skipUnless(hasattr(lifetime, "install"), "needs lifetime.install() (issue 9 item 1)")
class SyncPersonaSignalTest(SandboxEnvironment, TempDirTestCase):
    def test_sigterm_releases_a_sync_persona_opened_in_the_main_thread(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=signum.name):
                proc = subprocess.Popen([sys.executable, "-c", HOLDS_A_SYNC_PERSONA, self.registry_dir],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                        start_new_session=True)
                self.addCleanup(reap, proc)
                wait_for_line(proc, "HOLDING")
                self.assertEqual(sum(self.sandbox.alive().values()), 1)
                proc.send_signal(signum)
                self.assertIn(proc.wait(timeout=60), signal_status(signum) + [1])
                self.assertEqual(sum(self.sandbox.alive().values()), 0, proc.stderr.read() if proc.stderr else "")
                self.assertEqual(self.registry_files(), [])


if __name__ == "__main__":
    unittest.main()

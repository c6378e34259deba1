"""Requests in flight, hanging providers and phantom intents, against the real sandbox (issue 8).

Kind 3: a create still in flight outlives the task that sent it (``wait_for``,
Ctrl-C) and the fixture's close. Kind 8: a hanging provider never holds a
fixture's start longer than the startup sweep's bound. Kind 7: a
ConfigurationError raised before any request leaves no intent behind.
Survivors are counted at the sandbox, never in our own bookkeeping.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import warnings
from typing import Any, Callable, List
from unittest import mock

from taos_persona import ConfigurationError, PersonaError, PersonaFixture, ResourceLeftWarning, sweep_async
from taos_persona.fixture import STARTUP_SWEEP_TIMEOUT_ENV, resolve_sweep_timeout
from tests._sandbox import SandboxTestCase  # imports aiohttp only when a test class starts its sandbox
from tests._support import run_files, child_env, needs_aiohttp, posix_only, reap, wait_for_line

USERS = "example_app.users"
_ACQUIRE_ONE = (  # a plain asyncio.run script, as a user writes one: acquire, print, hold
    "import asyncio, sys\n"
    "from taos_persona import PersonaFixture\n"
    "async def main():\n"
    "    async with PersonaFixture('p', registry_dir=sys.argv[1], sweep=False) as persona:\n"
    "        await persona.acquire('rest_user')\n"
    "        print('HOLDING', flush=True)\n"
    "        await asyncio.sleep(600)\n"
    "asyncio.run(main())\n")
_ACQUIRE_THREE = (  # three creates in flight together, then the owner is SIGKILLed
    "import asyncio, sys\n"
    "from taos_persona import PersonaFixture\n"
    "async def main():\n"
    "    async with PersonaFixture('p', registry_dir=sys.argv[1], sweep=False) as persona:\n"
    "        await asyncio.gather(*(persona.acquire(n) for n in ('rest_user', 'mailsac', 'rest_token')))\n"
    "        await asyncio.sleep(600)\n"
    "asyncio.run(main())\n")


async def until(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Poll ``condition`` (a generous deadline, never a speed target)."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting for {what} after {deadline:g}s")
        await asyncio.sleep(0.05)

_LEFT_OPEN = (  # a fixture left open: released at interpreter exit, within the bound
    "import asyncio, sys\n"
    "from taos_persona import PersonaFixture\n"
    "loop = asyncio.new_event_loop()\n"
    "fixture = PersonaFixture('p', registry_dir=sys.argv[1], sweep=False, startup_sweep_timeout=0.5)\n"
    "loop.run_until_complete(fixture.__aenter__())\n"
    "loop.run_until_complete(fixture.acquire('rest_user'))\n")


@needs_aiohttp
class InFlightTest(SandboxTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="taos-inflight-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.registry_dir = os.path.join(self.tmp, "registry")

    def fixture(self, **options: Any) -> PersonaFixture:
        options.setdefault("sweep", False)
        return PersonaFixture("novice_sarah", registry_dir=self.registry_dir, **options)

    def users(self) -> int:
        return int(self.sandbox.alive().get(USERS, 0))

    def run_files(self) -> List[str]:
        if not os.path.isdir(self.registry_dir):
            return []
        return sorted(name for name in os.listdir(self.registry_dir) if name.endswith(".json"))

    async def sweep_until_clean(self) -> None:
        """Sweep until nothing is left (an intent waits out its deadline first)."""
        end = time.monotonic() + 60
        while (await sweep_async(self.registry_dir)).exit_status != 0:
            self.assertLess(time.monotonic(), end, "the sweep never got the registry clean")
            await asyncio.sleep(0.2)

    async def test_wait_for_timeout_keeps_the_intent_until_the_create_could_have_landed(self) -> None:
        os.environ.update(TAOS_PERSONA_HTTP_TIMEOUT="3", TAOS_PERSONA_HTTP_RETRIES="0")
        self.sandbox.inject("delay", 1, delay=1.0, provider="example_app", method="POST")
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            async with self.fixture() as persona:
                with self.assertRaises(asyncio.TimeoutError):
                    await asyncio.wait_for(persona.acquire("rest_user"), 0.2)
        await until(lambda: self.users() == 1, "the create in flight to land at the provider")
        self.assertEqual(len(self.run_files()), 1, "the intent was kept: its create was in flight")
        await self.sweep_until_clean()
        self.assertEqual(self.users(), 0, "the sweep found the late user and released it")
        self.assertEqual(self.run_files(), [])

    @posix_only
    async def test_ctrl_c_in_a_plain_asyncio_run_keeps_the_intent_of_a_create_in_flight(self) -> None:
        self.sandbox.inject("delay", 1, delay=2.0, provider="example_app", method="POST")
        child = self.start_script(_ACQUIRE_ONE, self.registry_dir)
        await until(lambda: not self.queued_faults(), "the create to reach the provider")
        child.send_signal(signal.SIGINT)
        await asyncio.get_running_loop().run_in_executor(None, child.wait)
        await until(lambda: self.users() == 1, "the create in flight to land at the provider")
        self.assertEqual(len(self.run_files()), 1, "the intent was kept: its create was in flight")
        await self.sweep_until_clean()
        self.assertEqual(self.users(), 0)

    @posix_only
    async def test_creates_still_at_the_provider_when_their_owner_is_killed_are_kept(self) -> None:
        """Kind 2: every intent carries its deadline from the start, not only once cancelled."""
        os.environ.update(TAOS_PERSONA_HTTP_TIMEOUT="5", TAOS_PERSONA_HTTP_RETRIES="0")
        before = sum(self.sandbox.alive().values())
        self.sandbox.inject("delay", 3, delay=2.0, method="POST")
        child = self.start_script(_ACQUIRE_THREE, self.registry_dir)
        await until(lambda: not self.queued_faults(), "the three creates to reach the provider")
        child.kill()
        await asyncio.get_running_loop().run_in_executor(None, child.wait)
        early = await sweep_async(self.registry_dir)
        self.assertEqual(early.exit_status, 1, "not yet found, but still in flight: kept, not 'nothing created'")
        self.assertEqual(len(self.run_files()), 1)
        await until(lambda: sum(self.sandbox.alive().values()) == before + 3, "the creates to land")
        await self.sweep_until_clean()
        self.assertEqual(sum(self.sandbox.alive().values()), before, "the sweep found and released all three")

    def start_script(self, code: str, *args: str) -> "subprocess.Popen[str]":
        child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=child_env(), cwd=self.tmp)
        self.addCleanup(reap, child)
        return child

    async def test_close_waits_for_an_acquisition_in_flight_and_releases_what_it_brings(self) -> None:
        self.sandbox.inject("delay", 1, delay=1.0, provider="example_app", method="POST")
        async with self.fixture() as persona:
            late = asyncio.ensure_future(persona.acquire("rest_user"))
            await until(lambda: len(self.run_files()) == 1, "the intent on disk")
        with self.assertRaises(PersonaError) as caught:
            await late
        self.assertIn("released at once", str(caught.exception))
        self.assertEqual(self.users(), 0)
        self.assertEqual(run_files(self.registry_dir), [])

    async def test_configuration_error_before_any_request_leaves_no_intent(self) -> None:
        del os.environ["SMS_ACTIVATE_API_KEY"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with self.fixture() as persona:
                with self.assertRaises(ConfigurationError):
                    await persona.sms_number()
                self.assertEqual(persona.resource_count(), 0)
        self.assertEqual([str(w.message) for w in caught if issubclass(w.category, ResourceLeftWarning)], [])
        self.assertEqual(run_files(self.registry_dir), [])

    @posix_only
    async def test_a_hanging_provider_does_not_hold_the_next_start(self) -> None:
        os.environ["TAOS_PERSONA_HTTP_TIMEOUT"] = "30"
        child = self.start_script(_ACQUIRE_ONE, self.registry_dir)
        wait_for_line(child, "HOLDING")
        child.send_signal(signal.SIGKILL)
        child.wait()
        self.assertEqual(self.users(), 1)
        self.sandbox.inject("delay", 10, delay=3.0, provider="example_app", method="DELETE")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import taos_persona.fixture as fixture_module
            fixture_module._swept_dirs.discard(os.path.abspath(self.registry_dir))
            async with self.fixture(sweep=True, startup_sweep_timeout=0.5):
                self.assertEqual(self.users(), 1, "the start must not wait for the hanging release")
                self.assertEqual(len(self.run_files()), 1, "the dead run keeps its record for the next sweep")
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceLeftWarning)]
        self.assertTrue(any("startup sweep" in m and STARTUP_SWEEP_TIMEOUT_ENV in m for m in messages), messages)
        self.sandbox.clear_faults()
        await self.sweep_until_clean()
        self.assertEqual(self.users(), 0)


    @posix_only
    async def test_a_hanging_provider_does_not_hold_the_exit_of_a_process(self) -> None:
        os.environ["TAOS_PERSONA_HTTP_TIMEOUT"] = "30"
        self.sandbox.inject("delay", 10, delay=3.0, provider="example_app", method="DELETE")
        child = self.start_script(_LEFT_OPEN, self.registry_dir)
        await asyncio.get_running_loop().run_in_executor(None, child.wait)
        self.assertEqual(self.users(), 1, "the exit must not wait for the hanging release")
        self.assertEqual(len(self.run_files()), 1, "what it could not release stays on record")
        self.sandbox.clear_faults()
        await self.sweep_until_clean()
        self.assertEqual(self.users(), 0)


@needs_aiohttp
class CreateOutcomeTest(SandboxTestCase):
    """Kinds 6 and 9: what a failed create leaves on record follows what the provider could have done."""

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="taos-create-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.registry_dir = os.path.join(self.tmp, "registry")

    async def test_a_definitive_refusal_leaves_no_intent_even_where_recover_exists(self) -> None:
        for name, variable in (("mailsac", "MAILSAC_API_KEY"), ("rest_user", "TAOS_PERSONA_APP_TOKEN")):
            with self.subTest(backend=name), mock.patch.dict(os.environ, {variable: "a-wrong-key-123"}):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir,
                                              sweep=False) as persona:
                        with self.assertRaisesRegex(PersonaError, variable):
                            await persona.acquire(name)
                        self.assertEqual(persona.resource_count(), 0, "refused: nothing was created")
                left = [str(w.message) for w in caught if issubclass(w.category, ResourceLeftWarning)]
                self.assertEqual(left, [])
                self.assertEqual((await sweep_async(self.registry_dir)).exit_status, 0)

    async def test_an_unrecoverable_create_whose_answer_was_lost_is_not_retried_and_stays_on_record(self) -> None:
        self.sandbox.inject("drop_after", 1, provider="sms_activate")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as persona:
                with self.assertRaisesRegex(PersonaError, "not retried"):
                    await persona.acquire("sms_activate")
                self.assertEqual(persona.resource_count(), 1, "the ambiguous create is on record")
        self.assertEqual(self.sandbox.alive().get("sms_activate", 0), 1,
                         "exactly one activation: the lost answer was not retried into a second")
        left = [str(w.message) for w in caught if issubclass(w.category, ResourceLeftWarning)]
        self.assertEqual(len(left), 1, left)
        self.assertIn("cannot recover", left[0])
        self.assertEqual((await sweep_async(self.registry_dir)).exit_status, 1, "kept and reported")


class StartupSweepBoundTest(unittest.TestCase):
    def test_argument_then_environment_then_default(self) -> None:
        with mock.patch.dict(os.environ, {STARTUP_SWEEP_TIMEOUT_ENV: "2.5"}):
            self.assertEqual((resolve_sweep_timeout(1), resolve_sweep_timeout()), (1.0, 2.5))
        with mock.patch.dict(os.environ, {STARTUP_SWEEP_TIMEOUT_ENV: ""}):
            self.assertEqual(resolve_sweep_timeout(), 5.0)
        with mock.patch.dict(os.environ, {STARTUP_SWEEP_TIMEOUT_ENV: "soon"}):
            with self.assertRaises(ConfigurationError) as caught:
                resolve_sweep_timeout()
            self.assertIn(STARTUP_SWEEP_TIMEOUT_ENV, str(caught.exception))


if __name__ == "__main__":
    unittest.main()

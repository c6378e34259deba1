"""The pytest plugin, run as a user runs it: pytest in a subprocess, survivors counted at the sandbox."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
from typing import Dict, List

from tests._sandbox import SandboxEnvironment
from tests._support import TempDirTestCase, child_env, needs_aiohttp, needs_pytest, posix_only, reap

CONFTEST = '''
import os, time

def hold_here(persona_value):
    """Tell the parent we hold a resource, then wait to be killed."""
    marker = os.environ.get("HOLD_MARKER")
    if marker:
        with open(marker + "." + str(os.getpid()), "w") as handle:
            handle.write(str(persona_value))
        while True:
            time.sleep(0.1)
'''


@needs_aiohttp
@posix_only
class PytestPluginTest(SandboxEnvironment, TempDirTestCase):
    """Each test writes a tiny test file and runs pytest on it with the plugin, against the sandbox."""

    def setUp(self) -> None:
        super().setUp()
        with open(os.path.join(self.tmp, "conftest.py"), "w") as handle:
            handle.write(CONFTEST)

    def alive(self) -> int:
        return sum(self.sandbox.alive().values())

    def env(self, **extra: str) -> Dict[str, str]:
        env = child_env(**extra)
        env.pop("PYTEST_ADDOPTS", None)
        return env

    def write_test(self, body: str, name: str = "test_personas.py") -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(body))
        return path

    def pytest_command(self, *args: str) -> List[str]:
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                "-o", "asyncio_default_fixture_loop_scope=function",
                "-o", "asyncio_default_fixture_loop_scope=function",
                "--persona-registry", self.registry_dir, "--rootdir", self.tmp, *args]

    def run_pytest(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.pytest_command(*args), capture_output=True, text=True, cwd=self.tmp,
                              env=self.env(**env), timeout=300)

    def test_persona_fixture_is_released_at_the_end_of_each_test(self) -> None:
        self.write_test('''
            import json, os, urllib.request
            import pytest

            @pytest.mark.persona("novice_sarah")
            def test_marked(persona, sandbox_alive):
                email = persona.disposable_email()
                assert persona.name == "novice_sarah"
                assert sandbox_alive() == 1

            def test_named_after_the_test(persona, sandbox_alive):
                assert sandbox_alive() == 0, "the first test's mailbox was released at its end"
                persona.sms_number()
                assert persona.name == "test_named_after_the_test"

            def test_factory(persona_factory, sandbox_alive):
                alice, bob = persona_factory("alice"), persona_factory("bob")
                alice.disposable_email(); bob.disposable_email()
                assert sandbox_alive() == 2

            @pytest.mark.asyncio
            async def test_async_persona_under_pytest_asyncio(async_persona):
                email = await async_persona.disposable_email()
                body = json.dumps({"to": email.address, "subject": "Verify", "text": "code 424242"}).encode()
                urllib.request.urlopen(urllib.request.Request(os.environ["TAOS_PERSONA_SANDBOX"]
                                       + "/_sandbox/deliver/email", body, {"Content-Type": "application/json"}))
                assert (await email.wait_for_message(subject="Verify", timeout=30)).code() == "424242"

            @pytest.mark.anyio
            async def test_async_persona_under_anyio(async_persona):
                phone = await async_persona.sms_number()
                assert phone.number.startswith("+")
        ''')
        with open(os.path.join(self.tmp, "conftest.py"), "a") as handle:
            handle.write(textwrap.dedent('''
                import json, os, urllib.request, pytest

                @pytest.fixture
                def sandbox_alive():
                    def count():
                        with urllib.request.urlopen(os.environ["TAOS_PERSONA_SANDBOX"] + "/_sandbox/alive") as r:
                            return json.load(r)["total"]
                    return count
            '''))
        done = self.run_pytest()
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("5 passed", done.stdout)
        self.assertIn("taos-persona: 6 resource(s) acquired, 6 released, 0 left this session", done.stdout)
        self.assertEqual(self.alive(), 0)
        self.assertEqual(self.registry_files(), [])

    def test_name_from_an_overriding_fixture_and_options_from_the_mark(self) -> None:
        self.write_test('''
            import pytest

            @pytest.fixture
            def persona_name():  # as a conftest.py would override it
                return "conftest_carl"

            def test_overridden_name(persona):
                assert persona.name == "conftest_carl"

            @pytest.mark.persona("rest_rita", backends={"user": "rest_user"})
            def test_options(persona):
                assert persona.name == "rest_rita"
                assert persona.user_account().username.startswith("taos-")
        ''')
        done = self.run_pytest()
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertEqual(self.alive(), 0)

    def test_summary_counts_persona_test_cases_and_fixtures_a_test_opens(self) -> None:
        self.write_test('''
            from taos_persona import PersonaFixture, PersonaTestCase

            class SignupTest(PersonaTestCase):
                persona_name = "case_carol"

                async def test_two(self):
                    await self.persona.disposable_email()
                    await self.persona.sms_number()

            async def _own():
                async with PersonaFixture("own_olga") as persona:
                    await persona.disposable_email()

            def test_own_fixture():
                import asyncio
                asyncio.run(_own())

            def test_plugin_fixture(persona):
                persona.disposable_email()
        ''')
        done = self.run_pytest(TAOS_PERSONA_DIR=self.registry_dir)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("taos-persona: 4 resource(s) acquired, 4 released, 0 left this session", done.stdout)
        self.assertEqual(self.alive(), 0)

    def test_summary_names_the_registry_a_persona_test_case_left_resources_in(self) -> None:
        other = os.path.join(self.tmp, "other-registry")
        self.write_test(f'''
            import json, os, urllib.request
            from taos_persona import PersonaTestCase

            class LeavesOne(PersonaTestCase):
                persona_name = "case_carl"
                persona_options = {{"registry_dir": {other!r}}}

                async def test_release_will_fail(self):
                    await self.persona.disposable_email()
                    body = json.dumps({{"kind": "500", "count": 1000, "method": "DELETE"}}).encode()
                    request = urllib.request.Request(os.environ["TAOS_PERSONA_SANDBOX"] + "/_sandbox/faults",
                                                     body, {{"Content-Type": "application/json"}})
                    urllib.request.urlopen(request).close()
        ''')
        done = self.run_pytest("-W", "ignore::taos_persona.ResourceLeftWarning")
        self.assertIn("taos-persona: 1 resource(s) acquired, 0 released, 1 left this session", done.stdout)
        self.assertIn(f"release them with python -m taos_persona.sweep --dir {other}", done.stdout)
        self.assertNotIn(f"--dir {self.registry_dir}", done.stdout, "nothing was left in the session's own")
        self.sandbox.clear_faults()
        sweep = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", other],
                               capture_output=True, text=True, env=self.env(), timeout=120)
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(self.alive(), 0)

    def test_summary_names_the_sweep_when_a_release_fails(self) -> None:
        self.write_test('''
            import json, os, urllib.request

            def test_release_will_fail(persona):
                persona.disposable_email()
                body = json.dumps({"kind": "500", "count": 1000, "method": "DELETE"}).encode()
                request = urllib.request.Request(os.environ["TAOS_PERSONA_SANDBOX"] + "/_sandbox/faults", body,
                                                 {"Content-Type": "application/json"})
                urllib.request.urlopen(request).close()
        ''')
        done = self.run_pytest("-W", "ignore::taos_persona.ResourceLeftWarning")
        self.assertIn("taos-persona: 1 resource(s) acquired, 0 released, 1 left this session", done.stdout)
        self.assertIn(f"release them with python -m taos_persona.sweep --dir {self.registry_dir}", done.stdout)
        self.sandbox.clear_faults()
        self.assertEqual(self.alive(), 1)
        sweep = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir],
                               capture_output=True, text=True, env=self.env(), timeout=120)
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(self.alive(), 0)

    def test_xdist_worker_sigkilled_leaves_no_survivors_after_the_session(self) -> None:
        self.write_test('''
            import os, pytest
            from conftest import hold_here

            @pytest.mark.parametrize("n", range(8))
            def test_many(persona, n):
                email = persona.disposable_email()
                if n == 3:
                    hold_here(email.address)
        ''')
        marker = os.path.join(self.tmp, "holding")
        proc = subprocess.Popen(self.pytest_command("-n", "4"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=self.tmp, env=self.env(HOLD_MARKER=marker))
        self.addCleanup(reap, proc)
        worker_pid = self.wait_for_holder(marker, proc)
        self.assertGreaterEqual(self.alive(), 1)
        os.kill(worker_pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
        self.assertIn("7 passed", output)
        self.assertIn("closing sweep released 1 resource(s) of processes that died this session", output)
        self.assertEqual(self.alive(), 0, output)

    def wait_for_holder(self, marker: str, proc: subprocess.Popen[str]) -> int:
        """The pid of the process that wrote ``marker.<pid>``, once it holds its resource."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            found = [name for name in os.listdir(self.tmp) if name.startswith("holding.")]
            if found:
                return int(found[0].split(".")[1])
            if proc.poll() is not None:
                self.fail(f"pytest ended ({proc.returncode}) before a test held its resource")
            time.sleep(0.05)
        self.fail("no test held its resource in time")

    def test_timeout_thread_method_kill_is_released_by_the_next_session(self) -> None:
        self.write_test('''
            import time
            from conftest import hold_here

            def test_hangs(persona):
                persona.disposable_email()
                persona.sms_number()
                hold_here("x")
        ''')
        first = self.run_pytest("--timeout", "3", "--timeout-method", "thread",
                                HOLD_MARKER=os.path.join(self.tmp, "holding"))
        self.assertNotEqual(first.returncode, 0)
        self.assertIn("Timeout", first.stdout + first.stderr)
        self.assertEqual(self.alive(), 2, "os._exit() left both resources alive")
        self.write_test("def test_nothing():\n    pass\n")
        second = self.run_pytest()
        self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
        self.assertIn("taos-persona: startup sweep released 2 resource(s) left by earlier sessions",
                      second.stdout)
        self.assertEqual(self.alive(), 0)

    def test_timeout_signal_method_is_released_at_once(self) -> None:
        self.write_test('''
            from conftest import hold_here

            def test_hangs(persona):
                persona.disposable_email()
                hold_here("x")
        ''')
        done = self.run_pytest("--timeout", "3", "--timeout-method", "signal",
                               HOLD_MARKER=os.path.join(self.tmp, "holding"))
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("taos-persona: 1 resource(s) acquired, 1 released, 0 left this session", done.stdout)
        self.assertEqual(self.alive(), 0)



@needs_pytest
class SummaryLinesTest(unittest.TestCase):
    def test_each_registry_left_in_is_named_then_counted_in_plain_words(self) -> None:
        from taos_persona.pytest_plugin import PersonaTally, summary_lines

        tally = PersonaTally(acquired=5, left=5, left_in=["/a", "/b", "/c", "/d"])
        lines = summary_lines(tally, None)
        self.assertEqual(lines[-4:], [f"taos-persona: resources are left: release them with python -m "
                                      f"taos_persona.sweep --dir {place}" for place in ("/a", "/b", "/c")]
                         + ["taos-persona: ... and in 1 more registry"])
        tally.left_in.append("postgresql://ci:***@db/taos")
        self.assertEqual(summary_lines(tally, None)[-1], "taos-persona: ... and in 2 more registries")
        tally.left_in[:] = ["postgresql://ci:***@db/taos"]
        self.assertEqual(summary_lines(tally, None)[-1], "taos-persona: resources are left: release them "
                         "with python -m taos_persona.sweep --registry postgresql://ci:***@db/taos")

if __name__ == "__main__":
    unittest.main()

"""PersonaTestCase: a fresh persona per test, released per test, and on Ctrl-C under both runners."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import unittest
from typing import List, Tuple
from xml.etree import ElementTree

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import ConfigurationError, PersonaTestCase
from tests._support import (REPO, TempDirTestCase, child_env, kill_and_wait, needs_aiohttp, needs_pytest, posix_only,
                            reap, signal_status, wait_for_line)


class InProcessTest(TempDirTestCase):
    def run_case(self, case: type) -> unittest.TestResult:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
        return unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)

    def test_each_test_gets_and_releases_its_own_persona(self) -> None:
        files, registry, seen = self.files_dir, self.registry_dir, []

        class Case(PersonaTestCase):
            persona_name = "novice_sarah"
            persona_options = {"registry_dir": registry}

            async def test_one(self) -> None:
                await self.persona.acquire("file", directory=files)
                seen.append((self.persona.run_id, len(os.listdir(files))))

            async def test_two(self) -> None:
                await self.persona.acquire("file", directory=files)
                seen.append((self.persona.run_id, len(os.listdir(files))))
                self.fail("a failing test still releases")

        result = self.run_case(Case)
        self.assertEqual((result.testsRun, len(result.failures), len(result.errors)), (2, 1, 0))
        self.assertEqual([count for _, count in seen], [1, 1], "released at the end of each test")
        self.assertNotEqual(seen[0][0], seen[1][0], "a fresh run per test")
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])

    def test_missing_persona_name_is_a_clear_error(self) -> None:
        class Case(PersonaTestCase):
            async def test_x(self) -> None:
                pass

        result = self.run_case(Case)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("persona_name", result.errors[0][1])
        self.assertIn(ConfigurationError.__name__, result.errors[0][1])

CASE = "tests._persona_case"


@posix_only
class CtrlCTest(TempDirTestCase):
    """unittest skips cleanups on KeyboardInterrupt and pytest has no SIGTERM teardown: our path releases,
    then the signal goes on as Python would have handled it, so the runners still report."""

    def start(self, command: List[str], **env: str) -> "subprocess.Popen[str]":
        """Start the child, wait until its test holds its three resources."""
        env = child_env(TAOS_TEST_REGISTRY=self.registry_dir, TAOS_TEST_FILES=self.files_dir, TAOS_TEST_HOLD="60",
                        **env)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=REPO)
        self.addCleanup(reap, proc)
        wait_for_line(proc, "HOLDING")
        return proc

    def interrupt(self, command: List[str], signum: int) -> Tuple[int, str, str]:
        """Signal the child mid-test; return its status, stdout and stderr; nothing may survive."""
        proc = self.start(command)
        self.assertEqual(len(self.survivors()), 3)
        status = kill_and_wait(proc, signum)
        out, err = proc.communicate()
        self.assertEqual(self.survivors(), [], err)
        self.assertEqual(self.registry_files(), [])
        return status, out, err

    def pytest(self, *args: str) -> List[str]:
        return [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *args]

    def test_unittest_ctrl_c(self) -> None:
        status, out, err = self.interrupt([sys.executable, "-m", "unittest", f"{CASE}.SignupCase"], signal.SIGINT)
        self.assertIn(status, signal_status(signal.SIGINT))
        self.assertIn("KeyboardInterrupt", err, "handed on as Python would have")
        self.assertIn("TEST FINALLY", out, "the test's own finally still runs")
        self.assertIn("taos-persona: SIGINT: releasing 3 resources of 1 runs; press Ctrl-C again", err)

    @needs_pytest
    def test_pytest_ctrl_c_reports_and_exits_2(self) -> None:
        xml = os.path.join(self.tmp, "report.xml")
        status, out, err = self.interrupt(self.pytest(f"--junitxml={xml}", "tests/_persona_case.py::SignupCase"),
                                          signal.SIGINT)
        self.assertEqual(status, 2, out + err)
        self.assertIn("KeyboardInterrupt", out, "pytest's own summary")
        self.assertIn("TEST FINALLY", out)
        self.assertEqual(ElementTree.parse(xml).getroot().tag, "testsuites", "junit XML written")
        self.assertEqual(err.count("taos-persona: SIGINT: releasing 3 resources of 1 runs"), 1, err)

    @needs_pytest
    def test_pytest_ctrl_c_in_asyncio_run(self) -> None:
        """A sync test that runs its persona under asyncio.run: the main task is cancelled, the
        test's own finally and a later fixture's teardown run, pytest reports and exits 2."""
        test_file = os.path.join(self.tmp, "test_sync_persona.py")
        with open(test_file, "w") as handle:
            handle.write(_ASYNCIO_RUN_TEST)
        xml = os.path.join(self.tmp, "report.xml")
        status, out, err = self.interrupt(self.pytest(f"--junitxml={xml}", test_file), signal.SIGINT)
        self.assertEqual(status, 2, out + err)
        self.assertIn("KeyboardInterrupt", out)
        self.assertIn("TEST FINALLY", out)
        self.assertIn("OTHER FIXTURE TEARDOWN", out)
        self.assertIn("OTHER ATEXIT HOOK", out)
        self.assertTrue(os.path.exists(xml), "junit XML written")

    @needs_pytest
    def test_pytest_sigterm(self) -> None:
        status, _, err = self.interrupt(self.pytest("tests/_persona_case.py::SignupCase"), signal.SIGTERM)
        self.assertIn(status, signal_status(signal.SIGTERM))
        self.assertIn("taos-persona: SIGTERM: releasing 3 resources of 1 runs; send SIGTERM again", err)

    @needs_aiohttp
    @needs_pytest
    def test_pytest_ctrl_c_closes_http_sessions(self) -> None:
        """Released at the sandbox, and the test's own HTTP session closed: no "Unclosed client session"
        though unittest runs no cleanup after KeyboardInterrupt."""
        from taos_persona.sandbox import SandboxThread

        sandbox = SandboxThread().start()
        self.addCleanup(sandbox.close)
        proc = self.start(self.pytest("tests/_persona_case.py::HttpSignupCase"), **sandbox.env())
        self.assertEqual(sandbox.call("GET", "/_sandbox/alive")["total"], 3)
        status = kill_and_wait(proc, signal.SIGINT)
        out, err = proc.communicate()
        self.assertEqual(status, 2, out + err)
        self.assertEqual(sandbox.call("GET", "/_sandbox/alive")["total"], 0, "alive at the sandbox")
        self.assertNotIn("Unclosed", out + err)
        self.assertEqual(self.registry_files(), [])

    def test_unittest_catch_break_lets_the_test_finish(self) -> None:
        """``unittest -c``: Ctrl-C lets the running test finish with its persona, then stops the run;
        the release happens at the test's own end, not under it."""
        proc = self.start([sys.executable, "-m", "unittest", "-c", "-v", f"{CASE}.CatchBreakCase"])
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        self.assertIn("STILL OPEN", out, err)
        self.assertNotIn("RAN AFTER CTRL-C", out, "the run stops after the running test")
        for symptom in ("not open", "no longer exists", "Unclosed", "Traceback"):
            self.assertNotIn(symptom, err)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])


_ASYNCIO_RUN_TEST = """
import asyncio, atexit, os
import pytest
import tests._backends
from taos_persona import PersonaFixture

@pytest.fixture
def other():
    yield
    print("OTHER FIXTURE TEARDOWN", flush=True)

def test_sync(other):
    atexit.register(print, "OTHER ATEXIT HOOK", flush=True)

    async def main():
        async with PersonaFixture("p", registry_dir=os.environ["TAOS_TEST_REGISTRY"]) as persona:
            for _ in range(3):
                await persona.acquire("file")
            print("HOLDING", flush=True)
            try:
                await asyncio.sleep(60)
            finally:
                print("TEST FINALLY", flush=True)
    asyncio.run(main())
"""


if __name__ == "__main__":
    unittest.main()

"""PersonaTestCase: a fresh persona per test, released per test, and on Ctrl-C under both runners."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import unittest

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import ConfigurationError, PersonaTestCase
from tests._support import (REPO, TempDirTestCase, child_env, kill_and_wait, needs_pytest, posix_only, reap,
                            signal_status, wait_for_line)


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

@posix_only
class CtrlCTest(TempDirTestCase):
    """unittest skips cleanups on KeyboardInterrupt and pytest has no SIGTERM teardown: our path releases."""

    def interrupt(self, command: list, signum: int) -> int:
        env = child_env(TAOS_TEST_REGISTRY=self.registry_dir, TAOS_TEST_FILES=self.files_dir, TAOS_TEST_HOLD="60")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=REPO)
        self.addCleanup(reap, proc)
        wait_for_line(proc, "HOLDING")
        self.assertEqual(len(self.survivors()), 3)
        status = kill_and_wait(proc, signum)
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])
        return status

    def test_unittest_ctrl_c(self) -> None:
        status = self.interrupt([sys.executable, "-m", "unittest", "tests._persona_case"], signal.SIGINT)
        self.assertIn(status, signal_status(signal.SIGINT))

    @needs_pytest
    def test_pytest_ctrl_c(self) -> None:
        status = self.interrupt([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                                 "tests/_persona_case.py"], signal.SIGINT)
        self.assertIn(status, signal_status(signal.SIGINT))

    @needs_pytest
    def test_pytest_sigterm(self) -> None:
        status = self.interrupt([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                                 "tests/_persona_case.py"], signal.SIGTERM)
        self.assertIn(status, signal_status(signal.SIGTERM))


if __name__ == "__main__":
    unittest.main()

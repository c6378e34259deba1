"""The watchdog (issue 10): a SIGKILLed test's resources are released within seconds, by a process
the kill cannot reach, which never touches a live run and leaves no process behind.

Survivors are counted at the provider (the sandbox's store), never in our registry.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import unittest
import warnings
from typing import Callable, Dict, List, Tuple
from unittest import mock

from taos_persona import watchdog
from tests._sandbox import FAST_RETRIES, SandboxEnvironment
from tests._support import (TESTS, TempDirTestCase, run_files, child_env, kill_and_wait, needs_aiohttp, needs_pytest, posix_only,
                            reap, wait_for_line)

HELD = ("mailsac", "twilio", "rest_user")
"""Three resources, at three providers, held by each test process."""
KILLS = 5
"""SIGKILLs per test run; the torture row does 20."""


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` with a generous deadline: a condition to wait on, not a speed check."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.005)


def percentiles(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


class WatchdogSwitchTest(unittest.TestCase):
    def test_argument_then_environment(self) -> None:
        with mock.patch.dict(os.environ, {"TAOS_PERSONA_WATCHDOG": "1"}):
            self.assertTrue(watchdog.wanted(None))
            self.assertFalse(watchdog.wanted(False))
        with mock.patch.dict(os.environ, {"TAOS_PERSONA_WATCHDOG": ""}):
            self.assertFalse(watchdog.wanted(None))
            self.assertTrue(watchdog.wanted(True))

    def test_a_watchdog_that_cannot_start_is_a_warning(self) -> None:
        with mock.patch("subprocess.Popen", side_effect=OSError("no processes left")), \
                mock.patch.object(watchdog, "_watch", None), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.assertIsNone(watchdog.ensure("/nonexistent"))
        self.assertIn("could not start the watchdog", str(caught[0].message))


class WatchdogContainmentTest(unittest.TestCase):
    def test_a_sweep_dying_of_any_base_exception_but_exit_is_reported_and_survived(self) -> None:
        """Kind 4: the watchdog's work catches more than Exception (a backend's CancelledError)."""
        import asyncio

        for raised in (asyncio.CancelledError("a buggy backend"), GeneratorExit(), MemoryError()):
            with self.subTest(raised=type(raised).__name__), \
                    mock.patch("taos_persona.sweeper.sweep_registry", side_effect=raised), \
                    mock.patch.object(sys, "stderr") as stderr:
                watchdog._sweep_all({"/nonexistent-registry"})
                self.assertIn(type(raised).__name__, "".join(c.args[0] for c in stderr.write.call_args_list))
        with mock.patch("taos_persona.sweeper.sweep_registry", side_effect=SystemExit(3)), \
                self.assertRaises(SystemExit):
            watchdog._sweep_all({"/nonexistent-registry"})


class ChildRuns(SandboxEnvironment, TempDirTestCase):
    """Persona runs in child processes, holding :data:`HELD` at the sandbox."""

    def start_run(self, *, watchdog: bool, session: bool = False) -> Tuple[subprocess.Popen, str, int]:
        """(the child, its run's name prefix, its watchdog's pid or 0)."""
        command = [sys.executable, os.path.join(TESTS, "_persona_child.py"), "--registry", self.registry_dir,
                   *(a for name in HELD for a in ("--backend", name))] + (["--watchdog"] if watchdog else [])
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=child_env(**dict(os.environ, **FAST_RETRIES)), cwd=self.tmp,
                                 start_new_session=session)
        self.addCleanup(reap, child)
        run_id = wait_for_line(child, "ENTERED", 60).split()[1]
        pid = wait_for_line(child, "WATCHDOG").split()[1]
        wait_for_line(child, "HOLDING")
        return child, f"taos-{run_id}".lower(), 0 if pid == "none" else int(pid)

    def alive(self, run_prefix: str) -> int:
        """Resources of the run named ``run_prefix`` alive at the sandbox, over all of :data:`HELD`."""
        names = [row["rid"] for row in self.sandbox.resources("mailsac")]
        names += [row["data"]["friendly_name"] for row in self.sandbox.resources("twilio")]
        names += [row["data"]["username"] for row in self.sandbox.resources("example_app.users")]
        return sum(1 for name in names if name.startswith(run_prefix + "-"))


@needs_aiohttp
@posix_only
class WatchdogKillTest(ChildRuns):
    def test_sigkill_released_within_seconds_live_run_untouched_no_process_left(self) -> None:
        live, live_run, live_watchdog = self.start_run(watchdog=True)
        self.assertEqual(self.alive(live_run), len(HELD))
        seconds = []
        for _ in range(KILLS):
            child, run, pid = self.start_run(watchdog=True)
            self.assertGreater(pid, 0)
            self.assertEqual(os.getsid(pid), pid, "the watchdog leads a session of its own")
            self.assertEqual(self.alive(run), len(HELD))
            started = time.monotonic()
            kill_and_wait(child)
            wait_until(lambda run=run: self.alive(run) == 0, f"the watchdog released {run}")  # type: ignore[misc]
            seconds.append(time.monotonic() - started)
            wait_until(lambda pid=pid: process_gone(pid), f"watchdog {pid} exited")  # type: ignore[misc]
        figures = percentiles(seconds)
        print(f"\nwatchdog: SIGKILL to 0 alive over {KILLS} kills, 3 resources each: "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in figures.items()), file=sys.stderr)
        self.assertEqual(self.alive(live_run), len(HELD), "0 live-run releases")
        self.assertFalse(process_gone(live_watchdog), "the live run's watchdog waits for its owner")
        live.stdin.close()  # type: ignore[union-attr]
        wait_for_line(live, "DONE")
        live.wait(60)
        wait_until(lambda: process_gone(live_watchdog), "the watchdog leaves with its owner")
        self.assertEqual(self.alive(live_run), 0)

    def test_sigkill_of_the_whole_process_group_does_not_reach_it(self) -> None:
        """A cancelled CI job kills the test's process group; Ctrl-C signals it alike."""
        child, run, pid = self.start_run(watchdog=True, session=True)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(60)
        wait_until(lambda: self.alive(run) == 0, "the watchdog released the run")
        wait_until(lambda: process_gone(pid), "the watchdog exits once its owner is gone")


@posix_only
class WatchdogDirectoriesTest(TempDirTestCase):
    """Fixtures of one process in two registries: one watchdog, told of the second through its pipe."""

    SCRIPT = """
import asyncio, os, sys
import tests._backends
from taos_persona import PersonaFixture, watchdog

async def main():
    first = PersonaFixture("p", registry_dir=sys.argv[1], sweep=False, watchdog=True)
    second = PersonaFixture("p", registry_dir=sys.argv[2], sweep=False, watchdog=True)
    async with first, second:
        await first.acquire("file")
        await second.acquire("file")
        print(watchdog.watchdog_pid(), flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""

    def kill_owner(self, **env: str) -> None:
        """Start the owner, SIGKILL it once it holds its two files, wait for the watchdog's release."""
        second = os.path.join(self.tmp, "second-registry")
        owner = subprocess.Popen([sys.executable, "-c", self.SCRIPT, self.registry_dir, second],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.tmp,
                                 env=child_env(TAOS_TEST_FILES=self.files_dir, **env))
        self.addCleanup(reap, owner)
        pid = int(owner.stdout.readline() or 0)  # type: ignore[union-attr]
        self.assertGreater(pid, 0, owner.stderr.read() if owner.poll() is not None else "")  # type: ignore
        self.assertEqual(len(self.survivors()), 2)
        kill_and_wait(owner)
        wait_until(lambda: self.survivors() == [], "both registries' resources released")
        wait_until(lambda: process_gone(pid), "the watchdog exited")
        self.assertEqual(run_files(second), [])

    def test_sigkill_releases_in_every_registry(self) -> None:
        self.kill_owner()

    def test_a_fault_armed_for_the_test_does_not_fire_in_the_watchdog(self) -> None:
        self.kill_owner(TAOS_PERSONA_FAULT="release.before")


@posix_only
@needs_pytest
class WatchdogPytestOptionTest(TempDirTestCase):
    """``pytest --persona-watchdog``: the plugin's personas get a watchdog; a SIGKILLed session is released."""

    TEST = """
import os, time
import tests._backends
from taos_persona import watchdog

def test_holds(persona):
    persona.acquire("file")
    print("WATCHDOG", watchdog.watchdog_pid(), flush=True)
    time.sleep(600)
"""

    def test_sigkill_of_pytest_is_released(self) -> None:
        with open(os.path.join(self.tmp, "test_holding.py"), "w") as handle:
            handle.write(self.TEST)
        session = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q",
                                    "--persona-watchdog", "--persona-registry", self.registry_dir,
                                    "test_holding.py"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, cwd=self.tmp, env=child_env(TAOS_TEST_FILES=self.files_dir))
        self.addCleanup(reap, session)
        pid = int(wait_for_line(session, "WATCHDOG", 120).split()[1])
        self.assertEqual(len(self.survivors()), 1)
        kill_and_wait(session)
        wait_until(lambda: self.survivors() == [], "the session's file released by its watchdog")
        wait_until(lambda: process_gone(pid), "the watchdog exited")


@posix_only
class WatchdogForkTest(TempDirTestCase):
    """A forked child must not hold the owner's pipe open, or the watchdog never sees the owner die."""

    SCRIPT = """
import asyncio, os, sys, time
from taos_persona import PersonaFixture, watchdog

async def main():
    async with PersonaFixture("p", registry_dir=sys.argv[1], sweep=False, watchdog=True):
        pass

asyncio.run(main())
print(watchdog.watchdog_pid(), flush=True)
if os.fork() == 0:
    time.sleep(600)
    os._exit(0)
print("FORKED", flush=True)
time.sleep(600)
"""

    def test_owner_killed_forked_child_alive_watchdog_exits(self) -> None:
        owner = subprocess.Popen([sys.executable, "-c", self.SCRIPT, self.registry_dir], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=child_env(), cwd=self.tmp,
                                 start_new_session=True)
        self.addCleanup(reap, owner)
        self.addCleanup(lambda: os.killpg(owner.pid, signal.SIGKILL) if not process_gone(owner.pid) else None)
        pid = int(owner.stdout.readline())  # type: ignore[union-attr]
        wait_for_line(owner, "FORKED")
        self.addCleanup(lambda: os.killpg(owner.pid, signal.SIGKILL))  # the forked child too
        self.assertFalse(process_gone(pid))
        kill_and_wait(owner)
        wait_until(lambda: process_gone(pid), "the watchdog saw its owner die though a forked child lives")


if __name__ == "__main__":
    unittest.main()

"""Process lifetime in real child processes: signals that cooperate, and the release at interpreter exit.

Survivors are counted where they live: files at the fake file provider, rows in
the sqlite table, users alive at the sandbox (its ``/_sandbox/alive``).
"""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import unittest
from contextlib import closing
from typing import Dict, List, Optional

from taos_persona import lifetime
from tests._support import (REPO, TESTS, TempDirTestCase, child_env, kill_and_wait, needs_aiohttp, posix_only,
                            reap, signal_status, wait_for_line)

CHILD = os.path.join(TESTS, "_lifetime_child.py")
PYENV = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
EXIT_VERSIONS = ("3.9", "3.13")
"""The oldest and newest Python the atexit release must work on (3.12 changed shutdown)."""


def pyenv_python(version: str) -> Optional[str]:
    """The newest pyenv interpreter of ``version`` (``3.9``) on this machine, else None."""
    found = sorted(glob.glob(os.path.join(PYENV, "versions", f"{version}.*", "bin", f"python{version}")))
    return found[-1] if found else None


def aiohttp_venv(version: str) -> str:
    """A cached venv of pyenv's Python ``version`` with aiohttp, under ``.venv-py39/``; skips if impossible."""
    python = pyenv_python(version)
    if python is None:
        raise unittest.SkipTest(f"Python {version} is not installed here (pyenv)")
    venv = os.path.join(REPO, f".venv-py{version.replace('.', '')}")
    interpreter = os.path.join(venv, "bin", "python")
    ready = os.path.join(venv, ".aiohttp-installed")
    if not os.path.exists(ready):
        steps = ([python, "-m", "venv", "--clear", venv], [interpreter, "-m", "pip", "install", "-q", "aiohttp"])
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise unittest.SkipTest(f"cannot make a Python {version} venv with aiohttp ({' '.join(step)}): "
                                        f"{done.stderr.strip()[-300:]}")
        open(ready, "w").close()
    return interpreter


def sql_rows(db: str) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])


class LifetimeCase(TempDirTestCase):
    def start(self, *args: str, python: str = sys.executable, prefix: List[str] = (),  # type: ignore[assignment]
              env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[str]":
        """Start tests/_lifetime_child.py MODE REGISTRY ...; wait until it holds its resources."""
        command = [*prefix, python, CHILD, args[0], self.registry_dir, *args[1:]]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.tmp,
                                env=env or child_env(TAOS_TEST_FILES=self.files_dir))
        self.addCleanup(reap, proc)
        wait_for_line(proc, "HOLDING", timeout=120)
        return proc

    def assertNothingLeft(self) -> None:
        self.assertEqual(self.survivors(), [], "alive at the provider")
        self.assertEqual(self.registry_files(), [])


@posix_only
class IgnoredSignalTest(LifetimeCase):
    @unittest.skipUnless(shutil.which("nohup"), "needs nohup")
    def test_nohup_run_survives_sighup(self) -> None:
        """SIGHUP ignored when we came (nohup) stays ignored: the run goes on and ends normally."""
        proc = self.start("hold", "2", prefix=["nohup"])
        proc.send_signal(signal.SIGHUP)  # an ignored signal is discarded as it is sent
        self.assertEqual(len(self.survivors()), 2, "nothing released mid-test")
        out, err = proc.communicate("GO\n", timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("DONE", out)
        self.assertNotIn("taos-persona", err)
        self.assertNothingLeft()


@posix_only
class SecondSignalTest(LifetimeCase):
    def test_second_signal_says_what_is_left(self) -> None:
        env = child_env(TAOS_TEST_FILES=self.files_dir, TAOS_TEST_RELEASE_DELAY="30")
        proc = self.start("hold", "3", env=env)
        proc.send_signal(signal.SIGINT)
        wait_for_stderr(proc, "taos-persona: SIGINT: releasing 3 resources of 1 runs; press Ctrl-C again")
        status = kill_and_wait(proc, signal.SIGINT)
        self.assertIn(status, signal_status(signal.SIGINT))
        err = proc.communicate()[1]
        self.assertIn(f"SIGINT again: stopped releasing; 3 resources of 1 runs are left for "
                      f"python -m taos_persona.sweep --dir {self.registry_dir}", err)
        self.assertEqual(len(self.survivors()), 3)
        sweep = self.run_sweep_cli()
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertNothingLeft()


def wait_for_stderr(proc: "subprocess.Popen[str]", text: str) -> None:
    """Read the child's stderr line by line until one contains ``text``."""
    assert proc.stderr is not None
    seen = []
    for line in iter(proc.stderr.readline, ""):
        if text in line:
            return
        seen.append(line)
    raise AssertionError(f"child ended (status {proc.wait()}) without {text!r}: {''.join(seen)}")


@posix_only
class OffMainThreadTest(LifetimeCase):
    def test_fixtures_in_threads_released_when_installed_first(self) -> None:
        """lifetime.install() in the main thread covers fixtures opened later in other threads."""
        proc = self.start("thread", "2", "--install")
        self.assertEqual(len(self.survivors()), 4)
        status = kill_and_wait(proc, signal.SIGTERM)
        err = proc.communicate()[1]
        self.assertIn(status, signal_status(signal.SIGTERM), err)
        self.assertIn("SIGTERM: releasing 4 resources of 2 runs", err)
        self.assertNotIn("Warning", err)
        self.assertNothingLeft()

    def test_uncovered_fixture_warns_once(self) -> None:
        """Opened off the main thread with no handler: one warning that names the fix; atexit still releases."""
        proc = self.start("thread", "1")
        proc.send_signal(signal.SIGTERM)  # no handler of ours: plain death, the sweep's job
        err = proc.communicate()[1]
        self.assertEqual(proc.returncode, -signal.SIGTERM)
        self.assertEqual(err.count("RuntimeWarning"), 1, err)
        self.assertIn("taos_persona.lifetime.install()", err)
        self.assertEqual(self.run_sweep_cli().returncode, 0)
        self.assertNothingLeft()


@posix_only
class AtExitTest(LifetimeCase):
    """A fixture still open when the interpreter exits is released then, on the oldest and newest Python."""

    def exit_with_open_fixture(self, python: str, backend: str, env: Dict[str, str], db: str = "") -> str:
        proc = self.start("exit", backend, db, python=python, env=env)
        out, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 0, err)
        for symptom in ("Unclosed", "Traceback", "cannot schedule", "ResourceLeftWarning"):
            self.assertNotIn(symptom, err)
        self.assertEqual(self.registry_files(), [], err)
        return err

    def test_sql_row(self) -> None:
        for version in EXIT_VERSIONS + ("",):
            python = pyenv_python(version) if version else sys.executable
            with self.subTest(python=version or "this"):
                if python is None:
                    self.skipTest(f"Python {version} is not installed here (pyenv)")
                db = os.path.join(self.tmp, f"app{version}.db")
                self.exit_with_open_fixture(python, "sql", child_env(), db)
                self.assertEqual(sql_rows(db), 0, "the row is deleted at exit")

    @needs_aiohttp
    def test_rest_user_at_localhost(self) -> None:
        """The REST user backend at ``localhost``: aiohttp resolves the name on a thread."""
        from taos_persona.sandbox import SandboxThread

        sandbox = SandboxThread().start()
        self.addCleanup(sandbox.close)
        env = child_env(**sandbox.env())
        env["TAOS_PERSONA_SANDBOX"] = sandbox.url.replace("127.0.0.1", "localhost")
        for version in EXIT_VERSIONS + ("",):
            with self.subTest(python=version or "this"):
                python = aiohttp_venv(version) if version else sys.executable
                self.exit_with_open_fixture(python, "rest_user", env)
                self.assertEqual(sandbox.call("GET", "/_sandbox/alive")["total"], 0, "alive at the sandbox")


class ReleaseLoopTest(unittest.TestCase):
    """The pieces the release path stands on, in-process."""

    def test_executor_runs_work_here_when_no_thread_may_start(self) -> None:
        """As at interpreter shutdown: the pool refuses new work, the call runs in the caller's thread."""
        executor = lifetime._ReleaseExecutor(max_workers=1)
        executor.shutdown()
        self.assertEqual(executor.submit(threading.get_ident).result(), threading.get_ident())
        with self.assertRaises(ZeroDivisionError):
            executor.submit(divmod, 1, 0).result()

    @unittest.skipIf(sys.version_info >= (3, 11), "IsolatedAsyncioTestCase has no runner task since 3.11")
    def test_keyboard_interrupt_comes_out_of_the_loop_not_a_task(self) -> None:
        """A SIGINT that lands inside a task's step (often, in asyncio debug mode) must not kill the
        task: IsolatedAsyncioTestCase before 3.11 then waits forever for its runner task."""
        async def step() -> str:
            lifetime._hand_on(signal.SIGINT, signal.default_int_handler, None)  # as the handler does
            await asyncio.sleep(0)
            return "the task lives on"

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        task = loop.create_task(step())
        with self.assertRaises(KeyboardInterrupt):
            loop.run_until_complete(task)
        self.assertFalse(task.done(), "the KeyboardInterrupt was thrown into the task and killed it")
        self.assertEqual(loop.run_until_complete(task), "the task lives on")

    def test_run_blocking_inside_a_running_loop(self) -> None:
        async def inner() -> str:
            return threading.current_thread().name

        async def outer() -> str:
            return lifetime.run_blocking(inner)  # as a signal handler that interrupted this loop does

        self.assertEqual(asyncio.run(outer()), "taos-persona-release")

    def test_run_on_loop_reaches_another_threads_loop(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        self.addCleanup(loop.close)
        self.addCleanup(thread.join)
        self.addCleanup(loop.call_soon_threadsafe, loop.stop)
        seen: List[int] = []

        async def note() -> None:
            seen.append(threading.get_ident())

        self.assertTrue(lifetime.run_on_loop(loop, note))
        self.assertEqual(seen, [thread.ident])

    def test_run_on_loop_cannot_reach_the_loop_it_interrupted(self) -> None:
        async def main() -> bool:
            return lifetime.run_on_loop(asyncio.get_running_loop(), nothing)

        async def nothing() -> None:
            raise AssertionError("must not run")

        self.assertFalse(asyncio.run(main()))
        self.assertFalse(lifetime.run_on_loop(None, nothing))


if __name__ == "__main__":
    unittest.main()

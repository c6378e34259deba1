"""Crash tests: real child processes, killed by real signals, then swept.

Survivors are counted where they live: rows in the SQL table, files at the
fake file provider, entries in the registry directory.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unittest
from contextlib import closing

from tests._support import (REPO, TempDirTestCase, child_env, kill_and_wait, posix_only, read_bytes, reap,
                            signal_status, wait_for_line)

ACQUIRE_POINTS = ("acquire.before_intent", "acquire.after_intent", "acquire.after_create",
                  "acquire.after_record")
RELEASE_POINTS = ("release.before:2", "release.after_provider:2", "release.between:1",
                  "registry.mid_write:1", "registry.mid_write:2", "registry.mid_write:3")


def sql_rows(db: str) -> int:
    if not os.path.exists(db):
        return 0
    with closing(sqlite3.connect(db)) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@posix_only
class SigkillDuringAcquisitionTest(TempDirTestCase):
    """SIGKILL at each step of an acquisition and of the release, then one sweep: nothing left."""

    def crash_then_sweep(self, point: str, backend: str) -> None:
        db = os.path.join(self.tmp, "app.db")
        child = self.start_child("--backend", backend, "--db", db, "--count", "3",
                                 TAOS_PERSONA_FAULT=point)
        self.assertEqual(child.wait(60), -signal.SIGKILL, child.stderr.read())
        before = sql_rows(db) + len(self.survivors())
        sweep = self.run_sweep_cli()
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(sql_rows(db), 0, f"rows left after a kill at {point}")
        self.assertEqual(self.survivors(), [], f"files left after a kill at {point}")
        self.assertEqual(self.registry_files(), [], f"registry entries left after a kill at {point}")
        if point in ("acquire.after_create", "acquire.after_record", "release.before:2"):
            self.assertGreater(before, 0, "the kill came after a create, so something was alive")

    def test_sql_backend_each_point(self) -> None:
        for point in ACQUIRE_POINTS + RELEASE_POINTS:
            with self.subTest(point=point):
                self.crash_then_sweep(point, "sql")

    def test_file_backend_each_point(self) -> None:
        for point in ACQUIRE_POINTS + RELEASE_POINTS:
            with self.subTest(point=point):
                self.crash_then_sweep(point, "file")

    def test_second_sweep_is_a_noop(self) -> None:
        self.crash_then_sweep("acquire.after_create", "file")
        again = self.run_sweep_cli("--json")
        self.assertEqual(again.returncode, 0)
        report = json.loads(again.stdout)
        self.assertEqual((report["resources"], report["swept_runs"]), ([], []))

    def kill_after_create(self, backend: str) -> None:
        child = self.start_child("--backend", backend, "--count", "1", TAOS_PERSONA_FAULT="acquire.after_create")
        self.assertEqual(child.wait(60), -signal.SIGKILL)

    def test_unrecoverable_intent_is_kept_and_reported(self) -> None:
        self.kill_after_create("file_norecover")
        sweep = self.run_sweep_cli()
        self.assertEqual(sweep.returncode, 1, sweep.stdout)
        self.assertIn("cannot recover", sweep.stdout)
        self.assertEqual(len(self.survivors()), 1, "we must not pretend we released it")
        self.assertEqual(len([n for n in self.registry_files() if n.endswith(".json")]), 1)

    def test_unrecoverable_intent_dropped_once_the_provider_lifetime_passed(self) -> None:
        self.kill_after_create("file_expiring")
        first = self.run_sweep_cli()
        self.assertEqual(first.returncode, 1, first.stdout)
        self.assertIn("the provider ends it 1s after creation", first.stdout)
        time.sleep(1.1)
        second = self.run_sweep_cli()
        self.assertEqual(second.returncode, 0, second.stdout)
        self.assertIn("expired at the provider", second.stdout)
        self.assertEqual(self.registry_files(), [])


@posix_only
class IntentGraceTest(TempDirTestCase):
    """An intent recover() cannot find is kept while its create could still be in flight."""

    def test_young_intent_kept_then_dropped(self) -> None:
        child = self.start_child("--count", "1", TAOS_PERSONA_FAULT="acquire.after_intent")
        self.assertEqual(child.wait(60), -signal.SIGKILL)
        first = self.run_sweep_cli(TAOS_PERSONA_INTENT_GRACE="3")
        self.assertEqual(first.returncode, 1, first.stdout)
        self.assertIn("may still be in flight", first.stdout)
        time.sleep(3.1)
        second = self.run_sweep_cli(TAOS_PERSONA_INTENT_GRACE="3")
        self.assertEqual(second.returncode, 0, second.stdout)
        self.assertIn("nothing created", second.stdout)
        self.assertEqual(self.registry_files(), [])

    def test_intent_found_by_recover_is_released_at_once(self) -> None:
        child = self.start_child("--count", "1", TAOS_PERSONA_FAULT="acquire.after_create")
        self.assertEqual(child.wait(60), -signal.SIGKILL)
        sweep = self.run_sweep_cli(TAOS_PERSONA_INTENT_GRACE="600")
        self.assertEqual(sweep.returncode, 0, sweep.stdout)
        self.assertEqual(self.survivors(), [])


@posix_only
class SignalsReleaseInProcessTest(TempDirTestCase):
    """SIGINT, SIGTERM and SIGHUP mid-test: released before the process ends, conventional status."""

    def signal_mid_test(self, signum: int) -> int:
        child = self.start_child("--count", "3", "--hold", "60")
        wait_for_line(child, "HOLDING")
        self.assertEqual(len(self.survivors()), 3)
        status = kill_and_wait(child, signum)
        self.assertEqual(self.survivors(), [], "released in-process, no sweep needed")
        self.assertEqual(self.registry_files(), [])
        return status

    def test_sigint(self) -> None:
        self.assertIn(self.signal_mid_test(signal.SIGINT), signal_status(signal.SIGINT))

    def test_sigterm(self) -> None:
        self.assertIn(self.signal_mid_test(signal.SIGTERM), signal_status(signal.SIGTERM))

    def test_sighup(self) -> None:
        self.assertIn(self.signal_mid_test(signal.SIGHUP), signal_status(signal.SIGHUP))

    def test_second_signal_stops_release_and_loses_nothing(self) -> None:
        child = self.start_child("--count", "20", "--hold", "60", TAOS_TEST_RELEASE_DELAY="0.4")
        wait_for_line(child, "HOLDING")
        child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while len(self.survivors()) == 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # 8 releases at a time, 0.4 s each: wait for the first batch
        status = kill_and_wait(child, signal.SIGTERM)
        self.assertIn(status, signal_status(signal.SIGTERM))
        left = len(self.survivors())
        self.assertGreater(left, 0, "the second signal must stop the release")
        sweep = self.run_sweep_cli()
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])

    def test_previous_handler_is_chained(self) -> None:
        script = (
            "import asyncio, os, signal, sys, tests._backends\n"
            "from taos_persona import PersonaFixture\n"
            "signal.signal(signal.SIGTERM, lambda s, f: (print('USER HANDLER', flush=True), sys.exit(7)))\n"
            "async def main():\n"
            "    async with PersonaFixture('p', registry_dir=sys.argv[1]) as p:\n"
            "        await p.acquire('file', directory=sys.argv[2])\n"
            "        print('HOLDING', flush=True)\n"
            "        await asyncio.sleep(60)\n"
            "asyncio.run(main())\n")
        child = subprocess.Popen([sys.executable, "-c", script, self.registry_dir, self.files_dir],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=child_env(), cwd=REPO)
        self.addCleanup(reap, child)
        wait_for_line(child, "HOLDING")
        status = kill_and_wait(child, signal.SIGTERM)
        self.assertEqual(status, 7, child.stderr.read())
        self.assertIn("USER HANDLER", child.stdout.read())
        self.assertEqual(self.survivors(), [])


@posix_only
class SweepBesideLiveRunTest(TempDirTestCase):
    """A sweep in another process never touches a live run; two sweeps at once trip over nothing."""

    def test_live_run_untouched(self) -> None:
        child = self.start_child("--count", "2", "--hold", "60")
        run_id = wait_for_line(child, "ENTERED").split()[1]
        wait_for_line(child, "HOLDING")
        time.sleep(0.5)  # the last held record lands HELD_WRITE_DELAY after its acquisition
        snapshot = read_bytes(os.path.join(self.registry_dir, f"{run_id}.json"))
        sweep = self.run_sweep_cli("--older-than", "0", "--json")
        self.assertEqual(sweep.returncode, 0, sweep.stderr)
        self.assertEqual(json.loads(sweep.stdout)["live_runs"], [run_id])
        self.assertEqual(len(self.survivors()), 2)
        self.assertEqual(read_bytes(os.path.join(self.registry_dir, f"{run_id}.json")), snapshot)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        self.assertEqual(self.run_sweep_cli().returncode, 0)
        self.assertEqual(self.survivors(), [])

    def test_two_concurrent_sweeps(self) -> None:
        for _ in range(4):
            child = self.start_child("--count", "5", "--no-sweep", TAOS_PERSONA_FAULT="acquire.after_record:5")
            self.assertEqual(child.wait(60), -signal.SIGKILL)
        self.assertEqual(len(self.survivors()), 20)
        env = child_env(TAOS_TEST_RELEASE_DELAY="0.01")
        command = [sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir, "--json"]
        sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=self.tmp) for _ in range(2)]
        results = [(proc.wait(60), proc.stdout.read(), proc.stderr.read()) for proc in sweeps]
        for proc in sweeps:
            proc.stdout.close()
            proc.stderr.close()
        for status, out, err in results:
            self.assertEqual(status, 0, out + err)
            self.assertNotIn("Traceback", err)
        released = sum(len(json.loads(out)["resources"]) for _, out, _ in results)
        self.assertEqual(released, 20, "each orphan released by exactly one sweeper")
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])


if __name__ == "__main__":
    unittest.main()

"""The second witness: a deleted lock file, a forked child, a host with a skewed clock.

Every test drives real processes and counts survivors at the provider (files
at the fake file provider, or the sandbox's alive counts), never in our own
bookkeeping.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import unittest
import warnings
from unittest import mock

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import liveness
from taos_persona.records import RunRecord
from tests._sandbox import FAST_RETRIES, SandboxEnvironment
from tests._support import (TESTS, TempDirTestCase, child_env, kill_and_wait, needs_aiohttp, posix_only, read_text,
                            reap, wait_for_line)

linux_only = unittest.skipUnless(sys.platform.startswith("linux"), "the witness reads /proc")

_FORKING_OWNER = """
import asyncio, os, sys, time
sys.path.insert(0, sys.argv[3])
import tests._backends
from taos_persona import PersonaFixture

async def main():
    os.environ["TAOS_TEST_FILES"] = sys.argv[2]
    async with PersonaFixture("novice_sarah", registry_dir=sys.argv[1], sweep=False) as persona:
        await persona.acquire("file")
        await persona.acquire("file")
        child = os.fork()
        if child == 0:  # a long-lived child, as a test's helper server would be
            time.sleep(300)
            os._exit(0)
        print("FORKED", child, flush=True)
        await asyncio.sleep(300)

asyncio.run(main())
"""


def wait_until(condition: "object", what: str, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until true, with a generous deadline."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


@linux_only
class WitnessTest(unittest.TestCase):
    def test_own_process_alive_other_pid_dead_other_machine_unknown(self) -> None:
        me = liveness.own_start()
        self.assertIs(liveness.judge(liveness.machine_id(), os.getpid(), me), liveness.Verdict.ALIVE)
        self.assertIs(liveness.judge(liveness.machine_id(), 999999, me), liveness.Verdict.DEAD)
        self.assertIs(liveness.judge("another-machine", os.getpid(), me), liveness.Verdict.UNKNOWN)
        self.assertIs(liveness.judge(liveness.machine_id(), os.getpid(), None), liveness.Verdict.UNKNOWN)

    def test_a_reused_pid_is_not_the_owner(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        start = liveness.process_start(proc.pid)
        assert start is not None
        boot, namespace, ticks = start.split("/")
        other = f"{boot}/{namespace}/{int(ticks) + 1}"
        self.assertIs(liveness.judge(liveness.machine_id(), proc.pid, start), liveness.Verdict.ALIVE)
        self.assertIs(liveness.judge(liveness.machine_id(), proc.pid, other), liveness.Verdict.DEAD)

    def test_a_zombie_is_dead(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        start = None
        while start is None and proc.poll() is None:  # its start, read while it runs (or never)
            start = liveness.process_start(proc.pid)
        proc.wait()
        if start is not None:
            self.assertIs(liveness.judge(liveness.machine_id(), proc.pid, start), liveness.Verdict.DEAD)

    def test_a_cloned_machine_id_with_another_boot_is_not_this_machine(self) -> None:
        me = liveness.own_start()
        assert me is not None
        self.assertTrue(liveness.this_machine(liveness.machine_id(), me))
        self.assertFalse(liveness.this_machine(liveness.machine_id(), "another-boot/" + me.split("/", 1)[1]))
        self.assertFalse(liveness.this_machine("another-machine", me))
        self.assertTrue(liveness.this_machine(liveness.machine_id(), None), "no start time recorded (macOS)")

    def test_proc_that_will_not_tell_is_no_proof_of_death(self) -> None:
        me = liveness.own_start()
        with mock.patch.object(liveness, "_start_ticks", side_effect=PermissionError(13, "hidepid")):
            self.assertIs(liveness.judge(liveness.machine_id(), os.getpid(), me), liveness.Verdict.UNKNOWN)

    def test_record_carries_the_witness(self) -> None:
        run = RunRecord.from_bytes(RunRecord("r1", "sarah", "h", os.getpid()).to_bytes())
        self.assertEqual((run.machine, run.proc_start), (liveness.machine_id(), liveness.own_start()))
        self.assertIs(run.witness(), liveness.Verdict.ALIVE)
        run.disowned = True
        self.assertIs(RunRecord.from_bytes(run.to_bytes()).witness(), liveness.Verdict.UNKNOWN)

    def test_machine_id_is_not_the_host_name_where_the_system_has_one(self) -> None:
        if os.path.exists("/etc/machine-id"):
            with open("/etc/machine-id") as handle:
                recorded = handle.read().strip()
            if recorded:
                self.assertEqual(liveness.machine_id(), recorded)


class HeartbeatTest(TempDirTestCase):
    def test_heartbeat_keeps_the_file_young_and_retakes_a_deleted_lock(self) -> None:
        from taos_persona.registry import Registry

        registry = Registry(self.registry_dir)
        registry.ensure()
        self.addCleanup(registry.close)
        run = RunRecord("beat1", "novice_sarah", "host", os.getpid())
        lock = registry.lock(run.run_id)
        self.assertTrue(lock.try_acquire())
        self.addCleanup(lock.release, unlink=True)
        registry.write(run)
        path = registry.json_path(run.run_id)
        os.utime(path, (time.time() - 3600, time.time() - 3600))
        os.unlink(registry.lock_path(run.run_id))
        registry.keep_alive(run.run_id, lock)
        self.addCleanup(registry.stop_heartbeat, run.run_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            liveness.HEARTBEAT.beat_now()
        self.assertLess(time.time() - os.stat(path).st_mtime, 600, "touched by the heartbeat")
        self.assertTrue(os.path.exists(registry.lock_path(run.run_id)), "a new lock file")
        self.assertIn("was deleted or replaced", str(caught[0].message))
        other = registry.lock(run.run_id)
        self.assertFalse(other.try_acquire(), "and the owner holds it")


@posix_only
class DeletedRegistryTest(TempDirTestCase):
    def test_git_clean_under_a_live_run_the_owner_writes_it_all_again(self) -> None:
        import asyncio
        import shutil

        from taos_persona import PersonaFixture, ResourceLeftWarning, sweep_async

        os.environ["TAOS_TEST_FILES"] = self.files_dir
        self.addCleanup(os.environ.pop, "TAOS_TEST_FILES")

        async def body() -> None:
            async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as persona:
                await persona.acquire("file")
                shutil.rmtree(self.registry_dir)  # git clean -fdx, in another terminal
                with self.assertWarns(ResourceLeftWarning):
                    await persona.acquire("file")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    liveness.HEARTBEAT.beat_now()  # the owner takes a new lock file
                record = json.loads(read_text(persona.registry.json_path(persona.run_id)))
                self.assertEqual(len(record["resources"]), 2, "the whole state is on disk again")
                report = await sweep_async(self.registry_dir)
                self.assertEqual(report.outcomes, [])
                self.assertEqual(len(self.survivors()), 2, "nothing of the live run released")

        asyncio.run(body())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])


@posix_only
@linux_only
class DeletedLockTest(TempDirTestCase):
    """``rm *.lock`` (or ``git clean -fdx``) under a live run: the sweep must not touch it."""

    def test_lock_deleted_under_a_live_run_nothing_released_and_the_owner_takes_a_new_one(self) -> None:
        child = self.start_child("--count", "3", "--hold", "120", "--no-sweep", TAOS_PERSONA_HEARTBEAT="0.1")
        run_id = wait_for_line(child, "ENTERED").split()[1]
        wait_for_line(child, "HOLDING")
        lock = os.path.join(self.registry_dir, f"{run_id}.lock")
        os.unlink(lock)
        sweep = self.run_sweep_cli("--json")
        report = json.loads(sweep.stdout)
        self.assertEqual(len(self.survivors()), 3, "nothing of the live run released at the provider")
        self.assertEqual(report["live_runs"], [run_id], sweep.stdout)
        self.assertEqual(report["resources"], [])
        wait_until(lambda: os.path.exists(lock), "the owner's heartbeat made a new lock file")
        self.assertEqual(self.run_sweep_cli().returncode, 0)
        self.assertEqual(len(self.survivors()), 3, "the new lock is held")
        status = kill_and_wait(child, signal.SIGTERM)
        self.assertIn("was deleted or replaced", child.stderr.read() if child.stderr else "")
        self.assertNotEqual(status, 0)
        self.assertEqual(self.survivors(), [], "released in-process at SIGTERM")

    def test_lock_deleted_and_owner_dead_is_swept(self) -> None:
        child = self.start_child("--count", "2", "--hold", "120", "--no-sweep")
        run_id = wait_for_line(child, "ENTERED").split()[1]
        wait_for_line(child, "HOLDING")
        kill_and_wait(child)
        os.unlink(os.path.join(self.registry_dir, f"{run_id}.lock"))
        sweep = self.run_sweep_cli()
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(self.survivors(), [], "the witness said dead: swept")
        self.assertEqual(self.registry_files(), [])


@posix_only
@linux_only
class ForkedChildTest(TempDirTestCase):
    def test_sigkilled_owner_swept_while_its_forked_child_runs(self) -> None:
        repo = os.path.dirname(TESTS)
        owner = subprocess.Popen([sys.executable, "-c", _FORKING_OWNER, self.registry_dir, self.files_dir, repo],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                 cwd=self.tmp)
        self.addCleanup(reap, owner)
        forked = int(wait_for_line(owner, "FORKED").split()[1])
        self.addCleanup(_kill_quietly, forked)
        self.assertEqual(len(self.survivors()), 2)
        kill_and_wait(owner)
        sweep = self.run_sweep_cli()
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(self.survivors(), [], "the forked child did not keep the dead run 'alive'")
        os.kill(forked, 0)  # the child still runs: it was not what kept the lock


@needs_aiohttp
@posix_only
@linux_only
class DeletedLockSandboxTest(SandboxEnvironment, TempDirTestCase):
    def test_live_run_at_the_sandbox_survives_a_sweep_after_rm_lock(self) -> None:
        before = self.sandbox.alive().get("mailtm", 0)
        env = dict(self.sandbox.env(), **FAST_RETRIES)
        child = self.start_child("--backend", "mailtm", "--count", "2", "--hold", "120", "--no-sweep", **env)
        run_id = wait_for_line(child, "ENTERED").split()[1]
        wait_for_line(child, "HOLDING")
        os.unlink(os.path.join(self.registry_dir, f"{run_id}.lock"))
        sweep = self.run_sweep_cli("--json", **env)
        report = json.loads(sweep.stdout)
        self.assertEqual(self.sandbox.alive().get("mailtm", 0), before + 2, "nothing released at the provider")
        live = [run for run in report["runs"] if run["run_id"] == run_id]
        self.assertEqual([(r["status"], r["persona"], r["pid"]) for r in live], [("live", "novice_sarah", child.pid)])
        self.assertIsNotNone(live[0]["age_seconds"])
        kill_and_wait(child)
        sweep = self.run_sweep_cli("--json", **env)
        self.assertEqual(sweep.returncode, 0, sweep.stdout + sweep.stderr)
        self.assertEqual(self.sandbox.alive().get("mailtm", 0), before)
        identities = [r["identity"] for r in json.loads(sweep.stdout)["resources"]]
        self.assertEqual(len(identities), 2)
        self.assertTrue(all(i and i.startswith("address=") for i in identities), identities)
        self.assertNotIn("password", sweep.stdout)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    unittest.main()

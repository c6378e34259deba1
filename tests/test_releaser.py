"""release_run and the sweep at scale: bounds shared across runs, order kept, progress writes coalesced."""
from __future__ import annotations

import asyncio
import socket
import unittest
from typing import Any, Dict, List, Optional, Set, Tuple
from unittest import mock

from taos_persona import releaser, sweep_async, sweep_registry as sweep
from taos_persona.backends import Backend, register
from taos_persona.backends.base import class_path
from taos_persona.errors import RetryableProviderError
from taos_persona.naming import new_run_id
from taos_persona.records import HELD, RunRecord
from taos_persona.registry import Registry
from taos_persona.fixture import PersonaFixture
from tests._sandbox import SandboxTestCase
from tests._support import TempDirTestCase, needs_aiohttp


@register("tracked")
class TrackedBackend(Backend):
    """Releases take ``delay`` seconds each and are logged; names in ``failing`` fail."""

    delay = 0.0
    failing: Set[str] = set()
    events: List[str] = []
    in_flight = 0
    peak = 0

    @classmethod
    def reset(cls, delay: float = 0.0, failing: Tuple[str, ...] = ()) -> None:
        cls.delay, cls.failing, cls.events, cls.in_flight, cls.peak = delay, set(failing), [], 0, 0

    async def release(self, token: Dict[str, Any]) -> None:
        cls = type(self)
        cls.in_flight += 1
        cls.peak = max(cls.peak, cls.in_flight)
        cls.events.append(f"start {token['name']}")
        try:
            await asyncio.sleep(cls.delay)
            if token["name"] in cls.failing:
                raise RetryableProviderError(f"injected failure of {token['name']}")
        finally:
            cls.in_flight -= 1
        cls.events.append(f"end {token['name']}")

    def ended(self) -> Set[str]:
        return {event.split(" ", 1)[1] for event in self.events if event.startswith("end ")}


def dead_run(resources: int, parents: Optional[Dict[int, int]] = None) -> RunRecord:
    """A run as a SIGKILLed owner leaves it: held ``tracked`` resources named ``<run>-<seq>``."""
    run = RunRecord(new_run_id(), "novice_sarah", socket.gethostname(), 999999)
    for _ in range(resources):
        seq = run.next_seq
        record = run.add_intent("tracked", class_path(TrackedBackend), {},
                                parent=(parents or {}).get(seq))
        record.token, record.state = {"name": f"{run.run_id}-{seq}"}, HELD
    return run


class SweepAcrossRunsTest(TempDirTestCase):
    """Dead runs are swept concurrently, under one bound per backend for the whole sweep."""

    def write_runs(self, runs: List[RunRecord]) -> None:
        registry = Registry(self.registry_dir)
        registry.ensure()
        for run in runs:
            registry.write(run)

    def test_bound_per_backend_holds_across_runs(self) -> None:
        TrackedBackend.reset(delay=0.05)
        self.write_runs([dead_run(2) for _ in range(6)])
        report = sweep(self.registry_dir, concurrency=3)
        self.assertEqual((len(report.released), report.exit_status), (12, 0))
        self.assertEqual(TrackedBackend.peak, 3, "runs of 2 overlap to reach the bound, never beyond it")
        self.assertEqual(self.registry_files(), [])

    def test_children_before_parents_in_concurrent_runs(self) -> None:
        TrackedBackend.reset(delay=0.01)
        runs = [dead_run(4, parents={2: 1, 3: 2}) for _ in range(5)]  # 1 <- 2 <- 3, and 4 alone
        self.write_runs(runs)
        report = sweep(self.registry_dir, concurrency=8)
        self.assertEqual(len(report.released), 20)
        events = TrackedBackend.events
        for run in runs:
            for child, parent in ((2, 1), (3, 2)):
                self.assertLess(events.index(f"end {run.run_id}-{child}"),
                                events.index(f"start {run.run_id}-{parent}"))
        self.assertEqual(report.swept_runs, sorted(run.run_id for run in runs))

    def test_cancelled_sweep_drops_its_locks_and_loses_nothing(self) -> None:
        TrackedBackend.reset(delay=0.3)
        self.write_runs([dead_run(3) for _ in range(4)])

        async def cancel_midway() -> None:
            task = asyncio.ensure_future(sweep_async(self.registry_dir, concurrency=2))
            await asyncio.sleep(0.1)  # the first releases are in flight, none has ended
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_midway())
        TrackedBackend.reset()
        report = sweep(self.registry_dir, concurrency=8)
        self.assertEqual((report.live_runs, len(report.released)), ([], 12))
        self.assertEqual(self.registry_files(), [])

    def test_newest_first_within_a_run(self) -> None:
        TrackedBackend.reset()
        run = dead_run(4)
        self.write_runs([run])
        sweep(self.registry_dir, concurrency=1)
        started = [event.rsplit("-", 1)[1] for event in TrackedBackend.events if event.startswith("start")]
        self.assertEqual(started, ["4", "3", "2", "1"])


class ProgressWritesTest(unittest.TestCase):
    """Progress is written at most once per interval; a write never omits what is still held."""

    def release(self, run: RunRecord, concurrency: int = 2) -> List[Set[int]]:
        """Release ``run``; the seqs each progress write would have put on disk, after checking
        that every resource whose release had not ended yet was among them."""
        written: List[Set[int]] = []
        backend = TrackedBackend()

        def save() -> None:
            listed = {record.seq for record in RunRecord.from_bytes(run.to_bytes()).live()}
            not_ended = {seq for seq in range(1, run.next_seq)
                         if f"{run.run_id}-{seq}" not in backend.ended()}
            self.assertLessEqual(not_ended, listed, "a resource left the file before its release ended")
            written.append(listed)

        asyncio.run(releaser.release_run(run, lambda record: backend, save, concurrency=concurrency))
        return written

    def test_quick_release_writes_nothing_the_caller_will_delete(self) -> None:
        TrackedBackend.reset()
        run = dead_run(10)
        self.assertEqual(self.release(run), [])
        self.assertEqual(run.resources, {})

    def test_a_failure_is_written_once_at_the_end(self) -> None:
        run = dead_run(5)
        TrackedBackend.reset(failing=(f"{run.run_id}-3",))
        written = self.release(run)
        self.assertEqual(written, [{3}])
        self.assertEqual(run.resources[3].attempts, 1)
        self.assertIn("injected failure", run.resources[3].last_error or "")

    def test_slow_release_writes_progress_coalesced(self) -> None:
        TrackedBackend.reset(delay=0.03)
        run = dead_run(16)
        with mock.patch.object(releaser, "PROGRESS_INTERVAL", 0.05):
            written = self.release(run, concurrency=2)  # 8 rounds of 30 ms: about 240 ms
        self.assertGreaterEqual(len(written), 2, "progress is written while the release goes on")
        self.assertLessEqual(len(written), 7, "far fewer writes than the 16 outcomes")
        sizes = [len(listed) for listed in written]
        self.assertEqual(sizes, sorted(sizes, reverse=True), "each write lists fewer resources")


if __name__ == "__main__":
    unittest.main()


@needs_aiohttp
class CopiedRecordTest(SandboxTestCase):
    """Kind 7: a record releases only what its own run created, whatever file it sits in."""

    async def test_a_live_runs_record_copied_under_another_run_id_releases_nothing_of_it(self) -> None:
        import os
        import shutil
        import tempfile

        registry_dir = os.path.join(tempfile.mkdtemp(prefix="taos-copied-"), "registry")
        self.addCleanup(shutil.rmtree, os.path.dirname(registry_dir), True)
        before = self.sandbox.alive()
        async with PersonaFixture("novice_sarah", registry_dir=registry_dir, sweep=False) as persona:
            for backend in ("rest_user", "rest_token", "mailsac", "mailtm", "twilio"):
                await persona.acquire(backend)
            holding = self.sandbox.alive()
            registry = Registry(registry_dir)
            copy = registry.read(persona.run_id)
            copy.run_id, copy.pid = new_run_id() + "0", 999999
            registry.write(copy)
            report = await sweep_async(registry_dir)
            self.assertEqual(self.sandbox.alive(), holding, "nothing of the live run was released")
            self.assertEqual(report.exit_status, 1)
            self.assertEqual([o.result.value for o in report.outcomes], ["kept"] * 5)
            self.assertTrue(all(f"named for run {persona.run_id.lower()}" in (o.error or "")
                                for o in report.outcomes), [o.error for o in report.outcomes])
        self.assertEqual(self.sandbox.alive(), before, "the live run released its own on exit")


@needs_aiohttp
class CopiedUnnamedRecordTest(SandboxTestCase):
    """A copied record of a backend whose names tell nothing: the live run's copy is kept."""

    async def test_a_copy_of_a_live_runs_activation_is_kept(self) -> None:
        import os
        import shutil
        import tempfile

        registry_dir = os.path.join(tempfile.mkdtemp(prefix="taos-copied-"), "registry")
        self.addCleanup(shutil.rmtree, os.path.dirname(registry_dir), True)
        async with PersonaFixture("novice_sarah", registry_dir=registry_dir, sweep=False) as persona:
            await persona.acquire("sms_activate")
            self.assertEqual(self.sandbox.alive().get("sms_activate"), 1)
            registry = Registry(registry_dir)
            copy = registry.read(persona.run_id)
            copy.run_id, copy.pid = new_run_id() + "0", 999999
            registry.write(copy)
            report = await sweep_async(registry_dir)
            self.assertEqual(self.sandbox.alive().get("sms_activate"), 1, "the live run's activation is alive")
            self.assertEqual([o.result.value for o in report.outcomes], ["kept"])
            self.assertIn(f"also held by live run {persona.run_id}", report.outcomes[0].error or "")
        self.assertEqual(self.sandbox.alive().get("sms_activate", 0), 0, "the live run released its own on exit")

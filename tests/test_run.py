"""RunOwner and FileStore: one owner of a run's life on disk; our failures never replace the test's."""
from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
import time
import unittest
import warnings
from typing import Any, Dict, List, Optional, Set, Type
from unittest import mock

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import PersonaFixture, ResourceLeftWarning, sweep_registry as sweep
from taos_persona.backends import BACKENDS, BUILTIN_NAMES, backend_class, register
from taos_persona.backends.base import Backend
from taos_persona.locking import RunLock
from taos_persona.registry import Registry
from taos_persona.run import RunOwner
from taos_persona.errors import RunInUseError
from taos_persona.records import RunRecord
from taos_persona.store import FileStore, RunClaim, RunStore
from tests._backends import FileBackend
from tests._support import TempDirTestCase, posix_only, run_python


@register("file_exploding")
class ExplodingBackend(FileBackend):
    """A buggy backend: its release raises ``raises`` (a BaseException that is no Exception)."""

    raises: Optional[Type[BaseException]] = None

    async def release(self, token: Dict[str, Any]) -> None:
        if type(self).raises is not None:
            raise type(self).raises("a buggy backend's release")  # type: ignore[misc]
        await super().release(token)


class OwnerTest(TempDirTestCase):
    def store(self) -> FileStore:
        registry = Registry(self.registry_dir)
        registry.ensure()
        return FileStore(registry)

    def test_a_run_that_holds_nothing_writes_nothing_and_leaves_nothing(self) -> None:
        async def body() -> List[str]:
            owner = await RunOwner.open(self.store(), "r1", "novice_sarah")
            listed = self.registry_files()
            self.assertTrue(await owner.finish())
            return listed

        self.assertEqual(asyncio.run(body()), ["r1.lock"], "the lock alone claims the run id")
        self.assertEqual(self.registry_files(), [])

    def test_adopt_takes_a_dead_run_and_not_a_live_one(self) -> None:
        async def body() -> None:
            store = self.store()
            owner = await RunOwner.open(store, "r2", "novice_sarah")
            owner.run.add_intent("file", "tests._backends:FileBackend", {"path": "/nonexistent/x"})
            await owner.save()
            self.assertIsNone(await RunOwner.adopt(store, "r2"), "a live run is never adopted")
            store.stop_keep_alive(owner.claim)
            store.unclaim(owner.claim, forget=False)  # its lock is gone, but its process lives:
            self.assertIsNone(await RunOwner.adopt(store, "r2"), "the witness keeps it (liveness)")
            owner.run.pid = _dead_pid()  # its owner dies, record left behind
            await owner.store.save(owner.claim, owner.run)
            adopted = await RunOwner.adopt(store, "r2")
            assert adopted is not None
            self.assertEqual(adopted.resource_count(), 1)
            await adopted.release(lambda record: FileBackend())
            self.assertTrue(await adopted.finish())

        asyncio.run(body())
        self.assertEqual(self.registry_files(), [])


class ClaimDeadTest(TempDirTestCase):
    """FileStore.claim_dead decides by the liveness rules: a free lock is not enough."""

    def left_behind(self, store: FileStore, run: RunRecord) -> None:
        """``run``'s record on disk with its lock file free, as a dead (or lockless) owner leaves it."""
        async def body() -> None:
            claim = await store.claim_new(run.run_id)
            await store.save(claim, run)
            store.unclaim(claim, forget=False)

        asyncio.run(body())

    def test_a_lock_file_it_had_to_make_proves_nothing(self) -> None:
        store = FileStore(Registry(self.registry_dir))
        store.registry.ensure()
        self.addCleanup(store.registry.close)
        run = RunRecord("rmlock1", "novice_sarah", "host", os.getpid())  # this live process's witness
        run.disowned = True  # not even the witness speaks: only the lock would
        self.left_behind(store, run)
        os.unlink(store.registry.lock_path("rmlock1"))  # rm *.lock
        self.assertIsNone(asyncio.run(store.claim_dead("rmlock1")), "a lock file it made is no proof")
        self.assertEqual(self.registry_files(), ["rmlock1.json"], "and it takes its lock file away again")
        store.older_than = 0.0  # by age alone, the run is old enough now
        claim = asyncio.run(store.claim_dead("rmlock1"))
        assert claim is not None
        store.unclaim(claim, forget=True)

    def test_a_foreign_run_is_dead_only_when_its_file_is_old_by_the_file_systems_clock(self) -> None:
        store = FileStore(Registry(self.registry_dir))
        store.registry.ensure()
        self.addCleanup(store.registry.close)
        run = RunRecord("far1", "novice_sarah", "elsewhere", 1, machine="another-machine", proc_start=None)
        run.started = run.updated = 0.0  # its host's clock says 1970: never trusted
        self.left_behind(store, run)
        self.assertIsNone(asyncio.run(store.claim_dead("far1")), "written a moment ago: too young")
        self.assertEqual(store.judge(run, fresh=False).value, "too young to judge")
        old = time.time() - 3600
        os.utime(store.registry.json_path("far1"), (old, old))
        claim = asyncio.run(store.claim_dead("far1"))
        self.assertIsNotNone(claim)
        assert claim is not None
        store.unclaim(claim, forget=True)


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped: a run record naming it names the dead."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class MemoryStore(RunStore):
    """A second store, as a fleet database would be: records in a dict, claims in a set."""

    location = "memory://test"

    def __init__(self) -> None:
        self.records: Dict[str, bytes] = {}
        self.claimed: Set[str] = set()
        self.saves: List[List[str]] = []

    async def list_runs(self) -> List[str]:
        return sorted(self.records)

    async def claim_new(self, run_id: str) -> RunClaim:
        if run_id in self.claimed or run_id in self.records:
            raise RunInUseError(f"run id {run_id} is claimed")
        self.claimed.add(run_id)
        return RunClaim(run_id)

    async def claim_dead(self, run_id: str) -> Optional[RunClaim]:
        return None if run_id in self.claimed else RunClaim(run_id)

    async def load(self, claim: RunClaim) -> Optional[RunRecord]:
        raw = self.records.get(claim.run_id)
        return None if raw is None else RunRecord.from_bytes(raw)

    async def save(self, claim: RunClaim, run: RunRecord) -> None:
        self.records[claim.run_id] = run.to_bytes()
        self.saves.append([record.state for record in run.live()])

    async def delete(self, claim: RunClaim) -> None:
        self.records.pop(claim.run_id, None)

    def unclaim(self, claim: RunClaim, *, forget: bool) -> None:
        self.claimed.discard(claim.run_id)


class StoreInterfaceTest(TempDirTestCase):
    def test_another_store_plugs_in_without_touching_the_fixture(self) -> None:
        store = MemoryStore()

        async def body() -> None:
            async with PersonaFixture("novice_sarah", store=store) as persona:
                await persona.acquire("file_norecover", directory=self.files_dir)
                self.assertEqual(len(self.survivors()), 1)
                self.assertEqual(len(store.records), 1)

        asyncio.run(body())
        self.assertEqual(store.saves[:2], [["intent"], ["held"]], "intent durable before the create")
        self.assertEqual((store.records, store.claimed, self.survivors()), ({}, set(), []))


class OffTheLoopTest(TempDirTestCase):
    def test_durable_writes_run_off_the_event_loop(self) -> None:
        """An fsync can take tens of milliseconds: never on the loop that runs the test."""
        syncing: List[int] = []
        real_fsync = os.fsync

        def spy(fd: int) -> None:
            syncing.append(threading.get_ident())
            real_fsync(fd)

        async def body() -> int:
            with mock.patch.object(os, "fsync", spy):
                async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as persona:
                    for _ in range(3):
                        await persona.acquire("file_norecover", directory=self.files_dir)
            return threading.get_ident()

        loop_thread = asyncio.run(body())
        self.assertGreaterEqual(len(syncing), 3, "every intent and held record is made durable")
        self.assertNotIn(loop_thread, syncing)
        self.assertEqual(self.survivors(), [])


class OurFailuresNeverWinTest(TempDirTestCase):
    """Issue 8, kind 5: a failure of ours is a warning or a PersonaError; the test's own wins."""

    def fixture(self) -> PersonaFixture:
        return PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False)

    def read_only_registry(self) -> Any:
        """Every change under the registry directory fails with EROFS, as on a remounted disk."""
        registry, real_replace, real_unlink = self.registry_dir, os.replace, os.unlink

        def refuse(real: Any) -> Any:
            def call(path: Any, *args: Any, **kwargs: Any) -> Any:
                if os.fspath(path).startswith(registry):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
                return real(path, *args, **kwargs)
            return call

        return mock.patch.multiple(os, replace=refuse(real_replace), unlink=refuse(real_unlink))

    @posix_only
    def test_read_only_registry_mid_run_the_tests_assertion_wins_and_the_lock_is_dropped(self) -> None:
        read_only = self.read_only_registry()
        self.addCleanup(read_only.stop)

        async def body() -> None:
            async with self.fixture() as persona:
                await persona.acquire("file", directory=self.files_dir)
                await persona.acquire("file_norecover", directory=self.files_dir)
                read_only.start()  # stays read-only through __aexit__
                raise AssertionError("the test's own failure")

        with warnings.catch_warnings(record=True), self.assertRaises(AssertionError):
            warnings.simplefilter("always")
            asyncio.run(body())
        read_only.stop()
        self.assertEqual(self.survivors(), [], "released at the provider all the same")
        lock_file = [name for name in self.registry_files() if name.endswith(".lock")]
        for name in lock_file:  # a leftover lock file must not be held: the descriptor is closed
            self.assertTrue(RunLock(os.path.join(self.registry_dir, name)).try_acquire())
        self.assertEqual(sweep(self.registry_dir).exit_status, 0)

    def test_a_backend_release_raising_a_base_exception_is_contained_and_kept(self) -> None:
        for raised in (SystemExit, KeyboardInterrupt, GeneratorExit, asyncio.CancelledError):
            with self.subTest(raised=raised.__name__):
                ExplodingBackend.raises = raised
                self.addCleanup(setattr, ExplodingBackend, "raises", None)

                async def body() -> None:
                    async with self.fixture() as persona:
                        await persona.acquire("file_exploding", directory=self.files_dir)
                        raise AssertionError("the test's own failure")

                with warnings.catch_warnings(record=True) as caught, self.assertRaises(AssertionError):
                    warnings.simplefilter("always")
                    asyncio.run(body())
                left = [str(w.message) for w in caught if issubclass(w.category, ResourceLeftWarning)]
                self.assertTrue(any(raised.__name__ in message for message in left), left)
                self.assertEqual(len(self.survivors()), 1, "kept on record, not dropped")
                report = sweep(self.registry_dir)  # a later sweep reports it, never raises
                self.assertEqual((report.exit_status, len(report.kept)), (1, 1))
                ExplodingBackend.raises = None
                self.assertEqual(sweep(self.registry_dir).exit_status, 0)
                self.assertEqual(self.survivors(), [])

    def test_a_backend_cancelling_itself_never_crashes_a_later_sweep(self) -> None:
        """Kind 4: the startup sweep and the CLI sweep report it (kept, exit 1), never die of it."""
        trigger = os.path.join(self.tmp, "cancel-releases")
        open(trigger, "w").close()
        with mock.patch.dict(os.environ, {"TAOS_TEST_CANCEL_RELEASE": trigger}):
            async def hold() -> None:
                async with self.fixture() as persona:
                    await persona.acquire("file_cancelling", directory=self.files_dir)
                    raise AssertionError("the test's own failure")

            async def next_test() -> str:
                async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir) as persona:
                    return persona.run_id  # its startup sweep met the buggy release and went on

            with warnings.catch_warnings(record=True), self.assertRaises(AssertionError):
                warnings.simplefilter("always")
                asyncio.run(hold())
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                self.assertTrue(asyncio.run(next_test()))
            cli = self.run_sweep_cli(TAOS_TEST_CANCEL_RELEASE=trigger)
        self.assertEqual(cli.returncode, 1, cli.stdout + cli.stderr)
        self.assertNotIn("Traceback", cli.stderr)
        self.assertIn("CancelledError", cli.stdout, "the table names what went wrong")
        self.assertEqual(len(self.survivors()), 1, "kept on record, not dropped")
        os.unlink(trigger)
        self.assertEqual(sweep(self.registry_dir).exit_status, 0)
        self.assertEqual(self.survivors(), [])

    def test_a_run_task_dying_is_a_reported_problem_not_a_traceback(self) -> None:
        """Kind 4: whatever one run's task dies of (an exit aside), the sweep reports it, exit 1."""
        import socket

        registry = Registry(self.registry_dir)
        registry.ensure()
        run = RunRecord("20260101T000000-0123456789ab", "novice_sarah", socket.gethostname(), 999999)
        path = os.path.join(self.files_dir, "held")
        open(path, "w").close()
        record = run.add_intent("file", "tests._backends:FileBackend", {"path": path})
        record.token, record.state = {"path": path}, "held"
        registry.write(run)
        with mock.patch("taos_persona.run.release_run", side_effect=asyncio.CancelledError("a bug")):
            report = sweep(self.registry_dir)
        self.assertEqual(report.exit_status, 1)
        self.assertTrue(any("CancelledError" in problem["error"] for problem in report.problems), report.problems)
        self.assertEqual(sweep(self.registry_dir).exit_status, 0)
        self.assertEqual(self.survivors(), [])

    @posix_only
    def test_directory_fsync_einval_after_the_rename_is_no_error(self) -> None:
        script = (
            "import asyncio, errno, os, stat, sys, tests._backends\n"
            "real = os.fsync\n"
            "def fsync(fd):\n"
            "    if stat.S_ISDIR(os.fstat(fd).st_mode):\n"
            "        raise OSError(errno.EINVAL, 'Invalid argument')\n"
            "    return real(fd)\n"
            "os.fsync = fsync\n"
            "from taos_persona import PersonaFixture\n"
            "async def main():\n"
            "    async with PersonaFixture('p', registry_dir=sys.argv[1]) as persona:\n"
            "        await persona.acquire('file', directory=sys.argv[2])\n"
            "        await persona.acquire('file_norecover', directory=sys.argv[2])\n"
            "        print(len(os.listdir(sys.argv[2])))\n"
            "asyncio.run(main())\n")
        result = run_python(script, self.registry_dir, self.files_dir)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "2"), result.stderr)
        self.assertNotIn("OSError", result.stderr)
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [], "no json (nor lock) left behind")


class BackendLookupTest(unittest.TestCase):
    def test_a_builtin_name_imports_only_its_own_module(self) -> None:
        script = ("import sys\n"
                  "from taos_persona.backends import backend_class\n"
                  "backend_class('rest_user')\n"
                  "print(sorted(m for m in sys.modules if m.startswith('taos_persona.backends.')"
                  " and not m.rpartition('.')[2].startswith('_') and not m.endswith('base')))\n")
        result = run_python(script)
        self.assertEqual(result.stdout.strip(), "['taos_persona.backends.rest']", result.stderr)

    def test_request_window_is_timeout_times_attempts_plus_the_backoffs_between(self) -> None:
        knobs = {"TAOS_PERSONA_HTTP_TIMEOUT": "2", "TAOS_PERSONA_HTTP_RETRIES": "2", "TAOS_PERSONA_HTTP_BACKOFF": "0.5"}
        with mock.patch.dict(os.environ, knobs):
            self.assertEqual(backend_class("rest_user")().max_request_window(), 2 * 3 + 0.5 + 1.0)
        self.assertEqual(FileBackend().max_request_window(), 0.0, "no request, no window")

    def test_the_name_map_matches_what_each_module_registers(self) -> None:
        for name, module in BUILTIN_NAMES.items():
            self.assertEqual(backend_class(name).__module__, f"taos_persona.backends.{module}")
        builtin = {name for name, cls in BACKENDS.items() if cls.__module__.startswith("taos_persona.")}
        self.assertEqual(builtin, set(BUILTIN_NAMES))
        self.assertTrue(issubclass(backend_class("file"), Backend))


if __name__ == "__main__":
    unittest.main()

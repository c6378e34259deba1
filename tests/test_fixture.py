"""PersonaFixture in-process: every orderly exit releases everything, and says what it could not."""
from __future__ import annotations

import asyncio
import json
import os
import unittest
import warnings
from typing import Any, Coroutine, List, Tuple, TypeVar

import tests._backends  # noqa: F401  registers the file backends
from taos_persona import (ConfigurationError, PersonaError, PersonaFixture, RegistryError, ResourceLeftWarning,
                          UnknownBackendError, sweep_registry as sweep)
from tests._support import TempDirTestCase, read_text, run_python
from tests.test_sweep import OrphanFactory

T = TypeVar("T")


class FixtureTest(OrphanFactory):
    def fixture(self, **options: Any) -> PersonaFixture:
        return PersonaFixture("novice_sarah", registry_dir=self.registry_dir, **options)

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def test_released_newest_first_and_files_removed(self) -> None:
        log = os.path.join(self.tmp, "log")
        os.environ["TAOS_TEST_RELEASE_LOG"] = log
        self.addCleanup(os.environ.pop, "TAOS_TEST_RELEASE_LOG")

        async def body() -> List[str]:
            async with self.fixture(concurrency=1) as persona:
                names = [await persona.acquire("file", directory=self.files_dir) for _ in range(3)]
                self.assertEqual(len(self.survivors()), 3)
                self.assertEqual(len(self.registry_files()), 2)  # json + lock
            return names

        names = self.run_async(body())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])
        self.assertEqual(read_text(log).split(), list(reversed(names)))

    def test_children_released_before_parents(self) -> None:
        log = os.path.join(self.tmp, "log")
        os.environ["TAOS_TEST_RELEASE_LOG"] = log
        self.addCleanup(os.environ.pop, "TAOS_TEST_RELEASE_LOG")

        async def body() -> Tuple[str, str]:
            async with self.fixture() as persona:
                parent = await persona.acquire("file", directory=self.files_dir)
                child = await persona.acquire("file", directory=self.files_dir, parent=parent)
                with self.assertRaises(PersonaError):
                    await persona.acquire("file", directory=self.files_dir, parent="not ours")
            return parent, child

        parent, child = self.run_async(body())
        self.assertEqual(read_text(log).split(), [child, parent])

    def test_exception_propagates_unmasked_and_everything_released(self) -> None:
        async def body() -> None:
            async with self.fixture() as persona:
                await persona.acquire("file", directory=self.files_dir)
                raise KeyError("the test's own failure")

        with self.assertRaises(KeyError):
            self.run_async(body())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])

    def test_cancellation_releases_then_propagates(self) -> None:
        async def body() -> None:
            async with self.fixture() as persona:
                await persona.acquire("file", directory=self.files_dir)
                await asyncio.sleep(60)

        async def main() -> None:
            task = asyncio.ensure_future(body())
            while not self.survivors():
                await asyncio.sleep(0.01)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        self.run_async(main())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])

    def test_failed_release_warns_keeps_record_and_drops_lock(self) -> None:
        flag = os.path.join(self.tmp, "fail")
        open(flag, "w").close()
        os.environ["TAOS_TEST_FAIL_RELEASE"] = flag
        self.addCleanup(os.environ.pop, "TAOS_TEST_FAIL_RELEASE")

        async def body() -> None:
            async with self.fixture() as persona:
                await persona.acquire("file", directory=self.files_dir)
                raise ValueError("the test failed first")

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with self.assertRaises(ValueError):
                self.run_async(body())
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceLeftWarning)]
        self.assertEqual(len(messages), 1)
        self.assertIn("could not release file resource #1", messages[0])
        self.assertEqual(len(self.survivors()), 1)
        os.unlink(flag)
        self.assertEqual(sweep(self.registry_dir).exit_status, 0, "the lock was dropped: sweepable")
        self.assertEqual(self.survivors(), [])

    def test_startup_sweep_releases_dead_runs(self) -> None:
        self.make_orphan(3)
        self.assertEqual(len(self.survivors()), 3)

        async def body() -> None:
            import taos_persona.fixture as fixture_module
            fixture_module._swept_dirs.discard(os.path.abspath(self.registry_dir))
            async with self.fixture():
                self.assertEqual(self.survivors(), [])

        self.run_async(body())

    def test_bad_input_errors_name_the_fix(self) -> None:
        async def body() -> None:
            async with self.fixture(backends={"user": "file"}) as persona:
                with self.assertRaises(UnknownBackendError) as caught:
                    await persona.acquire("nope")
                self.assertIn("known backends:", str(caught.exception))
                self.assertIn("file", str(caught.exception))
                with self.assertRaises(ConfigurationError):
                    await persona.acquire("file", directory=self.files_dir, delay=object())
                self.assertEqual(persona.backend_for("user"), "file")
                await persona.user_account(directory=self.files_dir)
                with self.assertRaises(RegistryError):
                    async with PersonaFixture("other", registry_dir=self.registry_dir, run_id=persona.run_id):
                        pass

        self.run_async(body())
        self.assertEqual(self.survivors(), [])
        with self.assertRaises(ConfigurationError):
            self.fixture(backends={"fax": "x"})

    def test_held_record_shares_the_next_write_and_lands_soon_after(self) -> None:
        from taos_persona.fixture import HELD_WRITE_DELAY

        def states(persona: PersonaFixture) -> List[Tuple[str, str]]:
            data = json.loads(read_text(persona.registry.json_path(persona.run_id)))
            return [(r["backend"], r["state"]) for r in data["resources"]]

        async def body() -> None:
            async with self.fixture() as persona:
                await persona.acquire("file", directory=self.files_dir)
                self.assertEqual(states(persona), [("file", "intent")], "recover() covers the wait")
                await persona.acquire("file", directory=self.files_dir)
                self.assertEqual(states(persona), [("file", "held"), ("file", "intent")],
                                 "the second intent write carried the first held record")
                await asyncio.sleep(HELD_WRITE_DELAY * 3)
                self.assertEqual(states(persona), [("file", "held"), ("file", "held")])
                await persona.acquire("file_norecover", directory=self.files_dir)
                self.assertEqual(states(persona)[-1], ("file_norecover", "held"),
                                 "a backend that cannot recover is recorded before acquire returns")

        self.run_async(body())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])

    def test_a_fixture_that_acquires_nothing_writes_no_record(self) -> None:
        async def body() -> None:
            async with self.fixture(sweep=False) as persona:
                self.assertEqual(self.registry_files(), [f"{persona.run_id}.lock"], "the lock alone claims it")
                self.assertEqual(persona.resource_count(), 0)

        self.run_async(body())
        self.assertEqual(self.registry_files(), [])

    def test_release_from_outside_is_the_signal_paths_one_call(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        persona = loop.run_until_complete(self.fixture(sweep=False).__aenter__())
        for _ in range(2):
            loop.run_until_complete(persona.acquire("file", directory=self.files_dir))
        self.assertEqual(persona.resource_count(), 2)
        persona.release_from_outside()
        persona.release_from_outside()  # safe twice
        self.assertEqual((persona.resource_count(), self.survivors(), self.registry_files()), (0, [], []))
        loop.run_until_complete(persona.__aexit__(None, None, None))  # and the orderly exit after it

    def test_acquire_outside_context_refused(self) -> None:
        with self.assertRaises(PersonaError):
            self.run_async(self.fixture().acquire("file"))


_OPEN_AND_LEAVE = (  # a fixture entered and given one resource, never exited
    "import asyncio, os, sys, tests._backends\n"
    "from taos_persona import PersonaFixture\n"
    "loop = asyncio.new_event_loop()\n"
    "fixture = PersonaFixture('p', registry_dir=sys.argv[1])\n"
    "loop.run_until_complete(fixture.__aenter__())\n"
    "loop.run_until_complete(fixture.acquire('file', directory=sys.argv[2]))\n")


class AtexitTest(TempDirTestCase):
    def run_left_open(self, tail: str) -> None:
        """Run the script above plus ``tail``; it must exit 0 printing how many files it saw."""
        result = run_python(_OPEN_AND_LEAVE + tail, self.registry_dir, self.files_dir)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "1"), result.stderr)

    def test_fixture_left_open_is_released_at_interpreter_exit(self) -> None:
        self.run_left_open("print(len(os.listdir(sys.argv[2])))\n")
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.registry_files(), [])

    def test_forked_child_exiting_does_not_release_the_parents_resources(self) -> None:
        self.run_left_open("pid = os.fork()\n"
                           "if pid == 0:\n"
                           "    sys.exit(0)\n"
                           "os.waitpid(pid, 0)\n"
                           "print(len(os.listdir(sys.argv[2])))\n")
        self.assertEqual(self.survivors(), [], "the parent released it at its own exit")

if __name__ == "__main__":
    unittest.main()

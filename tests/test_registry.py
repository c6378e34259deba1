"""The registry directory, its files, and the liveness lock."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import unittest
from typing import Any, Dict

from taos_persona.backends import BACKENDS, register
from taos_persona.errors import InvalidNameError, RegistryError, UnsafeRegistryError
from taos_persona.locking import RunLock
from taos_persona.naming import Persona, new_run_id, validate_persona_name, validate_run_id
from taos_persona.records import CorruptRecordError, FutureSchemaError, RunRecord
from taos_persona.registry import Registry
from tests._support import TempDirTestCase, posix_only, reap, run_files


class NamingTest(unittest.TestCase):
    def test_bad_names_refused_with_the_fix(self) -> None:
        for bad in ("", "../etc", "a/b", "a\\b", "a\0b", "x" * 65, "..", ".hidden", "a..b", 7, None):
            with self.subTest(bad=bad):
                with self.assertRaises(InvalidNameError) as caught:
                    validate_persona_name(bad)
                self.assertIn("persona name", str(caught.exception))
                with self.assertRaises(InvalidNameError):
                    validate_run_id(bad)

    def test_good_names(self) -> None:
        self.assertEqual(validate_persona_name("novice_sarah"), "novice_sarah")
        run_id = new_run_id()
        self.assertEqual(validate_run_id(run_id), run_id)
        self.assertTrue(Persona("p", run_id).unique_name().startswith(f"taos-{run_id.lower()}-"))


class RegistryFilesTest(TempDirTestCase):
    def run_record(self) -> RunRecord:
        run = RunRecord(new_run_id(), "novice_sarah", "host", 1)
        run.add_intent("sql", "taos_persona.backends.sql:SqlUserBackend", {"username": "u"})
        return run

    @posix_only
    def test_permissions_and_round_trip(self) -> None:
        registry = Registry(self.registry_dir)
        registry.ensure()
        run = self.run_record()
        registry.write(run)
        self.assertEqual(stat.S_IMODE(os.stat(self.registry_dir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(registry.json_path(run.run_id)).st_mode), 0o600)
        again = registry.read(run.run_id)
        self.assertEqual(again.resources[1].planned, {"username": "u"})
        self.assertEqual(self.registry_files(), [f"{run.run_id}.json"], "no temp file left")

    def test_failed_write_leaves_no_temp_file(self) -> None:
        registry = Registry(self.registry_dir)
        registry.ensure()
        run = self.run_record()
        os.mkdir(registry.json_path(run.run_id))  # os.replace onto a directory fails, even for root
        with self.assertRaises(RegistryError) as caught:
            registry.write(run)
        self.assertIn("cannot write registry file", str(caught.exception))
        self.assertEqual(self.registry_files(), [f"{run.run_id}.json"], "the temp file is gone")

    @posix_only
    def test_unsafe_directory_refused(self) -> None:
        os.makedirs(self.registry_dir, mode=0o700)
        os.chmod(self.registry_dir, 0o777)
        with self.assertRaises(UnsafeRegistryError) as caught:
            Registry(self.registry_dir).ensure()
        self.assertIn("chmod 700", str(caught.exception))
        os.chmod(self.registry_dir, 0o700)
        link = os.path.join(self.tmp, "link")
        os.symlink(self.registry_dir, link)
        with self.assertRaises(UnsafeRegistryError):
            Registry(link).ensure()

    def test_corrupt_and_future_records(self) -> None:
        good = self.run_record().to_bytes()
        for raw in (b"", b"{", b"[]", b"\xff\xfe", good[: len(good) // 2],
                    good.replace(b'"schema":1', b'"schema":"1"'),
                    good.replace(b'"state":"intent"', b'"state":"weird"')):
            with self.subTest(raw=raw[:30]):
                with self.assertRaises(CorruptRecordError):
                    RunRecord.from_bytes(raw)
        with self.assertRaises(FutureSchemaError):
            RunRecord.from_bytes(good.replace(b'"schema":1', b'"schema":99'))

    def test_default_dir_from_environment(self) -> None:
        os.environ["TAOS_PERSONA_DIR"] = self.registry_dir
        self.addCleanup(os.environ.pop, "TAOS_PERSONA_DIR")
        self.assertEqual(Registry().path, self.registry_dir)


@posix_only
class RunLockTest(TempDirTestCase):
    def test_lock_is_exclusive_across_processes_and_dies_with_owner(self) -> None:
        path = os.path.join(self.tmp, "r.lock")
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys,time; from taos_persona.locking import RunLock;"
             "l=RunLock(sys.argv[1]); assert l.try_acquire(); print('HELD', flush=True); time.sleep(60)", path],
            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        self.addCleanup(reap, holder)
        self.assertEqual(holder.stdout.readline().strip(), "HELD")
        self.assertFalse(RunLock(path).try_acquire(), "held by a live process")
        holder.kill()
        holder.wait()
        lock = RunLock(path)
        self.assertTrue(lock.try_acquire(), "the kernel dropped the dead owner's lock")
        lock.release(unlink=True)
        lock.release(unlink=True)  # twice is fine
        self.assertFalse(os.path.exists(path))

    def test_second_open_in_same_process_conflicts(self) -> None:
        path = os.path.join(self.tmp, "r.lock")
        first = RunLock(path)
        self.assertTrue(first.try_acquire())
        self.assertFalse(RunLock(path).try_acquire(), "a startup sweep must never take its own run")
        first.release()

    def test_symlink_and_directory_lock_paths_refused(self) -> None:
        target = os.path.join(self.tmp, "target")
        open(target, "w").close()
        link = os.path.join(self.tmp, "link.lock")
        os.symlink(target, link)
        with self.assertRaises(RegistryError):
            RunLock(link).try_acquire()
        folder = os.path.join(self.tmp, "dir.lock")
        os.mkdir(folder)
        with self.assertRaises(RegistryError):
            RunLock(folder).try_acquire()


@posix_only
class RegistryTamperTest(TempDirTestCase):
    """Kind 4 on the registry side: the path above it, a swapped directory, symlinks, sizes."""

    def test_parent_writable_by_others_is_refused_unless_sticky(self) -> None:
        parent = os.path.join(self.tmp, "shared")
        os.mkdir(parent)
        os.chmod(parent, 0o777)
        registry = Registry(os.path.join(parent, "registry"))
        with self.assertRaises(UnsafeRegistryError) as caught:
            registry.ensure()
        self.assertIn(f"directory {parent} above the registry", str(caught.exception))
        self.assertIn("chmod go-w", str(caught.exception))
        os.chmod(parent, 0o1777)  # sticky, as /tmp: nobody may rename what is not theirs
        Registry(os.path.join(parent, "registry")).ensure()

    @unittest.skipUnless(hasattr(os, "getuid") and os.getuid() == 0, "needs root to give a directory away")
    def test_parent_owned_by_another_user_is_refused(self) -> None:
        parent = os.path.join(self.tmp, "theirs")
        os.mkdir(parent, 0o755)
        os.chown(parent, 4242, 4242)
        with self.assertRaises(UnsafeRegistryError) as caught:
            Registry(os.path.join(parent, "registry")).ensure()
        self.assertIn("owned by uid 4242", str(caught.exception))

    def test_directory_swapped_after_open_is_not_followed(self) -> None:
        registry = Registry(self.registry_dir)
        registry.ensure()
        self.addCleanup(registry.close)
        moved = self.registry_dir + "-moved"
        os.rename(self.registry_dir, moved)
        os.mkdir(self.registry_dir, 0o700)  # an impostor in its place
        run = RunRecord(new_run_id(), "novice_sarah", "host", 1)
        registry.write(run)
        self.assertEqual(os.listdir(self.registry_dir), [], "nothing written into the impostor")
        self.assertEqual(run_files(moved), [f"{run.run_id}.json"])

    def test_quarantine_symlink_is_not_followed(self) -> None:
        registry = Registry(self.registry_dir)
        registry.ensure()
        self.addCleanup(registry.close)
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.mkdir(elsewhere)
        os.symlink(elsewhere, os.path.join(self.registry_dir, "quarantine"))
        with open(os.path.join(self.registry_dir, "junk.txt"), "w") as handle:
            handle.write("junk")
        with self.assertRaises((OSError, UnsafeRegistryError)):
            registry.quarantine("junk.txt")
        self.assertEqual(os.listdir(elsewhere), [], "nothing moved through the symlink")
        self.assertIn("junk.txt", os.listdir(self.registry_dir))

    def test_record_over_the_limit_refused_when_written(self) -> None:
        from taos_persona.registry import MAX_RECORD_BYTES

        registry = Registry(self.registry_dir)
        registry.ensure()
        self.addCleanup(registry.close)
        run = RunRecord(new_run_id(), "novice_sarah", "host", 1)
        run.add_intent("file", "tests._backends:FileBackend", {"pad": "p" * MAX_RECORD_BYTES})
        with self.assertRaises(RegistryError) as caught:
            registry.write(run)
        self.assertIn(f"limit of {MAX_RECORD_BYTES} bytes", str(caught.exception))
        self.assertEqual(self.registry_files(), [])

    def test_oversized_option_refused_before_the_provider_is_called(self) -> None:
        import asyncio

        from taos_persona import PersonaFixture
        from tests._backends import FileBackend

        class Padded(FileBackend):
            def plan(self, persona: Persona, *, pad: str = "", **options: Any) -> Dict[str, Any]:
                return dict(super().plan(persona, **options), pad=pad)

            async def acquire(self, persona: Persona, *, pad: str = "", **planned: Any) -> Any:
                return await super().acquire(persona, **planned)

        register("test_padded")(Padded)
        self.addCleanup(BACKENDS.pop, "test_padded")
        os.environ["TAOS_TEST_FILES"] = self.files_dir
        self.addCleanup(os.environ.pop, "TAOS_TEST_FILES")

        async def body() -> None:
            async with PersonaFixture("novice_sarah", registry_dir=self.registry_dir, sweep=False) as persona:
                with self.assertRaises(RegistryError) as caught:
                    await persona.acquire("test_padded", pad="p" * (65 << 20))
                self.assertIn("bytes, more than the limit of", str(caught.exception))
                self.assertEqual(os.listdir(self.files_dir), [], "the provider was never called")
                await persona.acquire("test_padded")  # the fixture goes on
                self.assertEqual(len(os.listdir(self.files_dir)), 1)

        asyncio.run(body())
        self.assertEqual(os.listdir(self.files_dir), [])
        self.assertEqual(self.registry_files(), [])


if __name__ == "__main__":
    unittest.main()

"""A quick slice of ``make torture``, and the regression tests of the bugs the torture found.

The slice runs every torture scenario small (one random fault point per
backend, a five-second soak, a few signals...): about half a minute. Its
seed is random unless ``TORTURE_SEED`` is set, and every failure message
carries it, so ``TORTURE_SEED=N make torture`` replays the full run.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
from typing import Any, ClassVar, Dict, List

import tests._backends  # noqa: F401  registers the file backends
from taos_persona.records import HELD, CorruptRecordError, RunRecord
from taos_persona.registry import Registry
from taos_persona.sweeper import sweep_async
from tests._support import HAVE_AIOHTTP, REPO, TempDirTestCase, child_env, posix_only

SEED = int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(1 << 31))


@posix_only
@unittest.skipUnless(HAVE_AIOHTTP and sys.platform.startswith("linux"), "needs aiohttp and /proc")
class TortureQuickTest(unittest.TestCase):
    """Each scenario of the torture, small: nothing survives, no live run is touched, no sweep fails."""

    lanes: ClassVar[List[Any]]
    root: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        from benchmarks._torture_kit import Lane

        cls.root = tempfile.mkdtemp(prefix="taos-torture-quick-")
        cls.addClassCleanup(shutil.rmtree, cls.root, True)
        cls.lanes = [Lane(cls.root, "lane0"), Lane(cls.root, "lane1")]
        for lane in cls.lanes:
            cls.addClassCleanup(lane.close)

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{SEED}:{name}")

    def assertClean(self, rows: Any) -> None:
        from benchmarks.torture import format_details, format_table

        rows = rows if isinstance(rows, list) else [rows]
        for row in rows:
            self.assertGreater(row.trials, 0, f"{row.scenario} ran no trial")
        verdict = [row.result for row in rows]
        self.assertTrue(all(result in ("PASS", "KNOWN") for result in verdict),
                        f"TORTURE_SEED={SEED}\n{format_table(rows)}\n{format_details(rows, True)}")

    def test_crash_matrix_one_random_point_per_backend(self) -> None:
        from benchmarks._torture_crash import crash_matrix

        self.assertClean(crash_matrix(self.lanes, self.rng("crash"), per_point=0))

    def test_random_kill_soak(self) -> None:
        from benchmarks._torture_soak import soak

        row = soak(self.root, self.rng("soak"), seconds=4.0, workers=8)
        self.assertClean(row)
        self.assertGreater(row.faults, 5, "the soak must kill workers")

    def test_signals_at_random_moments(self) -> None:
        from benchmarks._torture_crash import signals

        self.assertClean(signals(self.lanes, self.rng("signals"), trials=3))

    def test_out_of_memory(self) -> None:
        from benchmarks._torture_crash import out_of_memory

        self.assertClean(out_of_memory(self.lanes, self.rng("oom"), trials=3))

    def test_disk_full_by_file_size_limit(self) -> None:
        from benchmarks._torture_env import disk

        self.assertClean(disk(self.lanes, self.rng("disk"), trials=4, mounts=False))

    def test_provider_outage(self) -> None:
        from benchmarks._torture_env import outage

        self.assertClean(outage(self.root, self.rng("outage"), rounds=1))

    def test_creates_in_flight_and_a_hanging_provider(self) -> None:
        from benchmarks._torture_inflight import create_in_flight, hanging_provider

        self.assertClean([create_in_flight(self.lanes, self.rng("inflight"), trials=2),
                          hanging_provider(self.lanes, self.rng("hang"), trials=2)])

    def test_bad_registry_input(self) -> None:
        from benchmarks._torture_input import bad_input

        self.assertClean(bad_input(self.root, self.rng("input"), rounds=1, every=False))

    def test_registry_lost_then_sweep_discover(self) -> None:
        from benchmarks._torture_discovery import registry_lost

        self.assertClean(registry_lost(self.lanes, self.rng("lost"), trials=1))

    def test_watchdog_after_sigkill(self) -> None:
        from benchmarks._torture_discovery import watchdog_kills

        self.assertClean(watchdog_kills(self.lanes, self.rng("watchdog"), kills=2))

    def test_environment_switched_between_run_and_sweep(self) -> None:
        from benchmarks._torture_origin import environment_switched

        self.assertClean(environment_switched(self.lanes[0], self.rng("switch"), trials=1))

    def test_liveness_and_tampering(self) -> None:
        from benchmarks._torture_liveness import liveness_rows

        for row in liveness_rows(self.lanes, self.rng("liveness"), trials=2):
            self.assertClean(row)

    def test_security(self) -> None:
        from benchmarks._torture_security import security

        self.assertClean(security(self.lanes[0], self.rng("security")))


class TortureRegressionTest(TempDirTestCase):
    """The bugs the torture found, each pinned by the smallest input that showed it."""

    def orphan(self, change: Any = None, run_id: str = "orphan1") -> List[str]:
        """A dead run with two real file resources, its JSON document passed through ``change``."""
        registry = Registry(self.registry_dir)
        registry.ensure()
        run = RunRecord(run_id, "tortured", socket.gethostname(), 999999)
        paths = []
        for _ in range(2):
            path = os.path.join(self.files_dir, f"{run_id}-{run.next_seq}")
            open(path, "w").close()
            record = run.add_intent("file", "tests._backends:FileBackend", {"path": path})
            record.token, record.state = {"path": path}, HELD
            paths.append(path)
        data: Dict[str, Any] = json.loads(run.to_bytes())
        if change is not None:
            change(data)
        with open(registry.json_path(run_id), "w") as handle:
            json.dump(data, handle)
        return paths

    def sweep_in_time(self, timeout: float = 20.0) -> Any:
        return asyncio.run(asyncio.wait_for(sweep_async(self.registry_dir), timeout))

    def test_huge_integer_timestamp_is_quarantined_not_a_crash(self) -> None:
        # float(10**400) raised OverflowError out of RunRecord.from_bytes, killing the sweep.
        self.orphan(lambda data: data.update(started=10 ** 400))
        with self.assertRaises(CorruptRecordError):
            Registry(self.registry_dir).read("orphan1")
        report = self.sweep_in_time()
        self.assertEqual([item["file"] for item in report.quarantined], ["orphan1.json"])

    def test_infinite_timestamp_is_corrupt(self) -> None:
        self.orphan(lambda data: data["resources"][0].update(created=float("inf")))
        with self.assertRaises(CorruptRecordError):
            Registry(self.registry_dir).read("orphan1")

    def test_deeply_nested_json_is_quarantined_not_a_crash(self) -> None:
        # json.loads raised RecursionError, which is no ValueError, out of the sweep.
        Registry(self.registry_dir).ensure()
        with open(os.path.join(self.registry_dir, "deep1.json"), "wb") as handle:
            handle.write(b"[" * 100000 + b"]" * 100000)
        report = self.sweep_in_time()
        self.assertEqual([item["file"] for item in report.quarantined], ["deep1.json"])

    def test_parent_cycle_does_not_hang_the_sweep(self) -> None:
        # Each resource waited for its "child" to be released first: a cycle waited forever.
        def cycle(data: Dict[str, Any]) -> None:
            data["resources"][0]["parent"], data["resources"][1]["parent"] = 2, 1

        self.orphan(cycle)
        self.orphan(lambda data: data["resources"][0].update(parent=1), run_id="orphan2")
        report = self.sweep_in_time()
        self.assertEqual(len(report.released), 4)
        self.assertEqual(self.survivors(), [])

    @posix_only
    def test_fifo_named_like_a_record_does_not_hang_the_sweep(self) -> None:
        # open(O_RDONLY) of a FIFO blocks until a writer comes: the sweep hung for ever.
        self.orphan()
        os.mkfifo(os.path.join(self.registry_dir, "fifo1.json"))
        sweep = subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--dir", self.registry_dir, "--json"],
                               capture_output=True, text=True, env=child_env(), cwd=self.tmp, timeout=60)
        report = json.loads(sweep.stdout)
        self.assertEqual([item["file"] for item in report["quarantined"]], ["fifo1.json"])
        self.assertEqual(self.survivors(), [], "the good run beside it is swept")

    @posix_only
    def test_a_lock_file_we_may_not_open_is_reported_not_quarantined(self) -> None:
        # EACCES (or EROFS, EMFILE) on a plain lock file was taken for "not a regular file":
        # the sweep moved the lock, and then the JSON, of a possibly live run into quarantine,
        # where no later sweep would ever release its resources.
        self.orphan()
        lock = os.path.join(self.registry_dir, "orphan1.lock")
        open(lock, "w").close()
        report = _sweep_without_access(self.registry_dir, lock)
        self.assertEqual(report["quarantined"], [])
        self.assertEqual([p["file"] for p in report["problems"]], ["orphan1.lock"])
        self.assertNotIn("regular file", report["problems"][0]["error"], "the message must say what is wrong")
        self.assertEqual(self.registry_files(), ["orphan1.json", "orphan1.lock"])
        self.assertEqual(len(self.survivors()), 2, "a run whose lock we cannot take is never swept")

    @posix_only
    def test_a_record_we_may_not_read_is_reported_not_quarantined(self) -> None:
        self.orphan()
        report = _sweep_without_access(self.registry_dir, os.path.join(self.registry_dir, "orphan1.json"))
        self.assertEqual(report["quarantined"], [])
        self.assertEqual([p["file"] for p in report["problems"]], ["orphan1.json"])
        self.assertIn("orphan1.json", os.listdir(self.registry_dir))


def _sweep_without_access(registry: str, forbidden: str) -> Dict[str, Any]:
    """Sweep ``registry`` in a child process that may not open ``forbidden``.

    As root (where permissions do not bind), the child drops to uid 65534,
    which then owns the directory, while ``forbidden`` stays root's, mode 0600;
    otherwise ``forbidden`` is made mode 000.
    """
    if os.getuid() != 0:
        os.chmod(forbidden, 0)
        drop = ""
    else:
        os.chmod(forbidden, 0o600)
        os.chmod(os.path.dirname(registry), 0o711)  # the dropped child must reach the registry
        for root, _dirs, names in os.walk(registry):
            for name in [root] + [os.path.join(root, n) for n in names]:
                if name != forbidden:
                    os.chown(name, 65534, 65534)
        drop = "os.setgid(65534); os.setuid(65534); "
    code = ("import os, sys, json, asyncio, argparse, gettext, shutil, taos_persona.sweep, tests._backends\n"
            "from taos_persona.backends import load_builtin\nload_builtin()\n"
            f"{drop}sys.exit(taos_persona.sweep.main(['--dir', sys.argv[1], '--json']))\n")
    done = subprocess.run([sys.executable, "-c", code, registry], capture_output=True, text=True,
                          env=child_env(), cwd=REPO, timeout=60)
    if os.getuid() != 0:
        os.chmod(forbidden, 0o600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


if __name__ == "__main__":
    unittest.main()

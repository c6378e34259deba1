"""The fleet registry on a real PostgreSQL server: liveness, sweeps, fencing, the schema.

Survivors are counted at the provider (the test backend's files), never in
our own rows. Lease and heartbeat are short here (settings, not sleeps).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import unittest
import warnings
from typing import List

from tests._postgres import CuttableProxy, needs_postgres, server
from tests._support import REPO, TempDirTestCase, child_env, kill_and_wait, reap, wait_for_line

import tests._backends  # noqa: F401  (registers the "file" backend)

CHILD = r"""
import asyncio, os, sys
import tests._backends
from taos_persona import PersonaFixture

async def main():
    async with PersonaFixture("fleet_sam", sweep=False) as fixture:
        for _ in range(int(sys.argv[1])):
            await fixture.acquire("file")
        print("ready", fixture.run_id, flush=True)
        for line in sys.stdin:
            try:
                await fixture.acquire("file")
                print("acquired", flush=True)
            except Exception as exc:
                print("refused", type(exc).__name__, str(exc).replace("\n", " "), flush=True)

asyncio.run(main())
"""


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


@needs_postgres
class FleetTestCase(TempDirTestCase):
    """A fresh database per test on the shared server; files under ``files_dir`` are the provider."""

    def setUp(self) -> None:
        super().setUp()
        self.server = server()
        self.database = self.server.create_database()
        self.url = self.server.url(self.database)
        os.environ["TAOS_TEST_FILES"] = self.files_dir
        self.addCleanup(os.environ.pop, "TAOS_TEST_FILES", None)

    def wait_lease_out(self, lease: float = 1.0) -> None:
        """Until every run's heartbeat (the server's clock) is older than ``lease`` seconds."""
        wait_until(lambda: self.sql("SELECT coalesce(bool_and(heartbeat < now() - make_interval(secs => %s)), true) "
                                    "FROM taos_persona_runs" % lease) == "t", what="heartbeats older than the lease")

    def sql(self, query: str) -> str:
        return self.server.psql(self.database, query)

    def settings(self, **kw: float):
        from taos_persona.stores._pgconn import FleetSettings
        return FleetSettings(**{"lease": 1.0, "heartbeat": 0.2, "op_timeout": 2.0, **kw})

    def store(self, url: str = "", **kw: float):
        from taos_persona.stores.postgres import PostgresStore
        store = PostgresStore(url or self.url, self.settings(**kw))
        self.addCleanup(store.close)
        return store

    def start_owner(self, count: int, **env: str) -> subprocess.Popen:
        environ = child_env(**{"TAOS_PERSONA_REGISTRY": self.url, "TAOS_TEST_FILES": self.files_dir,
                               "TAOS_PERSONA_LEASE": "1", "TAOS_PERSONA_HEARTBEAT": "0.2", **env})
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(count)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=environ)
        self.addCleanup(reap, proc)
        return proc

    def sweep_cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        environ = child_env(**{"TAOS_TEST_FILES": self.files_dir, "TAOS_PERSONA_LEASE": "1", **env})
        return subprocess.run([sys.executable, "-m", "taos_persona.sweep", "--registry", self.url, *args],
                              capture_output=True, text=True, env=environ, cwd=REPO, timeout=120)


class StartupSweepTest(FleetTestCase):
    def test_a_fixture_on_the_fleet_sweeps_a_dead_machines_run_at_start(self) -> None:
        from taos_persona import PersonaFixture
        from taos_persona.stores import open_store
        owner = self.start_owner(2)
        wait_for_line(owner, "ready")
        kill_and_wait(owner)
        self.wait_lease_out()
        os.environ["TAOS_PERSONA_REGISTRY"] = self.url
        self.addCleanup(os.environ.pop, "TAOS_PERSONA_REGISTRY", None)
        store = open_store()
        self.assertIs(store, open_store(self.url))  # one store per URL per process
        store.settings = self.settings()  # type: ignore[attr-defined]

        async def scenario() -> None:
            async with PersonaFixture("fleet_sam") as fixture:
                self.assertIs(fixture.store, store)
                self.assertEqual(self.survivors(), [])  # swept before the test's first line

        asyncio.run(scenario())
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_runs WHERE swept_at IS NULL"), "0")


class SchemaTest(FleetTestCase):
    def test_schema_is_created_then_a_newer_one_refused(self) -> None:
        from taos_persona.errors import SchemaVersionError
        store = self.store()
        self.assertEqual(asyncio.run(store.list_runs()), [])
        from taos_persona.stores._pgschema import SCHEMA_VERSION
        self.assertEqual(self.sql("SELECT max(version) FROM taos_persona_schema"), str(SCHEMA_VERSION))
        self.sql("INSERT INTO taos_persona_schema VALUES (99)")
        with self.assertRaises(SchemaVersionError) as caught:
            asyncio.run(self.store().list_runs())
        self.assertIn("schema version 99", str(caught.exception))
        self.assertIn("upgrade taos-persona", str(caught.exception))

    def test_a_version_1_schema_is_migrated_and_keeps_its_rows(self) -> None:
        from unittest import mock

        from taos_persona.stores import _pgschema
        from taos_persona.stores._pgconn import connect

        async def migrate_to(version: int) -> int:
            conn = await connect(self.url, self.settings())
            try:
                with mock.patch.multiple(_pgschema, _MIGRATIONS=_pgschema._MIGRATIONS[:version],
                                         SCHEMA_VERSION=version):
                    return await _pgschema.migrate(conn, "here")
            finally:
                await conn.close()

        self.assertEqual(asyncio.run(migrate_to(1)), 0)
        self.sql("INSERT INTO taos_persona_runs (run_id, lock_key, persona, host, pid) VALUES ('old', 1, 'p', 'h', 1);"
                 "INSERT INTO taos_persona_resources VALUES ('old', 1, '{}')")
        foreign_keys = "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        self.assertEqual(self.sql(foreign_keys), "1")
        self.assertEqual(asyncio.run(migrate_to(_pgschema.SCHEMA_VERSION)), 1)
        self.assertEqual(self.sql(foreign_keys), "0")
        self.assertEqual(self.sql("SELECT max(version) FROM taos_persona_schema"), str(_pgschema.SCHEMA_VERSION))
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_resources WHERE run_id = 'old'"), "1")

    def test_password_never_shown(self) -> None:
        from taos_persona.stores import safe_url
        store = self.store(self.url.replace("postgres@", "postgres:s3cret@"))
        self.assertNotIn("s3cret", repr(store) + store.location + safe_url(store.url))


class OwnerTest(FleetTestCase):
    def test_a_fixture_records_rows_and_leaves_nothing(self) -> None:
        from taos_persona import PersonaFixture

        async def scenario() -> List[str]:
            async with PersonaFixture("fleet_sam", store=self.store(), sweep=False) as fixture:
                for _ in range(3):
                    await fixture.acquire("file")
                return [self.sql("SELECT count(*) FROM taos_persona_resources"), self.sql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")]

        during = asyncio.run(scenario())
        self.assertEqual(during, ["3", "1"])
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_runs"), "0")
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_resources"), "0")  # no cascade since v2

    def test_a_fixture_that_acquires_nothing_writes_nothing(self) -> None:
        from taos_persona import PersonaFixture

        async def scenario() -> str:
            async with PersonaFixture("fleet_sam", store=self.store(), sweep=False):
                return self.sql("SELECT count(*) FROM taos_persona_runs")

        self.assertEqual(asyncio.run(scenario()), "0")


class WriterTest(FleetTestCase):
    def test_saves_of_few_and_many_records_land_and_a_fenced_epoch_writes_nothing(self) -> None:
        from taos_persona.stores._pgconn import connect
        from taos_persona.stores.postgres import RunWriter, Snapshot

        def snap(count: int) -> Snapshot:
            return Snapshot("w", "p", "h", 1, count + 1, 0,
                            {seq: json.dumps({"seq": seq, "n": count}).encode() for seq in range(1, count + 1)})

        async def scenario() -> List[bool]:
            conn = await connect(self.url, self.settings())
            try:
                writer, landed = RunWriter("w"), []
                for count in (1, 2, 7):  # a first write, a VALUES save (2 records), an unnest save (5 new)
                    landed.append(await writer.write(conn, snap(count), timeout=5))
                self.sql("UPDATE taos_persona_runs SET epoch = epoch + 1")  # a sweeper's claim
                for count in (8, 13):  # fenced: neither form writes
                    landed.append(await writer.write(conn, snap(count), timeout=5))
                return landed
            finally:
                await conn.close()

        asyncio.run(self.store().list_runs())  # a store's first connection creates the schema
        self.assertEqual(asyncio.run(scenario()), [True, True, True, False, False])
        self.assertEqual(self.sql("SELECT string_agg(seq || ':' || (record->>'n'), ',' ORDER BY seq) "
                                  "FROM taos_persona_resources"), "1:7,2:7,3:7,4:7,5:7,6:7,7:7")


class SweepTest(FleetTestCase):
    def test_sigkilled_owner_is_swept_by_another_machine(self) -> None:
        owner = self.start_owner(3)
        run_id = wait_for_line(owner, "ready").split()[1]
        self.assertEqual(len(self.survivors()), 3)
        kill_and_wait(owner)
        self.wait_lease_out()
        done = self.sweep_cli("--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual(report["swept_runs"], [run_id])
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_resources"), "0")

    def test_sigterm_releases_through_the_fleet_on_a_fresh_loop(self) -> None:
        owner = self.start_owner(3)
        wait_for_line(owner, "ready")
        status = kill_and_wait(owner, signal.SIGTERM)
        self.assertIn(status, (-signal.SIGTERM, 128 + signal.SIGTERM), owner.stderr.read())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_runs"), "0")

    def test_discover_counts_the_fleets_runs_as_alive(self) -> None:
        owner = self.start_owner(1)
        run_id = wait_for_line(owner, "ready").split()[1]
        import importlib
        from unittest import mock
        cli = importlib.import_module("taos_persona.sweep")  # the module, not the function of that name
        with mock.patch.object(cli, "discover_sweep") as discover, \
                mock.patch.dict(os.environ, {"TAOS_PERSONA_LEASE": "1"}):
            discover.return_value.exit_status = 0
            discover.return_value.to_json.return_value = {}
            self.assertEqual(cli.main(["--registry", self.url, "--discover", "--json"]), 0)
        self.assertEqual(discover.call_args.kwargs["live_runs"], [run_id])

    def test_dry_run_lists_what_it_would_release_and_releases_nothing(self) -> None:
        owner = self.start_owner(2)
        run_id = wait_for_line(owner, "ready").split()[1]
        kill_and_wait(owner)
        self.wait_lease_out()
        done = self.sweep_cli("--dry-run", "--json")
        report = json.loads(done.stdout)
        self.assertEqual(report["swept_runs"], [run_id])
        self.assertEqual([item["result"] for item in report["resources"]], ["would release"] * 2)
        self.assertEqual(len(self.survivors()), 2)
        self.assertEqual(self.sweep_cli().returncode, 0)
        self.assertEqual(self.survivors(), [])

    def test_a_live_run_is_never_swept_and_is_listed_with_its_owner(self) -> None:
        owner = self.start_owner(2, TAOS_PERSONA_HEARTBEAT="1000")  # stale heartbeat: the lock alone guards
        run_id = wait_for_line(owner, "ready").split()[1]
        self.wait_lease_out()
        done = self.sweep_cli("--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual(report["swept_runs"], [])
        self.assertEqual(report["live_runs"], [run_id])
        (entry,) = report["fleet"]
        self.assertEqual((entry["run_id"], entry["persona"], entry["pid"], entry["alive"]),
                         (run_id, "fleet_sam", owner.pid, True))
        self.assertIn("host", entry)
        self.assertGreaterEqual(entry["age"], 0)
        self.assertEqual([item["backend"] for item in entry["resources"]], ["file", "file"])
        self.assertEqual(len(self.survivors()), 2)

    def test_a_blip_is_ridden_out_and_nothing_is_released(self) -> None:
        owner = self.start_owner(2, TAOS_PERSONA_LEASE="30")
        wait_for_line(owner, "ready")
        before = self.sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory'")
        self.sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'")  # the blip
        done = self.sweep_cli("--json", TAOS_PERSONA_LEASE="30")  # lock free maybe, heartbeat fresh: alive
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout)["swept_runs"], [])
        wait_until(lambda: self.sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory'") not in ("", before),
                   what="the owner's lock taken again on a new session")
        owner.stdin.write("acquire\n")
        owner.stdin.flush()
        self.assertEqual(wait_for_line(owner, "acquired"), "acquired")
        self.assertEqual(len(self.survivors()), 3)

    def test_two_sweepers_never_release_one_resource_twice(self) -> None:
        log = os.path.join(self.tmp, "released.log")
        owners = [self.start_owner(5) for _ in range(6)]
        for owner in owners:
            wait_for_line(owner, "ready")
        for owner in owners:
            kill_and_wait(owner)
        self.wait_lease_out()
        env = child_env(TAOS_TEST_FILES=self.files_dir, TAOS_PERSONA_LEASE="1", TAOS_TEST_RELEASE_LOG=log,
                        TAOS_TEST_RELEASE_DELAY="0.02")
        sweepers = [subprocess.Popen([sys.executable, "-m", "taos_persona.sweep", "--registry", self.url, "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
                    for _ in range(2)]
        outputs = [sweeper.communicate(timeout=120) for sweeper in sweepers]
        for sweeper, (_, err) in zip(sweepers, outputs):
            self.assertEqual(sweeper.returncode, 0, err)
        swept = [json.loads(out)["swept_runs"] for out, _ in outputs]
        self.assertEqual(len(swept[0]) + len(swept[1]), 6)
        self.assertFalse(set(swept[0]) & set(swept[1]))
        with open(log) as handle:
            names = handle.read().split()
        self.assertEqual(len(names), 30)
        self.assertEqual(len(set(names)), 30)
        self.assertEqual(self.survivors(), [])


FORKING_CHILD = r"""
import asyncio, os, sys, time
import tests._backends
from taos_persona import PersonaFixture

async def main():
    async with PersonaFixture("fleet_sam", sweep=False) as fixture:
        await fixture.acquire("file")
        child = os.fork()
        if child == 0:
            time.sleep(300)
            os._exit(0)
        print("ready", child, flush=True)
        await asyncio.sleep(300)

asyncio.run(main())
"""


class ForkTest(FleetTestCase):
    def test_a_forked_child_does_not_keep_a_killed_owners_lock(self) -> None:
        environ = child_env(**{"TAOS_PERSONA_REGISTRY": self.url, "TAOS_TEST_FILES": self.files_dir,
                               "TAOS_PERSONA_LEASE": "1", "TAOS_PERSONA_HEARTBEAT": "0.2"})
        owner = subprocess.Popen([sys.executable, "-c", FORKING_CHILD], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=REPO, env=environ)
        self.addCleanup(reap, owner)
        child = int(wait_for_line(owner, "ready").split()[1])
        self.addCleanup(lambda: os.kill(child, signal.SIGKILL) if _alive(child) else None)
        self.assertEqual(self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), "1")
        kill_and_wait(owner)
        self.assertTrue(_alive(child))
        wait_until(lambda: self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == "0",
                   timeout=20, what="the killed owner's lock dropped while its forked child lives")
        self.wait_lease_out()
        self.assertEqual(self.sweep_cli().returncode, 0)
        self.assertEqual(self.survivors(), [])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


class CrashMatrixTest(FleetTestCase):
    """SIGKILL at each step of an acquisition and of the release, on the fleet; then one sweep."""

    def test_every_kill_point_leaves_nothing(self) -> None:
        from tests.test_crash import ACQUIRE_POINTS, RELEASE_POINTS
        for point in ACQUIRE_POINTS + tuple(p for p in RELEASE_POINTS if not p.startswith("registry.")):
            with self.subTest(point=point):
                owner = self.start_owner(3, TAOS_PERSONA_FAULT=point)
                owner.stdin.close()  # leave the fixture as soon as it is entered: the release points
                self.assertEqual(owner.wait(60), -signal.SIGKILL, owner.stderr.read())
                self.wait_lease_out()
                done = self.sweep_cli()
                self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
                self.assertEqual(self.survivors(), [], f"files left after a kill at {point}")
                self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_resources"), "0")
                self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_runs WHERE swept_at IS NULL"), "0")


class FencingTest(FleetTestCase):
    """An owner cut off longer than the lease: swept by another machine, then told so, loudly."""

    def owner_through(self, proxy: CuttableProxy):
        return self.store(proxy.url(self.database), op_timeout=0.5)

    def test_partition_longer_than_the_lease_fences_the_owner(self) -> None:
        from taos_persona import PersonaFixture
        from taos_persona.errors import FencedError
        from taos_persona.stores.pgsweep import sweep_fleet
        proxy = CuttableProxy(self.server.port)
        self.addCleanup(proxy.close)

        async def scenario() -> None:
            fixture = PersonaFixture("fleet_sam", store=self.owner_through(proxy), sweep=False)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                async with fixture:
                    await fixture.acquire("file")
                    await fixture.acquire("file")
                    proxy.cut()
                    sweeper = self.store()
                    for _ in range(600):  # until the lease ran out and the sweep took the run
                        report = await sweep_fleet(sweeper)
                        if report.swept_runs:
                            break
                        await asyncio.sleep(0.1)
                    self.assertEqual(self.survivors(), [])
                    proxy.heal()
                    with self.assertRaises(FencedError) as refused:
                        await fixture.acquire("file")
                    self.assertRegex(str(refused.exception), r"released under it: file #1 \(\w+\), file #2 \(\w+\)")
            self.assertTrue(any("was swept by" in str(w.message) for w in caught), [str(w.message) for w in caught])

        asyncio.run(scenario())
        self.assertEqual(self.survivors(), [])
        self.assertEqual(self.sql("SELECT count(*) FROM taos_persona_runs"), "0")

    def test_partition_shorter_than_the_lease_releases_nothing(self) -> None:
        from taos_persona import PersonaFixture
        from taos_persona.stores.pgsweep import sweep_fleet
        proxy = CuttableProxy(self.server.port)
        self.addCleanup(proxy.close)

        async def scenario() -> None:
            async with PersonaFixture("fleet_sam", store=self.owner_through(proxy, ), sweep=False) as fixture:
                await fixture.acquire("file")
                proxy.cut()  # the server's side of the lock's session ends: the lock is free
                sweeper = self.store(lease=30.0)
                wait_until(lambda: self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == "0",
                           what="the cut session's lock dropped by the server")
                report = await sweep_fleet(sweeper)
                self.assertEqual((report.swept_runs, report.problems), ([], []))
                proxy.heal()
                await fixture.acquire("file")  # the owner reconnected and carries on
                self.assertEqual(len(self.survivors()), 2)

        asyncio.run(scenario())
        self.assertEqual(self.survivors(), [])


class DrainAcrossLoopsTest(unittest.TestCase):
    """Found by the fleet soak: SIGTERM while a background write was pending on the test's loop made
    the signal path's release die with "attached to a different loop", keeping everything."""

    def test_a_signal_paths_drain_skips_the_interrupted_loops_writes(self) -> None:
        import threading
        from taos_persona.records import RunRecord
        from taos_persona.run import RunOwner
        from taos_persona.store import RunClaim
        started = threading.Event()

        class StuckStore:  # a save that never ends on its loop: the interrupted test's write
            location = "stuck"

            async def save(self, claim: RunClaim, run: RunRecord) -> None:
                started.set()
                await asyncio.Event().wait()

        owner = RunOwner(StuckStore(), RunClaim("r1"), RunRecord("r1", "fleet_sam", "h", 1),  # type: ignore[arg-type]
                         written=True)
        test_loop = asyncio.new_event_loop()
        self.addCleanup(test_loop.close)
        self.addCleanup(lambda: test_loop.run_until_complete(_cancel_all(test_loop)))
        test_loop.call_soon(owner.save_in_background)
        thread = threading.Thread(target=test_loop.run_until_complete, args=(asyncio.sleep(0.5),))
        thread.start()
        self.addCleanup(thread.join)
        self.assertTrue(started.wait(30))
        asyncio.run(owner.drain())  # the signal path's fresh loop: returns, raises nothing


async def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class LazyImportTest(unittest.TestCase):
    def test_the_store_modules_do_not_import_the_driver(self) -> None:
        code = ("import sys, taos_persona.stores, taos_persona.stores.postgres, taos_persona.stores.pgsweep, "
                "taos_persona.fixture; print('asyncpg' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=child_env())
        self.assertEqual(done.stdout.strip(), "False", done.stderr)


if __name__ == "__main__":
    unittest.main()

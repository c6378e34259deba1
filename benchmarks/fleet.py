"""``python -m benchmarks.fleet`` (part of ``make bench``): what the fleet registry on PostgreSQL costs.

Against a real server started for the run (tests/_postgres.py's harness):

- bookkeeping per acquisition (intent + held, through the store's thread)
  against one ``INSERT`` + ``COMMIT`` round trip to the same server
  (goal: at most 2x);
- sweeping 10,000 orphans left by 100 dead "machines" (runs whose lock is
  free and whose heartbeat is older than the lease) at 10 ms provider
  latency (goal: under 10 s, and at least 10x faster than one by one, which
  is measured on a slice and scaled).

Exit status 0 when every goal is met, 1 when one is not.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List, Optional

from benchmarks.bench import Row, _register_null_backend, render
from benchmarks._harness import median

__all__ = ["main"]

LATENCY = 0.010
CONCURRENCY = 32
MACHINES, PER_MACHINE = 100, 100


def _register_slow_backend(latency: float) -> str:
    """A backend whose release waits ``latency`` seconds, as a provider round trip would."""
    from taos_persona.backends import BACKENDS, Backend, register

    if "bench_slow" not in BACKENDS:

        @register("bench_slow")
        class SlowBackend(Backend):
            async def release(self, token: Dict[str, Any]) -> None:
                await asyncio.sleep(latency)

    return "bench_slow"


async def _insert_commit(url: str, count: int) -> List[float]:
    """The baseline: one INSERT, committed (autocommit), per sample."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id bigserial PRIMARY KEY, body jsonb)")
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await conn.execute("INSERT INTO bench_baseline (body) VALUES ($1)", '{"username": "x"}')
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        await conn.close()


async def _statements(url: str, count: int) -> List[float]:
    """The floor under the bookkeeping: the store's own save (an intent plus the held record
    riding on it, fenced by the epoch), sent on a raw connection with no fixture around it."""
    from taos_persona.stores._pgconn import FleetSettings, connect
    from taos_persona.stores.postgres import upsert_args

    conn, run_id = await connect(url, FleetSettings()), f"floor-{time.monotonic_ns()}"
    record = json.dumps({"backend": "bench_null", "state": "held", "planned": {"username": "x" * 24},
                         "token": {"id": "u_0123456789ab", "username": "x" * 24}, "created": time.time()})
    try:
        await conn.execute("INSERT INTO taos_persona_runs (run_id, lock_key, persona, host, pid) "
                           "VALUES ($1, 0, 'bench', 'bench', 0)", run_id)
        samples = []
        for seq in range(1, count + 1):
            start = time.perf_counter()
            await conn.execute(*upsert_args(run_id, 1, [seq + 1, seq], [record, record]))
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        await conn.close()


async def _acquisitions(store: Any, count: int) -> List[float]:
    from taos_persona import PersonaFixture

    backend, samples = _register_null_backend(), []
    async with PersonaFixture("bench", store=store, sweep=False) as fixture:
        for _ in range(count):
            start = time.perf_counter()
            await fixture.acquire(backend)
            samples.append(time.perf_counter() - start)
    return samples


async def _bookkeeping(url: str) -> List[Row]:
    from taos_persona.stores.postgres import PostgresStore

    store = PostgresStore(url)
    spent: List[float] = []
    floor: List[float] = []
    statement: List[float] = []
    try:
        for _ in range(15):  # alternating, so a busy moment hits all alike
            spent += await _acquisitions(store, 20)
            floor += await _insert_commit(url, 20)
            statement += await _statements(url, 20)
    finally:
        await store.aclose()
    measured, baseline = median(spent), median(floor)
    return [Row("fleet: bookkeeping per acquisition vs one INSERT+COMMIT round trip", measured, baseline,
                "<= 2x", measured <= 2 * baseline, machine=True),
            Row("  of which the save statement alone (intent + held, fenced), no fixture", median(statement),
                baseline, "-", None, machine=True)]


async def _populate(url: str, tag: str, machines: int, per_machine: int) -> None:
    """``machines`` dead runs of ``per_machine`` held resources each, as rows (no lock, old heartbeat)."""
    import asyncpg

    from taos_persona.stores._pgconn import lock_key
    from taos_persona.stores.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        await store.list_runs()  # creates the schema
    finally:
        await store.aclose()
    runs = [(f"m{m}-{tag}", lock_key(f"m{m}-{tag}"), "bench", f"machine-{m}", 1000 + m, per_machine + 1)
            for m in range(machines)]
    from taos_persona.backends import BACKENDS
    from taos_persona.backends.base import class_path

    path = class_path(BACKENDS["bench_slow"])  # the sweep checks a record's class path against the registry
    resources = [(run[0], seq, json.dumps({"seq": seq, "backend": "bench_slow", "path": path,
                                           "state": "held", "planned": {}, "token": {"id": seq},
                                           "created": time.time()}))
                 for run in runs for seq in range(1, per_machine + 1)]
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany("INSERT INTO taos_persona_runs (run_id, lock_key, persona, host, pid, next_seq, "
                               "heartbeat) VALUES ($1, $2, $3, $4, $5, $6, now() - interval '1 hour')", runs)
        await conn.executemany("INSERT INTO taos_persona_resources (run_id, seq, record) "
                               "VALUES ($1, $2, $3::jsonb)", resources)
    finally:
        await conn.close()


async def _sweep(url: str, concurrency: int) -> Dict[str, Any]:
    from taos_persona.stores.pgsweep import sweep_url

    start = time.perf_counter()
    report = await sweep_url(url, concurrency=concurrency)
    return {"seconds": time.perf_counter() - start, "released": len(report.released), "kept": len(report.kept),
            "problems": report.problems}


async def _sweep_rows(server: Any, latency: float) -> List[Row]:
    _register_slow_backend(latency)
    url = server.url(server.create_database())
    await _populate(url, "big", MACHINES, PER_MACHINE)
    big = await _sweep(url, CONCURRENCY)
    if big["released"] != MACHINES * PER_MACHINE or big["problems"]:
        raise RuntimeError(f"the big sweep released {big['released']}: {json.dumps(big)[:500]}")
    slice_url = server.url(server.create_database())
    await _populate(slice_url, "slice", 2, 50)  # one by one: 100 releases, scaled to 10,000
    one = await _sweep(slice_url, 1)
    one_by_one = one["seconds"] * (MACHINES * PER_MACHINE) / 100
    return [Row(f"fleet: sweep {MACHINES * PER_MACHINE:,} orphans of {MACHINES} dead machines "
                f"({latency * 1e3:g} ms provider)", big["seconds"], None, "< 10 s", big["seconds"] < 10.0),
            Row("  the same vs one by one (measured on 100, scaled)", big["seconds"], one_by_one, ">= 10x faster",
                one_by_one >= 10 * big["seconds"], faster=True)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=LATENCY, help="provider latency in seconds")
    parser.add_argument("--quick", action="store_true", help="bookkeeping only (a few seconds)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from tests._postgres import server, skip_reason

    args = _parser().parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"fleet benchmarks not run: {reason}", file=sys.stderr)
        return 1
    srv = server()
    rows = asyncio.run(_bookkeeping(srv.url(srv.create_database())))
    if not args.quick:
        rows += asyncio.run(_sweep_rows(srv, args.latency))
    print(render(rows))
    failed = [row for row in rows if row.passed is False]
    goals = [row for row in rows if row.passed is not None]  # an informational row has none
    print(f"{len(failed)} of {len(goals)} fleet goals failed" if failed else "every fleet goal met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The fleet sweep: any machine releases what dead machines left in the PostgreSQL registry.

A run is taken only when its advisory lock is free AND its heartbeat (the
server's clock) is older than the lease; the claim bumps its epoch, so an
owner that comes back finds out. Claims go through ``FOR UPDATE SKIP
LOCKED`` and the run's advisory lock, so two sweepers never take one run and
never release one resource twice. Each run is released through the same
:class:`~taos_persona.run.RunOwner` as the fixture uses.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from ..outcomes import Outcome, Result
from ..records import CorruptRecordError, RunRecord
from ..releaser import DEFAULT_CONCURRENCY
from ..run import RunOwner
from ..sweep_report import RunInfo, Status, SweepReport
from ..sweeper import BackendPool, load_plugins
from .postgres import PostgresStore

__all__ = ["FleetReport", "sweep_fleet", "sweep_url", "fleet_runs"]

_RUNS_IN_FLIGHT = 64

_FLEET_SQL = """
SELECT r.run_id, r.persona, r.host, r.pid,
       extract(epoch FROM now() - r.started)::float8 AS age,
       CASE WHEN isfinite(r.heartbeat) THEN extract(epoch FROM now() - r.heartbeat)::float8 END AS silent,
       EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND ((l.classid::bigint << 32) | l.objid::bigint) = r.lock_key) AS locked,
       coalesce((SELECT json_agg(json_build_object('seq', s.seq, 'backend', s.record->>'backend',
                                                   'state', s.record->>'state') ORDER BY s.seq)::text
                 FROM taos_persona_resources s WHERE s.run_id = r.run_id), '[]') AS resources
FROM taos_persona_runs r WHERE r.swept_at IS NULL ORDER BY r.started
"""
"""Every run not yet swept: who holds it, how old, how long silent, whether its lock is held."""


@dataclass
class FleetReport(SweepReport):
    """A sweep's report plus ``fleet``: every run still on record, live or not, across machines."""

    fleet: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> Dict[str, object]:
        data = super().to_json()
        data["fleet"] = self.fleet
        return data


async def fleet_runs(store: PostgresStore) -> List[Dict[str, Any]]:
    """Runs on record with host, pid, persona, age (s), silent (s since heartbeat), alive, resources.

    ``alive``: its lock is held, or its heartbeat is younger than the lease.
    """
    rows = await store.on_sweeper(lambda conn: conn.fetch(_FLEET_SQL))
    runs = []
    for row in rows:
        silent = row["silent"]
        alive = bool(row["locked"]) or (silent is not None and silent < store.settings.lease)
        runs.append({"run_id": row["run_id"], "persona": row["persona"], "host": row["host"], "pid": row["pid"],
                     "age": round(row["age"], 1), "silent": None if silent is None else round(silent, 1),
                     "alive": alive, "resources": json.loads(row["resources"])})
    return runs


async def sweep_fleet(store: PostgresStore, *, dry_run: bool = False, plugins: Sequence[str] = (),
                      concurrency: int = DEFAULT_CONCURRENCY) -> FleetReport:
    """Sweep every dead run in the fleet registry; the report lists the fleet as it is after."""
    load_plugins(plugins)
    report = FleetReport(store.location, dry_run=dry_run)
    pool = BackendPool()
    try:
        if dry_run:
            await _dry_run(store, report)
        else:
            await _Sweep(store, report, pool, concurrency).run(await store.list_runs())
            await store.expire_tombstones()
        report.fleet = await fleet_runs(store)
    finally:
        await pool.aclose()
    report.runs.extend(_info(run, Status.LIVE) for run in report.fleet if run["alive"])
    report.runs.sort(key=lambda info: info.run_id)
    return report


def _info(run: Dict[str, Any], status: Status) -> RunInfo:
    """A fleet run as the sweep's report shows runs (age and idle time by the server's clock)."""
    return RunInfo(run["run_id"], status, run["persona"], run["host"], run["pid"], run["age"], run["silent"])


async def _dry_run(store: PostgresStore, report: FleetReport) -> None:
    for run in await fleet_runs(store):
        if run["alive"]:
            continue
        report.runs.append(_info(run, Status.SWEPT))
        report.outcomes.extend(Outcome(run["run_id"], item["seq"], item["backend"], item["state"],
                                       Result.WOULD_RELEASE) for item in reversed(run["resources"]))


class _Sweep:
    """Claim, release and finish dead runs, ``_RUNS_IN_FLIGHT`` at a time, one bound per backend."""

    def __init__(self, store: PostgresStore, report: FleetReport, pool: BackendPool, concurrency: int) -> None:
        self.store, self.report, self.pool, self.concurrency = store, report, pool, concurrency
        self.limits: Dict[str, asyncio.Semaphore] = {}
        self.slots = asyncio.Semaphore(_RUNS_IN_FLIGHT)

    async def run(self, run_ids: List[str]) -> None:
        await asyncio.gather(*(self._one(run_id) for run_id in run_ids))
        self.report.outcomes.sort(key=lambda outcome: outcome.run_id)  # stable: newest first per run

    async def _one(self, run_id: str) -> None:
        async with self.slots:
            try:
                owner = await RunOwner.adopt(self.store, run_id)
            except CorruptRecordError as exc:
                self.report.problems.append({"file": f"{self.store.location} run {run_id}", "error": str(exc)})
                return
            except Exception as exc:  # noqa: BLE001 - one run's failure is reported, the others go on
                self.report.problems.append({"file": f"{self.store.location} run {run_id}", "error": str(exc)})
                return
            if owner is None:
                return  # alive, or taken by another sweeper: the fleet listing says which
            await self._release(owner)

    async def _release(self, owner: RunOwner) -> None:
        run: RunRecord = owner.run
        self.report.runs.append(RunInfo(run.run_id, Status.SWEPT, run.persona, run.host, run.pid))
        try:
            outcomes = await owner.release(self.pool, concurrency=self.concurrency, limits=self.limits)
        finally:
            await owner.finish()
        self.report.outcomes.extend(outcomes)


async def sweep_url(url: str, **options: Any) -> FleetReport:
    """Sweep the fleet registry at ``url`` with a store of its own, closed afterwards."""
    store = PostgresStore(url)
    try:
        return await sweep_fleet(store, **options)
    finally:
        await store.aclose()

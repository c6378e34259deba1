"""Release what a run still holds: the one path shared by fixture exit, signals, atexit and sweep.

Independent resources are released concurrently, at most ``concurrency``
requests in flight per backend, started newest first; a resource that names
a parent is released before that parent. Each outcome is written to the
registry as it happens, so a crash part-way loses nothing: what is left is
still on disk for the next sweep.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ._faults import fault_point
from ._redact import describe_error
from .backends.base import Backend
from .records import HELD, INTENT, ResourceRecord, RunRecord

__all__ = ["Outcome", "release_run", "DEFAULT_CONCURRENCY"]

DEFAULT_CONCURRENCY = 8
DEFAULT_INTENT_GRACE = 10.0


@dataclass(frozen=True)
class Outcome:
    """What happened to one resource: ``released``, ``nothing created`` or ``kept``."""

    run_id: str
    seq: int
    backend: str
    state: str
    result: str
    error: Optional[str] = None

    @property
    def kept(self) -> bool:
        return self.result == "kept"


BackendFor = Callable[[ResourceRecord], Backend]


async def release_run(run: RunRecord, backend_for: BackendFor, save: Callable[[], None], *,
                      concurrency: int = DEFAULT_CONCURRENCY) -> List[Outcome]:
    """Release every live resource of ``run``; return one outcome per resource."""
    records = sorted(run.live(), key=lambda record: record.seq, reverse=True)
    done: Dict[int, "asyncio.Future[Outcome]"] = {
        record.seq: asyncio.get_running_loop().create_future() for record in records}
    limits: Dict[str, asyncio.Semaphore] = {}
    children: Dict[int, List[int]] = {}
    for record in records:
        if record.parent is not None and record.parent in done:
            children.setdefault(record.parent, []).append(record.seq)

    async def settle(record: ResourceRecord) -> Outcome:
        for child in children.get(record.seq, ()):
            if (await asyncio.shield(done[child])).kept:
                return _keep(run, record, save, f"child resource #{child} is not released yet")
        limit = limits.setdefault(record.backend, asyncio.Semaphore(max(1, concurrency)))
        async with limit:
            return await _settle_one(run, record, backend_for, save)

    async def run_one(record: ResourceRecord) -> Outcome:
        try:
            outcome = await settle(record)
        except BaseException:
            done[record.seq].cancel()
            raise
        done[record.seq].set_result(outcome)
        return outcome

    return list(await asyncio.gather(*(run_one(record) for record in records)))


async def _settle_one(run: RunRecord, record: ResourceRecord, backend_for: BackendFor,
                      save: Callable[[], None]) -> Outcome:
    """Release one resource, resolving an intent through ``recover`` first."""
    state = record.state
    try:
        backend = backend_for(record)
        if record.state == INTENT:
            if not backend.can_recover():
                return _keep(run, record, save, f"backend {record.backend!r} cannot recover an intent: "
                             "check the provider by hand, then remove this entry")
            token = await backend.recover(record.planned)
            if token is None:
                return _nothing_found(run, record, save, state)
            record.token, record.state = token, HELD
        fault_point("release.before")
        await backend.release(record.token or {})
        fault_point("release.after_provider")
    except Exception as exc:  # noqa: BLE001 - any failure keeps the record for the next sweep
        return _keep(run, record, save, describe_error(exc), state)
    outcome = _drop(run, record, save, state, "released")
    fault_point("release.between")
    return outcome


def intent_grace() -> float:
    """Seconds an intent stays on record after ``recover`` found nothing.

    A create request may still be in flight at the provider when its sender
    dies (or is cancelled): the provider can finish it after our lookup. So a
    young intent is kept for a later sweep to look again. ``TAOS_PERSONA_INTENT_GRACE``
    sets it; 0 trusts the first lookup.
    """
    raw = os.environ.get("TAOS_PERSONA_INTENT_GRACE", "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_INTENT_GRACE
    except ValueError:
        return DEFAULT_INTENT_GRACE


def _nothing_found(run: RunRecord, record: ResourceRecord, save: Callable[[], None], state: str) -> Outcome:
    """Drop an intent that ``recover`` cannot find, unless it is young enough to be in flight."""
    age = time.time() - record.created
    grace = intent_grace()
    if age < grace:
        return _keep(run, record, save, f"not found at the provider yet, but the create may still be "
                     f"in flight: kept until it is {grace:g}s old, then the next sweep drops it", state)
    return _drop(run, record, save, state, "nothing created")


def _drop(run: RunRecord, record: ResourceRecord, save: Callable[[], None], state: str,
          result: str) -> Outcome:
    run.drop(record.seq)
    _save_quietly(save)
    return Outcome(run.run_id, record.seq, record.backend, state, result)


def _keep(run: RunRecord, record: ResourceRecord, save: Callable[[], None], error: str,
          state: Optional[str] = None) -> Outcome:
    record.attempts += 1
    record.last_error = error
    _save_quietly(save)
    return Outcome(run.run_id, record.seq, record.backend, state or record.state, "kept", error)


def _save_quietly(save: Callable[[], None]) -> None:
    """Write progress; if the disk refuses, the older file on disk still lists the resource,
    which only means a later sweep releases it again (release is idempotent)."""
    try:
        save()
    except Exception:  # noqa: BLE001
        pass

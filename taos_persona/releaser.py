"""Release what a run still holds: the one path shared by fixture exit, signals, atexit and sweep.

Independent resources are released concurrently, at most ``concurrency``
requests in flight per backend, started newest first; a resource that names
a parent is released before that parent. The sweep passes one ``limits``
dict for all its runs, so the bound holds across runs. Progress is written
to the registry as it goes, at most one write every ``PROGRESS_INTERVAL``
seconds, and a last one if something is left; a crash part-way loses
nothing: the file on disk lists everything not yet released, and at worst a
few already released too, which the next sweep releases again, idempotently.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar, cast

from ._faults import fault_point
from ._redact import describe_error
from .backends.base import Backend
from .outcomes import Outcome, Result
from .records import HELD, INTENT, ResourceRecord, RunRecord

__all__ = ["Outcome", "release_run", "DEFAULT_CONCURRENCY", "PROGRESS_INTERVAL"]

DEFAULT_CONCURRENCY = 8
PROGRESS_INTERVAL = 0.25
"""Seconds between two progress writes of one run during its release."""
DEFAULT_INTENT_GRACE = 10.0


BackendFor = Callable[[ResourceRecord], Backend]


async def release_run(run: RunRecord, backend_for: BackendFor, save: Callable[[], None], *,
                      concurrency: int = DEFAULT_CONCURRENCY,
                      limits: Optional[Dict[str, asyncio.Semaphore]] = None) -> List[Outcome]:
    """Release every live resource of ``run``; return one outcome per resource.

    ``limits`` (backend name -> semaphore) may be shared by several concurrent
    calls, to bound requests in flight per backend across all of them. When
    nothing is left, the last progress write is skipped: the caller deletes the file.
    """
    records = sorted(run.live(), key=lambda record: record.seq, reverse=True)
    done: Dict[int, "asyncio.Future[Outcome]"] = {
        record.seq: asyncio.get_running_loop().create_future() for record in records}
    limits = {} if limits is None else limits
    progress = _Progress(run, save)
    save = progress  # every progress write below goes through the coalescer
    children: Dict[int, List[int]] = {}
    for record in records:
        # A parent is always acquired first, so its seq is smaller: a link that says
        # otherwise (a tampered file, a cycle, itself) would make us wait forever. Ignore it.
        if record.parent is not None and record.parent in done and record.parent < record.seq:
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

    try:
        return list(await asyncio.gather(*(run_one(record) for record in records)))
    finally:
        progress.finish()


class _Progress:
    """A run's progress writes during its release, coalesced: at most one per interval.

    The first change starts a timer; when it fires, one write records every change
    made since. Safe because a resource leaves the file only in a write made after
    its release succeeded: the file on disk always lists at least what is still
    held. A crash before the timer fires only means a later sweep releases a few
    resources again, which release's idempotence makes harmless.
    """

    def __init__(self, run: RunRecord, save: Callable[[], None]) -> None:
        self.run, self.save, self.interval = run, save, PROGRESS_INTERVAL
        self.timer: Optional[asyncio.TimerHandle] = None
        self.pending = False

    def __call__(self) -> None:
        """Note a change; it is written within ``interval`` seconds."""
        self.pending = True
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.interval, self._due)

    def _due(self) -> None:
        self.timer = None
        if self.pending:
            _save_quietly(self._write)

    def _write(self) -> None:
        self.save()
        self.pending = False

    def finish(self) -> None:
        """The last write, when something is left (attempts, errors, what remains)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending and self.run.resources:
            _save_quietly(self._write)


async def _settle_one(run: RunRecord, record: ResourceRecord, backend_for: BackendFor,
                      save: Callable[[], None]) -> Outcome:
    """Release one resource, resolving an intent through ``recover`` first."""
    state = record.state
    try:
        backend = backend_for(record)
        foreign = backend.foreign_to((record.token or {}) if record.state == HELD else record.planned, run.run_id)
        if foreign is not None:  # a copied or crafted record: never release another run's resource
            return _keep(run, record, save, f"not acted on: the resource is {foreign}", state)
        if record.state == INTENT:
            if not backend.can_recover():
                return _unrecoverable(run, record, backend, save, state)
            token = await _contained(backend.recover(record.planned))
            if token is None:
                return _nothing_found(run, record, save, state, backend.recover_is_final)
            record.token, record.state = token, HELD
        fault_point("release.before")
        await _contained(backend.release(record.token or {}))
        fault_point("release.after_provider")
    except asyncio.CancelledError:
        raise  # our own task was cancelled (a backend's own CancelledError arrives as _CancelledOnItsOwn)
    except BaseException as exc:  # noqa: BLE001 - any failure keeps the record for the next sweep,
        # even a buggy backend's SystemExit, KeyboardInterrupt, GeneratorExit or CancelledError: one
        # resource's failure is contained and reported, never the end of the release (nor of the test)
        return _keep(run, record, save, describe_error(exc), state)
    outcome = _drop(run, record, save, state, Result.RELEASED)
    fault_point("release.between")
    return outcome


class _CancelledOnItsOwn(Exception):
    """A backend call raised CancelledError though nobody cancelled the release."""


T = TypeVar("T")


async def _contained(call: Awaitable[T]) -> T:
    """Await a backend call in a task of its own, to tell its CancelledError from ours.

    A cancellation of the caller (the sweep's or fixture's task) cancels the call and
    propagates. A CancelledError the call raises on its own is its failure: raised as
    :class:`_CancelledOnItsOwn`, which the caller keeps and reports like any other.
    """
    task = asyncio.ensure_future(_boxed(call))
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.cancelled():
        raise _CancelledOnItsOwn("the backend raised asyncio.CancelledError on its own (nobody "
                                 "cancelled the release); a backend bug: fix its release/recover")
    value, error = task.result()
    if error is not None:
        raise error
    return cast(T, value)  # no error: the call returned its T


async def _boxed(call: Awaitable[T]) -> Tuple[Optional[T], Optional[BaseException]]:
    """The call's value, or what it raised besides CancelledError, as a value: a task must not
    raise KeyboardInterrupt or SystemExit, which asyncio re-raises into the event loop."""
    try:
        return await call, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, who contains it
        return None, exc


def _unrecoverable(run: RunRecord, record: ResourceRecord, backend: Backend, save: Callable[[], None],
                   state: str) -> Outcome:
    """An intent its backend cannot look up: kept and reported, until the provider's own
    lifetime for the resource has certainly run out."""
    lifetime = backend.max_lifetime
    if lifetime is not None and time.time() - record.created > lifetime:
        return _drop(run, record, save, state, Result.EXPIRED)
    until = f"; the provider ends it {lifetime:g}s after creation, then the sweep drops it" if lifetime else ""
    return _keep(run, record, save, f"backend {record.backend!r} cannot recover an intent: check the "
                 "provider by hand, then remove this entry with python -m taos_persona.sweep --forget "
                 f"{run.run_id}:{record.seq}{until}", state)


def intent_grace() -> float:
    """Seconds an unfound intent stays on record past its deadline.

    Every intent is written with its deadline (intent time + the backend's request
    window: timeout x attempts plus backoff), the last moment our client could still
    be sending its create; the provider may finish processing a request a little
    after its sender died. So an unfound intent is kept until deadline + grace for a
    later sweep to look again. ``TAOS_PERSONA_INTENT_GRACE`` sets the grace (default
    10 s); 0 trusts the first lookup after the deadline.
    """
    raw = os.environ.get("TAOS_PERSONA_INTENT_GRACE", "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_INTENT_GRACE
    except ValueError:
        return DEFAULT_INTENT_GRACE


def _nothing_found(run: RunRecord, record: ResourceRecord, save: Callable[[], None], state: str,
                   final: bool = False) -> Outcome:
    """Drop an intent that ``recover`` cannot find, unless its create may still be in flight.

    The grace counts from the intent's ``deadline`` (written with the intent: the last moment
    a request of it could land, HTTP timeout times attempts plus backoff; moved later if the
    acquisition was interrupted), or from its creation for records without one. ``final``:
    the backend's lookup settles it at once (see ``Backend.recover_is_final``).
    """
    since = record.created if record.deadline is None else max(record.created, record.deadline)
    age = time.time() - since
    grace = intent_grace()
    if not final and age < grace:
        return _keep(run, record, save, f"not found at the provider yet, but the create may still be "
                     f"in flight: kept until {grace:g}s after its last request could land, then the "
                     "next sweep looks again", state)
    return _drop(run, record, save, state, Result.NOTHING_CREATED)


def _drop(run: RunRecord, record: ResourceRecord, save: Callable[[], None], state: str,
          result: Result) -> Outcome:
    run.drop(record.seq)
    _save_quietly(save)
    return Outcome(run.run_id, record.seq, record.backend, state, result)


def _keep(run: RunRecord, record: ResourceRecord, save: Callable[[], None], error: str,
          state: Optional[str] = None) -> Outcome:
    record.attempts += 1
    record.last_error = error
    _save_quietly(save)
    return Outcome(run.run_id, record.seq, record.backend, state or record.state, Result.KEPT, error)


def _save_quietly(save: Callable[[], None]) -> None:
    """Write progress; if the disk refuses, the older file on disk still lists the resource,
    which only means a later sweep releases it again (release is idempotent)."""
    try:
        save()
    except Exception:  # noqa: BLE001
        pass

"""RunOwner: the one owner of a run's life in a store, for the fixture, the sweep and signal paths.

It holds the run's record and its claim (the lock), writes the record
(durably, off the event loop, one write at a time), coalesces writes (a
held record may wait ``HELD_WRITE_DELAY`` to ride on the next write;
release progress is written at most every ``PROGRESS_INTERVAL``), releases
what the run holds, and finishes it: the record is deleted and the claim
forgotten when nothing is left, else both stay for the next sweep. Its
failures never escape ``finish``: they become warnings, and the claim is
always given up.
"""
from __future__ import annotations

import asyncio
import os
import socket
import warnings
from typing import Any, List, Optional, Set

from .errors import PersonaError, RegistryError, ResourceLeftWarning
from .outcomes import Outcome
from .records import RunRecord
from .releaser import DEFAULT_CONCURRENCY, BackendFor, release_run
from .store import RunClaim, RunStore

__all__ = ["RunOwner", "HELD_WRITE_DELAY"]

HELD_WRITE_DELAY = 0.05
"""Seconds a held record (of a backend that can recover) may wait to share the next write."""


class RunOwner:
    """One run's record and claim in ``store``; see the module docstring.

    Build one with :meth:`open` (a new run) or :meth:`adopt` (a dead run, for a sweeper);
    a caller that already holds the run's claim (the sweep, under the lock it took) may
    build one directly, with ``written=True`` for a run that has a record.
    """

    def __init__(self, store: RunStore, claim: RunClaim, run: RunRecord, *, written: bool) -> None:
        self.store, self.claim, self.run = store, claim, run
        self.closed = False
        self._written = written  # the store holds a record of this run
        self._deferred: Optional[asyncio.TimerHandle] = None
        self._writes: Set["asyncio.Future[None]"] = set()
        self._write_lock: Optional[asyncio.Lock] = None
        self._lock_loop: Optional[asyncio.AbstractEventLoop] = None

    @classmethod
    async def open(cls, store: RunStore, run_id: str, persona: str) -> "RunOwner":
        """Claim ``run_id`` for this process; nothing is written until there is something to keep.

        Raises RegistryError if the run id is in use or already has a record.
        """
        claim = await store.claim_new(run_id)
        store.keep_alive(claim)  # the heartbeat, until finish
        return cls(store, claim, RunRecord(run_id, persona, socket.gethostname(), os.getpid()), written=False)

    @classmethod
    async def adopt(cls, store: RunStore, run_id: str) -> Optional["RunOwner"]:
        """Take over a dead run to release what it left; None while its owner lives or if it
        has no record. Raises CorruptRecordError (the claim given up) for an untrusted record."""
        claim = await store.claim_dead(run_id)
        if claim is None:
            return None
        try:
            run = await store.load(claim)
        except BaseException:
            store.unclaim(claim, forget=False)
            raise
        if run is None:
            store.unclaim(claim, forget=True)
            return None
        return cls(store, claim, run, written=True)

    def resource_count(self) -> int:
        """How many resources the run still holds (intents included)."""
        return len(self.run.resources)

    # -- writing -------------------------------------------------------------------------
    async def save(self) -> None:
        """Write the whole record now, carrying any change still waiting; durable on return.

        Raises RegistryError naming the path and the fix.
        """
        self._cancel_deferred()
        async with self._lock():
            self._written = True  # before the await: a cancelled caller does not stop the write
            await self.store.save(self.claim, self.run)

    def save_soon(self, delay: float = HELD_WRITE_DELAY) -> None:
        """Write within ``delay`` seconds, unless a write made meanwhile carries the change."""
        if self._deferred is None and not self.closed:
            self._deferred = asyncio.get_running_loop().call_later(delay, self.save_in_background)

    def save_in_background(self) -> None:
        """Start a write now without waiting for it; a failure becomes a warning."""
        self._deferred = None
        if self.closed:
            return
        task = asyncio.ensure_future(self._save_warning_on_failure())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _save_warning_on_failure(self) -> None:
        try:
            await self.save()
        except PersonaError as exc:
            warnings.warn(f"{exc}; what the run holds stays on record as of its last good write "
                          "(intents are resolved by the sweep)", ResourceLeftWarning, stacklevel=2)

    async def drain(self) -> None:
        """Wait for every write started in the background on this loop.

        A write pending on another loop (the test's loop, interrupted, seen from a
        signal path's fresh loop) cannot be awaited here; it is not needed either:
        every write carries the whole record, so the next one from this loop does.
        """
        self._cancel_deferred()
        loop = asyncio.get_running_loop()
        while True:
            mine = [write for write in self._writes if write.get_loop() is loop]
            if not mine:
                return
            await asyncio.gather(*mine, return_exceptions=True)

    def _lock(self) -> asyncio.Lock:
        """One write at a time, per event loop (a signal path runs on a loop of its own)."""
        loop = asyncio.get_running_loop()
        if self._write_lock is None or self._lock_loop is not loop:
            self._write_lock, self._lock_loop = asyncio.Lock(), loop
        return self._write_lock

    def _cancel_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    # -- releasing and finishing ---------------------------------------------------------
    async def release(self, backend_for: BackendFor, *, concurrency: int = DEFAULT_CONCURRENCY,
                      limits: Optional[Any] = None) -> List[Outcome]:
        """Release every live resource (see :func:`release_run`); progress written coalesced."""
        self._cancel_deferred()
        try:
            return await release_run(self.run, backend_for, self.save_in_background,
                                     concurrency=concurrency, limits=limits)
        finally:
            await self.drain()

    async def finish(self) -> bool:
        """Delete the record and forget the claim if nothing is left, else keep both.

        Never raises a failure of the store (it warns, naming the path and the fix);
        the claim is always given up. Returns True when nothing is left. Safe twice.
        """
        if self.closed:
            return not self.run.resources
        left = bool(self.run.resources)
        self.store.stop_keep_alive(self.claim)
        try:
            await self.drain()
            self.closed = True
            await self._settle_record(left)
        finally:
            self.closed = True
            self.store.unclaim(self.claim, forget=not left)
        return not left

    async def _settle_record(self, left: bool) -> None:
        try:
            if left:
                async with self._lock():
                    await self.store.save(self.claim, self.run)
            elif self._written:
                await self.store.delete(self.claim)
        except (PersonaError, OSError) as exc:
            what = (f"{self.resource_count()} resource(s) of run {self.run.run_id} stay as last "
                    "recorded, for python -m taos_persona.sweep") if left else (
                    f"run {self.run.run_id} released everything, but its record stays (released "
                    "again, harmlessly, by the next sweep)")
            warnings.warn(f"{_describe(exc)} ({self.store.location}); {what}; fix: make the "
                          "registry writable", ResourceLeftWarning, stacklevel=3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RegistryError) or not isinstance(exc, OSError):
        return str(exc)
    return f"cannot update the run record: {exc.strerror}"

"""Where runs live: the small store interface a run's owner works through, and the file store.

A store keeps run records and knows which runs are alive. It offers four
things: list the runs, claim one (a new run for its owner; a dead run for a
sweeper), save a claimed run's record, delete it. The store decides what is
dead: :meth:`RunStore.claim_dead` applies its own rule. :class:`FileStore` is
the default, the ``.taos/test-fixtures`` registry: a claim is the run's
exclusive OS lock on ``{run_id}.lock``, a save a whole-file atomic rewrite
of ``{run_id}.json``, and a run is dead when :meth:`FileStore.judge` says so
(the lock, the witness of :mod:`.liveness`, the file system's clock). A
fleet store (PostgreSQL, issue 11) implements the same interface with
session advisory locks and rows; nothing above the store knows which one it
talks to.

The interface is async because a database store is (asyncpg), and because a
file store must keep its fsyncs off the event loop: one fsync can take tens
of milliseconds, and a process with a hundred fixtures would stall its loop
on them. Every ``await`` here returns once the change is durable.
"""
from __future__ import annotations

import abc
import asyncio
import socket
import time
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from . import liveness
from .errors import RegistryError, RunInUseError
from .locking import BaseRunLock
from .records import RunRecord
from .registry import Registry
from .sweep_report import Status

__all__ = ["RunClaim", "RunStore", "FileStore", "off_loop", "DEFAULT_OLDER_THAN"]

DEFAULT_OLDER_THAN = 30.0
"""Minutes: a run no lock or witness can judge (another host's) is dead only when its file is this old."""

T = TypeVar("T")


class RunClaim:
    """A store's proof that this process may change one run (its lock, its lease).

    ``run_id`` names the run; ``fresh`` is True for a claim whose liveness
    marker the claimer had to create itself (a sweeper must not sweep on it).
    """

    def __init__(self, run_id: str, *, fresh: bool = False) -> None:
        self.run_id = run_id
        self.fresh = fresh

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.run_id}>"


class RunStore(abc.ABC):
    """Run records and their liveness, behind four verbs. All methods are coroutines.

    Errors: every failure is a :class:`~taos_persona.errors.RegistryError`
    naming the place (path, table) and the fix; never a raw ``OSError``.
    """

    location: str
    """Where the records live, for messages (a directory, a database URL without secrets)."""

    @abc.abstractmethod
    async def list_runs(self) -> List[str]:
        """Run ids with a record in the store, live or dead, in no particular order."""

    @abc.abstractmethod
    async def claim_new(self, run_id: str) -> RunClaim:
        """Claim a run id for a new owner; no record is written (the claim alone reserves it).

        Raises RunInUseError if a live owner holds the run id, RegistryError if it already
        has a record.
        """

    @abc.abstractmethod
    async def claim_dead(self, run_id: str) -> Optional[RunClaim]:
        """Claim a run whose owner is gone, for a sweeper; None while its owner lives, or may live.

        The store's own rule decides (a file store: lock, witness, age; a fleet store: its
        lease). Raises CorruptRecordError (nothing claimed) for a record it cannot trust.
        """

    @abc.abstractmethod
    async def load(self, claim: RunClaim) -> Optional[RunRecord]:
        """The claimed run's record; None if it has none (its owner finished meanwhile).

        Raises CorruptRecordError for a record that cannot be trusted.
        """

    @abc.abstractmethod
    async def save(self, claim: RunClaim, run: RunRecord) -> None:
        """Replace the claimed run's record with ``run``; durable when this returns."""

    @abc.abstractmethod
    async def delete(self, claim: RunClaim) -> None:
        """Remove the claimed run's record (nothing of it is left); a missing record is fine."""

    @abc.abstractmethod
    def unclaim(self, claim: RunClaim, *, forget: bool) -> None:
        """Give the claim up. ``forget``: the run is finished, remove its liveness marker too.

        Synchronous and never raising: it runs on every exit path, signal handlers
        included, and the lock must always be dropped and its descriptor closed.
        """

    def keep_alive(self, claim: RunClaim) -> None:  # noqa: B027 - an optional hook, no-op by default
        """Start showing the claimed run alive (a heartbeat, a lease renewal) until
        :meth:`stop_keep_alive`; the default shows nothing more than the claim itself. Never raises."""

    def stop_keep_alive(self, claim: RunClaim) -> None:  # noqa: B027 - an optional hook, no-op by default
        """End :meth:`keep_alive`; safe twice, never raises."""


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run blocking ``function(*args)`` on a worker thread; inline where no thread can start.

    At interpreter exit (atexit, 3.9+) the default executor refuses new work:
    then the call runs here, which is fine, because nothing else is waiting on that loop.
    """
    loop = asyncio.get_running_loop()
    try:
        future = loop.run_in_executor(None, function, *args)
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
        return function(*args)
    return await future


class _FileClaim(RunClaim):
    def __init__(self, run_id: str, lock: BaseRunLock) -> None:
        super().__init__(run_id, fresh=lock.created)
        self.lock = lock


class FileStore(RunStore):
    """The registry directory: a claim is the run's lock file, a record its json file.

    ``older_than`` (seconds) is how old a run's file must be, by the file system's own
    clock, before a run no lock or witness can judge counts as dead (see :meth:`judge`).
    """

    def __init__(self, registry: Optional[Registry] = None, *,
                 older_than: float = DEFAULT_OLDER_THAN * 60.0) -> None:
        self.registry = registry if registry is not None else Registry()
        self.location = self.registry.path
        self.older_than = older_than
        self.host = socket.gethostname()
        self._fs_clock: Optional[Tuple[float, float]] = None  # (file system's now, our monotonic then)

    async def list_runs(self) -> List[str]:
        return sorted({entry.run_id for entry in self.registry.entries()
                       if entry.kind == "json" and entry.run_id and not entry.is_symlink})

    async def claim_new(self, run_id: str) -> RunClaim:
        return await off_loop(self._claim_new, run_id)

    def _claim_new(self, run_id: str) -> RunClaim:
        lock = self.registry.lock(run_id)
        if not lock.try_acquire():
            raise RunInUseError(f"run id {run_id} is in use by a live process (its lock "
                                f"{lock.path} is held); pick another run id")
        if self.registry.mtime(f"{run_id}.json") is not None or self.registry.is_odd_file(f"{run_id}.json"):
            lock.release()
            raise RegistryError(f"run id {run_id} already has a registry file with unreleased "
                                "resources; run python -m taos_persona.sweep or pick another run id")
        return _FileClaim(run_id, lock)

    async def claim(self, run_id: str) -> Optional[RunClaim]:
        """The run's lock whatever its state, for a sweeper that judges it next (:meth:`judge`);
        None while someone holds it. Raises RegistryError for a lock file we cannot open."""
        return await off_loop(self.claim_now, run_id)

    def claim_now(self, run_id: str) -> Optional[RunClaim]:
        """:meth:`claim`, blocking."""
        lock = self.registry.lock(run_id)
        return _FileClaim(run_id, lock) if lock.try_acquire() else None

    async def claim_dead(self, run_id: str) -> Optional[RunClaim]:
        claim = await self.claim(run_id)
        if claim is None:
            return None
        try:
            run = await self.load(claim)
            status = Status.SWEPT if run is None else await off_loop(self.judge, run, claim.fresh)
        except BaseException:
            self.unclaim(claim, forget=claim.fresh)
            raise
        if status is not Status.SWEPT:
            self.unclaim(claim, forget=claim.fresh)  # a lock file we made proves nothing: not kept
            return None
        return claim

    # -- judging a run whose lock we hold ----------------------------------------------------
    def judge(self, run: RunRecord, fresh: bool) -> Status:
        """Dead (``Status.SWEPT``), live, or too young to judge, for a run whose lock we hold.

        Alive if its witness says so. Dead if the witness says so, or if it is this machine's
        run and the lock file we took existed (``fresh`` False: a lock file we had to create
        proves nothing, ``rm *.lock``). Otherwise (another host, a lost lock file, no
        ``/proc``) dead only when its file is ``older_than`` old by the file system's clock,
        which a live owner's heartbeat keeps young. Blocking (it may write a probe file).
        """
        witness = run.witness()
        if witness is liveness.Verdict.ALIVE:
            return Status.LIVE
        if witness is liveness.Verdict.DEAD or (self.is_ours(run) and not fresh):
            return Status.SWEPT
        idle = self.idle_seconds(run.run_id)
        return Status.SWEPT if idle is not None and idle >= self.older_than else Status.YOUNG

    def is_ours(self, run: RunRecord) -> bool:
        """Written on this machine since its boot (by machine id; host name for records without)."""
        return liveness.this_machine(run.machine, run.proc_start) if run.machine else run.host == self.host

    def idle_seconds(self, run_id: str) -> Optional[float]:
        """How long ago the run's file was last written, by the file system's clock; None if gone."""
        written = self.registry.mtime(f"{run_id}.json")
        return None if written is None else max(0.0, self._fs_now() - written)

    def _fs_now(self) -> float:
        """Now, by the registry file system's clock: one probe file per store, carried forward by
        our monotonic clock; our own clock where we cannot write a probe."""
        if self._fs_clock is None:
            try:
                self._fs_clock = (self.registry.probe_now(), time.monotonic())
            except OSError:
                return time.time()
        probed, at = self._fs_clock
        return probed + (time.monotonic() - at)

    # -- records ------------------------------------------------------------------------------
    async def load(self, claim: RunClaim) -> Optional[RunRecord]:
        try:
            return await off_loop(self.registry.read, claim.run_id)
        except FileNotFoundError:
            return None

    async def save(self, claim: RunClaim, run: RunRecord) -> None:
        data = run.to_bytes()  # encoded here, on the loop: a consistent snapshot of the run
        await off_loop(self._write, run.run_id, data)

    def _write(self, run_id: str, data: bytes) -> None:
        try:
            self.registry.write_record(run_id, data)
        except RegistryError:
            raise
        except OSError as exc:
            raise RegistryError(f"cannot write registry file {self.registry.json_path(run_id)}: "
                                f"{exc.strerror}; make the registry directory writable, or set "
                                "TAOS_PERSONA_DIR to one that is") from exc

    async def delete(self, claim: RunClaim) -> None:
        await off_loop(self.registry.remove, f"{claim.run_id}.json")

    def unclaim(self, claim: RunClaim, *, forget: bool) -> None:
        lock = getattr(claim, "lock", None)
        if lock is None or not lock.held:
            return
        early = forget and lock.unlink_while_held
        if early:  # unlinked while still held (POSIX), so nobody locks a file about to vanish
            self.registry.remove(lock.path)  # quiet: a read-only registry must not keep the lock
        try:
            lock.release(unlink=forget and not early)
        except OSError:
            pass  # the descriptor is closed or gone either way; nothing to hand the caller

    def keep_alive(self, claim: RunClaim) -> None:
        lock = getattr(claim, "lock", None)
        if lock is not None:
            self.registry.keep_alive(claim.run_id, lock)

    def stop_keep_alive(self, claim: RunClaim) -> None:
        self.registry.stop_heartbeat(claim.run_id)

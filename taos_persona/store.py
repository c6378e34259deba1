"""Where runs live: the small store interface a run's owner works through, and the file store.

A store keeps run records and knows which runs are alive. It offers four
things: list the runs, claim one (a new run for its owner; a dead run for a
sweeper), save a claimed run's record, delete it. :class:`FileStore` is the
default, the ``.taos/test-fixtures`` registry: a claim is the run's
exclusive OS lock on ``{run_id}.lock``, a save a whole-file atomic rewrite
of ``{run_id}.json``. A fleet store (PostgreSQL, issue 11) implements the
same interface with session advisory locks and rows; nothing above the store
knows which one it talks to.

The interface is async because a database store is (asyncpg), and because a
file store must keep its fsyncs off the event loop: one fsync can take tens
of milliseconds, and a process with a hundred fixtures would stall its loop
on them. Every ``await`` here returns once the change is durable.
"""
from __future__ import annotations

import abc
import asyncio
import os
from typing import Any, Callable, List, Optional, TypeVar

from .errors import RegistryError, RunInUseError
from .locking import BaseRunLock, RunLock
from .records import RunRecord
from .registry import Registry

__all__ = ["RunClaim", "RunStore", "FileStore", "off_loop"]

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
        """Claim a run whose owner is gone, for a sweeper; None while its owner lives."""

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
    def __init__(self, run_id: str, lock: BaseRunLock, *, fresh: bool = False) -> None:
        super().__init__(run_id, fresh=fresh)
        self.lock = lock


class FileStore(RunStore):
    """The registry directory: a claim is the run's lock file, a record its json file."""

    def __init__(self, registry: Optional[Registry] = None) -> None:
        self.registry = registry if registry is not None else Registry()
        self.location = self.registry.path

    async def list_runs(self) -> List[str]:
        return sorted({entry.run_id for entry in self.registry.entries()
                       if entry.kind == "json" and entry.run_id and not entry.is_symlink})

    async def claim_new(self, run_id: str) -> RunClaim:
        return await off_loop(self._claim_new, run_id)

    def _claim_new(self, run_id: str) -> RunClaim:
        lock = RunLock(self.registry.lock_path(run_id))
        if not lock.try_acquire():
            raise RunInUseError(f"run id {run_id} is in use by a live process (its lock "
                                f"{lock.path} is held); pick another run id")
        if os.path.lexists(self.registry.json_path(run_id)):
            lock.release()
            raise RegistryError(f"run id {run_id} already has a registry file with unreleased "
                                "resources; run python -m taos_persona.sweep or pick another run id")
        return _FileClaim(run_id, lock)

    async def claim_dead(self, run_id: str) -> Optional[RunClaim]:
        return await off_loop(self._claim_dead, run_id)

    def _claim_dead(self, run_id: str) -> Optional[RunClaim]:
        fresh = not os.path.lexists(self.registry.lock_path(run_id))
        lock = RunLock(self.registry.lock_path(run_id))
        return _FileClaim(run_id, lock, fresh=fresh) if lock.try_acquire() else None

    async def load(self, claim: RunClaim) -> Optional[RunRecord]:
        try:
            return await off_loop(self.registry.read, claim.run_id)
        except FileNotFoundError:
            return None

    async def save(self, claim: RunClaim, run: RunRecord) -> None:
        data = run.to_bytes()  # encoded here, on the loop: a consistent snapshot of the run
        path = self.registry.json_path(run.run_id)
        await off_loop(self._write, path, data, f".{run.run_id}.json.")

    def _write(self, path: str, data: bytes, prefix: str) -> None:
        try:
            self.registry.write_bytes(path, data, temp_prefix=prefix)
        except RegistryError:
            raise
        except OSError as exc:
            raise RegistryError(f"cannot write registry file {path}: {exc.strerror}; make the "
                                "registry directory writable, or set TAOS_PERSONA_DIR to one that is") from exc

    async def delete(self, claim: RunClaim) -> None:
        await off_loop(self.registry.remove, self.registry.json_path(claim.run_id))

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

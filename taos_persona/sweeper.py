"""The sweep: release what dead runs left behind, and never touch a live one.

A run whose lock we can take, written by this host, is dead: swept at once,
whatever its age. Dead runs are swept concurrently (runs are independent),
with one bound on release requests in flight per backend across the whole
sweep, and the directory is listed once. A run whose lock is held is alive and left alone. A run
from another host (a shared directory) has no lock we can trust: it is
swept only when its last write is older than ``older_than`` minutes.
Unreadable files go to ``quarantine/``; nothing here is ever fatal.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .backends.base import Backend, backend_class, load_class
from .errors import ConfigurationError, PersonaError, RegistryError
from .locking import RunLock
from .records import CorruptRecordError, FutureSchemaError, ResourceRecord, RunRecord
from .registry import DirEntry, Registry, is_odd_file
from .outcomes import Outcome, Result
from .releaser import DEFAULT_CONCURRENCY
from .run import RunOwner
from .store import FileStore, RunClaim

__all__ = ["sweep", "sweep_async", "SweepReport", "load_plugins", "BackendPool"]

DEFAULT_OLDER_THAN = 30.0
_MAX_RUNS_IN_FLIGHT = 64
"""Dead runs swept at once, at most: each holds its lock file open while it is swept."""


@dataclass
class SweepReport:
    """What a sweep did; ``exit_status`` is 0 when nothing it could reach is left."""

    directory: str
    dry_run: bool = False
    outcomes: List[Outcome] = field(default_factory=list)
    swept_runs: List[str] = field(default_factory=list)
    live_runs: List[str] = field(default_factory=list)
    young_foreign_runs: List[str] = field(default_factory=list)
    quarantined: List[Dict[str, str]] = field(default_factory=list)
    problems: List[Dict[str, str]] = field(default_factory=list)

    @property
    def released(self) -> List[Outcome]:
        """Resources released now (or found never created): a dry run releases none."""
        return [outcome for outcome in self.outcomes if outcome.result in (Result.RELEASED, Result.NOTHING_CREATED)]

    @property
    def kept(self) -> List[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.kept]

    @property
    def exit_status(self) -> int:
        return 1 if self.kept or self.problems else 0

    def to_json(self) -> Dict[str, object]:
        return {"directory": self.directory, "dry_run": self.dry_run, "exit_status": self.exit_status,
                "swept_runs": self.swept_runs, "live_runs": self.live_runs,
                "young_foreign_runs": self.young_foreign_runs, "quarantined": self.quarantined,
                "problems": self.problems,
                "resources": [outcome.to_json() for outcome in self.outcomes]}


class BackendPool:
    """One backend instance per class for the whole sweep, so connections are pooled."""

    def __init__(self) -> None:
        self._instances: Dict[str, Backend] = {}

    def __call__(self, record: ResourceRecord) -> Backend:
        key = record.backend_path or record.backend
        if key not in self._instances:
            self._instances[key] = _load_backend(record)()
        return self._instances[key]

    async def aclose(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for instance in instances:
            await instance.aclose()


def _load_backend(record: ResourceRecord) -> type:
    """The record's class by import path, else by registered name; a clear error if neither."""
    try:
        return load_class(record.backend_path)
    except (ImportError, AttributeError, TypeError, ValueError):
        pass
    try:
        return backend_class(record.backend)
    except PersonaError:
        raise ConfigurationError(
            f"cannot load backend {record.backend!r} ({record.backend_path}); import the module "
            "that defines it with --plugin MODULE or TAOS_PERSONA_PLUGINS") from None


def load_plugins(modules: Iterable[str] = ()) -> List[str]:
    """Import ``modules`` and those named in ``$TAOS_PERSONA_PLUGINS`` (comma separated)."""
    names = list(modules) + [name.strip() for name in
                             os.environ.get("TAOS_PERSONA_PLUGINS", "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import plugin module {name!r}: {exc}; check the name "
                                     "and that it is importable (PYTHONPATH)") from exc
    return names


async def sweep_async(directory: Optional[str] = None, *, older_than: float = DEFAULT_OLDER_THAN,
                      dry_run: bool = False, plugins: Sequence[str] = (),
                      concurrency: int = DEFAULT_CONCURRENCY) -> SweepReport:
    """Sweep a registry directory from inside a running event loop."""
    load_plugins(plugins)
    registry = Registry(directory)
    report = SweepReport(registry.path, dry_run=dry_run)
    try:
        if not os.path.lexists(registry.path):
            return report
        registry.check_safe()
    except RegistryError as exc:
        report.problems.append({"file": registry.path, "error": str(exc)})
        return report
    pool = BackendPool()
    try:
        await _Sweep(registry, report, pool, older_than * 60.0, concurrency).run()
    finally:
        await pool.aclose()
    return report


def sweep(directory: Optional[str] = None, **options: object) -> SweepReport:
    """Sweep a registry directory (blocking). Inside an event loop, ``await sweep_async(...)``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(sweep_async(directory, **options))  # type: ignore[arg-type]
    raise RuntimeError("sweep() called inside a running event loop; use await sweep_async(...)")


class _Sweep:
    """One pass over a directory: classify entries, then sweep each run we may take."""

    def __init__(self, registry: Registry, report: SweepReport, pool: BackendPool,
                 older_than_seconds: float, concurrency: int) -> None:
        self.registry, self.report, self.pool = registry, report, pool
        self.older_than_seconds, self.concurrency = older_than_seconds, concurrency
        self.host = socket.gethostname()
        self.limits: Dict[str, asyncio.Semaphore] = {}  # per backend, shared by every run
        # As many runs as requests per backend: enough to keep every backend busy even when
        # each run holds one resource, few enough that a run is done in a round trip or two.
        self.slots = asyncio.Semaphore(max(1, min(concurrency, _MAX_RUNS_IN_FLIGHT)))

    async def run(self) -> None:
        runs: Dict[str, List[DirEntry]] = {}
        for entry in list(self.registry.entries()):
            if entry.kind == "foreign" or entry.is_symlink or (entry.is_dir and entry.kind == "json"):
                self._quarantine(entry.name, "not a run record of ours (foreign, symlink or directory)")
            else:
                runs.setdefault(entry.run_id or "", []).append(entry)
        tasks: List["asyncio.Future[None]"] = []
        try:
            await self._start_runs(runs, tasks)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:  # cancelled: every started run writes its progress, drops its lock
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        self._sort_report()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _start_runs(self, runs: Dict[str, List[DirEntry]], tasks: List["asyncio.Future[None]"]) -> None:
        """Start a task per dead run, at most ``slots`` at a time; live runs are only noted."""
        for run_id, entries in sorted(runs.items()):
            temps = [entry.name for entry in entries if entry.kind == "temp"]
            if not any(entry.kind == "json" for entry in entries):
                self._sweep_lone_files(run_id, temps)
                continue
            await self.slots.acquire()
            taken = self._lock_run(run_id)
            if taken is None:
                self.slots.release()
            else:
                tasks.append(asyncio.ensure_future(self._sweep_run(run_id, temps, *taken)))

    def _sort_report(self) -> None:
        """Runs finish in any order; report them by run id, as a one-at-a-time sweep would."""
        for names in (self.report.swept_runs, self.report.live_runs, self.report.young_foreign_runs):
            names.sort()
        self.report.outcomes.sort(key=lambda outcome: outcome.run_id)  # stable: newest first per run

    def _quarantine(self, name: str, reason: str) -> None:
        if self.report.dry_run:
            self.report.quarantined.append({"file": name, "reason": reason, "moved_to": ""})
            return
        try:
            moved = self.registry.quarantine(name)
        except OSError as exc:
            self.report.problems.append({"file": name, "error": f"cannot quarantine: {exc.strerror}"})
            return
        if moved is not None:
            self.report.quarantined.append({"file": name, "reason": reason, "moved_to": moved})

    def _take_lock(self, run_id: str) -> Optional[RunLock]:
        """The run's lock if we can take it; quarantines a lock path that is not a file."""
        lock = RunLock(self.registry.lock_path(run_id))
        try:
            return lock if lock.try_acquire() else None
        except RegistryError as exc:
            if not is_odd_file(lock.path):  # a plain lock file we may not open (EACCES, EROFS,
                # EMFILE): it may be a live run's, so it is reported and never moved
                self.report.problems.append({"file": f"{run_id}.lock", "error": str(exc)})
                return None
            self._quarantine(f"{run_id}.lock", "lock path is not a regular file")
        try:
            return lock if lock.try_acquire() else None
        except RegistryError as exc:
            self.report.problems.append({"file": f"{run_id}.lock", "error": str(exc)})
            return None

    def _lock_run(self, run_id: str) -> Optional[Tuple[RunLock, bool]]:
        """(its lock, whether we made the lock file) for a dead run; None for a live one."""
        made_lock_file = not os.path.lexists(self.registry.lock_path(run_id))
        lock = self._take_lock(run_id)
        if lock is None:
            self.report.live_runs.append(run_id)
            return None
        return lock, made_lock_file

    async def _sweep_run(self, run_id: str, temps: List[str], lock: RunLock, made_lock_file: bool) -> None:
        unlink_lock = False
        try:
            unlink_lock = await self._sweep_locked_run(run_id, temps)
        finally:
            self.slots.release()
            dry_run = self.report.dry_run
            lock.release(unlink=(unlink_lock and not dry_run) or (made_lock_file and dry_run))

    async def _sweep_locked_run(self, run_id: str, temps: List[str]) -> bool:
        """Sweep a run whose lock we hold; True when nothing of it is left."""
        try:
            run = self.registry.read(run_id)
        except FileNotFoundError:
            return True  # its owner finished between our listing and our lock
        except FutureSchemaError as exc:
            self.report.problems.append({"file": f"{run_id}.json", "error": str(exc)})
            return False
        except CorruptRecordError as exc:
            self._quarantine(f"{run_id}.json", str(exc))
            return True
        except RegistryError as exc:  # unreadable for now (EACCES, EMFILE): left for a later sweep
            self.report.problems.append({"file": f"{run_id}.json", "error": str(exc)})
            return False
        if run.run_id != run_id:
            self._quarantine(f"{run_id}.json", f"file name does not match its run id {run.run_id!r}")
            return True
        if run.host != self.host and time.time() - run.updated < self.older_than_seconds:
            self.report.young_foreign_runs.append(run_id)
            return False
        return await self._release(run, temps)

    async def _release(self, run: RunRecord, temps: List[str]) -> bool:
        self.report.swept_runs.append(run.run_id)
        if self.report.dry_run:
            self.report.outcomes.extend(Outcome(run.run_id, record.seq, record.backend, record.state,
                                                Result.WOULD_RELEASE) for record in reversed(run.live()))
            return False
        owner = RunOwner(FileStore(self.registry), RunClaim(run.run_id), run, written=True)  # lock held above
        outcomes = await owner.release(self.pool, concurrency=self.concurrency, limits=self.limits)
        self.report.outcomes.extend(outcomes)
        if run.resources:
            return False
        # An unlink can wait milliseconds on the file system's journal: not on the event loop,
        # where the other runs' releases are in flight.
        await asyncio.get_running_loop().run_in_executor(None, self._remove_run_files, run.run_id, temps)
        return True

    def _remove_run_files(self, run_id: str, temps: List[str]) -> None:
        self.registry.remove(self.registry.json_path(run_id))
        self._remove_temp_files(temps)

    def _remove_temp_files(self, temps: List[str]) -> None:
        """Temp files a dead run left mid-write, as the one listing of the directory found them."""
        for name in temps:
            self.registry.remove(os.path.join(self.registry.path, name))

    def _sweep_lone_files(self, run_id: str, temps: List[str]) -> None:
        """Lock or temp files with no json: leftovers of a run that died starting or finishing.

        A starting fixture holds its lock before it writes anything, and retries if
        we take a brand-new lock file from under it, so no grace period is needed.
        """
        if self.report.dry_run:
            return
        lock = self._take_lock(run_id)
        if lock is None:
            return
        try:
            if os.path.lexists(self.registry.json_path(run_id)):
                return  # a run that just wrote its first record: leave it for the next pass
            self._remove_temp_files(temps)
        finally:
            lock.release(unlink=not os.path.lexists(self.registry.json_path(run_id)))

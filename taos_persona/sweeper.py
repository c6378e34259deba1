"""The sweep: release what dead runs left behind, and never touch a live one.

The store decides which runs are dead (:meth:`.store.FileStore.judge`): a
run is alive while its lock is held, or while its witness (the owner's
pid and process start time, on this machine) says so. A run of this machine
whose existing lock file we can take is dead: swept at once, whatever its
age. A lock file we had to create ourselves proves nothing (``rm *.lock``):
then the witness decides, and where it cannot (another machine, a shared
directory, no ``/proc``), the run is swept only when its file is older than
``older_than`` minutes, by the file system's own clock (a probe file we
write beside it), never by the clock of the host that wrote it; a live
owner's heartbeat keeps its file young. A dead run is claimed through the
store and released through a :class:`.run.RunOwner`, as its owner would have.

Backends are resolved through ``BACKENDS`` and the plugins the user named
only: the class path a record carries is a hint, checked, never imported.
Dead runs are swept concurrently, with one bound on release requests in
flight per backend across the whole sweep, and the directory is listed once.
Only entries named like our run files are ever touched: anything else is
reported and left alone, and a directory that does not look like a registry
(:meth:`.registry.Registry.check_is_registry`) is refused whole. Unreadable
run files go to ``quarantine/``; a run record there counts as left, in this
sweep and every later one, until an operator deletes it. Nothing here is ever fatal.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import json
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Type, cast

from ._redact import describe_error
from .backends.base import BACKENDS, Backend, backend_class, class_path
from .errors import ConfigurationError, PersonaError, RegistryError
from .outcomes import Outcome, Result, public_identity
from .records import HELD, CorruptRecordError, FutureSchemaError, ResourceRecord, RunRecord
from .registry import DirEntry, Registry
from .releaser import DEFAULT_CONCURRENCY, release_run
from .run import RunOwner
from .store import DEFAULT_OLDER_THAN, FileStore, RunClaim
from .sweep_report import QUARANTINE_FIX, RunInfo, Status, SweepReport

__all__ = ["sweep_registry", "sweep_async", "forget_entries", "forget_async", "SweepReport", "RunInfo", "DEFAULT_OLDER_THAN",
           "load_plugins", "BackendPool"]

_MAX_RUNS_IN_FLIGHT = 64
"""Dead runs swept at once, at most: each holds its lock file open while it is swept."""


class BackendPool:
    """One backend instance per class for the whole sweep, so connections are pooled."""

    def __init__(self) -> None:
        self._instances: Dict[Tuple[str, str], Backend] = {}

    def __call__(self, record: ResourceRecord) -> Backend:
        key = (record.backend, record.backend_path)  # each record's path is checked, not only the first
        if key not in self._instances:
            self._instances[key] = resolve_backend(record)()
        return self._instances[key]

    async def aclose(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for instance in instances:
            await instance.aclose()


def resolve_backend(record: ResourceRecord) -> Type[Backend]:
    """The registered class for a record's backend name; its class path is only a hint, checked.

    Nothing a record names is ever imported: a record is data. Raises ConfigurationError
    (the record is kept and reported) for a name nobody registered, or a path that differs.
    """
    try:
        cls = BACKENDS[record.backend] if record.backend in BACKENDS else backend_class(record.backend)
    except PersonaError:
        raise ConfigurationError(
            f"no backend {record.backend!r} is registered (the record says {record.backend_path}); "
            "import the module that defines it with --plugin MODULE or TAOS_PERSONA_PLUGINS") from None
    if record.backend_path and record.backend_path != class_path(cls):
        raise ConfigurationError(
            f"the record says backend {record.backend!r} is {record.backend_path}, but {class_path(cls)} "
            "is registered under that name; name the right plugin with --plugin MODULE, or check the "
            "resource by hand and drop it with --forget RUN_ID:SEQ")
    return cls


def identity_of(backend: Optional[Backend], record: ResourceRecord) -> Optional[str]:
    """A resource's public identity (never a secret): the backend's own answer, else common keys."""
    data = record.token if record.token is not None else record.planned
    if backend is None:
        return public_identity(data)
    try:
        answer = backend.identity(data)
    except Exception:  # noqa: BLE001 - a report line is no reason to fail a sweep
        return None
    return answer if isinstance(answer, str) else None


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
                      concurrency: int = DEFAULT_CONCURRENCY, describe_live_runs: bool = False) -> SweepReport:
    """Sweep a registry directory from inside a running event loop.

    ``describe_live_runs`` reads each live run's record for the report (persona, host, pid,
    age), as the CLI does; a fixture's startup sweep skips that (1,000 reads cost ~0.1 s).
    """
    report = SweepReport("", dry_run=dry_run)
    async with _opened(directory, plugins, report) as sweep:
        if sweep is not None:
            sweep.store.older_than, sweep.concurrency = older_than * 60.0, concurrency
            sweep.describe_live_runs = describe_live_runs
            await sweep.run()
    return report


async def forget_async(directory: Optional[str], entries: Sequence[Tuple[str, int]], *,
                       older_than: float = DEFAULT_OLDER_THAN, plugins: Sequence[str] = ()) -> SweepReport:
    """Drop ``(run_id, seq)`` entries an operator checked by hand; a live run's are refused."""
    report = SweepReport("")
    async with _opened(directory, plugins, report) as sweep:
        if sweep is not None:
            sweep.store.older_than = older_than * 60.0
            for run_id in sorted({run_id for run_id, _ in entries}):
                sweep.forget(run_id, sorted({seq for rid, seq in entries if rid == run_id}))
    return report


class _opened:
    """Open the registry for one pass (its descriptor closed after); None if there is nothing to do."""

    def __init__(self, directory: Optional[str], plugins: Sequence[str], report: SweepReport) -> None:
        load_plugins(plugins)
        self.registry, self.report = Registry(directory), report
        report.directory = self.registry.path
        self.pool = BackendPool()

    async def __aenter__(self) -> Optional["_Sweep"]:
        try:
            self.registry.check_safe()
            self.registry.check_is_registry()
        except FileNotFoundError:
            return None
        except RegistryError as exc:
            self.report.problems.append({"file": self.registry.path, "error": str(exc)})
            return None
        return _Sweep(FileStore(self.registry), self.report, self.pool, DEFAULT_CONCURRENCY)

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.pool.aclose()
        finally:
            self.registry.close()


def sweep_registry(directory: Optional[str] = None, **options: Any) -> SweepReport:
    """Sweep a registry directory (blocking). Inside an event loop, ``await sweep_async(...)``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(sweep_async(directory, **options))
    raise RuntimeError("sweep_registry() called inside a running event loop; use await sweep_async(...)")


def forget_entries(directory: Optional[str], entries: Sequence[Tuple[str, int]], **options: Any) -> SweepReport:
    """:func:`forget_async`, blocking."""
    return asyncio.run(forget_async(directory, entries, **options))


sweep = sweep_registry
"""The old name, kept for ``from taos_persona.sweeper import sweep``. The package exports the
function as ``sweep_registry`` only: ``taos_persona.sweep`` is the CLI module."""


class _Sweep:
    """One pass over a directory: classify entries, then sweep each run we may take."""

    def __init__(self, store: FileStore, report: SweepReport, pool: BackendPool, concurrency: int) -> None:
        self.store, self.registry, self.report, self.pool = store, store.registry, report, pool
        self.concurrency = concurrency
        self.limits: Dict[str, asyncio.Semaphore] = {}  # per backend, shared by every run
        self.describe_live_runs = True
        self.slots: Optional[asyncio.Semaphore] = None
        self.set_aside: Set[str] = set()  # names quarantined this pass (in a dry run: to be)
        self.run_ids: List[str] = []  # every run of the listing
        self.claims: Dict[str, RunClaim] = {}  # runs whose lock this pass holds
        self.dead: Set[str] = set()  # runs judged dead this pass
        self.shared: Optional[Dict[Tuple[str, str], str]] = None  # (backend, key) -> a live run holding it

    async def run(self) -> None:
        # As many runs as requests per backend: enough to keep every backend busy even when
        # each run holds one resource, few enough that a run is done in a round trip or two.
        self.slots = asyncio.Semaphore(max(1, min(self.concurrency, _MAX_RUNS_IN_FLIGHT)))
        runs = self._group_runs()
        self.run_ids = sorted(runs)
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
        self._report_quarantine()
        for result in results:
            if isinstance(result, (SystemExit, KeyboardInterrupt)):
                raise result
            if isinstance(result, BaseException):  # never a raw traceback from one run's task:
                self.report.problems.append({"file": self.registry.path,  # reported, exit 1
                                             "error": f"a run's sweep failed: {describe_error(result)}"})

    def _group_runs(self) -> Dict[str, List[DirEntry]]:
        """The directory's entries by run id. Only entries named like our run files are ever
        acted on: any other entry is reported and left alone, and one named like ours that is
        a symlink (or a directory for a json) goes to quarantine, never followed."""
        runs: Dict[str, List[DirEntry]] = {}
        for entry in list(self.registry.entries()):
            if entry.kind == "marker" or (entry.kind == "probe" and not entry.is_symlink):
                continue  # the registry's marker; another sweeper's clock probe, gone in a moment
            if entry.kind == "foreign":
                self.report.foreign.append({"file": entry.name, "note": "not a run file of ours: left alone"})
            elif entry.is_symlink or (entry.is_dir and entry.kind == "json"):
                self._quarantine(entry.name, "named like a run file but a symlink or a directory")
            else:
                runs.setdefault(entry.run_id or "", []).append(entry)
        return runs

    def _report_quarantine(self) -> None:
        """Every run record in ``quarantine/``, moved now or by an earlier sweep, is left until an
        operator deals with it (what it held may be alive at the provider)."""
        moved = {item["moved_to"] for item in self.report.quarantined}
        try:
            paths = self.registry.quarantined_records()
        except RegistryError as exc:
            self.report.problems.append({"file": os.path.join(self.registry.path, "quarantine"), "error": str(exc)})
            return
        for path in paths:
            if path not in moved:
                self.report.left_in_quarantine.append({"file": path, "fix": QUARANTINE_FIX})

    async def _start_runs(self, runs: Dict[str, List[DirEntry]], tasks: List["asyncio.Future[None]"]) -> None:
        """Start a task per run whose lock we take, at most ``slots`` at a time."""
        assert self.slots is not None
        for run_id, entries in sorted(runs.items()):
            temps = [entry.name for entry in entries if entry.kind == "temp"]
            if not any(entry.kind == "json" for entry in entries):
                self._sweep_lone_files(run_id, temps)
                continue
            await self.slots.acquire()
            claim = self._claim_now(run_id)  # on the loop: an flock attempt never blocks
            if claim is None:
                self.slots.release()
                self._note_run(run_id, Status.LIVE)
            else:
                self.claims[run_id] = claim
                tasks.append(asyncio.ensure_future(self._sweep_run(run_id, temps, claim)))

    def _sort_report(self) -> None:
        """Runs finish in any order; report them by run id, as a one-at-a-time sweep would."""
        self.report.runs.sort(key=lambda run: run.run_id)
        self.report.outcomes.sort(key=lambda outcome: outcome.run_id)  # stable: newest first per run

    def _quarantine(self, name: str, reason: str) -> None:
        """Move ``name`` to quarantine (a dry run notes it would, and goes on as if it had)."""
        if name in self.set_aside:
            return
        if self.report.dry_run:
            self.set_aside.add(name)
            self.report.quarantined.append({"file": name, "reason": reason, "moved_to": ""})
            return
        try:
            moved = self.registry.quarantine(name)
        except (OSError, RegistryError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            self.report.problems.append({"file": name, "error": f"cannot quarantine: {why}"})
            return
        self.set_aside.add(name)
        if moved is not None:
            self.report.quarantined.append({"file": name, "reason": reason, "moved_to": moved})

    def _claim_now(self, run_id: str) -> Optional[RunClaim]:
        """The run's claim if we can take it, None if held; quarantines a lock path that is not a file.

        A lock path set aside (quarantined, or in a dry run to be) leaves a lock file the real
        sweep creates: a dry run claims as if it had (``fresh``, holding nothing), so that both
        judge the run alike.
        """
        lock = f"{run_id}.lock"
        if lock not in self.set_aside:
            try:
                return self.store.claim_now(run_id)
            except RegistryError as exc:
                if not self.registry.is_odd_file(lock):  # a plain lock file we may not open
                    # (EACCES, EROFS, EMFILE): it may be a live run's, so it is reported and never moved
                    self.report.problems.append({"file": lock, "error": str(exc)})
                    return None
                self._quarantine(lock, "lock path is not a regular file")
        if self.report.dry_run:
            return RunClaim(run_id, fresh=True)
        try:
            return self.store.claim_now(run_id)
        except RegistryError as exc:
            self.report.problems.append({"file": f"{run_id}.lock", "error": str(exc)})
            return None

    # -- reporting a run ------------------------------------------------------------------
    def _note_run(self, run_id: str, status: Status, run: Optional[RunRecord] = None) -> None:
        """Report a run with what its record says (read now, for a run we did not lock)."""
        if run is None and self.describe_live_runs:
            try:
                run = self.registry.read(run_id)
            except (OSError, PersonaError):
                run = None
        ours = run is not None and self.store.is_ours(run)
        self.report.runs.append(RunInfo(
            run_id, status, run.persona if run else None, run.host if run else None, run.pid if run else None,
            round(time.time() - run.started, 1) if run and ours else None,
            _rounded(self.store.idle_seconds(run_id)) if run else None))

    # -- sweeping a run -----------------------------------------------------------------------
    async def _sweep_run(self, run_id: str, temps: List[str], claim: RunClaim) -> None:
        done, swept = False, False
        try:
            done, swept = await self._sweep_claimed_run(run_id, temps, claim)
        finally:
            assert self.slots is not None
            self.slots.release()
            dry_run = self.report.dry_run
            self.store.unclaim(claim, forget=(done and not dry_run) or (claim.fresh and (dry_run or not swept)))

    async def _sweep_claimed_run(self, run_id: str, temps: List[str], claim: RunClaim) -> Tuple[bool, bool]:
        """Sweep a run whose claim we hold: (nothing of it is left, it was judged dead)."""
        run = self._read_locked(run_id)
        if run is None:
            return self.registry.mtime(f"{run_id}.json") is None, True
        status = self.store.judge(run, claim.fresh)
        self._note_run(run_id, status, run)
        if status is not Status.SWEPT:
            return False, False
        self.dead.add(run_id)
        return await self._release(RunOwner(self.store, claim, run, written=True), temps), True

    def _read_locked(self, run_id: str) -> Optional[RunRecord]:
        """The run's record, or None (gone, quarantined, or reported) when there is nothing to judge."""
        try:
            run = self.registry.read(run_id)
        except FileNotFoundError:
            return None  # its owner finished between our listing and our lock
        except FutureSchemaError as exc:
            self.report.problems.append({"file": f"{run_id}.json", "error": str(exc)})
            return None
        except CorruptRecordError as exc:
            self._quarantine(f"{run_id}.json", str(exc))
            return None
        except RegistryError as exc:  # unreadable for now (EACCES, EMFILE): left for a later sweep
            self.report.problems.append({"file": f"{run_id}.json", "error": str(exc)})
            return None
        if run.run_id != run_id:
            self._quarantine(f"{run_id}.json", f"file name does not match its run id {run.run_id!r}")
            return None
        return run

    def _identities(self, run: RunRecord) -> Dict[int, Optional[str]]:
        found: Dict[int, Optional[str]] = {}
        for record in run.live():
            try:
                backend: Optional[Backend] = self.pool(record)
            except PersonaError:
                backend = None
            found[record.seq] = identity_of(backend, record)
        return found

    async def _release(self, owner: RunOwner, temps: List[str]) -> bool:
        """Release a dead run through its new owner (progress written coalesced, off the loop);
        True when nothing of it is left and its files are gone. A dry run only predicts."""
        run = owner.run
        identities = self._identities(run)
        if self.report.dry_run:
            outcomes = await self._predict(run)
        else:
            outcomes = await owner.release(self._backend_for, concurrency=self.concurrency, limits=self.limits)
        self.report.outcomes.extend(dataclasses.replace(outcome, identity=identities.get(outcome.seq))
                                    for outcome in outcomes)
        if run.resources or self.report.dry_run:
            return False
        # An unlink can wait milliseconds on the file system's journal: not on the event loop,
        # where the other runs' releases are in flight.
        await asyncio.get_running_loop().run_in_executor(None, self._remove_temp_files, temps)
        return await owner.finish()  # deletes the record and the lock file

    async def _predict(self, run: RunRecord) -> List[Outcome]:
        """A dry run's outcomes: the real release path on a copy of the run, with every release
        call left out (``recover`` still looks, read-only), so the prediction cannot drift."""
        copy = RunRecord.from_bytes(run.to_bytes())
        outcomes = await release_run(copy, lambda record: cast(Backend, _DryRunBackend(self._backend_for(record))),
                                     lambda: None,
                                     concurrency=self.concurrency, limits=self.limits)
        return [dataclasses.replace(outcome, result=_PREDICTED.get(outcome.result, outcome.result))
                for outcome in outcomes]

    def _backend_for(self, record: ResourceRecord) -> Backend:
        """The pooled backend; for one whose names tell nothing (``name_fields`` empty), wrapped so
        that a resource a live run also holds (a copied record) is never released."""
        backend = self.pool(record)
        if backend.name_fields:
            return backend
        return cast(Backend, _SharedCheck(backend, self._held_by_live_run))

    def _held_by_live_run(self, backend: str, data: Mapping[str, Any], run_id: str) -> Optional[str]:
        """``also held by live run X`` when another run that is not dead holds the same resource
        (same backend, same :func:`resource_key`), else None. The other runs' records are read
        once per pass, the first time a dead run has such a resource."""
        key = resource_key(data)
        if key is None:
            return None
        if self.shared is None:
            self.shared = self._read_holdings()
        holder = self.shared.get((backend, key))
        return None if holder is None or holder == run_id else f"also held by live run {holder}"

    def _read_holdings(self) -> Dict[Tuple[str, str], str]:
        """(backend, resource key) -> run id, over every run of the listing not judged dead. A run
        whose lock this pass holds but has yet to judge is judged here; one unreadable is skipped."""
        holdings: Dict[Tuple[str, str], str] = {}
        for run_id in self.run_ids:
            if run_id in self.dead:
                continue
            try:
                run = self.registry.read(run_id)
            except (OSError, PersonaError):
                continue
            claim = self.claims.get(run_id)
            if claim is not None and self.store.judge(run, claim.fresh) is Status.SWEPT:
                continue
            for record in run.live():
                key = resource_key((record.token or {}) if record.state == HELD else record.planned)
                if key is not None:
                    holdings.setdefault((record.backend, key), run_id)
        return holdings

    def _remove_temp_files(self, temps: List[str]) -> None:
        """Temp files a dead run left mid-write, as the one listing of the directory found them."""
        for name in temps:
            self.registry.remove(name)

    def _sweep_lone_files(self, run_id: str, temps: List[str]) -> None:
        """Lock or temp files with no json: leftovers of a run that died starting or finishing.

        A starting fixture holds its lock before it writes anything, and retries if
        we take a brand-new lock file from under it, so no grace period is needed.
        """
        if self.report.dry_run:
            return
        claim = self._claim_now(run_id)
        if claim is None:
            return
        try:
            if self.registry.mtime(f"{run_id}.json") is not None:
                return  # a run that just wrote its first record: leave it for the next pass
            self._remove_temp_files(temps)
        finally:
            self.store.unclaim(claim, forget=self.registry.mtime(f"{run_id}.json") is None)

    # -- forgetting by hand ---------------------------------------------------------------------
    def forget(self, run_id: str, seqs: List[int]) -> None:
        """Drop entries an operator checked by hand; refused (a problem) for a run that may be alive."""
        claim = self._claim_now(run_id)
        if claim is None:
            self._refuse_forget(run_id, "the run is live (its lock is held)")
            return
        done = False
        try:
            run = self._read_locked(run_id)
            if run is None:
                self._refuse_forget(run_id, "no readable run record")
                return
            status = self.store.judge(run, claim.fresh)
            if status is not Status.SWEPT:
                self._refuse_forget(run_id, f"the run is {status.value} (pid {run.pid} on {run.host})")
                return
            done = self._forget_seqs(run, seqs)
        finally:
            self.store.unclaim(claim, forget=done or claim.fresh)

    def _forget_seqs(self, run: RunRecord, seqs: List[int]) -> bool:
        """Drop the entries, write what is left (or delete the run's files); True if none is left."""
        for seq in seqs:
            record = run.resources.get(seq)
            if record is None:
                self._refuse_forget(run.run_id, f"it has no entry #{seq}")
                continue
            run.drop(seq)
            self.report.outcomes.append(Outcome(run.run_id, seq, record.backend, record.state,
                                                Result.FORGOTTEN, None, identity_of(None, record)))
        if run.resources:
            self.registry.write(run)
            return False
        self.registry.remove(f"{run.run_id}.json")
        return True

    def _refuse_forget(self, run_id: str, why: str) -> None:
        self.report.problems.append({"file": f"{run_id}.json", "error": f"not forgotten: {why}"})


_PREDICTED = {Result.RELEASED: Result.WOULD_RELEASE, Result.KEPT: Result.WOULD_KEEP}
"""What the real sweep's result is called in a dry run's report."""


class _DryRunBackend:
    """A backend whose ``release`` does nothing: the dry run's stand-in for the real one (it
    offers what the release path uses of a backend, hence the cast where it is handed over)."""

    def __init__(self, real: Backend) -> None:
        self.real = real
        self.max_lifetime = real.max_lifetime
        self.recover_is_final = real.recover_is_final

    def can_recover(self) -> bool:
        return self.real.can_recover()

    def foreign_to(self, data: Dict[str, Any], run_id: str) -> Optional[str]:
        return self.real.foreign_to(data, run_id)

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return await self.real.recover(planned)

    async def release(self, token: Dict[str, Any]) -> None:
        """Nothing: the real sweep would call the provider here."""


_IDENTIFYING = ("id", "access_token", "refresh_token", "token")
"""Token fields that name a resource whose provider-side name tells nothing (an activation's id,
a grant's tokens)."""


def resource_key(data: Mapping[str, Any]) -> Optional[str]:
    """A digest of a token's or plan's identifying fields (never the secret itself), or None
    when it has none: two records with the same key (and backend) name one resource."""
    found = {key: data[key] for key in _IDENTIFYING if isinstance(data.get(key), (str, int)) and data[key] != ""}
    if not found:
        return None
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


class _SharedCheck:
    """A backend whose ``foreign_to`` also refuses a resource a live run holds; the rest is the
    real backend's (it is handed over as a Backend, hence the cast)."""

    def __init__(self, real: Backend, held_by: Callable[[str, Mapping[str, Any], str], Optional[str]]) -> None:
        self.real, self.held_by = real, held_by

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def foreign_to(self, data: Mapping[str, Any], run_id: str) -> Optional[str]:
        return self.real.foreign_to(data, run_id) or self.held_by(self.real.name, data, run_id)


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)

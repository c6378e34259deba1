"""PersonaFixture: acquire resources for a persona, and guarantee each one is released.

Every acquisition is written down twice: as an intent before the provider
is called, and as held (with its release token) after. On any orderly exit
the fixture releases newest first, marking progress as it goes; on a signal
or at interpreter exit :mod:`.lifetime` does the same from outside the
test's event loop; after SIGKILL the next fixture's startup sweep does it.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

from . import lifetime
from . import watchdog as _watchdog
from ._faults import fault_point
from ._redact import describe_error
from .backends.base import Backend, CreateWatch, Lease, Shared, backend_class, class_path, watch_create
from .errors import (ConfigurationError, PersonaError, ProviderError, RegistryError,
                     ResourceLeftWarning, RetryableProviderError, RunInUseError)
from .naming import Persona, new_run_id, validate_persona_name, validate_run_id
from .outcomes import Outcome
from .records import HELD, ResourceRecord
from .registry import Registry
from .releaser import DEFAULT_CONCURRENCY
from .run import HELD_WRITE_DELAY, RunOwner
from .store import FileStore, RunStore
from .stores import open_store, sweep_store
from .sweep_report import QUARANTINE_FIX
from .sweeper import BackendPool

__all__ = ["PersonaFixture", "KIND_BACKENDS", "HELD_WRITE_DELAY", "OUTCOME_LISTENERS", "resolve_sweep_timeout"]

KIND_BACKENDS: Dict[str, Tuple[str, str]] = {
    "email": ("TAOS_PERSONA_EMAIL_BACKEND", "mailtm"),
    "sms": ("TAOS_PERSONA_SMS_BACKEND", "sms_activate"),
    "user": ("TAOS_PERSONA_USER_BACKEND", "sql"),
    "token": ("TAOS_PERSONA_TOKEN_BACKEND", "rest_token"),
}
"""Resource kind -> (environment variable, default backend) for the named helpers."""

OUTCOME_LISTENERS: List[Callable[[str, List[Outcome]], None]] = []
"""Called with the registry's location and the outcomes of every fixture's release, in the
releasing thread: the pytest
plugin counts every fixture of a session this way, ``PersonaTestCase``'s included. A failing
listener is ignored: a tally is no reason to fail a release."""

_swept_dirs: Set[str] = set()  # registry directories this process has swept at startup
_LOCK_RETRIES = 20        # a sweeper may hold a brand-new lock file for a moment
DEFAULT_STARTUP_SWEEP_TIMEOUT = 5.0
STARTUP_SWEEP_TIMEOUT_ENV = "TAOS_PERSONA_STARTUP_SWEEP_TIMEOUT"


def resolve_sweep_timeout(configured: Optional[float] = None) -> float:
    """Seconds the startup sweep may hold a fixture's start: argument, then environment, then 5."""
    if configured is not None:
        return max(0.0, float(configured))
    raw = os.environ.get(STARTUP_SWEEP_TIMEOUT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_STARTUP_SWEEP_TIMEOUT
    except ValueError:
        raise ConfigurationError(f"{STARTUP_SWEEP_TIMEOUT_ENV}={raw!r} is not a number of seconds; "
                                 f"set it to e.g. {DEFAULT_STARTUP_SWEEP_TIMEOUT:g}") from None


class PersonaFixture:
    """An async context manager that hands out a persona's resources and releases them all.

    ``backends`` maps a kind (``email``, ``sms``, ``user``, ``token``) to a
    backend name for the named helpers; the environment variables in
    :data:`KIND_BACKENDS` do the same, and the constructor wins. ``store`` is
    where the run lives (default: ``registry=``, else ``$TAOS_PERSONA_REGISTRY``: a
    ``postgresql://`` URL for the fleet registry, else the file registry at ``registry_dir``).
    ``startup_sweep_timeout`` bounds, in seconds, how long the startup sweep of
    dead runs may hold the start, and a release from a signal handler or at exit
    the process's end (default ``$TAOS_PERSONA_STARTUP_SWEEP_TIMEOUT`` or 5).
    """

    def __init__(self, name: str, *, registry_dir: Optional[str] = None, run_id: Optional[str] = None,
                 sweep: bool = True, backends: Optional[Mapping[str, str]] = None,
                 concurrency: int = DEFAULT_CONCURRENCY, store: Optional[RunStore] = None,
                 startup_sweep_timeout: Optional[float] = None, watchdog: Optional[bool] = None,
                 registry: Optional[str] = None) -> None:
        self.name = validate_persona_name(name)
        self.run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
        self.persona = Persona(self.name, self.run_id)
        self.store: RunStore = store if store is not None else open_store(registry, registry_dir)
        self.registry = self.store.registry if isinstance(self.store, FileStore) else Registry(registry_dir)
        self.concurrency = concurrency
        self._sweep_on_enter = sweep
        self._sweep_timeout = resolve_sweep_timeout(startup_sweep_timeout)
        self._watchdog = watchdog  # None: $TAOS_PERSONA_WATCHDOG decides (see taos_persona.watchdog)
        self._kinds = dict(backends or {})
        unknown = set(self._kinds) - set(KIND_BACKENDS)
        if unknown:
            raise ConfigurationError(f"unknown resource kinds {sorted(unknown)} in backends=; "
                                     f"known kinds: {sorted(KIND_BACKENDS)}")
        self._instances: Dict[str, Backend] = {}
        self._shared = Shared()  # one HTTP session for all of this fixture's backends
        self._values: Dict[int, Tuple[Any, int]] = {}  # id(value) -> (value, seq): keeps values alive
        self._owner: Optional[RunOwner] = None
        self._flying: Dict[int, Tuple[ResourceRecord, Backend]] = {}  # seq -> acquisition in flight
        self._idle: Optional[asyncio.Event] = None
        self._closing = False
        self._closed = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # the loop our connections belong to
        self.outcomes: List[Outcome] = []

    # -- entering -------------------------------------------------------------------------
    async def __aenter__(self) -> "PersonaFixture":
        if self._owner is not None or self._closed:
            raise PersonaError(f"fixture {self.run_id} was already entered; make a new PersonaFixture")
        if isinstance(self.store, FileStore):
            self.registry.ensure()
            if _watchdog.wanted(self._watchdog):
                _watchdog.ensure(self.registry.path)
        if self._sweep_on_enter and self.store.location not in _swept_dirs:  # a directory or a fleet database
            _swept_dirs.add(self.store.location)
            await self._startup_sweep()
        self._owner = await self._claim_run()
        self._idle = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        lifetime.register(self)
        return self

    async def _startup_sweep(self) -> None:
        """Sweep dead runs, for at most the configured bound; what is not done stays for the next."""
        try:
            report = await asyncio.wait_for(sweep_store(self.store, concurrency=self.concurrency),
                                            self._sweep_timeout)
        except asyncio.TimeoutError:
            warnings.warn(f"the startup sweep of {self.store.location} stopped after {self._sweep_timeout:g}s "
                          "(a provider is slow or hanging); what it did not release stays on record for the "
                          f"next sweep; tune {STARTUP_SWEEP_TIMEOUT_ENV} or startup_sweep_timeout=",
                          ResourceLeftWarning, stacklevel=3)
            return
        for item in report.quarantined_runs if report is not None else ():
            where = item.get("moved_to") or item["file"]
            warnings.warn(f"startup sweep of {self.store.location}: run record {where} is in quarantine/, "
                          f"so what it held may be left at the provider: {QUARANTINE_FIX}",
                          ResourceLeftWarning, stacklevel=3)
        for outcome in report.kept if report is not None else ():
            warnings.warn(f"startup sweep could not release {outcome.backend} resource #{outcome.seq} "
                          f"of dead run {outcome.run_id}: {outcome.error}", ResourceLeftWarning, stacklevel=3)

    async def _claim_run(self) -> RunOwner:
        """Claim our run id; a sweeper may hold a brand-new lock file for a moment, so retry."""
        for _ in range(_LOCK_RETRIES - 1):
            try:
                return await RunOwner.open(self.store, self.run_id, self.name)
            except RunInUseError:
                await asyncio.sleep(0.05)
        return await RunOwner.open(self.store, self.run_id, self.name)

    # -- acquiring ------------------------------------------------------------------------
    async def acquire(self, backend_name: str, *, parent: Any = None, **options: Any) -> Any:
        """Acquire a resource from a registered backend; recorded before and after it exists.

        Raises PersonaError if the fixture is closed, or closed while the create was in
        flight (the new resource is then released at once).
        """
        owner = self._require_open()
        backend = self._backend(backend_name)
        parent_seq = self._values[id(parent)][1] if parent is not None and id(parent) in self._values else None
        if parent is not None and parent_seq is None:
            raise PersonaError("parent= must be a value this fixture returned from acquire()")
        fault_point("acquire.before_intent")
        planned = backend.plan(self.persona, **options)
        _check_jsonable(backend_name, planned)
        record = owner.run.add_intent(backend_name, class_path(type(backend)), planned, parent_seq)
        _mark_in_flight(record, backend, since=record.created)  # written with the intent: a SIGKILL
        # mid-request leaves the sweep the moment until which the create may still land
        self._flying[record.seq] = (record, backend)
        try:
            await self._save_or_forget(owner, record)
            fault_point("acquire.after_intent")
            lease = await self._create(owner, record, backend, planned)
            await self._record_or_release(owner, record, backend)
        finally:
            del self._flying[record.seq]
            if not self._flying and self._idle is not None:
                self._idle.set()
        fault_point("acquire.after_record")
        self._values[id(lease.value)] = (lease.value, record.seq)
        return lease.value

    async def _create(self, owner: RunOwner, record: ResourceRecord, backend: Backend,
                      planned: Dict[str, Any]) -> Lease:
        """The provider call. A refusal drops the intent; a cancellation or timeout keeps it
        (the request may still land: the sweep looks again after its deadline)."""
        try:
            with watch_create() as watch:
                lease = await backend.acquire(self.persona, **planned)
        except (asyncio.CancelledError, KeyboardInterrupt):
            _mark_in_flight(record, backend)  # wait_for's timeout, Ctrl-C: the request may still land
            raise
        except ConfigurationError:
            await self._drop(owner, record)  # raised before any request: nothing exists
            raise
        except ProviderError as exc:
            if _refused(exc, backend, watch):
                await self._drop(owner, record)  # a provider that said no created nothing
            raise
        fault_point("acquire.after_create")
        _check_jsonable(record.backend, lease.token)
        record.token, record.state = lease.token, HELD
        return lease

    async def _drop(self, owner: RunOwner, record: ResourceRecord) -> None:
        """Forget an intent whose create never happened; the caller's error is the one to see."""
        owner.run.drop(record.seq)
        try:
            await owner.save()
        except PersonaError:
            pass  # the next write, or finish, removes it from the store

    async def _save_or_forget(self, owner: RunOwner, record: ResourceRecord) -> None:
        """Write the intent; if the store refuses, nothing was created, so nothing is lost."""
        try:
            await owner.save()
        except BaseException:
            owner.run.resources.pop(record.seq, None)
            raise

    async def _record_or_release(self, owner: RunOwner, record: ResourceRecord, backend: Backend) -> None:
        """Record the token; if the store refuses or the fixture is closing, release it at once.

        For a backend that can recover, the write may wait up to ``HELD_WRITE_DELAY``
        seconds to share the next acquisition's intent write (a group commit: one
        fsync per acquisition, not two). Until it lands, the intent on disk names the
        resource, and ``recover`` finds it after any crash.
        """
        if self._closing:
            reason = PersonaError(f"fixture {self.run_id} was closed while this {record.backend} "
                                  "acquisition was in flight")
        elif backend.can_recover():
            owner.save_soon()
            return
        else:
            try:
                await owner.save()
                return
            except RegistryError as exc:
                reason = exc
        await self._release_at_once(owner, record, backend, reason)

    async def _release_at_once(self, owner: RunOwner, record: ResourceRecord, backend: Backend,
                               reason: PersonaError) -> None:
        """Release a resource we cannot keep; raise ``reason``'s kind saying what became of it."""
        kind = type(reason)
        try:
            await backend.release(record.token or {})
        except Exception as exc:  # noqa: BLE001
            raise kind(f"{reason}; and releasing the new {record.backend} resource failed too "
                       f"({describe_error(exc)}): its intent is on record for the sweep") from reason
        owner.run.drop(record.seq)
        try:
            await owner.save()
        except PersonaError:
            pass  # the intent on record only makes the sweep look (recover) and find it gone
        raise kind(f"{reason}; the new {record.backend} resource was released at once") from reason

    def _backend(self, name: str) -> Backend:
        if name not in self._instances:
            self._instances[name] = backend_class(name)().attach(self._shared)
        return self._instances[name]

    def _require_open(self) -> RunOwner:
        if self._owner is None or self._closed or self._closing:
            raise PersonaError("this PersonaFixture is not open; use it inside 'async with'")
        return self._owner

    # -- named helpers --------------------------------------------------------------------
    def backend_for(self, kind: str) -> str:
        """The backend name serving ``kind``: constructor, then environment, then default."""
        variable, default = KIND_BACKENDS[kind]
        return self._kinds.get(kind) or os.environ.get(variable) or default

    async def disposable_email(self, **options: Any) -> Any:
        return await self.acquire(self.backend_for("email"), **options)

    async def sms_number(self, **options: Any) -> Any:
        return await self.acquire(self.backend_for("sms"), **options)

    async def user_account(self, **options: Any) -> Any:
        return await self.acquire(self.backend_for("user"), **options)

    async def api_token(self, **options: Any) -> Any:
        return await self.acquire(self.backend_for("token"), **options)

    async def oauth_grant(self, provider: str, **options: Any) -> Any:
        """An OAuth grant from ``github``, ``google`` or ``oauth_rfc7009`` (or your own backend)."""
        return await self.acquire(provider, **options)

    # -- releasing ------------------------------------------------------------------------
    def resource_count(self) -> int:
        """Resources this fixture still holds (intents included); 0 once closed or never opened."""
        return self._owner.resource_count() if self._owner is not None and not self._closed else 0

    async def __aexit__(self, *exc_info: Any) -> None:
        """Release everything, shielded: a cancellation waits for the release, then propagates.

        Our own failures become warnings: the test's exception always wins.
        """
        if self._owner is None or self._closed:
            await self._close_backends()  # released from outside (a signal): close our connections
            return
        task = asyncio.ensure_future(self.close())
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
        error = task.exception()
        if error is not None:
            if exc_info[0] is None and not isinstance(error, Exception):
                raise error
            warnings.warn(f"releasing fixture {self.run_id} failed: {describe_error(error)}; what is "
                          f"left stays in {self.store.location} for python -m taos_persona.sweep",
                          ResourceLeftWarning, stacklevel=2)
        if cancelled and exc_info[0] is None:
            raise asyncio.CancelledError()

    async def close(self) -> List[Outcome]:
        """Release every resource newest first (children before parents). Safe to call twice.

        Acquisitions still in flight are waited for; one whose resource arrives now
        releases it at once and raises PersonaError in its caller.
        """
        owner = self._owner
        if owner is None or self._closed or self._closing:
            return []
        self._closing = True
        try:
            while self._flying and self._idle is not None:
                self._idle.clear()
                await self._idle.wait()
            outcomes = await owner.release(self._instance_for, concurrency=self.concurrency)
        finally:
            await self._close_backends()
            await self._finish(owner)
        self._report(outcomes)
        return outcomes

    def _instance_for(self, record: ResourceRecord) -> Backend:
        return self._backend(record.backend)

    async def _close_backends(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        closables: List[Union[Backend, Shared]] = [*instances, self._shared]
        for closable in closables:
            try:
                await closable.aclose()
            except Exception:  # noqa: BLE001 - closing a connection pool must not mask the test
                pass

    async def _finish(self, owner: RunOwner) -> None:
        """Delete our record if nothing is left, else keep it for the sweep; always drop the claim."""
        if self._closed:
            return
        self._closed = True
        lifetime.unregister(self)
        if owner.resource_count():  # our live process no longer vouches for what is left:
            owner.run.disowned = True  # only the lock speaks for it now (finish writes this)
        try:
            await owner.finish()
        finally:
            self.registry.close()  # the claim is given up: nothing uses the directory descriptor now

    def _report(self, outcomes: List[Outcome]) -> None:
        self.outcomes.extend(outcomes)
        for listener in list(OUTCOME_LISTENERS):
            try:
                listener(self.store.location, outcomes)
            except Exception:  # noqa: BLE001, S110 - see OUTCOME_LISTENERS
                pass
        for outcome in outcomes:
            if outcome.kept:
                warnings.warn(f"could not release {outcome.backend} resource #{outcome.seq} of run "
                              f"{self.run_id} ({outcome.error}); it stays in {self.store.location} for "
                              "python -m taos_persona.sweep", ResourceLeftWarning, stacklevel=4)

    def release_from_outside(self) -> None:
        """Release from a signal handler or atexit, on a fresh loop with fresh backends.

        The contract :mod:`.lifetime` relies on: safe at any moment, safe twice, a
        no-op in a forked child (it inherits our list of open fixtures, not their ownership).
        The process is on its way out, so the release is bounded like the startup sweep
        (``startup_sweep_timeout``): what a hanging provider holds up stays on record.
        """
        owner = self._owner
        if owner is None or self._closed or owner.run.pid != os.getpid():
            return
        for record, backend in list(self._flying.values()):  # interrupted mid-request
            _mark_in_flight(record, backend)
        self._report(lifetime.run_blocking(lambda: self._release_bounded(owner)))
        lifetime.run_on_loop(self._loop, self._close_backends)  # our own session, on its own loop

    async def _release_bounded(self, owner: RunOwner) -> List[Outcome]:
        pool = BackendPool()
        try:
            return list(await asyncio.wait_for(owner.release(pool, concurrency=self.concurrency),
                                               self._sweep_timeout))
        except asyncio.TimeoutError:
            warnings.warn(f"releasing run {self.run_id} at exit stopped after {self._sweep_timeout:g}s (a "
                          f"provider is slow or hanging); {owner.resource_count()} resource(s) stay in "
                          f"{self.store.location} for python -m taos_persona.sweep; tune "
                          f"{STARTUP_SWEEP_TIMEOUT_ENV} or startup_sweep_timeout=", ResourceLeftWarning, stacklevel=2)
            return []
        finally:
            try:
                await pool.aclose()
            finally:
                await self._finish(owner)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._owner else "new"
        return f"<PersonaFixture {self.name!r} run_id={self.run_id!r} {state}>"


def _mark_in_flight(record: ResourceRecord, backend: Backend, since: Optional[float] = None) -> None:
    """Set the intent's deadline: the last moment a create request sent from ``since`` (default
    now, for an interrupted acquisition) could still land. The sweep keeps an unfound intent
    until then, plus its grace. A new intent of a backend without requests gets no deadline."""
    window = backend.max_request_window()
    if window > 0 or since is None:
        record.deadline = (time.time() if since is None else since) + window


def _refused(exc: ProviderError, backend: Backend, watch: CreateWatch) -> bool:
    """Whether a failed create certainly made nothing, so its intent may go.

    True when the provider definitively refused (400/401/403/404/405/422) and no request of this
    acquire could have changed anything; or, for a backend that cannot recover, a final
    error after no ambiguous attempt (what it cannot look up, it must not guess about).
    """
    if isinstance(exc, RetryableProviderError) or watch.ambiguous:
        return False
    return watch.nothing_created() or not backend.can_recover()


def _check_jsonable(backend: str, data: Any) -> None:
    """Plans and tokens go to disk as JSON; say which backend broke that rule."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"backend {backend!r} returned {type(data).__name__}, not a dict, "
                                 "as its plan or token")
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"backend {backend!r} returned a plan or token that is not JSON-able "
                                 f"({exc}); options must be strings, numbers, lists or dicts") from None

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
import socket
import warnings
from typing import Any, Dict, List, Mapping, Optional

from . import lifetime
from . import watchdog as _watchdog
from ._faults import fault_point
from .backends.base import Backend, Shared, backend_class, class_path
from .errors import (ConfigurationError, PersonaError, ProviderError, RegistryError,
                     ResourceLeftWarning, RetryableProviderError)
from .locking import RunLock
from .naming import Persona, new_run_id, validate_persona_name, validate_run_id
from .records import HELD, ResourceRecord, RunRecord
from .registry import Registry
from .outcomes import Outcome
from .releaser import DEFAULT_CONCURRENCY, release_run
from .sweeper import BackendPool, sweep_async

__all__ = ["PersonaFixture", "KIND_BACKENDS"]

KIND_BACKENDS: Dict[str, tuple] = {
    "email": ("TAOS_PERSONA_EMAIL_BACKEND", "mailtm"),
    "sms": ("TAOS_PERSONA_SMS_BACKEND", "sms_activate"),
    "user": ("TAOS_PERSONA_USER_BACKEND", "sql"),
    "token": ("TAOS_PERSONA_TOKEN_BACKEND", "rest_token"),
}
"""Resource kind -> (environment variable, default backend) for the named helpers."""

_swept_dirs: set = set()  # registry directories this process has swept at startup
_LOCK_RETRIES = 20        # a sweeper may hold a brand-new lock file for a moment
HELD_WRITE_DELAY = 0.05   # seconds a held record may wait to share the next write


class PersonaFixture:
    """An async context manager that hands out a persona's resources and releases them all.

    ``backends`` maps a kind (``email``, ``sms``, ``user``, ``token``) to a
    backend name for the named helpers; the environment variables in
    :data:`KIND_BACKENDS` do the same, and the constructor wins.
    """

    def __init__(self, name: str, *, registry_dir: Optional[str] = None, run_id: Optional[str] = None,
                 sweep: bool = True, backends: Optional[Mapping[str, str]] = None,
                 concurrency: int = DEFAULT_CONCURRENCY, watchdog: Optional[bool] = None) -> None:
        self.name = validate_persona_name(name)
        self.run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
        self.persona = Persona(self.name, self.run_id)
        self.registry = Registry(registry_dir)
        self.concurrency = concurrency
        self._sweep_on_enter = sweep
        self._watchdog = watchdog  # None: $TAOS_PERSONA_WATCHDOG decides (see taos_persona.watchdog)
        self._kinds = dict(backends or {})
        unknown = set(self._kinds) - set(KIND_BACKENDS)
        if unknown:
            raise ConfigurationError(f"unknown resource kinds {sorted(unknown)} in backends=; "
                                     f"known kinds: {sorted(KIND_BACKENDS)}")
        self._instances: Dict[str, Backend] = {}
        self._shared = Shared()  # one HTTP session for all of this fixture's backends
        self._deferred: Optional[asyncio.TimerHandle] = None  # a held record's pending write
        self._values: Dict[int, tuple] = {}  # id(value) -> (value, seq): keeps values alive
        self._run: Optional[RunRecord] = None
        self._lock: Optional[RunLock] = None
        self._closed = False
        self.outcomes: List[Outcome] = []

    # -- entering -------------------------------------------------------------------------
    async def __aenter__(self) -> "PersonaFixture":
        if self._run is not None or self._closed:
            raise PersonaError(f"fixture {self.run_id} was already entered; make a new PersonaFixture")
        self.registry.ensure()
        if _watchdog.wanted(self._watchdog):
            _watchdog.ensure(self.registry.path)
        if self._sweep_on_enter and self.registry.path not in _swept_dirs:
            _swept_dirs.add(self.registry.path)
            await self._startup_sweep()
        self._lock = await self._take_own_lock()
        try:
            if os.path.lexists(self.registry.json_path(self.run_id)):
                raise RegistryError(f"run id {self.run_id} already has a registry file with unreleased "
                                    "resources; run python -m taos_persona.sweep or pick another run id")
            run = RunRecord(self.run_id, self.name, socket.gethostname(), os.getpid())
            self.registry.write(run)
        except BaseException:
            self._lock.release(unlink=True)
            raise
        self._run = run
        lifetime.register(self)
        return self

    async def _startup_sweep(self) -> None:
        report = await sweep_async(self.registry.path, concurrency=self.concurrency)
        for outcome in report.kept:
            warnings.warn(f"startup sweep could not release {outcome.backend} resource #{outcome.seq} "
                          f"of dead run {outcome.run_id}: {outcome.error}", ResourceLeftWarning, stacklevel=3)

    async def _take_own_lock(self) -> RunLock:
        lock = RunLock(self.registry.lock_path(self.run_id))
        for _ in range(_LOCK_RETRIES):
            if lock.try_acquire():
                return lock
            await asyncio.sleep(0.05)
        raise RegistryError(f"run id {self.run_id} is in use by a live process (its lock "
                            f"{lock.path} is held); pick another run id")

    # -- acquiring ------------------------------------------------------------------------
    async def acquire(self, backend_name: str, *, parent: Any = None, **options: Any) -> Any:
        """Acquire a resource from a registered backend; recorded before and after it exists."""
        run = self._require_open()
        backend = self._backend(backend_name)
        parent_seq = self._values[id(parent)][1] if parent is not None and id(parent) in self._values else None
        if parent is not None and parent_seq is None:
            raise PersonaError("parent= must be a value this fixture returned from acquire()")
        fault_point("acquire.before_intent")
        planned = backend.plan(self.persona, **options)
        _check_jsonable(backend_name, planned)
        record = run.add_intent(backend_name, class_path(type(backend)), planned, parent_seq)
        self._save_or_forget(record)
        fault_point("acquire.after_intent")
        try:
            lease = await backend.acquire(self.persona, **planned)
        except ProviderError as exc:
            self._forget_refused(record, backend, exc)
            raise
        fault_point("acquire.after_create")
        _check_jsonable(backend_name, lease.token)
        record.token, record.state = lease.token, HELD
        await self._record_or_release(record, backend)
        fault_point("acquire.after_record")
        self._values[id(lease.value)] = (lease.value, record.seq)
        return lease.value

    def _save_or_forget(self, record: ResourceRecord) -> None:
        """Write the intent; if the disk refuses, nothing was created, so nothing is lost."""
        try:
            self._save_now()
        except RegistryError:
            self._run.resources.pop(record.seq, None)  # type: ignore[union-attr]
            raise

    def _forget_refused(self, record: ResourceRecord, backend: Backend, exc: ProviderError) -> None:
        """A provider that said no created nothing; an ambiguous failure stays an intent."""
        if isinstance(exc, RetryableProviderError) or backend.can_recover():
            return  # resolved by recover() at exit, or reported as unrecoverable
        self._run.drop(record.seq)  # type: ignore[union-attr]
        self._save_now()

    async def _record_or_release(self, record: ResourceRecord, backend: Backend) -> None:
        """Record the token; if the disk refuses, release the fresh resource at once and raise.

        For a backend that can recover, the write may wait up to ``HELD_WRITE_DELAY``
        seconds to share the next acquisition's intent write (a group commit: one
        fsync per acquisition, not two). Until it lands, the intent on disk names the
        resource, and ``recover`` finds it after any crash.
        """
        if backend.can_recover():
            self._save_soon()
            return
        try:
            self._save_now()
        except RegistryError as exc:
            try:
                await backend.release(record.token or {})
            except Exception as release_exc:  # noqa: BLE001
                raise RegistryError(f"{exc}; and releasing the new {record.backend} resource failed "
                                    f"too ({release_exc}): its intent is on disk for the sweep") from exc
            self._run.drop(record.seq)  # type: ignore[union-attr]
            raise RegistryError(f"{exc}; the new {record.backend} resource was released at once") from exc

    def _backend(self, name: str) -> Backend:
        if name not in self._instances:
            self._instances[name] = backend_class(name)().attach(self._shared)
        return self._instances[name]

    def _require_open(self) -> RunRecord:
        if self._run is None or self._closed:
            raise PersonaError("this PersonaFixture is not open; use it inside 'async with'")
        return self._run

    def _save(self) -> None:
        if self._run is not None:
            self.registry.write(self._run)

    def _save_now(self) -> None:
        """A durable write of the whole state, carrying any change still waiting."""
        self._cancel_deferred()
        self._save()

    def _save_soon(self) -> None:
        if self._deferred is None:
            self._deferred = asyncio.get_running_loop().call_later(HELD_WRITE_DELAY, self._write_deferred)

    def _write_deferred(self) -> None:
        self._deferred = None
        if self._closed:
            return
        try:
            self._save()
        except RegistryError as exc:
            warnings.warn(f"{exc}; the resources acquired last are on disk as intents, which the "
                          "sweep resolves through recover()", ResourceLeftWarning, stacklevel=2)

    def _cancel_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

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
    async def __aexit__(self, *exc_info: Any) -> None:
        """Release everything, shielded: a cancellation waits for the release, then propagates."""
        if self._run is None or self._closed:
            return
        task = asyncio.ensure_future(self.close())
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
        task.result()
        if cancelled and exc_info[0] is None:
            raise asyncio.CancelledError()

    async def close(self) -> List[Outcome]:
        """Release every resource newest first (children before parents). Safe to call twice."""
        if self._run is None or self._closed:
            return []
        run = self._run
        self._cancel_deferred()  # the release writes what is left, if anything
        try:
            outcomes = await release_run(run, self._instance_for, self._save, concurrency=self.concurrency)
        finally:
            await self._close_backends()
        self._finish(outcomes)
        return outcomes

    def _instance_for(self, record: ResourceRecord) -> Backend:
        return self._backend(record.backend)

    async def _close_backends(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for closable in [*instances, self._shared]:
            try:
                await closable.aclose()
            except Exception:  # noqa: BLE001 - closing a connection pool must not mask the test
                pass

    def _finish(self, outcomes: List[Outcome]) -> None:
        """Delete our files if nothing is left, else keep them for the sweep; drop the lock."""
        if self._closed:
            return
        self._closed = True
        self._cancel_deferred()
        self.outcomes.extend(outcomes)
        lifetime.unregister(self)
        run = self._run
        left = bool(run and run.resources)
        if not left:
            self.registry.remove(self.registry.json_path(self.run_id))
        if self._lock is not None:
            self._lock.release(unlink=not left)
        for outcome in outcomes:
            if outcome.kept:
                warnings.warn(f"could not release {outcome.backend} resource #{outcome.seq} of run "
                              f"{self.run_id} ({outcome.error}); it stays in {self.registry.path} for "
                              "python -m taos_persona.sweep", ResourceLeftWarning, stacklevel=4)

    def _release_from_outside(self) -> None:
        """Release from a signal handler or atexit, on a fresh loop with fresh backends."""
        if self._run is None or self._closed or self._run.pid != os.getpid():
            return  # a forked child inherits our list of open fixtures, not their ownership
        run = self._run

        async def release() -> List[Outcome]:
            pool = BackendPool()
            try:
                return await release_run(run, pool, self._save, concurrency=self.concurrency)
            finally:
                await pool.aclose()

        self._finish(lifetime.run_blocking(release))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._run else "new"
        return f"<PersonaFixture {self.name!r} run_id={self.run_id!r} {state}>"


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

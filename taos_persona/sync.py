"""Synchronous personas: :class:`SyncPersonaFixture`, an event loop on a private thread.

Sync code (sync Playwright, plain scripts, the pytest plugin's ``persona``)
cannot ``await``; sync Playwright even refuses a running asyncio loop in its
own thread. So the async :class:`~taos_persona.fixture.PersonaFixture` lives
on a loop in a daemon thread of its own, and every call is handed to that
loop and waited for. The values it returns are wrapped in a :class:`ResourceProxy`
whose coroutine methods (``Mailbox.wait_for_message``, ``PhoneNumber.wait_for_code``)
block too; plain attributes (``address``, ``number``, ``password``) pass through.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Awaitable, Callable, Coroutine, Dict, List, Optional, Type, TypeVar

from .errors import PersonaError

__all__ = ["SyncPersonaFixture", "AsyncPersonaBridge", "ResourceProxy", "LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running forever in a daemon thread; ``call`` runs a coroutine there."""

    def __init__(self, name: str = "taos-persona-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> "Future[T]":
        """Schedule ``coroutine`` on the private loop; raises PersonaError once the loop is stopped."""
        if self.loop.is_closed() or not self._thread.is_alive():
            coroutine.close()
            raise PersonaError("this persona's event loop is closed; use the persona inside its 'with' block")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the private loop and block until it ends; its exception is raised here."""
        future = self.submit(coroutine)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt while waiting: stop the work on the loop too
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread; safe to call twice."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.close()


def _wrap(value: Any, runner: Callable[[Awaitable[Any]], Any]) -> Any:
    """Leave plain data alone; wrap an object with coroutine methods so they run through ``runner``."""
    if value is None or isinstance(value, (str, bytes, int, float, bool, list, tuple, dict)):
        return value
    if any(inspect.iscoroutinefunction(getattr(type(value), name, None)) for name in dir(type(value))):
        return ResourceProxy(value, runner)
    return value


def _unwrap_parent(options: Dict[str, Any]) -> Dict[str, Any]:
    """``parent=`` may be a proxy this facade returned; the fixture knows the original."""
    if "parent" in options:
        options["parent"] = getattr(options["parent"], "unwrapped", options["parent"])
    return options


class ResourceProxy:
    """A resource value whose coroutine methods are handed to ``runner``; all else passes through.

    From :class:`SyncPersonaFixture` they block; from :class:`AsyncPersonaBridge`
    they are awaited on the persona's own loop. ``.unwrapped`` is the original.
    """

    __slots__ = ("_target", "_runner")

    def __init__(self, target: Any, runner: Callable[[Awaitable[Any]], Any]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    @property
    def unwrapped(self) -> Any:
        """The async resource object itself (a Mailbox, a PhoneNumber, ...)."""
        return self._target

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        runner = self._runner

        def bridged(*args: Any, **kwargs: Any) -> Any:
            return runner(attribute(*args, **kwargs))

        bridged.__name__ = name
        bridged.__doc__ = attribute.__doc__
        return bridged

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self._target).__name__} values are read-only here")

    def __str__(self) -> str:
        return str(self._target)

    def __repr__(self) -> str:
        return repr(self._target)



def _cover_signals() -> None:
    """Install the signal handlers from here: the fixture itself opens on the loop's thread, where none can be.

    ``lifetime.install()`` keeps them for the life of the process. Where it is
    missing (an older lifetime module) or we are off the main thread, the
    fixture's own registration applies (and says when signals are not covered).
    """
    from . import lifetime

    install = getattr(lifetime, "install", None)
    if install is not None and threading.current_thread() is threading.main_thread():
        install()


class _Bridge:
    """What both facades share: a PersonaFixture living on a :class:`LoopThread`."""

    def __init__(self, name: str, **options: Any) -> None:
        from .fixture import PersonaFixture  # asyncio and the registry only when used

        self.fixture = PersonaFixture(name, **options)
        self._loop: Optional[LoopThread] = None

    @property
    def name(self) -> str:
        return self.fixture.name

    @property
    def run_id(self) -> str:
        return self.fixture.run_id

    def _open(self) -> None:
        if self._loop is not None:
            raise PersonaError(f"persona {self.name!r} (run {self.run_id}) is already open; make a new one")
        _cover_signals()
        self._loop = LoopThread(name=f"taos-persona-{self.name}")
        try:
            self._loop.call(self.fixture.__aenter__())
        except BaseException:
            self._loop.stop()
            raise

    def _close(self, exc_type: Optional[Type[BaseException]] = None) -> List[Any]:
        """Release everything (newest first) and stop the loop; safe to call twice."""
        loop = self._loop
        if loop is None or loop.loop.is_closed():
            return []
        try:
            return loop.call(self.fixture.close())
        finally:
            loop.stop()

    def _loop_thread(self) -> LoopThread:
        if self._loop is None:
            raise PersonaError(f"persona {self.name!r} is not open; use it inside 'with'")
        return self._loop

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fixture!r}>"


class SyncPersonaFixture(_Bridge):
    """``with SyncPersonaFixture("novice_sarah") as persona: email = persona.disposable_email()``.

    The same options, registry protocol and resources as :class:`PersonaFixture`,
    with blocking methods: ``email.wait_for_message(subject="Verify", timeout=60)``
    returns the :class:`~taos_persona.resources.Message`. Usable inside sync
    Playwright. Raises what the async fixture raises (:class:`PersonaError` and
    its subclasses), in the caller's thread.
    """

    def __enter__(self) -> "SyncPersonaFixture":
        self._open()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def close(self) -> List[Any]:
        """Release every resource, newest first; returns the outcomes. Safe to call twice."""
        return self._close()

    def _run(self, coroutine: Awaitable[Any]) -> Any:
        return _wrap(self._loop_thread().call(coroutine), self._run)  # type: ignore[arg-type]

    def acquire(self, backend_name: str, **options: Any) -> Any:
        """A resource from any registered backend (``parent=`` takes a value this persona returned)."""
        return self._run(self.fixture.acquire(backend_name, **_unwrap_parent(options)))

    def disposable_email(self, **options: Any) -> Any:
        return self._run(self.fixture.disposable_email(**options))

    def sms_number(self, **options: Any) -> Any:
        return self._run(self.fixture.sms_number(**options))

    def user_account(self, **options: Any) -> Any:
        return self._run(self.fixture.user_account(**options))

    def api_token(self, **options: Any) -> Any:
        return self._run(self.fixture.api_token(**options))

    def oauth_grant(self, provider: str, **options: Any) -> Any:
        return self._run(self.fixture.oauth_grant(provider, **options))


class AsyncPersonaBridge(_Bridge):
    """An async persona for any running loop (pytest-asyncio, anyio's asyncio backend).

    The fixture itself lives on a private loop, so the test's loop (which its
    runner may close before teardown) never owns a connection of ours; every
    method is awaited through :func:`asyncio.wrap_future`. ``open()`` and
    ``close()`` are synchronous, for the plugin's setup and teardown.
    """

    def open(self) -> "AsyncPersonaBridge":
        self._open()
        return self

    def close(self) -> List[Any]:
        """Release every resource, newest first. Safe to call twice."""
        return self._close()

    async def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        value = await asyncio.wrap_future(self._loop_thread().submit(coroutine))
        return _wrap(value, self._bridge)

    def _bridge(self, coroutine: Awaitable[Any]) -> Any:
        return self._run(coroutine)  # type: ignore[arg-type]

    async def acquire(self, backend_name: str, **options: Any) -> Any:
        return await self._run(self.fixture.acquire(backend_name, **_unwrap_parent(options)))

    async def disposable_email(self, **options: Any) -> Any:
        return await self._run(self.fixture.disposable_email(**options))

    async def sms_number(self, **options: Any) -> Any:
        return await self._run(self.fixture.sms_number(**options))

    async def user_account(self, **options: Any) -> Any:
        return await self._run(self.fixture.user_account(**options))

    async def api_token(self, **options: Any) -> Any:
        return await self._run(self.fixture.api_token(**options))

    async def oauth_grant(self, provider: str, **options: Any) -> Any:
        return await self._run(self.fixture.oauth_grant(provider, **options))

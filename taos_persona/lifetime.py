"""Process lifetime: release open fixtures on SIGINT, SIGTERM, SIGHUP and at interpreter exit.

Why not just let ``KeyboardInterrupt`` unwind into ``__aexit__``? Because
unittest skips ``addCleanup`` callbacks on KeyboardInterrupt, pytest runs no
teardown on SIGTERM, and an exception raised inside a running event loop can
leave it unable to run our exit at all. So the handler first releases every
open fixture itself, on a fresh event loop in a helper thread (the
interrupted loop may be mid-step), and then hands the signal on as Python
would have: to the handler installed before ours. For SIGINT that is
``KeyboardInterrupt`` (or asyncio.Runner's cancel of the main task), so the
test's own ``finally`` blocks run and pytest still prints its summary, writes
its ``--junitxml`` report and exits 2. SIGTERM and SIGHUP with no Python
handler before ours end the process by the same signal (143, 129 as a shell
shows it). A signal ignored when we came (``nohup``) stays ignored.

unittest's catch-break handler (``python -m unittest -c``) lets the running
test finish and stops the run; it is *cooperative*: on its first signal we
call it and release nothing, since the test's own exit releases. A second
signal during a release stops it at once and says what is left; the
registry still lists it, for ``python -m taos_persona.sweep``.

Signal handlers can only be installed from the main thread, but they run
there for every open fixture, whatever thread opened it. A fixture opened
off the main thread when no handler is installed gets one warning that
says so (call :func:`install` from the main thread first).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import shlex
import signal
import sys
import threading
import warnings
from typing import Any, Callable, Coroutine, Dict, List, Optional, TypeVar

from ._redact import describe_error

__all__ = ["register", "unregister", "install", "run_blocking", "run_on_loop", "HANDLED_SIGNALS"]

HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                        if hasattr(signal, name))

_RUNNER_TASK_CASE = sys.version_info < (3, 11)
"""IsolatedAsyncioTestCase runs tests in a runner task that a KeyboardInterrupt can kill."""

OWN_LOOP_TIMEOUT = 5.0
"""Seconds to wait for another thread's event loop to close a fixture's connections."""

T = TypeVar("T")

_lock = threading.RLock()        # guards _open: fixtures open and close in any thread
_open: List[Any] = []            # open PersonaFixture objects, oldest first
_previous: Dict[int, Any] = {}   # signal -> the handler we replaced (never SIG_IGN)
_installed = False               # our handlers are in place (or the signals were ignored)
_pinned = False                  # install() was called: keep them after the last fixture
_releasing = False
_warned_off_main = False
_atexit_registered = False


def register(fixture: Any) -> None:
    """Track an open fixture; install our handlers with the first one (from the main thread)."""
    global _atexit_registered
    with _lock:
        if not _atexit_registered:
            atexit.register(_release_at_exit)
            _atexit_registered = True
        _open.append(fixture)
    if not _installed:
        if _in_main_thread():
            _install()
        else:
            _warn_uncovered()


def unregister(fixture: Any) -> None:
    """Stop tracking a closed fixture; restore the old handlers after the last one."""
    with _lock:
        if fixture in _open:
            _open.remove(fixture)
        last = not _open
    if last and not _pinned and _in_main_thread():
        _uninstall()


def install() -> bool:
    """Install the handlers now and keep them for the life of the process.

    Call it from the main thread before fixtures open in other threads (a
    synchronous fixture's private loop thread, say). Returns False, with a
    warning, when called from another thread, where no handler can be installed.
    """
    global _pinned
    if not _in_main_thread():
        _warn_uncovered()
        return False
    _pinned = True
    _install()
    return True


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _warn_uncovered() -> None:
    """Say once that signals will not release fixtures: never leave that silent."""
    global _warned_off_main
    if _warned_off_main:
        return
    _warned_off_main = True
    warnings.warn("taos-persona: a fixture opened off the main thread and no signal handler is installed, "
                  "so SIGINT, SIGTERM and SIGHUP will not release it (interpreter exit and the next sweep "
                  "still will); open a fixture or call taos_persona.lifetime.install() in the main thread "
                  "first", RuntimeWarning, stacklevel=4)


def _install() -> None:
    """Put ``_handle`` in front of each signal's handler, except where the signal is ignored."""
    global _installed
    for signum in HANDLED_SIGNALS:
        current = signal.getsignal(signum)
        if current is _handle or current == signal.SIG_IGN:
            continue  # ours already, or ignored when we came (nohup): it stays ignored
        try:
            signal.signal(signum, _handle)
        except (ValueError, OSError):
            continue
        _previous[signum] = current
    _installed = True


def _uninstall() -> None:
    global _installed
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _handle:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous[signum]
    _installed = False


def _handle(signum: int, frame: Any) -> None:
    """Release everything, then hand the signal on; a second one leaves the rest to the sweep."""
    if _releasing:
        _leave_to_sweep(signum)
    previous = _previous.get(signum)  # read first: the release uninstalls after the last fixture
    if previous is not None and _is_cooperative(previous):
        _call_installed(signum, previous, frame)  # it lets the test finish; its exit releases
        return
    _release_announced(signum)
    if callable(previous):
        _hand_on(signum, previous, frame)
        return
    _die(signum)


def _hand_on(signum: int, previous: Callable[[int, Any], Any], frame: Any) -> None:
    """Call the handler we replaced: KeyboardInterrupt, asyncio.Runner's cancel, a user's.

    Before Python 3.11, a signal that lands inside a task's step (often, in asyncio debug
    mode) has Python's own SIGINT handler raise from the loop right after that step, not
    inside it: a KeyboardInterrupt thrown into a task kills it, and that IsolatedAsyncioTestCase
    then waits forever for its dead runner task. Elsewhere (the loop waiting in select,
    sync code, Python 3.11+) it raises here, as Python does.
    """
    loop = asyncio._get_running_loop() if _RUNNER_TASK_CASE else None
    if previous is signal.default_int_handler and loop is not None and asyncio.current_task(loop) is not None:
        try:
            loop.call_soon_threadsafe(_interrupt, loop)
            return
        except RuntimeError:
            pass  # the loop is closing: raise here, as Python would
    _call_installed(signum, previous, frame)


def _interrupt(loop: asyncio.AbstractEventLoop, deferred: bool = False) -> None:
    """Raise KeyboardInterrupt from the loop, but never ahead of a pending run_until_complete stop.

    When the awaited future finished in the same step, its ``loop.stop()`` callback is already
    queued behind us; raising first would leave that stop queued, and the loop's next
    ``run_until_complete`` (IsolatedAsyncioTestCase's teardown) would end with "Event loop
    stopped before Future completed". So once, we queue ourselves behind it.
    """
    ready = getattr(loop, "_ready", ())
    if not deferred and any(getattr(getattr(handle, "_callback", None), "__name__", "") == "_run_until_complete_cb"
                            for handle in ready):
        loop.call_soon(_interrupt, loop, True)
        return
    raise KeyboardInterrupt


def _is_cooperative(handler: Any) -> bool:
    """unittest's catch-break handler, on its first signal: it stops the run after this test."""
    handler_type = getattr(sys.modules.get("unittest.signals"), "_InterruptHandler", None)
    return handler_type is not None and isinstance(handler, handler_type) and not handler.called


def _call_installed(signum: int, handler: Callable[[int, Any], Any], frame: Any) -> None:
    """Call ``handler`` as if it were the installed one (unittest's checks that it is), then put
    back what was installed, unless that was ours and the release has since uninstalled it."""
    before = signal.getsignal(signum)
    signal.signal(signum, handler)
    try:
        handler(signum, frame)
    finally:
        if before is not None and (before is not _handle or _installed):
            signal.signal(signum, before)


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the default action did not end us


def _snapshot() -> List[Any]:
    with _lock:
        return list(_open)


def _release_announced(signum: int) -> None:
    """Say on stderr what is being released and how to stop, then release it all."""
    global _releasing
    fixtures = _snapshot()
    if not fixtures:
        return
    _releasing = True  # before saying so: a second signal may come the moment it is said
    try:
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {_name(signum)} again"
        _say(f"{_name(signum)}: releasing {_count(fixtures)} resources of {len(fixtures)} runs; {again} "
             f"to stop and leave them to {_sweep_command(fixtures)}")
        _release_all(fixtures)
    finally:
        _releasing = False


def _leave_to_sweep(signum: int) -> None:
    """The second signal: say what is left (the registry keeps it), then end by the signal."""
    fixtures = _snapshot()
    _say(f"{_name(signum)} again: stopped releasing; {_count(fixtures)} resources of {len(fixtures)} runs "
         f"are left for {_sweep_command(fixtures)}")
    _die(signum)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _count(fixtures: List[Any]) -> int:
    return sum(fixture.resource_count() for fixture in fixtures)


def _sweep_command(fixtures: List[Any]) -> str:
    """The command that releases what these fixtures leave behind (``--dir`` for file registries)."""
    directories = sorted({directory for directory in map(_registry_dir, fixtures) if directory})
    commands = [f"python -m taos_persona.sweep --dir {shlex.quote(path)}" for path in directories]
    if any(_registry_dir(fixture) is None for fixture in fixtures):
        commands.append("python -m taos_persona.sweep")  # another store: named by its own settings
    return " and ".join(commands) or "python -m taos_persona.sweep"


def _registry_dir(fixture: Any) -> Optional[str]:
    """The fixture's registry directory, or None when it keeps its runs elsewhere (a database,
    whose location may hold a password, so it is never printed)."""
    path: str = fixture.registry.path
    store = getattr(fixture, "store", None)
    return path if store is None or getattr(store, "location", path) == path else None


def _say(text: str) -> None:
    try:
        sys.stderr.write(f"taos-persona: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed or gone: the release matters more than the message


def _release_all(fixtures: List[Any]) -> None:
    """Release every fixture given, newest first; one that fails does not stop the others."""
    for fixture in reversed(fixtures):
        try:
            fixture.release_from_outside()
        except Exception as exc:  # noqa: BLE001 - the registry still lists what is left
            _say(f"could not release {fixture!r}: {describe_error(exc)}; "
                 f"{_sweep_command([fixture])} will")


def _release_at_exit() -> None:
    _release_all(_snapshot())


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, whatever loop may be running here.

    With no loop running in this thread (atexit) it runs right here: Python 3.12+
    refuses new threads at shutdown. Inside a running loop (a signal handler
    that interrupted it) it runs on a fresh loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_fresh(factory)
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = _run_fresh(factory)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="taos-persona-release", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)  # short joins keep this thread responsive to a second signal
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


class _ReleaseExecutor(concurrent.futures.ThreadPoolExecutor):
    """The release loop's executor (sqlite calls, DNS lookups): threads while there may be
    threads, else the call runs right here.

    At interpreter shutdown ``concurrent.futures`` refuses new work ("cannot schedule
    new futures after interpreter shutdown": its exit hook runs before ``atexit``'s)
    and Python 3.12+ refuses new threads; blocking the release loop for one call is
    the price of still releasing.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[T]":
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:
            return _call_here(fn, *args, **kwargs)


def _call_here(fn: Callable[..., T], *args: Any, **kwargs: Any) -> "concurrent.futures.Future[T]":
    future: "concurrent.futures.Future[T]" = concurrent.futures.Future()
    try:
        future.set_result(fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - delivered through the future, as a thread would
        future.set_exception(exc)
    return future


def _run_fresh(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = asyncio.new_event_loop()
    executor = _ReleaseExecutor(max_workers=4, thread_name_prefix="taos-persona-release")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(factory())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        executor.shutdown(wait=True)


def run_on_loop(loop: Optional[asyncio.AbstractEventLoop],
                factory: Callable[[], Coroutine[Any, Any, Any]]) -> bool:
    """Run a coroutine on the loop its objects belong to (a fixture's HTTP session), from outside.

    An idle loop runs it here; a loop running in another thread runs it there, waited
    for up to ``OWN_LOOP_TIMEOUT`` seconds. A loop running in this thread (a signal
    interrupted it) or a closed one cannot: returns False, and the caller's own
    unwinding (``__aexit__``) is left to do it. Errors are swallowed: closing
    connections must never mask a release or a test's exception.
    """
    if loop is None or loop.is_closed():
        return False
    here = asyncio._get_running_loop()
    if (here is loop) if loop.is_running() else (here is not None):
        return False  # interrupted in this thread, or idle while another loop runs here
    try:
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(factory(), loop).result(OWN_LOOP_TIMEOUT)
        else:
            loop.run_until_complete(factory())
    except Exception:  # noqa: BLE001
        return False
    return True

"""Process lifetime: release open fixtures on SIGINT, SIGTERM, SIGHUP and at interpreter exit.

Why not just let ``KeyboardInterrupt`` unwind into ``__aexit__``? Because
unittest skips ``addCleanup`` callbacks on KeyboardInterrupt, pytest runs no
teardown on SIGTERM, and an exception raised inside a running event loop can
leave it unable to run our exit at all. So the handler releases every open
fixture itself, on a fresh event loop in a helper thread (the interrupted
loop may be mid-step), then ends the process the conventional way: by dying
of the same signal (exit status 130, 143, 129 as a shell shows it), unless
a handler installed before ours wants the signal, in which case it is
called. A second signal during the release stops it at once; the registry
still lists whatever is left, for the next sweep.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import signal
import sys
import threading
from typing import Any, Callable, Coroutine, Dict, List

from ._redact import describe_error

__all__ = ["register", "unregister", "run_blocking", "HANDLED_SIGNALS"]

HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                        if hasattr(signal, name))

_open: List[Any] = []            # open PersonaFixture objects, oldest first
_previous: Dict[int, Any] = {}   # signal -> the handler we replaced
_releasing = False
_atexit_registered = False


def register(fixture: Any) -> None:
    """Track an open fixture; install our handlers with the first one."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_release_at_exit)
        _atexit_registered = True
    _open.append(fixture)
    if len(_open) == 1:
        _install()


def unregister(fixture: Any) -> None:
    """Stop tracking a closed fixture; restore the old handlers after the last one."""
    if fixture in _open:
        _open.remove(fixture)
    if not _open:
        _uninstall()


def _install() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only live in the main thread; atexit still covers us
    for signum in HANDLED_SIGNALS:
        try:
            _previous[signum] = signal.signal(signum, _handle)
        except (ValueError, OSError):
            pass


def _uninstall() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _handle:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous[signum]


def _handle(signum: int, frame: Any) -> None:
    """Release everything, then end as the signal would have; a second signal ends at once."""
    global _releasing
    if _releasing:
        _die(signum)
    previous = _previous.get(signum)  # read first: the release unregisters the last fixture
    _releasing = True
    try:
        _release_all()
    finally:
        _releasing = False
    if callable(previous) and not _is_default_like(previous):
        previous(signum, frame)
        return
    _die(signum)


def _is_default_like(handler: Callable[..., Any]) -> bool:
    """Python's own SIGINT handler and asyncio.Runner's both just mean "stop the program"."""
    if handler is signal.default_int_handler:
        return True
    target = getattr(handler, "func", handler)  # asyncio.Runner installs a functools.partial
    return getattr(target, "__qualname__", "").startswith("Runner._on_sigint")


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the default action did not end us


def _release_all() -> None:
    """Release every open fixture, newest first; one that fails does not stop the others."""
    for fixture in reversed(list(_open)):
        try:
            fixture._release_from_outside()
        except Exception as exc:  # noqa: BLE001 - the registry still lists what is left
            sys.stderr.write(f"taos-persona: could not release {fixture!r}: {describe_error(exc)}; "
                             "python -m taos_persona.sweep will\n")


def _release_at_exit() -> None:
    _release_all()


def run_blocking(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
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
    return box.get("result")


def _run_fresh(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(factory())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


"""The fleet registry's own event loop, in a daemon thread, and what a forked child must drop.

The owner's heartbeat runs here, not on the test's loop: a test that keeps
its loop busy (CPU work, a blocking call) never misses a heartbeat, and the
signal and atexit paths, which run on fresh loops, reach the same
connections. Calls from other threads block on a future (``call``) or await
it (``acall``).
"""
from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any, Awaitable, Callable, Coroutine, List, Optional, TypeVar

from ..errors import RegistryError

__all__ = ["IOThread", "drop_in_forked_child"]

T = TypeVar("T")
_live: "weakref.WeakSet[IOThread]" = weakref.WeakSet()


class IOThread:
    """One event loop in one daemon thread, started on first use; ``close()`` is safe twice."""

    def __init__(self, name: str = "taos-persona-fleet") -> None:
        self.name = name
        self.pid = os.getpid()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self.socket_fds: Callable[[], List[int]] = list  # the store tells which fds to drop on fork

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started if needed; a forked child gets an error, not our sockets."""
        if os.getpid() != self.pid:
            raise RegistryError("this process was forked from the fleet registry's owner: the child does "
                                "not own the parent's run; open a fixture of its own in the child")
        with self._start_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
                self._thread.start()
                _live.add(self)
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def call(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """Run ``coro`` on our loop and wait for it (from any other thread), ``timeout`` seconds at most."""
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("IOThread.call() from its own thread would wait for itself")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def acall(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Run ``coro`` on our loop; await the result from another loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop()))

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None or os.getpid() != self.pid:
            return
        if thread is not threading.current_thread():
            try:  # end what still runs there (heartbeats, reconnects) before the loop closes under it
                asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=10)
            except Exception:  # noqa: BLE001 - closing anyway; the process may be exiting
                pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join()
            loop.close()


async def _cancel_all() -> None:
    """Cancel every other task of the running loop and wait for them to end."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def drop_in_forked_child() -> None:
    """In a forked child: point every fleet socket's descriptor at /dev/null.

    A child holding a copy of the lock's TCP socket would keep the session
    (and so the advisory lock) alive after its parent is SIGKILLed, exactly
    as an inherited flock would. dup2 over the descriptor drops the child's
    reference without freeing the number for reuse under Python's objects.
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for io in list(_live):
            for fd in io.socket_fds():
                try:
                    os.dup2(devnull, fd)
                except OSError:
                    pass
    finally:
        os.close(devnull)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=drop_in_forked_child)

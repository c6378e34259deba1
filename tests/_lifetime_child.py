"""Persona runs for test_lifetime.py, in a child process (``python tests/_lifetime_child.py MODE ...``).

Modes:
- ``hold REGISTRY COUNT``: a fixture in the main thread holds COUNT file resources,
  prints ``HOLDING``, waits for a line on stdin, then leaves and prints ``DONE``.
- ``thread REGISTRY COUNT [--install]``: two fixtures, each opened in a thread of its
  own (as a synchronous persona's private loop does), hold COUNT resources each; the
  main thread prints ``HOLDING`` and sleeps. ``--install`` calls
  ``lifetime.install()`` in the main thread first.
- ``exit REGISTRY BACKEND [DATABASE]``: a fixture entered on a loop that is never
  run again acquires one resource, prints ``HOLDING`` and the script ends with it
  open: only the atexit release can release it.

Backends come from ``TAOS_PERSONA_PLUGINS`` / the file backend reads ``TAOS_TEST_FILES``.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taos_persona import PersonaFixture, lifetime  # noqa: E402
from taos_persona.sweeper import load_plugins  # noqa: E402


def say(word: str) -> None:
    print(word, flush=True)


async def hold(registry: str, count: int, until: "asyncio.Future[str]", ready: Callable[[], None]) -> None:
    async with PersonaFixture("novice_sarah", registry_dir=registry, sweep=False) as persona:
        for _ in range(count):
            await persona.acquire("file")
        ready()
        await until


def main_hold(registry: str, count: int) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        await hold(registry, count, loop.run_in_executor(None, sys.stdin.readline), lambda: say("HOLDING"))
    asyncio.run(run())
    say("DONE")


def main_thread(registry: str, count: int, install: bool) -> None:
    if install:
        lifetime.install()
    for _ in range(2):
        ready = threading.Event()

        async def run(ready: threading.Event = ready) -> None:
            await hold(registry, count, asyncio.get_running_loop().create_future(), ready.set)
        threading.Thread(target=asyncio.run, args=(run(),), daemon=True).start()
        ready.wait(60)
    say("HOLDING")
    time.sleep(120)  # the parent signals us now


def main_exit(registry: str, backend: str, database: str) -> None:
    loop = asyncio.new_event_loop()
    fixture = PersonaFixture("novice_sarah", registry_dir=registry, sweep=False)
    loop.run_until_complete(fixture.__aenter__())
    options = {"database": database, "create_table": True} if backend == "sql" else {}
    loop.run_until_complete(fixture.acquire(backend, **options))
    say("HOLDING")


if __name__ == "__main__":
    load_plugins()
    mode, registry, arg = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "hold":
        main_hold(registry, int(arg))
    elif mode == "thread":
        main_thread(registry, int(arg), "--install" in sys.argv)
    else:
        main_exit(registry, arg, sys.argv[4] if len(sys.argv) > 4 else "")

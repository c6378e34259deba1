"""A persona run in a child process that holds real sandbox resources: for discovery and watchdog tests.

``--backend NAME`` (repeatable) acquires one resource of each, in order, then it
prints ``ENTERED <run id>``, ``WATCHDOG <pid or none>`` and ``HOLDING``, and
waits until its stdin closes (or it is killed), then leaves the fixture and
prints ``DONE``. The environment must point the backends at a sandbox.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taos_persona import PersonaFixture, watchdog  # noqa: E402


def say(line: str) -> None:
    print(line, flush=True)


async def main(args: argparse.Namespace) -> None:
    async with PersonaFixture("novice_sarah", registry_dir=args.registry, sweep=False,
                              watchdog=args.watchdog) as persona:
        for name in args.backend:
            options = {"create_table": True} if name == "sql" else {}
            await persona.acquire(name, **options)
        say(f"ENTERED {persona.run_id}")
        say(f"WATCHDOG {watchdog.watchdog_pid() or 'none'}")
        say("HOLDING")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    say("DONE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", required=True)
    parser.add_argument("--backend", action="append", default=[])
    parser.add_argument("--watchdog", action="store_true")
    asyncio.run(main(parser.parse_args()))

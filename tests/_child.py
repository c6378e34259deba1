"""A persona run in a child process, for crash and signal tests.

It prints ``ENTERED``, ``ACQUIRED <n>`` after each acquisition, ``HOLDING``
while it sleeps, ``RELEASING`` before leaving the fixture, ``DONE`` after.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tests._backends  # noqa: E402,F401  registers the file backends
from taos_persona import PersonaFixture  # noqa: E402


def say(word: str) -> None:
    print(word, flush=True)


async def main(args: argparse.Namespace) -> None:
    os.environ["TAOS_TEST_FILES"] = args.files
    async with PersonaFixture(args.persona, registry_dir=args.registry, sweep=not args.no_sweep) as persona:
        say(f"ENTERED {persona.run_id}")
        for number in range(args.count):
            options = {"database": args.db, "create_table": True} if args.backend == "sql" else {}
            await persona.acquire(args.backend, **options)
            say(f"ACQUIRED {number + 1}")
        say("HOLDING")
        await asyncio.sleep(args.hold)
        say("RELEASING")
    say("DONE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", required=True)
    parser.add_argument("--files", required=True)
    parser.add_argument("--backend", default="file")
    parser.add_argument("--db")
    parser.add_argument("--persona", default="novice_sarah")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--no-sweep", action="store_true", help="skip the startup sweep")
    asyncio.run(main(parser.parse_args()))

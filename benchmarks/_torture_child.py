"""The processes the torture kills: persona runs, soak workers and sweepers.

``python -m benchmarks._torture_child MODE ...`` where MODE is

* ``run``: one fixture acquiring ``--count`` resources round-robin from
  ``--backends``, holding ``--hold`` seconds, then leaving. It prints
  ``ENTERED <run id>``, ``ACQUIRED <n>``, ``HOLDING``, ``RELEASING``, ``DONE``,
  or ``ERROR <type>: <message>`` (exit 3) when the library refuses. Options
  put it under a memory limit (``--mem-headroom``), a file-size limit
  (``--fsize``) or ``--umask``, or make it eat memory while it holds (``--eat``).
* ``soak``: fixtures in a loop, forever (the torture kills it), each
  acquiring ``--backends`` with random pauses; prints ``ACQUIRED <backend>``.
* ``sweeper``: ``sweep_async`` in a loop until SIGTERM, one JSON line per
  sweep on stdout, and every exception that escapes a sweep as a line too.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import sys
import traceback
import urllib.request
from typing import Any, Dict, List

import benchmarks._torture_backends  # noqa: F401  registers torture_file
import tests._backends  # noqa: F401  registers file
from taos_persona import PersonaFixture
from taos_persona.errors import PersonaError
from taos_persona.sweeper import sweep_async

OAUTH_SANDBOX = {"github": "github", "google": "google", "oauth_rfc7009": "oauth"}
"""Backend name -> the sandbox's OAuth server that mints its authorization codes."""


def say(text: str) -> None:
    print(text, flush=True)


def mint_code(backend: str) -> str:
    """An authorization code from the sandbox, as if the persona had clicked "Authorize"."""
    body = json.dumps({"provider": OAUTH_SANDBOX[backend]}).encode()
    request = urllib.request.Request(os.environ["TAOS_PERSONA_SANDBOX"] + "/_sandbox/oauth/code",
                                     data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode())["code"]


def options_for(backend: str, db: str) -> Dict[str, Any]:
    """The acquire options each backend needs to make something real."""
    if backend == "sql":
        return {"database": db, "create_table": True}
    if backend in OAUTH_SANDBOX:
        return {"code": mint_code(backend)}
    return {}


def limit(args: argparse.Namespace) -> None:
    """Apply the resource limits asked for, after the imports they would break."""
    if args.umask is not None:
        os.umask(args.umask)
    if args.fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not death
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, args.fsize))
    if args.mem_headroom:
        ceiling = _address_space() + args.mem_headroom
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))


def _address_space() -> int:
    """This process's virtual size now (VmSize), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def eat_memory() -> List[bytes]:
    """Allocate until the memory limit says no (MemoryError) or the torture kills us."""
    hoard: List[bytes] = []
    while True:
        hoard.append(b"\x01" * (4 << 20))  # touched pages: resident, as a real leak is


async def run(args: argparse.Namespace) -> None:
    backends = args.backends.split(",")
    async with PersonaFixture(args.persona, registry_dir=args.registry, sweep=not args.no_sweep) as persona:
        say(f"ENTERED {persona.run_id}")
        for number in range(args.count):
            backend = backends[number % len(backends)]
            await persona.acquire(backend, **options_for(backend, args.db))
            say(f"ACQUIRED {number + 1}")
        say("HOLDING")
        if args.eat:
            eat_memory()
        await asyncio.sleep(args.hold)
        say("RELEASING")
    say("DONE")


async def soak(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    backends = args.backends.split(",")
    for _ in range(args.iterations):
        async with PersonaFixture(args.persona, registry_dir=args.registry) as persona:
            say(f"RUN {persona.run_id}")
            for backend in backends:
                await asyncio.sleep(rng.uniform(0, 0.01))
                await persona.acquire(backend, **options_for(backend, args.db))
                say(f"ACQUIRED {backend}")
            await asyncio.sleep(rng.uniform(0, 0.03))
    await asyncio.sleep(3600)  # out of work: wait for the torture's kill


async def sweeper(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        try:
            report = await sweep_async(args.registry)
            line = {"released": len(report.released), "kept": len(report.kept),
                    "problems": report.problems, "quarantined": len(report.quarantined)}
        except Exception:  # noqa: BLE001 - exactly what the torture counts
            line = {"exception": traceback.format_exc()}
        say(json.dumps(line))
        await asyncio.sleep(rng.uniform(0, 0.05))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._torture_child")
    parser.add_argument("mode", choices=("run", "soak", "sweeper"))
    parser.add_argument("--registry", required=True)
    parser.add_argument("--files", default="")
    parser.add_argument("--db", default="")
    parser.add_argument("--backends", default="torture_file")
    parser.add_argument("--persona", default="tortured")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--eat", action="store_true", help="allocate memory without end while holding")
    parser.add_argument("--mem-headroom", type=int, default=0,
                        help="RLIMIT_AS: the virtual size now plus this many bytes")
    parser.add_argument("--fsize", type=int, default=None, help="RLIMIT_FSIZE in bytes")
    parser.add_argument("--umask", type=lambda text: int(text, 8), default=None)
    return parser


def main(argv: Any = None) -> int:
    args = _parser().parse_args(argv)
    if args.files:
        os.environ["TAOS_TEST_FILES"] = args.files
    limit(args)
    try:
        asyncio.run({"run": run, "soak": soak, "sweeper": sweeper}[args.mode](args))
    except PersonaError as exc:
        say(f"ERROR {type(exc).__name__}: {exc}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

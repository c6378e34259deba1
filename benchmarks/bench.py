"""``make bench``: what the crash-safety guarantee costs, each figure against a baseline of the same run.

Every figure is a median of repeated measurements (where one measurement is
cheap enough to repeat), taken in alternation with its baseline so that a
noisy disk or a busy machine hits both alike. Provider calls go over real
HTTP to ``taos_persona.sandbox`` in a process of its own on 127.0.0.1.

Exit status: 0 when every goal is met, 1 when one is not (the table marks it
FAIL), 2 on bad usage. Rows marked ``*`` are machine-dependent: they compare
an fsync with a provider round trip, or depend on the number of cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks._harness import (REPO, LockHolder, SandboxProcess, child_env, median, metered,
                                 populate_orphans, timed)

__all__ = ["main", "Row"]

GROUPS = ("bookkeeping", "scale", "persona", "sweep", "startup", "import", "watchdog")
PROVIDER_LATENCY = 0.010
"""Seconds the sandbox waits before answering, where a figure compares with provider calls.

Real providers answer in 50-300 ms; on bare loopback the sandbox answers in
well under a millisecond, less than one fsync, which would make every ratio
a measure of the disk against the loopback device. 10 ms is a fast provider.
"""
SWEEP_CONCURRENCY = 32
"""Release requests in flight per provider for the big sweep (``--concurrency 32``)."""


@dataclass
class Row:
    """One line of the table. ``passed`` is None for an informational row without a goal."""

    figure: str
    measured: float
    baseline: Optional[float]
    """None for a figure with an absolute goal only."""
    goal: str
    passed: Optional[bool]
    unit: str = "s"
    machine: bool = False
    faster: bool = False
    """Show the ratio as baseline / measured ("12.3x faster") rather than measured / baseline."""

    def ratio(self) -> str:
        if self.baseline is None:
            return "-"
        top, bottom = (self.baseline, self.measured) if self.faster else (self.measured, self.baseline)
        return f"{top / bottom:.2f}x" + (" faster" if self.faster else "")

    def cells(self) -> List[str]:
        verdict = "-" if self.passed is None else "PASS" if self.passed else "FAIL"
        figure = self.figure + (" *" if self.machine else "")
        if self.unit == "bool":
            return [figure, "yes" if self.measured else "no", "-", "-", self.goal, verdict]
        baseline = "-" if self.baseline is None else _show(self.baseline, self.unit)
        return [figure, _show(self.measured, self.unit), baseline, self.ratio(), self.goal, verdict]


def _show(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value / 2 ** 20:.1f} MB"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.0f} us"


# -- bookkeeping per acquisition ------------------------------------------------------------------
def _register_null_backend() -> str:
    """A backend whose provider costs nothing: what is left of an acquisition is bookkeeping."""
    from taos_persona.backends import BACKENDS, Backend, Lease, register

    if "bench_null" not in BACKENDS:

        @register("bench_null")
        class NullBackend(Backend):
            """Plans and tokens shaped like ``rest_user``'s, so records have a realistic size."""

            def plan(self, persona: Any, **options: Any) -> Dict[str, Any]:
                return {"username": persona.unique_name()}

            async def acquire(self, persona: Any, **planned: Any) -> Lease:
                return Lease(planned["username"], {"id": "u_" + secrets.token_hex(6), **planned})

            async def release(self, token: Dict[str, Any]) -> None:
                return None

            async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
                return None  # like rest_user, it can look a planned name up (here: nothing)

    return "bench_null"


def floor_write(directory: str, size: int, durable: bool = False) -> None:
    """The physical floor: temp file, write, fsync, rename; a file of ``size`` bytes.

    ``durable`` adds the fsync of the directory that makes the rename itself
    survive a power cut, as every registry write does.
    """
    temp = os.path.join(directory, f".floor.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, os.path.join(directory, "floor.json"))
    if durable:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


Sample = Tuple[float, float, float]
"""One acquisition's bookkeeping, then a floor write and a durable floor write of the same size."""


async def _acquisitions(fixture: Any, count: int, floor_dir: Optional[str] = None) -> List[Sample]:
    """Time ``count`` null acquisitions; after each, floor writes of the registry file's size."""
    backend, samples = _register_null_backend(), []
    for _ in range(count):
        start = time.perf_counter()
        await fixture.acquire(backend)
        spent = time.perf_counter() - start
        floor = durable = 0.0
        if floor_dir is not None:
            size = os.path.getsize(fixture.registry.json_path(fixture.run_id))
            floor = timed(lambda size=size: floor_write(floor_dir, size))
            durable = timed(lambda size=size: floor_write(floor_dir, size, durable=True))
        samples.append((spent, floor, durable))
    return samples


async def _bookkeeping(workdir: str) -> List[Row]:
    from taos_persona import PersonaFixture

    registry = os.path.join(workdir, "bookkeeping")
    samples: List[Sample] = []
    for _ in range(15):  # fresh fixtures: a persona holds a handful of resources, not hundreds
        async with PersonaFixture("bench", registry_dir=registry, sweep=False) as fixture:
            samples += await _acquisitions(fixture, 20, registry)
    spent, floor, durable = (median([sample[i] for sample in samples]) for i in range(3))
    return [Row("bookkeeping per acquisition (intent + held) vs one temp+fsync+rename", spent, floor,
                "<= 2x", spent <= 2 * floor, machine=True),
            Row("  the same vs one temp+fsync+rename+fsync(dir), the registry's write (no goal)",
                spent, durable, "-", None, machine=True)]


async def _preloaded(registry: str, live: int) -> Any:
    from taos_persona import PersonaFixture

    fixture = PersonaFixture("bench", registry_dir=registry, sweep=False)
    await fixture.__aenter__()
    await _acquisitions(fixture, live)
    return fixture


async def _scale(workdir: str) -> List[Row]:
    """Per-acquisition bookkeeping with 1,000 live resources against 10 live, alternating."""
    registry = os.path.join(workdir, "scale")
    big = await _preloaded(registry, 1000)
    many, few = [], []
    try:
        for _ in range(8):
            small = await _preloaded(registry, 10)
            try:
                for _ in range(5):
                    many += [p[0] for p in await _acquisitions(big, 1)]
                    few += [p[0] for p in await _acquisitions(small, 1)]
            finally:
                await small.__aexit__(None, None, None)
    finally:
        await big.__aexit__(None, None, None)
    measured, baseline = median(many), median(few)
    return [Row("bookkeeping per acquisition, 1,000 live vs 10 live", measured, baseline, "<= 3x",
                measured <= 3 * baseline)]


# -- a persona test against the sandbox -----------------------------------------------------------
async def _persona_test(count: int, registry: str) -> float:
    from taos_persona import PersonaFixture

    start = time.perf_counter()
    async with PersonaFixture("bench", registry_dir=registry, sweep=False) as persona:
        for _ in range(count):
            await persona.acquire("rest_user")
    return time.perf_counter() - start


async def _bare_test(count: int) -> float:
    """The same backend calls in a bare try/finally, released with the same concurrency."""
    from taos_persona.backends.rest import RestUser
    from taos_persona.naming import Persona, new_run_id
    from taos_persona.releaser import DEFAULT_CONCURRENCY

    backend, persona, leases = RestUser(), Persona("bench", new_run_id()), []
    start = time.perf_counter()
    try:
        for _ in range(count):
            leases.append(await backend.acquire(persona, **backend.plan(persona)))
    finally:
        limit = asyncio.Semaphore(DEFAULT_CONCURRENCY)

        async def release(token: Dict[str, Any]) -> None:
            async with limit:
                await backend.release(token)

        await asyncio.gather(*(release(lease.token) for lease in reversed(leases)))
        await backend.aclose()
    return time.perf_counter() - start


async def _persona_vs_bare(registry: str, rounds: int) -> Tuple[float, float]:
    await _persona_test(5, registry)  # warm up: imports, first connections
    await _bare_test(5)
    persona, bare = [], []
    for _ in range(rounds):
        persona.append(await _persona_test(100, registry))
        bare.append(await _bare_test(100))
    return median(persona), median(bare)


def _persona(workdir: str, sandbox: SandboxProcess, latency: float) -> List[Row]:
    registry = os.path.join(workdir, "persona")
    before = sandbox.alive_users()
    sandbox.latency(latency)
    measured, baseline = asyncio.run(_persona_vs_bare(registry, 7))
    sandbox.latency(0)
    loopback, bare_loopback = asyncio.run(_persona_vs_bare(registry, 7))
    if sandbox.alive_users() != before:
        raise RuntimeError(f"the persona tests leaked {sandbox.alive_users() - before} sandbox users")
    return [Row(f"100-acquisition persona test vs bare try/finally ({latency * 1e3:g} ms provider)",
                measured, baseline, "<= 1.15x", measured <= 1.15 * baseline, machine=True),
            Row("  the same on bare loopback (sandbox answers in < 1 ms; no goal)", loopback,
                bare_loopback, "-", None, machine=True)]


# -- sweeping orphans -----------------------------------------------------------------------------
async def _one_by_one(tokens: Sequence[Dict[str, Any]]) -> float:
    from taos_persona.backends.rest import RestUser

    backend = RestUser()
    start = time.perf_counter()
    try:
        for token in tokens:
            await backend.release(token)
    finally:
        await backend.aclose()
    return time.perf_counter() - start


def _sweep_child(directory: str, sandbox: SandboxProcess, concurrency: int) -> Tuple[Dict[str, Any], int]:
    """One sweep in a child process under a meter: (its JSON summary, its peak RSS)."""
    command = [sys.executable, "-m", "benchmarks._harness", "sweep", directory, str(concurrency)]
    out, rss = metered(command, sandbox.env)
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["kept"] or summary["status"] != 0:
        raise RuntimeError(f"the sweep of {directory} left resources: {summary}")
    return summary, rss


def _sweep(workdir: str, sandbox: SandboxProcess, latency: float, concurrency: int) -> List[Row]:
    sandbox.latency(0)
    small, large = os.path.join(workdir, "orphans-1k"), os.path.join(workdir, "orphans-10k")
    sample = populate_orphans("", 1000, 1)
    populate_orphans(large, 1000, 10)
    sandbox.latency(latency)
    one_by_one = asyncio.run(_one_by_one(sample)) * 10  # sequential: exactly linear
    small_times = []
    for index in range(3):
        sandbox.latency(0)
        populate_orphans(f"{small}-{index}", 100, 10)
        sandbox.latency(latency)
        small_times.append(_sweep_child(f"{small}-{index}", sandbox, concurrency)[0]["seconds"])
    summary, peak = _sweep_child(large, sandbox, concurrency)
    sandbox.latency(0)
    if sandbox.alive_users() != 0 or summary["released"] != 10000:
        raise RuntimeError(f"the sweep did not release every orphan: {summary}, "
                           f"{sandbox.alive_users()} alive")
    bare_rss = metered([sys.executable, "-c", "pass"])[1]
    big, linear = summary["seconds"], median(small_times)
    return [Row(f"sweep 10,000 orphans in 1,000 dead runs vs one by one ({latency * 1e3:g} ms provider)",
                big, one_by_one, ">= 10x faster", big * 10 <= one_by_one, machine=True, faster=True),
            Row("  the same sweep, absolute", big, None, "< 10 s", big < 10, machine=True),
            Row("sweep 10,000 orphans vs 1,000 orphans (median of 3)", big, linear, "<= 11x",
                big <= 11 * linear, machine=True),
            Row("peak memory of the 10,000-orphan sweep vs bare interpreter", peak, bare_rss,
                "< +100 MB", peak - bare_rss < 100 * 2 ** 20, unit="MB")]


# -- the startup sweep ----------------------------------------------------------------------------
async def _startup_samples(busy: str, empty: str, rounds: int) -> Tuple[List[float], List[float]]:
    from taos_persona.sweeper import sweep_async

    busy_times, empty_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        report = await sweep_async(busy)
        busy_times.append(time.perf_counter() - start)
        if len(report.live_runs) != 1000 or report.outcomes or report.quarantined:
            raise RuntimeError("the startup sweep touched a live run")
        start = time.perf_counter()
        await sweep_async(empty)
        empty_times.append(time.perf_counter() - start)
    return busy_times, empty_times


def _startup(workdir: str) -> List[Row]:
    busy, empty = os.path.join(workdir, "live-runs"), os.path.join(workdir, "empty")
    os.makedirs(empty, mode=0o700)
    with LockHolder(busy, 1000):
        busy_times, empty_times = asyncio.run(_startup_samples(busy, empty, 30))
    measured, baseline = median(busy_times), median(empty_times)
    return [Row("startup sweep, 1,000 live runs of another process", measured, baseline, "< 100 ms",
                measured < 0.1, machine=True),
            Row("startup sweep, empty directory", baseline, None, "< 2 ms", baseline < 0.002,
                machine=True)]


# -- import time ----------------------------------------------------------------------------------
def _python_seconds(code: str) -> float:
    command = [sys.executable, "-c", code]
    return timed(lambda: subprocess.run(command, cwd=REPO, env=child_env(), check=True))


def _import(rounds: int = 25) -> List[Row]:
    check = "import sys, taos_persona; sys.exit('aiohttp' in sys.modules or 'asyncio' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=child_env()).returncode == 0
    bare, package, fixture = [], [], []
    for _ in range(rounds):
        bare.append(_python_seconds("pass"))
        package.append(_python_seconds("import taos_persona"))
        fixture.append(_python_seconds("from taos_persona import PersonaFixture"))
    base, measured = median(bare), median(package)
    return [Row("import taos_persona vs python -c pass", measured, base, "< +30 ms",
                measured - base < 0.030, machine=True),
            Row("  import taos_persona imports neither aiohttp nor asyncio", float(light), 1.0,
                "yes", light, unit="bool"),
            Row("  from taos_persona import PersonaFixture (asyncio; no goal)", median(fixture), base,
                "-", None, machine=True)]


# -- the watchdog's start-up cost -----------------------------------------------------------------
_FIRST_FIXTURE = """
import asyncio, sys, time
from taos_persona import PersonaFixture

async def main():
    fixture = PersonaFixture("bench", registry_dir=sys.argv[1], sweep=False, watchdog=sys.argv[2] == "1")
    start = time.perf_counter()
    await fixture.__aenter__()
    print(time.perf_counter() - start)
    await fixture.__aexit__(None, None, None)

asyncio.run(main())
"""


def _watchdog(workdir: str, rounds: int = 15) -> List[Row]:
    """The first fixture of a fresh process, watchdog on and off in alternation."""
    registry = os.path.join(workdir, "watchdog")
    samples: Dict[str, List[float]] = {"1": [], "0": []}
    for _ in range(rounds):
        for flag, times in samples.items():
            done = subprocess.run([sys.executable, "-c", _FIRST_FIXTURE, registry, flag], cwd=REPO,
                                  env=child_env(), check=True, capture_output=True, text=True)
            times.append(float(done.stdout))
    measured, baseline = median(samples["1"]), median(samples["0"])
    return [Row("first fixture with the watchdog vs without (its start-up cost)", measured, baseline,
                "<= +50 ms", measured - baseline <= 0.050, machine=True)]


# -- the table ------------------------------------------------------------------------------------
def render(rows: Sequence[Row]) -> str:
    header = ["figure", "measured", "baseline", "ratio", "goal", "result"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    rule = "  ".join("=" * width for width in widths)
    lines = [rule, "  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip(), rule]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table[1:]]
    return "\n".join(lines + [rule])


def machine_line() -> str:
    return (f"machine: {os.cpu_count()} CPUs ({platform.machine()}), {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def load_line() -> str:
    """How busy the machine already is: other work on the disk skews every fsync figure."""
    load = f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "load unknown"
    try:
        with open("/proc/pressure/io") as handle:
            some = handle.readline().split()[1].split("=")[1]
        return f"{load}; I/O pressure {some}% (10 s average; above a few % the fsync rows suffer)"
    except (OSError, IndexError):
        return load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups to run (default all: {','.join(GROUPS)})")
    parser.add_argument("--latency", type=float, default=PROVIDER_LATENCY, metavar="SECONDS",
                        help="provider latency the sandbox adds (default %(default)g)")
    parser.add_argument("--concurrency", type=int, default=SWEEP_CONCURRENCY, metavar="N",
                        help="sweep requests in flight per provider (default %(default)s)")
    return parser


def _run_groups(groups: Sequence[str], workdir: str, args: argparse.Namespace) -> List[Row]:
    rows: List[Row] = []
    local: Dict[str, Callable[[], List[Row]]] = {
        "bookkeeping": lambda: asyncio.run(_bookkeeping(workdir)),
        "scale": lambda: asyncio.run(_scale(workdir)),
        "startup": lambda: _startup(workdir),
        "import": _import,
        "watchdog": lambda: _watchdog(workdir)}
    for group in (g for g in GROUPS if g in groups and g in local):
        rows += local[group]()
    if {"persona", "sweep"} & set(groups):
        with SandboxProcess() as sandbox:
            os.environ.update(sandbox.env)
            if "persona" in groups:
                rows += _persona(workdir, sandbox, args.latency)
            if "sweep" in groups:
                rows += _sweep(workdir, sandbox, args.latency, args.concurrency)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown or args.latency < 0 or args.concurrency < 1:
        _parser().error(f"unknown groups {sorted(unknown)}" if unknown else "bad --latency/--concurrency")
    workdir = os.path.join(REPO, ".bench", f"run-{os.getpid()}")
    os.makedirs(workdir, mode=0o700)
    print(machine_line(), flush=True)
    print(load_line(), flush=True)
    print(f"provider latency {args.latency * 1e3:g} ms where marked; sweep concurrency "
          f"{args.concurrency} per provider; registry on {workdir}", flush=True)
    try:
        rows = _run_groups(groups, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(rows))
    failed = [row for row in rows if row.passed is False]
    print("* machine-dependent: compares an fsync with a provider round trip, or depends on "
          "CPU speed and core count")
    print(f"{len(failed)} of {sum(row.passed is not None for row in rows)} goals failed" if failed
          else "every goal met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

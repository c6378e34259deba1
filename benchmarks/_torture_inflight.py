"""Torture rows for time (issue 8, kinds 3 and 8): creates that outlive their sender, hanging providers.

* ``cancellation while a create is in flight``: a child's ``asyncio.wait_for``
  gives up on an acquisition while the sandbox is slow to answer it; the
  provider creates it anyway, after the child's fixture has closed. The
  intent must outlive the fixture until the sweep finds what landed.
* ``a hanging provider at startup``: a run holding a sandbox resource is
  SIGKILLed; the provider then hangs on every release. The next fixture's
  start must not wait on it past the startup sweep's bound, and the dead
  run's record must stay for a later sweep.

Each: 0 survivors at the sandbox, 0 live-run releases, 0 records dropped
for resources still alive.
"""
from __future__ import annotations

import random
import signal
import time
from typing import Dict, List, Tuple

from ._torture_crash import run_args, sweep_and_count
from ._torture_env import _settle
from ._torture_kit import PY, Child, Lane, Row, TrialDirs, registry_runs, run_lanes, torture_env

__all__ = ["create_in_flight", "hanging_provider", "INFLIGHT_BACKENDS"]

INFLIGHT_BACKENDS: Dict[str, str] = {"rest_user": "example_app", "rest_token": "example_app",
                                     "mailtm": "mailtm", "mailsac": "mailsac"}
"""Backends whose names are chosen before the create (so ``recover`` finds a late one) -> sandbox provider."""

_GIVE_UP = (  # acquire under wait_for; the fixture closes while the provider still works on it
    "import asyncio, sys\n"
    "import aiohttp  # noqa: F401  imported now, so that the give-up falls while the request is out\n"
    "from taos_persona import PersonaFixture\n"
    "async def main():\n"
    "    async with PersonaFixture('tortured', registry_dir=sys.argv[1], sweep=False) as persona:\n"
    "        try:\n"
    "            await asyncio.wait_for(persona.acquire(sys.argv[2]), float(sys.argv[3]))\n"
    "            print('ACQUIRED', flush=True)\n"
    "        except asyncio.TimeoutError:\n"
    "            print('GAVE UP', flush=True)\n"
    "asyncio.run(main())\n")
_ENTER = (  # a fixture start with its startup sweep, timed from inside
    "import asyncio, sys, time\n"
    "from taos_persona import PersonaFixture\n"
    "async def main():\n"
    "    started = time.monotonic()\n"
    "    async with PersonaFixture('tortured', registry_dir=sys.argv[1]):\n"
    "        print(f'ENTERED {time.monotonic() - started:.3f}', flush=True)\n"
    "asyncio.run(main())\n")
STARTUP_BOUND = 1.0
"""Seconds the startup sweep may hold a start in the hanging-provider row."""


def create_in_flight(lanes: List[Lane], rng: random.Random, trials: int) -> Row:
    """``trials`` acquisitions given up while in flight, on backends drawn by the seed."""
    items = [(rng.choice(sorted(INFLIGHT_BACKENDS)), rng.uniform(0.3, 0.8)) for _ in range(trials)]
    row = Row("cancellation while a create is in flight")
    for result in run_lanes(lanes, items, _inflight_trial):
        row.merge(result)
    return row


def _inflight_trial(lane: Lane, item: Tuple[str, float]) -> Row:
    backend, patience = item
    row = Row("cancellation while a create is in flight", trials=1, faults=1)
    dirs = lane.dirs()
    env = torture_env(lane.sandbox.url)
    before = lane.sandbox.total()
    lane.sandbox.inject("delay", 1, delay=patience + 1.0, provider=INFLIGHT_BACKENDS[backend], method="POST")
    child = Child([PY, "-c", _GIVE_UP, dirs.registry, backend, f"{patience:.3f}"], env, dirs.root)
    status = child.finish(60)
    if status != 0 or "GAVE UP" not in child.out:
        row.fail(f"{backend}: the child did not give up as planned (exit {status}): {child.err[-300:]}")
    lands_by = time.monotonic() + 1.0 + 5  # the delay outlasts the child's patience by 1 s
    while lane.sandbox.total() == before and time.monotonic() < lands_by:
        time.sleep(0.05)  # the provider finishes the create after its sender stopped waiting
    if lane.sandbox.total() > before and not registry_runs(dirs.registry):
        row.fail(f"{backend}: the create landed after the fixture closed and no record was kept for it")
    _settle_when_due(lane, dirs, env, row, f"{backend} given up after {patience:.2f}s")
    return row


def _settle_when_due(lane: Lane, dirs: TrialDirs, env: Dict[str, str], row: Row, label: str) -> None:
    """Sweep until the late resource is found (a sweep before it lands keeps the intent)."""
    deadline = time.monotonic() + 60
    while registry_runs(dirs.registry) and time.monotonic() < deadline:
        sweep_and_count(lane.sandbox, dirs, env, row, label)
    _settle(lane.sandbox, dirs, env, row, label)


def hanging_provider(lanes: List[Lane], rng: random.Random, trials: int) -> Row:
    """A dead run whose provider hangs on release, then a fixture start: bounded, nothing lost."""
    items = [rng.choice(("rest_user", "mailtm")) for _ in range(trials)]
    row = Row("a hanging provider at startup")
    for result in run_lanes(lanes, items, _hang_trial):
        row.merge(result)
    return row


def _hang_trial(lane: Lane, backend: str) -> Row:
    row = Row("a hanging provider at startup", trials=1, faults=1)
    dirs = lane.dirs()
    env = torture_env(lane.sandbox.url, TAOS_PERSONA_HTTP_TIMEOUT="30",
                      TAOS_PERSONA_STARTUP_SWEEP_TIMEOUT=f"{STARTUP_BOUND:g}")
    holder = Child(run_args(dirs, backend, "--count", "1", "--hold", "600", "--no-sweep"), env, dirs.root)
    if not holder.wait_for("HOLDING"):
        row.fail(f"{backend}: the first run never held its resource: {holder.finish(5)}")
        return row
    holder.proc.send_signal(signal.SIGKILL)
    holder.finish(30)
    alive = lane.sandbox.total()
    lane.sandbox.inject("delay", 1000, delay=6.0, provider=INFLIGHT_BACKENDS[backend], method="DELETE")
    nxt = Child([PY, "-c", _ENTER, dirs.registry], env, dirs.root)
    status = nxt.finish(120)
    entered = [float(line.split()[1]) for line in nxt.lines("ENTERED")]
    waited = entered[0] if entered else float("inf")
    if status != 0 or waited > STARTUP_BOUND + 2:  # the provider hangs for 6 s: a start that waited shows
        row.fail(f"{backend}: the next start took {waited:.1f}s (bound {STARTUP_BOUND:g}s), exit {status}: "
                 f"{nxt.err[-300:]}")
    if lane.sandbox.total() >= alive and len(registry_runs(dirs.registry)) != 1:
        row.fail(f"{backend}: the dead run's record was dropped while its resource is alive")
    row.notes.append(f"hang {backend}: the next fixture entered after {waited:.1f}s")
    lane.sandbox.clear_faults()
    _settle_when_due(lane, dirs, env, row, f"{backend} after the hang")
    return row

"""``python -m benchmarks.torture`` (``make torture``): prove that nothing is lost, whatever happens.

Every scenario injects faults into real processes (SIGKILL at every named
fault point, random kills under load, signals, memory and disk limits, a
provider outage, generated garbage, hostile directories and names) and then
counts what survived where it lives: at the sandbox, in the SQL table, in
the witness provider's directory, in the registry. The run ends with a
table and exits 1 if anything survived that should not have, if a live
run's resource was released, or if a sweep crashed or hung.

The seed is printed first; ``TORTURE_SEED=N`` (or ``--seed N``) replays it.
A scenario's ``KNOWN`` result marks a documented limitation: its survivors
are counted and shown, and do not fail the run.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ._torture_crash import crash_matrix, out_of_memory, signals
from ._torture_discovery import registry_lost, watchdog_kills
from ._torture_env import disk, outage
from ._torture_inflight import create_in_flight, hanging_provider
from ._torture_input import bad_input
from ._torture_kit import Lane, Row
from ._torture_liveness import liveness_rows
from ._torture_origin import environment_switched
from ._torture_security import security
from ._torture_soak import soak

__all__ = ["main", "Plan", "FULL", "QUICK", "run_scenarios", "format_table", "SCENARIOS"]


@dataclass(frozen=True)
class Plan:
    """How hard each scenario pushes: the full run and the quick slice differ only here."""

    per_point: int      # passes per fault point and backend (0: one random point per backend)
    signal_trials: int
    oom_trials: int
    disk_trials: int
    outage_rounds: int
    input_rounds: int
    every_offset: bool  # truncate a record at every offset, not at a sample of them
    soak_seconds: float
    soak_workers: int
    mounts: bool        # try real tmpfs mounts (root only) besides RLIMIT_FSIZE
    inflight_trials: int = 2  # creates given up while in flight, and hanging-provider starts
    lost_trials: int = 4     # "registry lost": runs killed with their registry, then sweep --discover
    watchdog_kills: int = 20  # "watchdog": SIGKILLs of a process holding three resources
    liveness_trials: int = 2  # deleted locks, skewed clocks, tampered records: trials of each
    switch_trials: int = 1   # runs killed at sandbox A, swept with the environment at B, then at A


FULL = Plan(per_point=2, signal_trials=24, oom_trials=6, disk_trials=16, outage_rounds=3, input_rounds=3,
            every_offset=True, soak_seconds=60.0, soak_workers=8, mounts=True, inflight_trials=8,
            liveness_trials=8, switch_trials=6)
QUICK = Plan(per_point=0, signal_trials=3, oom_trials=3, disk_trials=4, outage_rounds=1, input_rounds=1,
             every_offset=False, soak_seconds=5.0, soak_workers=8, mounts=False, lost_trials=1, watchdog_kills=4)

Scenario = Callable[[str, List[Lane], random.Random, Plan], List[Row]]
SCENARIOS: Dict[str, Scenario] = {
    "crash": lambda root, lanes, rng, plan: crash_matrix(lanes, rng, plan.per_point),
    "soak": lambda root, lanes, rng, plan: [soak(root, rng, plan.soak_seconds, plan.soak_workers)],
    "signals": lambda root, lanes, rng, plan: [signals(lanes, rng, plan.signal_trials)],
    "oom": lambda root, lanes, rng, plan: [out_of_memory(lanes, rng, plan.oom_trials)],
    "disk": lambda root, lanes, rng, plan: [disk(lanes, rng, plan.disk_trials, plan.mounts)],
    "outage": lambda root, lanes, rng, plan: [outage(root, rng, plan.outage_rounds)],
    "inflight": lambda root, lanes, rng, plan: [create_in_flight(lanes, rng, plan.inflight_trials),
                                                 hanging_provider(lanes, rng, plan.inflight_trials)],
    "input": lambda root, lanes, rng, plan: [bad_input(root, rng, plan.input_rounds, plan.every_offset)],
    "lost": lambda root, lanes, rng, plan: [registry_lost(lanes, rng, plan.lost_trials)],
    "watchdog": lambda root, lanes, rng, plan: [watchdog_kills(lanes, rng, plan.watchdog_kills)],
    "liveness": lambda root, lanes, rng, plan: liveness_rows(lanes, rng, plan.liveness_trials),
    "switch": lambda root, lanes, rng, plan: [environment_switched(lanes[0], rng, plan.switch_trials)],
    "security": lambda root, lanes, rng, plan: [security(lanes[0], rng)],  # last: it reads the secret scan
}
"""Scenario name -> runner, in the order they run."""

COLUMNS = ("scenario", "trials", "faults injected", "survivors", "live-run releases", "sweeper exceptions",
           "result")


def run_scenarios(seed: int, plan: Plan, only: Optional[List[str]] = None, lanes: int = 2,
                  progress: Callable[[str], None] = lambda line: None) -> List[Row]:
    """Run the chosen scenarios (all by default) in a scratch directory; one row each or more."""
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="taos-torture-") as root:
        pool = [Lane(root, f"lane{number}") for number in range(lanes)]
        try:
            for name, scenario in SCENARIOS.items():
                if only and name not in only:
                    continue
                started = time.monotonic()
                found = scenario(root, pool, random.Random(f"{seed}:{name}"), plan)
                rows += found
                progress(f"  {name}: {', '.join(row.result for row in found)} "
                         f"in {time.monotonic() - started:.1f}s")
        finally:
            for lane in pool:
                lane.close()
    return rows


def format_table(rows: List[Row]) -> str:
    cells = [COLUMNS] + [(row.scenario, str(row.trials), str(row.faults), str(row.survivors),
                          str(row.live_releases), str(row.sweeper_exceptions), row.result) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_details(rows: List[Row], verbose: bool) -> str:
    """Known limitations, every failure, and the notes (all of them with ``verbose``)."""
    out: List[str] = []
    for row in rows:
        if row.known and row.survivors:
            out.append(f"KNOWN {row.scenario}: {row.known}")
        out += [f"FAIL {row.scenario}: {failure}" for failure in row.failures[:20]]
        if len(row.failures) > 20:
            out.append(f"FAIL {row.scenario}: ... and {len(row.failures) - 20} more")
        shown = row.notes if verbose or len(row.notes) <= 3 else row.notes[:2]
        out += [f"note {note}" for note in shown]
        if len(shown) < len(row.notes):
            out.append(f"note {row.scenario}: {len(row.notes) - len(shown)} more notes (--verbose)")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torture", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a seed (default: $TORTURE_SEED, "
                        "else a fresh one)")
    parser.add_argument("--quick", action="store_true", help="the small slice that make test runs")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--lanes", type=int, default=2, help="trials run side by side (default 2)")
    parser.add_argument("--verbose", action="store_true", help="print every note")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if sys.platform == "win32":
        print("python -m benchmarks.torture: needs POSIX signals and /proc", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(os.environ.get("TORTURE_SEED") or
                                                        random.SystemRandom().randrange(1 << 31))
    print(f"torture seed {seed} (replay: TORTURE_SEED={seed} make torture)", flush=True)
    started = time.monotonic()
    rows = run_scenarios(seed, QUICK if args.quick else FULL, args.only, max(1, args.lanes),
                         progress=lambda line: print(line, flush=True))
    print()
    print(format_table(rows))
    print()
    print(format_details(rows, args.verbose))
    failed = [row.scenario for row in rows if row.result == "FAIL"]
    print(f"\nseed {seed}: {len(rows) - len(failed)}/{len(rows)} scenarios passed in "
          f"{time.monotonic() - started:.0f}s{'; FAILED: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

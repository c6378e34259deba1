"""Torture rows of issue 10: "registry lost" (provider-side discovery) and "watchdog".

Both count at the provider: names alive in the lane's sandbox (and rows in the
trial's SQL table) that carry a run's name prefix. A live run's resource that
disappears is a live-run release; a dead run's resource still there after the
sweep (or, for the watchdog, 30 s after the kill) is a survivor.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
from contextlib import closing
from typing import Callable, Dict, List, Optional, Tuple

from ._torture_kit import PY, Child, Lane, Row, SandboxProcess, TrialDirs, run_lanes, torture_env

__all__ = ["registry_lost", "watchdog_kills", "LISTING", "HELD"]

CHILD = [PY, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                          "_persona_child.py")]
LISTING = ("mailsac", "twilio", "rest_user", "rest_token", "sql")
"""Backends whose providers list by name: a lost run holds one of each."""
HELD = ("mailsac", "twilio", "rest_user")
"""What each process the watchdog row kills holds: three resources at three providers."""
WATCHDOG_GOAL = 2.0
"""Seconds from SIGKILL to 0 alive, at the 95th percentile."""


def _names(sandbox: SandboxProcess, db: str) -> List[str]:
    """Every provider-side name alive in the sandbox and the SQL table, ``_`` read as ``-``."""
    names = [row["rid"].partition("@")[0] for row in sandbox.resources("mailsac")]
    names += [row["data"]["friendly_name"] for row in sandbox.resources("twilio")]
    names += [row["data"]["username"] for row in sandbox.resources("example_app.users")]
    names += [row["data"]["name"] for row in sandbox.resources("example_app.tokens")]
    if os.path.exists(db):
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            try:
                names += [row[0] for row in conn.execute("SELECT username FROM users")]
            except sqlite3.OperationalError:
                pass
    return [name.lower().replace("_", "-") for name in names]


def _alive(sandbox: SandboxProcess, db: str, run: str) -> int:
    return sum(1 for name in _names(sandbox, db) if name.startswith(run + "-"))


class _PersonaChild(Child):
    """A persona run whose stdin is a pipe: it holds its resources until :meth:`finish` closes it."""

    def __init__(self, args: List[str], env: Dict[str, str], cwd: str) -> None:
        self.args, self.out, self.err = args, "", ""
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _start(registry: str, backends: Tuple[str, ...], env: Dict[str, str], cwd: str,
           watchdog: bool = False) -> Tuple[Optional[Child], str, int]:
    """A persona run holding ``backends``: (child, its name prefix, its watchdog's pid or 0)."""
    args = [*CHILD, "--registry", registry, *(a for name in backends for a in ("--backend", name))]
    child = _PersonaChild(args + (["--watchdog"] if watchdog else []), env, cwd)
    if not child.wait_for("HOLDING", 60):
        child.finish(5)
        return None, "", 0
    run_id = child.lines("ENTERED")[0].split()[1]
    pid = child.lines("WATCHDOG")[0].split()[1]
    prefix = env.get("TAOS_PERSONA_PREFIX", "taos")
    return child, f"{prefix}-{run_id}".lower(), 0 if pid == "none" else int(pid)


def _discover(dirs: TrialDirs, env: Dict[str, str], row: Row) -> None:
    """``sweep --discover --older-than 0`` over every listing backend; a non-zero status is a failure."""
    args = [PY, "-m", "taos_persona.sweep", "--dir", dirs.registry, "--discover", "--older-than", "0", "--json",
            *(a for name in LISTING for a in ("--backend", name))]
    sweep = Child(args, env, dirs.root)
    status = sweep.finish(120)
    if status != 0:
        row.sweeper_exceptions += 1
        row.fail(f"sweep --discover ended {status}: {sweep.err[-400:] or sweep.out[-400:]}")


def _lost_trial(lane: Lane, rng: random.Random) -> Row:
    """Kill 1-3 runs and delete their registry; a live run and another project's run beside them."""
    row, dirs = Row("registry lost", trials=1), lane.dirs()
    env = torture_env(lane.sandbox.url, TAOS_PERSONA_SQL_DATABASE=dirs.db)
    other_env = dict(env, TAOS_PERSONA_PREFIX="shop")
    live, live_run, _ = _start(dirs.registry, LISTING, env, dirs.root)
    lost = os.path.join(dirs.root, "lost-runner")
    dead, others = [], []
    for _ in range(rng.randint(1, 3)):
        child, run, _ = _start(lost, LISTING, env, dirs.root)
        dead.append((child, run))
    other, other_run, _ = _start(os.path.join(dirs.root, "other-project"), LISTING, other_env, dirs.root)
    others.append((other, other_run))
    for child, _run in dead + others:
        if child is not None:
            time.sleep(rng.random() * 0.02)
            child.proc.send_signal(signal.SIGKILL)
            child.finish(30)
            row.faults += 1
    shutil.rmtree(lost, ignore_errors=True)
    _discover(dirs, env, row)
    row.survivors += sum(_alive(lane.sandbox, dirs.db, run) for _child, run in dead if run)
    for run, label in ((live_run, "the live run"), (other_run, "another project")):
        kept = _alive(lane.sandbox, dirs.db, run) if run else len(LISTING)
        if kept != len(LISTING):
            row.live_releases += len(LISTING) - kept
            row.fail(f"{label}'s resources were released: {len(LISTING) - kept} of {len(LISTING)}")
    _finish_live(live, row)
    _discover(dirs, other_env, row)  # the other project's own discovery cleans the lane for the next rows
    return row


def _finish_live(child: Optional[Child], row: Row) -> None:
    """Let a live run leave normally (its stdin closes); it must end 0."""
    if child is None:
        row.fail("a live run did not start")
        return
    if child.finish(90) != 0:
        row.fail(f"a live run ended {child.proc.returncode}: {child.err[-300:]}")


def registry_lost(lanes: List[Lane], rng: random.Random, trials: int) -> Row:
    """The ephemeral-runner case, ``trials`` times over the lanes."""
    seeds = [rng.randrange(1 << 30) for _ in range(trials)]
    rows = run_lanes(lanes, seeds, lambda lane, seed: _lost_trial(lane, random.Random(seed)))
    return _merged("registry lost", rows)


def _wait(condition: Callable[[], bool], timeout: float) -> Optional[float]:
    """The monotonic time at which ``condition()`` was seen to hold, or None past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)
    return time.monotonic()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_trial(lane: Lane, rng: random.Random, dirs: TrialDirs, env: Dict[str, str], row: Row) -> Optional[float]:
    """One SIGKILL of a process holding :data:`HELD`: seconds to 0 alive, or None."""
    child, run, pid = _start(dirs.registry, HELD, env, dirs.root, watchdog=True)
    if child is None or not pid:
        row.fail("a run with a watchdog did not start")
        return None
    time.sleep(rng.random() * 0.05)
    killed = time.monotonic()
    child.proc.send_signal(signal.SIGKILL)
    child.finish(30)
    row.faults += 1
    released = _wait(lambda: _alive(lane.sandbox, dirs.db, run) == 0, 30.0)
    if released is None:
        row.survivors += _alive(lane.sandbox, dirs.db, run)
    if _wait(lambda: _gone(pid), 30.0) is None:
        row.fail(f"watchdog {pid} still running 30 s after its owner died")
    return None if released is None else released - killed


def _watchdog_lane(lane: Lane, kills: int, seed: int) -> Row:
    rng, row, dirs = random.Random(seed), Row("watchdog", trials=kills), lane.dirs()
    env = torture_env(lane.sandbox.url)
    live, live_run, live_pid = _start(dirs.registry, HELD, env, dirs.root, watchdog=True)
    seconds = [s for s in (_kill_trial(lane, rng, dirs, env, row) for _ in range(kills)) if s is not None]
    kept = _alive(lane.sandbox, dirs.db, live_run) if live_run else 0
    if kept != len(HELD):
        row.live_releases += len(HELD) - kept
        row.fail("the live run's resources were released")
    _finish_live(live, row)
    if live_pid and _wait(lambda: _gone(live_pid), 30.0) is None:
        row.fail(f"the live run's watchdog {live_pid} outlived its owner")
    row.notes.append("watchdog seconds " + " ".join(f"{s:.4f}" for s in seconds))
    return row


def watchdog_kills(lanes: List[Lane], rng: random.Random, kills: int) -> Row:
    """``kills`` SIGKILLs over the lanes, each of a process holding three resources."""
    share = [kills // len(lanes) + (1 if i < kills % len(lanes) else 0) for i in range(len(lanes))]
    jobs = [(count, rng.randrange(1 << 30)) for count in share if count]
    rows = run_lanes(lanes, jobs, lambda lane, job: _watchdog_lane(lane, *job))
    row = _merged("watchdog", rows)
    seconds = sorted(float(s) for note in row.notes if note.startswith("watchdog seconds ")
                     for s in note.split()[2:])
    row.notes = [note for note in row.notes if not note.startswith("watchdog seconds ")]
    if seconds:
        p95 = seconds[min(len(seconds) - 1, max(0, round(0.95 * len(seconds)) - 1))]
        row.notes.append(f"watchdog: SIGKILL to 0 alive over {len(seconds)} kills: min {seconds[0]:.3f} s, "
                         f"median {statistics.median(seconds):.3f} s, p95 {p95:.3f} s, max {seconds[-1]:.3f} s")
        if p95 >= WATCHDOG_GOAL:
            row.fail(f"p95 {p95:.3f} s is not under the {WATCHDOG_GOAL:g} s goal")
    return row


def _merged(scenario: str, rows: List[Row]) -> Row:
    total = Row(scenario)
    for row in rows:
        total.merge(row)
    return total

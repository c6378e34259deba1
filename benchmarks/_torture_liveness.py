"""Torture rows for liveness and tampering: lock files deleted, clocks skewed, records forged.

* ``lock file deleted under a live run``: a run holds witness files; its lock
  file (sometimes every lock file) is deleted while the owner's heartbeat
  races at a random interval; a sweep runs. Nothing of the live run may be
  released; after the owner is killed, one sweep leaves nothing.
* ``foreign runs with skewed clocks``: records of another machine whose
  ``updated`` lies by up to two hours either way; only the file's age, as the
  file system stamps it, may decide. A young file swept is a live-run release.
* ``tampered records``: a class path naming another module (never imported),
  a record over the size limit (quarantined, counted as left), beside an
  honest dead run (always swept); no record of a resource still alive dropped.
"""
from __future__ import annotations

import glob
import json
import os
import random
import signal
import socket
import time
from typing import List

from taos_persona.records import HELD, RunRecord
from taos_persona.registry import MAX_RECORD_BYTES, Registry

from ._torture_kit import CHILD, Child, Lane, Row, TrialDirs, count_files, registry_runs, sweep_cli, torture_env

__all__ = ["liveness_rows", "deleted_lock", "skewed_clocks", "tampered_records"]

FORGED_PATHS = ("unittest.__main__:X", "this:Zen", "taos_persona.sweep:main", "os:system")
"""Class paths a forged record may name: each would do something visible if it were imported."""


def liveness_rows(lanes: List[Lane], rng: random.Random, trials: int) -> List[Row]:
    return [deleted_lock(lanes[0], rng, trials), skewed_clocks(lanes[0], rng, trials),
            tampered_records(lanes[0], rng, trials)]


def deleted_lock(lane: Lane, rng: random.Random, trials: int) -> Row:
    """rm the lock (or every lock) of a live run, sweep, then kill it and sweep again."""
    row = Row("lock file deleted under a live run")
    for _ in range(trials):
        dirs = lane.dirs()
        count = rng.randint(1, 3)
        env = torture_env(TAOS_PERSONA_HEARTBEAT=f"{rng.uniform(0.02, 0.5):.2f}")
        child = Child(CHILD + ["run", "--registry", dirs.registry, "--files", dirs.files, "--count", str(count),
                               "--hold", "120", "--no-sweep"], env, dirs.root)
        row.trials += 1
        if not child.wait_for("HOLDING"):
            row.fail(f"the owner did not start: {child.finish(30)} {child.err[-400:]}")
            continue
        for lock in glob.glob(os.path.join(dirs.registry, "*.lock")):
            os.unlink(lock)
        row.faults += 1
        _sweep(row, dirs, env)
        _count_live_releases(row, count - count_files(dirs.files), "deleted lock")
        child.proc.send_signal(rng.choice((signal.SIGKILL, signal.SIGTERM)))
        child.finish(60)
        _final_sweep(row, dirs, env)
    return row


def skewed_clocks(lane: Lane, rng: random.Random, trials: int) -> Row:
    """Foreign records whose own clock lies: swept exactly when their file is 30+ minutes old."""
    row = Row("foreign runs with skewed clocks")
    for _ in range(trials):
        dirs, registry = _fresh(lane)
        young, old = [], []
        for index in range(rng.randint(2, 6)):
            run = _dead_run(dirs, f"skew{index}-{rng.randrange(1 << 24):06x}", 1)
            run.machine, run.proc_start, run.host = "another-machine", None, "another-host"
            registry.write(run)
            written_ago = rng.choice((rng.uniform(0, 25), rng.uniform(35, 120))) * 60
            _doctor(dirs.registry, run.run_id, updated_ago=rng.uniform(-7200, 7200), written_ago=written_ago)
            (old if written_ago >= 30 * 60 else young).append(run.run_id)
            row.faults += 1
        registry.close()
        row.trials += 1
        env = torture_env()
        _sweep(row, dirs, env, expect=0)
        left = _run_ids(dirs.registry)
        row.live_releases += len(set(young) - left)
        for run_id in sorted(set(young) - left):
            row.fail(f"skewed clocks: {run_id}, written less than 30 minutes ago, was swept")
        if set(old) & left:
            row.fail(f"skewed clocks: old foreign runs not swept: {sorted(set(old) & left)}")
        row.survivors += count_files(dirs.files) - len(young)
    return row


def tampered_records(lane: Lane, rng: random.Random, trials: int) -> Row:
    """A forged class path and an oversized record beside an honest dead run."""
    row = Row("tampered records (class path, size)")
    for _ in range(trials):
        dirs, registry = _fresh(lane)
        honest = _dead_run(dirs, "honest", 2)
        forged = _dead_run(dirs, "forged", 1)
        for record in forged.live():
            record.backend_path = rng.choice(FORGED_PATHS)
        registry.write(honest)
        registry.write(forged)
        registry.close()
        with open(os.path.join(dirs.registry, "huge.json"), "wb") as handle:
            handle.truncate(MAX_RECORD_BYTES + rng.randint(1, 64 << 20))
        row.trials += 1
        row.faults += 2
        _sweep(row, dirs, torture_env(), expect=1)
        left = _run_ids(dirs.registry)
        row.survivors += len(glob.glob(os.path.join(dirs.files, "honest-*")))
        if "forged" not in left and glob.glob(os.path.join(dirs.files, "forged-*")):
            row.fail("tampered records: the forged run's record was dropped while its resource lives")
        if not glob.glob(os.path.join(dirs.files, "forged-*")):
            row.fail("tampered records: a record with a forged class path was released through it")
    return row


def _fresh(lane: Lane) -> "tuple[TrialDirs, Registry]":
    """A trial's directories and its registry, made ready (close it when done)."""
    dirs = lane.dirs()
    registry = Registry(dirs.registry)
    registry.ensure()
    return dirs, registry


def _run_ids(registry: str) -> "set[str]":
    return {name[: -len(".json")] for name in registry_runs(registry)}


def _dead_run(dirs: TrialDirs, run_id: str, resources: int) -> RunRecord:
    """A run of a dead process (pid 999999) holding ``resources`` witness files."""
    run = RunRecord(run_id, "tortured", socket.gethostname(), 999999)
    for _ in range(resources):
        path = os.path.join(dirs.files, f"{run_id}-{run.next_seq}")
        open(path, "w").close()
        record = run.add_intent("file", "tests._backends:FileBackend", {"path": path})
        record.token, record.state = {"path": path}, HELD
    return run


def _doctor(registry: str, run_id: str, updated_ago: float, written_ago: float) -> None:
    path = os.path.join(registry, f"{run_id}.json")
    with open(path) as handle:
        data = json.load(handle)
    data["updated"] = time.time() - updated_ago
    with open(path, "w") as handle:
        json.dump(data, handle)
    os.utime(path, (time.time() - written_ago, time.time() - written_ago))


def _sweep(row: Row, dirs: TrialDirs, env: "dict[str, str]", expect: int = 0) -> None:
    status, report, err = sweep_cli(dirs.registry, env, dirs.root)
    if status is None or report is None or "Traceback" in err:
        row.sweeper_exceptions += 1
        row.fail(f"{row.scenario}: the sweep said {status}: {err[-400:]}")
    elif status != expect:
        row.fail(f"{row.scenario}: the sweep exited {status}, not {expect}: {json.dumps(report)[:400]}")


def _count_live_releases(row: Row, released: int, what: str) -> None:
    if released:
        row.live_releases += released
        row.fail(f"{what}: {released} resources of a live run released")


def _final_sweep(row: Row, dirs: TrialDirs, env: "dict[str, str]") -> None:
    _sweep(row, dirs, env)
    alive, left = count_files(dirs.files), registry_runs(dirs.registry)
    row.survivors += alive
    if alive or left:
        row.fail(f"{row.scenario}: after the final sweep {alive} alive, registry {left}")

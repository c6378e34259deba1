"""Torture row ``environment switched between run and sweep`` (issue 8, kind 1).

A run holding resources at sandbox A is SIGKILLed; a sweep then runs with
``TAOS_PERSONA_SANDBOX`` pointing at sandbox B, as a later run against other
providers would. Nothing may be released there nor dropped from the registry
while it is alive at A (exit 1, every record kept); the sweep pointed back at
A then leaves nothing. Survivors are counted at sandbox A.
"""
from __future__ import annotations

import os
import random
import signal

from ._torture_crash import run_args, sweep_past_in_flight
from ._torture_kit import Child, Lane, Row, SandboxProcess, registry_runs, sweep_cli, torture_env

__all__ = ["environment_switched", "SWITCH_BACKENDS"]

SWITCH_BACKENDS = ("mailtm", "mailsac", "twilio", "rest_user", "rest_token", "github", "google", "oauth_rfc7009")
"""Every sandbox backend whose release goes to its endpoint (sms_activate too would, but its
unrecoverable intent is the crash matrix's KNOWN row, not this one's)."""


def environment_switched(lane: Lane, rng: random.Random, trials: int) -> Row:
    row = Row("environment switched between run and sweep")
    other = SandboxProcess(os.path.join(lane.root, "sandbox-b.db")).start()
    try:
        for number in range(trials):
            _switch_trial(lane, other, rng, number, row)
    finally:
        other.close()
    return row


def _switch_trial(lane: Lane, other: SandboxProcess, rng: random.Random, number: int, row: Row) -> None:
    dirs = lane.dirs()
    backends = rng.sample(SWITCH_BACKENDS, k=rng.randint(1, 3))
    label = f"switch trial {number} ({','.join(backends)})"
    env_a = torture_env(lane.sandbox.url)
    before = lane.sandbox.total()
    child = Child(run_args(dirs, ",".join(backends), "--count", str(len(backends)), "--hold", "60", "--no-sweep"),
                  env_a, dirs.root)
    row.trials += 1
    if not child.wait_for("HOLDING"):
        row.fail(f"{label}: the run did not start: {child.finish(30)} {child.err[-300:]}")
        return
    child.proc.send_signal(signal.SIGKILL)
    child.finish(30)
    row.faults += 1
    made = lane.sandbox.total() - before
    status, _report, err = sweep_cli(dirs.registry, torture_env(other.url), dirs.root)
    if status is None or "Traceback" in err:
        row.sweeper_exceptions += 1
        row.fail(f"{label}: the sweep at B {'hung' if status is None else 'crashed'}: {err[-300:]}")
    still = lane.sandbox.total() - before
    if still < made or other.total():
        row.fail(f"{label}: the sweep at B touched A's resources ({made} made, {still} left) or B's")
    if status != 1 or not registry_runs(dirs.registry):
        row.fail(f"{label}: the sweep at B exited {status} and kept {registry_runs(dirs.registry)}; "
                 f"{still} resources alive at A need their records")
    status, _report, alive = sweep_past_in_flight(lane.sandbox, dirs, env_a, row, label)
    survivors = lane.sandbox.total() - before
    row.survivors += max(0, survivors)
    if status != 0 or survivors > 0 or registry_runs(dirs.registry):
        row.fail(f"{label}: the sweep back at A exited {status} with {survivors} alive")
    row.notes.append(f"{label}: {made} made at A; the sweep at B kept them (exit 1); the sweep at A released them")

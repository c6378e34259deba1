"""Torture by death: SIGKILL at every fault point of every backend, signals, out of memory.

Each trial is a real child process (``benchmarks._torture_child run``) that
dies the way the scenario says; then one ``python -m taos_persona.sweep``
runs, and survivors are counted at the providers and in the registry.
"""
from __future__ import annotations

import os
import random
import signal
import time
from typing import Any, Dict, List, Optional, Tuple

from taos_persona._faults import FAULT_POINTS

from ._torture_kit import (CHILD, IN_FLIGHT_WINDOW, SCANNER, Child, Lane, Row, SandboxProcess, TrialDirs,
                           mode_problems, only_in_flight, registry_runs, run_lanes, sweep_cli, torture_env)

__all__ = ["BACKENDS", "UNRECOVERABLE", "RELEASE_WRITE", "crash_matrix", "signals", "out_of_memory", "fault_specs",
           "sweep_and_count"]

BACKENDS = ("sql", "mailtm", "mailsac", "sms_activate", "twilio", "github", "google", "oauth_rfc7009",
            "rest_user", "rest_token")
UNRECOVERABLE = ("sms_activate",)
"""Backends without ``recover`` by design: an intent they leave cannot be resolved by a sweep."""
KNOWN_SMS = ("sms_activate has no recover (the provider lets the client name nothing): an activation "
             "made just before the kill is not recorded; the provider ends it after its lifetime "
             "(~20 min) and refunds it, and its intent stays in the registry (sweep exits 1) until "
             "the backend's max_lifetime (25 min) has passed, when the sweep drops it as expired. "
             "The torture drops the activation at the sandbox as the provider's expiry would.")
COUNT = 3
"""Resources per crash trial: enough for a kill between two acquisitions and two releases."""
WRITES = COUNT
"""Registry rewrites every trial makes at least: one intent per resource (a run that holds
nothing writes nothing; a
held record of a backend that can recover rides on the next intent write; one that cannot adds a
write of its own, so it makes more). Release progress writes are coalesced (at most one per
interval, none when all is gone), so the write during a release is aimed at by
:data:`RELEASE_WRITE` instead."""
RELEASE_WRITE = ("torture_file", f"registry.mid_write:{WRITES + 1}", "failing releases")
"""A trial whose releases all fail, so that the release ends with one progress write to kill."""
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def fault_specs(rng: random.Random, per_point: int) -> List[str]:
    """``point:N`` specs: ``per_point`` distinct passes of every fault point, chosen by the seed."""
    specs = []
    for point in FAULT_POINTS:
        passes = WRITES if point == "registry.mid_write" else COUNT
        for nth in sorted(rng.sample(range(1, passes + 1), min(per_point, passes))):
            specs.append(f"{point}:{nth}")
    return specs


def run_args(dirs: TrialDirs, backends: str, *extra: str) -> List[str]:
    return CHILD + ["run", "--registry", dirs.registry, "--files", dirs.files, "--db", dirs.db,
                    "--backends", backends, *extra]


def sweep_and_count(sandbox: Optional[SandboxProcess], dirs: TrialDirs, env: Dict[str, str], row: Row,
                    label: str) -> Tuple[Optional[int], Dict[str, Any], int]:
    """One sweep CLI run: (its status, its report, survivors after it); hangs and tracebacks counted."""
    env = {k: v for k, v in env.items() if k != "TAOS_PERSONA_FAULT"}  # the child's fault, not ours
    status, report, err = sweep_cli(dirs.registry, env, dirs.root)
    if status is None or "Traceback" in err or report is None:
        row.sweeper_exceptions += 1
        row.fail(f"{label}: the sweep {'hung' if status is None else 'crashed'}: {err[-400:]}")
    return status, report or {}, dirs.survivors(sandbox)


def sweep_past_in_flight(sandbox: Optional[SandboxProcess], dirs: TrialDirs, env: Dict[str, str], row: Row,
                         label: str) -> Tuple[Optional[int], Dict[str, Any], int]:
    """:func:`sweep_and_count`, swept again while all it keeps are intents in their request window.

    Every intent on disk carries the last moment its create could land (its request window,
    timeout x attempts); a death anywhere between the intent write and the held write leaves
    one the sweep rightly keeps until then. The sweep after that clears it.
    """
    status, report, alive = sweep_and_count(sandbox, dirs, env, row, label)
    deadline = time.monotonic() + IN_FLIGHT_WINDOW
    while status == 1 and only_in_flight(report) and time.monotonic() < deadline:
        row.notes.append(f"{label}: an intent kept while its create may be in flight; swept again")
        time.sleep(0.5)
        status, report, alive = sweep_and_count(sandbox, dirs, env, row, label)
    return status, report, alive


def _crash_trial(lane: Lane, item: Tuple[str, ...]) -> Row:
    backend, spec = item[:2]
    known = backend in UNRECOVERABLE
    row = Row(f"crash matrix: {backend}" if known else "crash matrix", trials=1)
    dirs = lane.dirs()
    failing = os.path.join(dirs.root, "releases-fail")
    env = torture_env(lane.sandbox.url, TAOS_PERSONA_FAULT=spec, TAOS_TEST_FAIL_RELEASE=failing)
    if len(item) > 2:
        open(failing, "w").close()
    child = Child(run_args(dirs, backend, "--count", str(COUNT)), env, dirs.root)
    status = child.finish()
    if len(item) > 2:
        os.unlink(failing)
    label = f"{backend} killed at {spec}{' (' + item[2] + ')' if len(item) > 2 else ''}"
    if status != -signal.SIGKILL:
        row.fail(f"{label}: the child ended with {status}, not by SIGKILL: {child.err[-300:]}")
    row.faults += 1
    SCANNER.scan_tree(f"registry after {label}", dirs.registry)
    for problem in mode_problems(dirs.registry):
        row.fail(f"{label}: {problem}")
    sweep_status, report, alive = sweep_past_in_flight(lane.sandbox, dirs, env, row, label)
    if known:
        return _judge_unrecoverable(lane, dirs, row, label, report, alive)
    left = registry_runs(dirs.registry)
    if sweep_status != 0 or alive or left:
        row.survivors += alive
        row.fail(f"{label}: sweep status {sweep_status}, {alive} alive, registry {left}")
    return row


def _judge_unrecoverable(lane: Lane, dirs: TrialDirs, row: Row, label: str, report: Dict[str, Any],
                         alive: int) -> Row:
    """Survivors are expected only for intents the sweep kept as unrecoverable, and no more."""
    kept = [o for o in report.get("resources", []) if o.get("result") == "kept"]
    stale = [o for o in kept if "cannot recover" in (o.get("error") or "")]
    if len(stale) != len(kept) or alive > len(stale) or (kept and report.get("exit_status") != 1):
        row.fail(f"{label}: {alive} alive, kept {kept}, status {report.get('exit_status')}")
    row.survivors += alive
    if stale:
        row.notes.append(f"{label}: {len(stale)} unrecoverable intent(s), {alive} activation(s) alive")
    for backend in UNRECOVERABLE:  # the provider's own expiry, then the hand removal the sweep asks for
        for item in lane.sandbox.resources(backend):
            lane.sandbox.drop(backend, item["rid"])
    for name in registry_runs(dirs.registry):
        os.unlink(os.path.join(dirs.registry, name))
    return row


def crash_matrix(lanes: List[Lane], rng: random.Random, per_point: int,
                 backends: Tuple[str, ...] = BACKENDS) -> List[Row]:
    """Every fault point (``per_point`` passes of each; 0: one random point) x every backend."""
    items: List[Tuple[str, ...]] = []
    for backend in backends:
        specs = fault_specs(rng, max(per_point, 1))
        items += [(backend, spec) for spec in (specs if per_point else [rng.choice(specs)])]
    items.append(RELEASE_WRITE)
    rows = {"crash matrix": Row("crash matrix")}
    for name in UNRECOVERABLE:
        rows[f"crash matrix: {name}"] = Row(f"crash matrix: {name}", known=KNOWN_SMS)
    for part in run_lanes(lanes, items, _crash_trial):
        rows.setdefault(part.scenario, Row(part.scenario)).merge(part)
    return list(rows.values())


def _signal_trial(lane: Lane, item: Tuple[int, random.Random]) -> Row:
    """A signal at a random moment (startup sweep, acquiring, holding, releasing), maybe a second
    one during the release; the child must die of a signal it got, and one sweep finish the rest."""
    number, rng = item
    row = Row("signals", trials=1)
    dirs = lane.dirs()
    env = torture_env(lane.sandbox.url, TAOS_TEST_RELEASE_DELAY=f"{rng.uniform(0.05, 0.4):.3f}")
    if number % 2:  # a dead run beside it, so that its startup sweep has slow work to be cut short
        Child(run_args(dirs, "torture_file", "--count", "3"), dict(env, TAOS_PERSONA_FAULT="acquire.after_record:3"),
              dirs.root).finish()
    hold = f"{rng.uniform(0.0, 1.5):.2f}"
    child = Child(run_args(dirs, "torture_file,rest_user", "--count", "6", "--hold", hold), env, dirs.root)
    first, second = rng.choice(SIGNALS), rng.choice(SIGNALS + (None,))
    time.sleep(rng.uniform(0.05, 0.8 + float(hold)))
    sent = [signum for signum in (first, second) if signum and _send(child, signum, rng.uniform(0.0, 0.3))]
    row.faults += len(sent)
    status = child.finish(60)
    label = f"signal trial {number} ({'+'.join(signal.Signals(s).name for s in sent) or 'none landed'})"
    if sent and status not in {-signum for signum in sent}:
        row.fail(f"{label}: exit status {status}, not death by {sent}: {child.err[-300:]}")
    _sweep_to_zero(lane, dirs, env, row, label, child)
    return row


def _send(child: Child, signum: int, delay: float) -> bool:
    """Send ``signum`` after ``delay`` if the child still runs; True if it was sent."""
    time.sleep(delay)
    if child.proc.poll() is not None:
        return False
    child.proc.send_signal(signum)
    return True


def _sweep_to_zero(lane: Lane, dirs: TrialDirs, env: Dict[str, str], row: Row, label: str,
                   child: Child) -> None:
    """After the death: one sweep, exit 0, nothing alive, nothing left in the registry."""
    stage = (child.out.strip().splitlines() or ["(nothing)"])[-1]
    row.notes.append(f"{label}: died after {stage!r}, exit {child.proc.returncode}, "
                     f"{dirs.survivors(lane.sandbox)} alive before the sweep")
    status, report, alive = sweep_past_in_flight(lane.sandbox, dirs, env, row, label)
    left = [n for n in os.listdir(dirs.registry) if n not in ("quarantine", ".taos-registry")] \
        if os.path.isdir(dirs.registry) else []
    row.survivors += alive
    if status != 0 or alive or left:
        row.fail(f"{label}: after the sweep: status {status}, {alive} alive, registry {left}")


def signals(lanes: List[Lane], rng: random.Random, trials: int) -> Row:
    items = [(number, random.Random(rng.random())) for number in range(trials)]
    return _merged(Row("signals"), run_lanes(lanes, items, _signal_trial))


OOM_VARIANTS = ("eat under RLIMIT_AS", "tight RLIMIT_AS from the start", "OOM killer (SIGKILL)")


def _oom_trial(lane: Lane, item: Tuple[int, random.Random]) -> Row:
    """A child that runs out of memory mid-test (MemoryError or SIGKILL), then a sweep."""
    number, rng = item
    variant = OOM_VARIANTS[number % len(OOM_VARIANTS)]
    row = Row("out of memory", trials=1, faults=1)
    dirs = lane.dirs()
    env = torture_env(lane.sandbox.url)
    extra = ["--count", "3", "--hold", "0"]
    if variant.startswith("eat"):
        extra += ["--eat", "--mem-headroom", str(rng.randint(300, 600) << 20)]
    elif variant.startswith("tight"):
        # Little headroom, so the child may die anywhere from its imports on; it also eats,
        # so a lucky one that fits its whole test still dies mid-test instead of finishing.
        extra += ["--eat", "--mem-headroom", str(rng.randint(2, 60) << 20)]
    else:
        extra += ["--eat", "--mem-headroom", str(4 << 30)]
    child = Child(run_args(dirs, "torture_file,sql,rest_user", *extra), env, dirs.root)
    if variant.startswith("OOM"):
        _kill_when_big(child, 400 << 20)
    status = child.finish(60)
    if status == 0:
        row.fail(f"oom trial {number} ({variant}): the child did not die")
    _sweep_to_zero(lane, dirs, env, row, f"oom trial {number} ({variant})", child)
    return row


def _kill_when_big(child: Child, limit: int) -> None:
    """The OOM killer: SIGKILL once the child's resident size passes ``limit`` bytes."""
    deadline = time.monotonic() + 60
    while child.proc.poll() is None and time.monotonic() < deadline:
        if _resident(child.pid) > limit:
            child.proc.kill()
            return
        time.sleep(0.005)


def _resident(pid: int) -> int:
    """VmRSS of a process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def out_of_memory(lanes: List[Lane], rng: random.Random, trials: int) -> Row:
    items = [(number, random.Random(rng.random())) for number in range(trials)]
    return _merged(Row("out of memory"), run_lanes(lanes, items, _oom_trial))


def _merged(row: Row, parts: List[Row]) -> Row:
    for part in parts:
        row.merge(part)
    return row

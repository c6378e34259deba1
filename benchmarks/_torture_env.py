"""Torture by the environment: a full or read-only disk, and a provider that is down.

Disk: a real small filesystem (tmpfs) that is full or read-only where this
machine lets us mount one, and always a per-process file-size limit
(``RLIMIT_FSIZE``), which makes every registry write past N bytes fail with
EFBIG. The fixture must refuse before it creates anything, or release what
it just created and say so; no resource may be alive without a record.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from typing import Dict, List, Optional, Tuple

from ._torture_crash import run_args, sweep_and_count
from ._torture_kit import Child, Lane, Row, SandboxProcess, TrialDirs, registry_runs, run_lanes, torture_env

__all__ = ["disk", "outage", "can_mount", "OUTAGE_BACKENDS"]

OUTAGE_BACKENDS = ("mailtm", "mailsac", "twilio", "rest_user", "rest_token")
"""HTTP backends whose state the sandbox keeps on disk across its restart (its OAuth codes live
in memory, so a code-exchange intent cannot be replayed against a restarted sandbox)."""
CLEAR_REFUSAL = "cannot write registry file"


def can_mount() -> bool:
    """Root with the mount tool: a tmpfs can be made (tried once, for real, in a scratch dir)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


def _mount(path: str, size: int) -> bool:
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                          capture_output=True)
    return done.returncode == 0


def _remount(path: str, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", path], check=True, capture_output=True)


def _umount(path: str) -> None:
    subprocess.run(["umount", "-l", path], capture_output=True)


def _tracked(registry: str) -> int:
    """Resources the registry lists (held or intent) across every run file."""
    count = 0
    for name in registry_runs(registry):
        try:
            with open(os.path.join(registry, name), "rb") as handle:
                count += len(json.loads(handle.read().decode()).get("resources", []))
        except (OSError, ValueError):
            pass
    return count


def _judge_refusal(row: Row, label: str, child: Child, status: Optional[int], alive: int,
                   tracked: int) -> None:
    """Refused cleanly (or never hit the limit); nothing alive that no record lists."""
    errors = child.lines("ERROR ")
    if status == 3:
        message = errors[0] if errors else ""
        if "RegistryError" not in message or (CLEAR_REFUSAL not in message and "lock file" not in message
                                              and "registry" not in message):
            row.fail(f"{label}: unclear refusal: {message[:300]}")
    elif status != 0:
        row.fail(f"{label}: exit {status}: {child.err[-400:]}")
    if alive > tracked:
        row.survivors += alive - tracked
        row.fail(f"{label}: {alive} resources alive but only {tracked} recorded (untracked resources)")
    row.notes.append(f"{label}: {_outcome(status, errors)}; {len(child.lines('ACQUIRED'))} acquired, "
                     f"{alive} alive after it")


def _outcome(status: Optional[int], errors: List[str]) -> str:
    """How the fixture met the disk: never, at its start, before a create, or after one."""
    message = errors[0] if errors else ""
    if status == 0:
        return "never hit the limit"
    if "released at once" in message:
        return "released the fresh resource at once and raised"
    if "lock file" in message or not message:
        return f"refused at the start ({message[6:90] or status})"
    return "refused before creating anything"


def _settle(sandbox: SandboxProcess, dirs: TrialDirs, env: Dict[str, str], row: Row, label: str) -> None:
    """One sweep without limits: status 0 and zero survivors."""
    status, _report, alive = sweep_and_count(sandbox, dirs, env, row, label)
    row.survivors += alive
    if status != 0 or alive or registry_runs(dirs.registry):
        row.fail(f"{label}: after the sweep: status {status}, {alive} alive, "
                 f"registry {registry_runs(dirs.registry)}")


def _fsize_trial(lane: Lane, item: Tuple[int, random.Random]) -> Row:
    number, rng = item
    row = Row("disk full / read-only", trials=1, faults=1)
    limit = 0 if number % 4 == 0 else rng.randint(64, 2600)
    dirs = lane.dirs()
    env = torture_env(lane.sandbox.url)
    child = Child(run_args(dirs, "torture_file,rest_user", "--count", "5", "--fsize", str(limit)),
                  env, dirs.root)
    status = child.finish(60)
    label = f"RLIMIT_FSIZE={limit}"
    _judge_refusal(row, label, child, status, dirs.survivors(lane.sandbox), _tracked(dirs.registry))
    _settle(lane.sandbox, dirs, env, row, label)
    return row


def _tmpfs_trial(lane: Lane, item: Tuple[int, random.Random]) -> Row:
    """A real filesystem that is full (ENOSPC at a random write) or read-only (EROFS)."""
    number, rng = item
    row = Row("disk full / read-only", trials=1, faults=1)
    dirs = lane.dirs()
    mount = os.path.join(dirs.root, "mnt")
    if not _mount(mount, 64 << 10):
        row.notes.append("tmpfs: mount refused; covered by RLIMIT_FSIZE only")
        return row
    try:
        dirs.registry = os.path.join(mount, "registry")
        env = torture_env(lane.sandbox.url)
        read_only = number % 2 == 1
        label = _prepare_tmpfs(lane, dirs, env, mount, read_only, rng)
        before = dirs.survivors(lane.sandbox)
        child = Child(run_args(dirs, "torture_file,rest_user", "--count", "5"), env, dirs.root)
        status = child.finish(60)
        alive = dirs.survivors(lane.sandbox)
        _judge_refusal(row, label, child, status, alive, _tracked(dirs.registry))
        if read_only and (status != 3 or alive != before):
            row.fail(f"{label}: a read-only registry must be refused before anything is made "
                     f"(exit {status}, alive {before} -> {alive})")
        _remount(mount, "rw")
        _free_up(mount)
        _settle(lane.sandbox, dirs, env, row, label)
    finally:
        _umount(mount)
    return row


def _prepare_tmpfs(lane: Lane, dirs: TrialDirs, env: Dict[str, str], mount: str, read_only: bool,
                   rng: random.Random) -> str:
    """Read-only: a dead run with live resources inside, then remount ro. Full: a filler file."""
    if read_only:
        dead = Child(run_args(dirs, "torture_file,rest_user", "--count", "3"),
                     dict(env, TAOS_PERSONA_FAULT="acquire.after_record:2"), dirs.root)
        dead.finish(60)
        _remount(mount, "ro")
        return "read-only tmpfs with a dead run inside"
    os.makedirs(dirs.registry, mode=0o700)
    free = rng.choice((0, 1, 2, 3)) * 4096
    info = os.statvfs(mount)
    with open(os.path.join(mount, "filler"), "wb") as filler:
        filler.write(b"\0" * max(0, info.f_bavail * info.f_frsize - free))
    return f"full tmpfs ({free // 4096} pages free)"


def _free_up(mount: str) -> None:
    try:
        os.unlink(os.path.join(mount, "filler"))
    except FileNotFoundError:
        pass


def disk(lanes: List[Lane], rng: random.Random, trials: int, mounts: bool) -> Row:
    """RLIMIT_FSIZE trials, plus tmpfs ones (full, read-only) when ``mounts`` and allowed."""
    items = [(number, random.Random(rng.random())) for number in range(trials)]
    parts = run_lanes(lanes, items, _fsize_trial)
    if mounts and can_mount():
        parts += run_lanes(lanes, items, _tmpfs_trial)
    row = Row("disk full / read-only")
    for part in parts:
        row.merge(part)
    return row


def _records(registry: str) -> Dict[Tuple[str, int], int]:
    """(run, seq) -> attempts of every resource the registry lists."""
    found = {}
    for name in registry_runs(registry):
        with open(os.path.join(registry, name), "rb") as handle:
            data = json.loads(handle.read().decode())
        for item in data["resources"]:
            found[(data["run_id"], item["seq"])] = item.get("attempts", 0)
    return found


def _outage_round(root: str, rng: random.Random, kind: str, row: Row) -> None:
    """Dead runs holding sandbox resources; a sweep during the outage; a sweep after it."""
    dirs = TrialDirs.make(root)
    sandbox = SandboxProcess(os.path.join(dirs.root, "sandbox.db")).start()
    try:
        env = torture_env(sandbox.url, TAOS_PERSONA_FAULT="acquire.after_create:3")
        for backend in rng.sample(OUTAGE_BACKENDS, 3):
            Child(run_args(dirs, backend, "--count", "3", "--no-sweep"), env, dirs.root).finish(60)
        env.pop("TAOS_PERSONA_FAULT")
        before, alive = _records(dirs.registry), sandbox.total()
        _start_outage(sandbox, kind)
        status, _report, _alive = sweep_and_count(None, dirs, env, row, f"sweep during outage ({kind})")
        after = _records(dirs.registry)
        kept_all = set(after) == set(before) and all(after[key] > before[key] for key in before)
        if status != 1 or not kept_all:
            row.fail(f"outage {kind}: status {status}, {len(before)} records before, {len(after)} after "
                     f"(attempts {sorted(after.values())})")
        _end_outage(sandbox, kind)
        if sandbox.total() != alive:
            row.fail(f"outage {kind}: {alive} alive before, {sandbox.total()} after the failed sweep")
        _settle(sandbox, dirs, env, row, f"sweep after the {kind} outage")
        row.trials += 1
        row.faults += 1
        row.notes.append(f"outage {kind}: {len(before)} records kept through it, {alive} resources "
                         "released after it")
    finally:
        sandbox.close()


def _start_outage(sandbox: SandboxProcess, kind: str) -> None:
    if kind == "down":
        sandbox.stop(signal.SIGKILL)
    else:
        sandbox.inject(kind, 1_000_000)


def _end_outage(sandbox: SandboxProcess, kind: str) -> None:
    if kind == "down":
        sandbox.start()
    else:
        sandbox.clear_faults()


def outage(root: str, rng: random.Random, rounds: int) -> Row:
    """Rounds of: sandbox down (SIGKILL, then restarted on its port), answering 500, dropping."""
    row = Row("provider outage")
    kinds = ["down", "500", "drop"]
    rng.shuffle(kinds)
    for number in range(rounds):
        _outage_round(root, rng, kinds[number % len(kinds)], row)
    return row

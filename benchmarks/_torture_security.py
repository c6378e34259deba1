"""Torture by hostility: file modes, unsafe registry directories, hostile names, leaked keys.

Runs last, because its final check reads the verdict of the secret scanner:
every provider key the torture put in a child's environment is searched for
in every registry file, every child's output and every sweep's output the
whole run produced.
"""
from __future__ import annotations

import os
import random
import signal
from typing import Callable

from taos_persona import PersonaFixture
from taos_persona.errors import InvalidNameError

from ._torture_crash import run_args
from ._torture_kit import SCANNER, Child, Lane, Row, TrialDirs, mode_problems, registry_runs, sweep_cli, \
    torture_env
from ._torture_input import BAD_NAMES

__all__ = ["security", "UNSAFE_MODES"]

UNSAFE_MODES = (0o777, 0o770, 0o707, 0o720, 0o702, 0o730)
LEAKED = "SMS_ACTIVATE_API_KEY"
"""The key a careless backend quotes in its error message (the registry and CLI must not)."""


class _Checks:
    """Counts checks and hostile setups; failures go to the row."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.row = Row("security")

    def check(self, ok: bool, message: str) -> None:
        self.row.trials += 1
        if not ok:
            self.row.fail(message)

    def child(self, dirs: TrialDirs, *extra: str, **env: str) -> Child:
        return Child(run_args(dirs, "torture_file", *extra), torture_env(self.lane.sandbox.url, **env),
                     dirs.root)


def _modes(checks: _Checks) -> None:
    """A live run made under umask 0 still has a 0700 directory and 0600 files; so has quarantine."""
    dirs = checks.lane.dirs()
    child = checks.child(dirs, "--count", "2", "--hold", "30", "--umask", "000")
    checks.check(child.wait_for("HOLDING", 60), f"modes: the child never held: {child.err[-300:]}")
    checks.check(not mode_problems(dirs.registry), f"modes of a live run: {mode_problems(dirs.registry)}")
    child.proc.kill()
    child.finish()
    # a lock path that is a symlink is quarantined (a foreign file would only be reported)
    os.symlink(os.path.join(dirs.root, "nowhere"), os.path.join(dirs.registry, "junk.lock"))
    status, _report, _err = sweep_cli(dirs.registry, torture_env(), dirs.root)
    checks.check(status == 0 and not mode_problems(dirs.registry),
                 f"modes after a sweep that quarantined: {mode_problems(dirs.registry)} (status {status})")
    checks.check(os.path.isdir(os.path.join(dirs.registry, "quarantine")), "nothing was quarantined")


def _refused(checks: _Checks, label: str, prepare: Callable[[str], None], expect: str) -> None:
    """A hostile registry directory: the fixture refuses (exit 3) with ``expect`` in the message and
    creates nothing; the sweep refuses (exit 1) without a traceback and touches nothing."""
    dirs = checks.lane.dirs()
    dead = checks.child(dirs, "--count", "2", TAOS_PERSONA_FAULT="acquire.after_record:2")
    checks.check(dead.finish() == -signal.SIGKILL, f"{label}: the dead run did not die")
    prepare(dirs.registry)
    checks.row.faults += 1
    before = dirs.survivors()
    child = checks.child(dirs, "--count", "1")
    status, message = child.finish(), " ".join(child.lines("ERROR"))
    checks.check(status == 3 and "UnsafeRegistryError" in message and expect in message,
                 f"{label}: the fixture said {status} {message[:200]!r}, not {expect!r}")
    checks.check(dirs.survivors() == before, f"{label}: the refused fixture created something")
    status, report, err = sweep_cli(dirs.registry, torture_env(), dirs.root)
    problems = " ".join(p.get("error", "") for p in (report or {}).get("problems", []))
    checks.check(status == 1 and expect in problems and "Traceback" not in err,
                 f"{label}: the sweep said {status} {problems[:200]!r} {err[-200:]}")
    checks.check(dirs.survivors() == before, f"{label}: the refused sweep released something")
    _restore(dirs.registry)
    status, _report, _err = sweep_cli(dirs.registry, torture_env(), dirs.root)
    checks.row.survivors += dirs.survivors()
    checks.check(status == 0 and dirs.survivors() == 0, f"{label}: after repair: {dirs.survivors()} alive")


def _restore(registry: str) -> None:
    """Undo a hostile setup: a symlink becomes its target's place, mode 700, owner us."""
    if os.path.islink(registry):
        target = os.path.realpath(registry)
        os.unlink(registry)
        os.rename(target, registry)
    os.chown(registry, os.getuid(), os.getgid())
    os.chmod(registry, 0o700)


def _chmod(mode: int) -> Callable[[str], None]:
    return lambda path: os.chmod(path, mode)


def _chown(path: str) -> None:
    os.chown(path, 4242, -1)


def _symlinked(path: str) -> None:
    real = path + ".real"
    os.rename(path, real)
    os.symlink(real, path)


def _names(checks: _Checks) -> None:
    """Hostile persona names and run ids are refused before anything touches the disk."""
    dirs = checks.lane.dirs()
    for name in BAD_NAMES:
        for kwargs in ({"name": name}, {"name": "fine", "run_id": name}):
            checks.row.faults += 1
            try:
                PersonaFixture(registry_dir=dirs.registry, **kwargs)  # type: ignore[arg-type]
                refused = False
            except InvalidNameError:
                refused = True
            checks.check(refused, f"names: {kwargs!r} was accepted")
    checks.check(not os.path.exists(dirs.registry), "names: a refused name touched the disk")
    PersonaFixture("x" * 64, run_id="y" * 64, registry_dir=dirs.registry)  # the longest allowed


def _careless_backend(checks: _Checks) -> None:
    """A release error that quotes a key reaches the registry and the CLI with the key redacted."""
    dirs = checks.lane.dirs()
    failing = os.path.join(dirs.root, "fail-releases")
    open(failing, "w").close()
    leak = {"TAOS_TEST_FAIL_RELEASE": failing, "TAOS_TEST_LEAK_VAR": LEAKED}
    child = Child(run_args(dirs, "file", "--count", "2"), torture_env(checks.lane.sandbox.url, **leak),
                  dirs.root)
    checks.row.faults += 1
    checks.check(child.finish() == 0, f"careless backend: the child failed: {child.err[-300:]}")
    runs = registry_runs(dirs.registry)
    checks.check(len(runs) == 1, "careless backend: the failed release was not kept")
    with open(os.path.join(dirs.registry, runs[0]) if runs else os.devnull) as record:
        checks.check("***" in record.read(), "careless backend: the leaked key was not redacted to ***")
    SCANNER.scan_tree("registry after a leaking release", dirs.registry)
    status, _report, _err = sweep_cli(dirs.registry, torture_env(**leak), dirs.root)
    checks.check(status == 1, f"careless backend: a failing sweep exited {status}")
    os.unlink(failing)
    status, _report, _err = sweep_cli(dirs.registry, torture_env(), dirs.root)
    checks.row.survivors += dirs.survivors()
    checks.check(status == 0 and dirs.survivors() == 0, "careless backend: not released after the fix")


def security(lane: Lane, rng: random.Random) -> Row:
    """Every check once (the seed picks the unsafe modes); then the secret scan of the whole run."""
    checks = _Checks(lane)
    _modes(checks)
    for mode in rng.sample(UNSAFE_MODES, 3):
        _refused(checks, f"registry mode {mode:o}", _chmod(mode), "writable by group or others")
    if os.getuid() == 0:
        _refused(checks, "registry owned by uid 4242", _chown, "owned by uid 4242")
    else:
        checks.row.notes.append("security: not root, so no directory of another owner was made")
    _refused(checks, "registry is a symlink", _symlinked, "not a plain directory")
    _names(checks)
    _careless_backend(checks)
    checks.check(SCANNER.scanned > 0 and not SCANNER.hits, f"secrets found: {SCANNER.hits[:5]}")
    checks.row.notes.append(f"security: {len(SCANNER.secrets)} provider keys searched for in "
                            f"{SCANNER.scanned} registry files and outputs: {len(SCANNER.hits)} found")
    return checks.row

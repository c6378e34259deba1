"""The watchdog: a detached process that releases its owner's runs seconds after the owner dies.

Ryuk done better (issue 10). ``PersonaFixture(watchdog=True)`` or
``TAOS_PERSONA_WATCHDOG=1`` starts, once per process, ``python -m
taos_persona.watchdog`` in a session of its own, so a Ctrl-C to the test's
process group or a SIGKILL of the test does not reach it. Its stdin is the read
end of a pipe whose only write end the owner holds: the kernel closes that end
however the owner dies (SIGKILL, OOM), and the watchdog's blocking read returns
EOF at once. It then sweeps the owner's registry directories: the sweep takes
a run's lock before it touches the run, so a run whose lock is held (a live
owner, another process) is never released; Ryuk's "reaped after a short
disconnect" cannot happen, because a pipe does not disconnect while its
writer lives. It exits once no run of its owner is left, or after
``TAOS_PERSONA_WATCHDOG_PATIENCE`` seconds (default 600) of failed tries,
leaving the rest to the next sweep.

Nothing here can fail a test: starting it is one ``Popen`` that is not waited
for (a few milliseconds; ``make bench`` reports the figure), any error becomes
one warning, and the watchdog's own output goes to ``/dev/null`` (or to
``$TAOS_PERSONA_WATCHDOG_LOG``). It inherits the owner's environment as it is
at start: provider credentials and ``TAOS_PERSONA_PLUGINS`` (for backends of
your own) must be set before the first fixture opens.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Set

from ._redact import describe_error

if TYPE_CHECKING:  # pragma: no cover
    import subprocess

__all__ = ["WATCHDOG_ENV", "LOG_ENV", "PATIENCE_ENV", "wanted", "ensure", "watchdog_pid", "main"]

WATCHDOG_ENV = "TAOS_PERSONA_WATCHDOG"
LOG_ENV = "TAOS_PERSONA_WATCHDOG_LOG"
PATIENCE_ENV = "TAOS_PERSONA_WATCHDOG_PATIENCE"
_DEFAULT_PATIENCE = 600.0
_FAULT_ENV = "TAOS_PERSONA_FAULT"
_MAX_BACKOFF = 30.0


@dataclass
class _Watch:
    """This process's watchdog: its Popen, the pipe end we hold, the directories it sweeps."""

    owner: int
    process: "subprocess.Popen[bytes]"
    write_fd: int
    dirs: Set[str] = field(default_factory=set)


_watch: Optional[_Watch] = None
_fork_hook_installed = False


def wanted(flag: Optional[bool]) -> bool:
    """The fixture's ``watchdog=`` argument if given, else ``$TAOS_PERSONA_WATCHDOG``."""
    if flag is not None:
        return flag
    return os.environ.get(WATCHDOG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def watchdog_pid() -> Optional[int]:
    """The pid of this process's watchdog, or None if it has none."""
    watch = _watch
    return watch.process.pid if watch is not None and watch.owner == os.getpid() else None


def ensure(directory: str) -> Optional[int]:
    """Start this process's watchdog for ``directory`` (or tell the running one of it).

    Returns the watchdog's pid, or None if it could not be started: that is a
    warning, never an error, since a test must not fail for its safety net.
    """
    global _watch
    try:
        if _watch is None or _watch.owner != os.getpid():
            _watch = _start(directory)
        elif directory not in _watch.dirs:
            os.write(_watch.write_fd, f"{directory}\n".encode())
            _watch.dirs.add(directory)
        return _watch.process.pid
    except Exception as exc:  # noqa: BLE001 - the safety net must never fail the test
        warnings.warn(f"taos-persona: could not start the watchdog ({exc}); resources of a killed "
                      "run wait for the next sweep", RuntimeWarning, stacklevel=2)
        return None


def _start(directory: str) -> _Watch:
    """Popen the watchdog in a new session, stdin the pipe's read end; do not wait for it."""
    import subprocess

    read_fd, write_fd = os.pipe()  # both ends non-inheritable (PEP 446): no other child gets them
    try:
        log = os.environ.get(LOG_ENV)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {k: v for k, v in os.environ.items() if k != _FAULT_ENV}  # a fault armed for the test is not ours
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        with open(log or os.devnull, "ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "taos_persona.watchdog", "--owner", str(os.getpid()), directory],
                stdin=read_fd, stdout=subprocess.DEVNULL, stderr=sink, env=env, close_fds=True,
                start_new_session=True)
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    os.set_blocking(write_fd, False)  # a stuck watchdog must never block the test on a full pipe
    _install_fork_hook()
    return _Watch(os.getpid(), process, write_fd, {directory})


def _install_fork_hook() -> None:
    """A forked child must not hold the pipe open: the watchdog would never see its owner die."""
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_in_child)
        _fork_hook_installed = True


def _forget_in_child() -> None:
    global _watch
    watch, _watch = _watch, None
    if watch is not None:
        try:
            os.close(watch.write_fd)
        except OSError:
            pass
        watch.process.returncode = 0  # not our child: its Popen must not warn or wait in this one


# -- the watchdog process ---------------------------------------------------------------------
_EXITS = (SystemExit, KeyboardInterrupt)
"""What ends the watchdog; any other BaseException of its work is reported and survived."""

def _owner_runs_left(directories: Set[str], owner: int) -> List[str]:
    """Run ids in ``directories`` whose record names ``owner`` as its process."""
    from .registry import Registry

    left = []
    for directory in sorted(directories):
        registry = Registry(directory)
        for entry in registry.entries():
            if entry.kind != "json" or not entry.run_id:
                continue
            try:
                if registry.read(entry.run_id).pid == owner:
                    left.append(entry.run_id)
            except _EXITS:
                raise
            except BaseException:  # noqa: BLE001 - unreadable or gone: the sweep reports it, not us
                continue
    return left


def _sweep_all(directories: Set[str]) -> None:
    """One sweep of each directory; the sweep never touches a run whose lock is held."""
    from .sweeper import sweep_registry

    for directory in sorted(directories):
        try:
            sweep_registry(directory)
        except _EXITS:
            raise
        except BaseException as exc:  # noqa: BLE001 - even a backend's CancelledError: try again later
            sys.stderr.write(f"taos-persona watchdog: sweep of {directory} failed: {describe_error(exc)}\n")


def _reap(directories: Set[str], owner: int, patience: float) -> int:
    """Sweep until no run of ``owner`` is left (0) or patience runs out (1)."""
    deadline = time.monotonic() + patience
    wait = 0.25
    while True:
        _sweep_all(directories)
        left = _owner_runs_left(directories, owner)
        if not left:
            return 0
        if time.monotonic() >= deadline:
            sys.stderr.write(f"taos-persona watchdog: runs {', '.join(left)} of pid {owner} are still "
                             "held; the next sweep will release them\n")
            return 1
        time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
        wait = min(wait * 2, _MAX_BACKOFF)


def _warm_up() -> None:
    """Import now what the release needs, so the owner's death is answered in milliseconds."""
    from .backends import load_builtin
    from .sweeper import load_plugins

    load_builtin()
    load_plugins()
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        pass


def _wait_for_owner(directories: Set[str]) -> None:
    """Read directory announcements from stdin until EOF: the owner is gone."""
    stdin = sys.stdin.buffer
    for line in iter(stdin.readline, b""):
        directory = line.decode(errors="replace").strip()
        if directory:
            directories.add(directory)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taos_persona.watchdog",
                                     description="Started by a PersonaFixture: not for direct use.")
    parser.add_argument("--owner", type=int, required=True, help="pid of the process watched")
    parser.add_argument("directories", nargs="+", help="registry directories of the owner's runs")
    args = parser.parse_args(argv)
    directories = set(args.directories)
    try:
        _warm_up()
    except _EXITS:
        raise
    except BaseException as exc:  # noqa: BLE001 - a missing plugin still leaves the built-ins usable
        sys.stderr.write(f"taos-persona watchdog: {exc}\n")
    _wait_for_owner(directories)
    try:
        patience = float(os.environ.get(PATIENCE_ENV, "") or _DEFAULT_PATIENCE)
    except ValueError:
        patience = _DEFAULT_PATIENCE
    return _reap(directories, args.owner, patience)


if __name__ == "__main__":
    sys.exit(main())

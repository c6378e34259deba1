"""The second witness of a run's life, beside its lock: who owns it, and a heartbeat.

A lock file anyone can delete (``rm *.lock``, ``git clean -fdx``) must not make
a live run look dead. So each run record also names its owner: the machine
(:func:`machine_id`), the pid and the process's start time
(:func:`process_start`). A sweeper on the same machine asks :func:`judge`,
which says ``ALIVE`` only while a process with that pid and that start time
exists, ``DEAD`` when it is certainly gone, ``UNKNOWN`` when it cannot tell
(another machine or boot, another pid namespace, a system without
``/proc``; on macOS and Windows the start time is not recorded, so only the
lock and the record's age speak there).

The owner's :class:`Heartbeat` (one daemon thread per process) touches each
live run's json every :data:`HEARTBEAT_INTERVAL` seconds, so that a sweeper
on another host judges its age by the file system's clock, never by the
owner's; and notices when its lock file was deleted or replaced, takes a
new one and warns.
"""
from __future__ import annotations

import enum
import os
import socket
import threading
import warnings
from functools import lru_cache
from typing import Callable, Dict, Optional

from .errors import ResourceLeftWarning

__all__ = ["Verdict", "machine_id", "process_start", "own_start", "judge", "this_machine", "Heartbeat",
           "HEARTBEAT_INTERVAL", "heartbeat_interval"]

HEARTBEAT_INTERVAL = 60.0
"""Seconds between two heartbeats of a live run (``TAOS_PERSONA_HEARTBEAT`` sets it). A run of
another host is swept only when its file is ``--older-than`` minutes old (30 by default), many
heartbeats: a live owner's file is never that old."""

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


class Verdict(enum.Enum):
    """What the witness says of a run's owner."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


def _read_first_line(path: str) -> str:
    """The file's first line, or "" if it cannot be read. Binary, then the built-in utf-8
    decoder: a process that dropped privileges may no longer import a codec module."""
    try:
        with open(path, "rb") as handle:
            return handle.readline(256).decode("utf-8", "replace").strip()
    except OSError:
        return ""


@lru_cache(maxsize=None)
def machine_id() -> str:
    """A stable identity of this machine: systemd's machine id, else the boot id, else the host name.

    A host name is a poor identity (a container gets a new one each start), so it comes last.
    """
    for path in _MACHINE_ID_FILES:
        found = _read_first_line(path)
        if found:
            return found
    return _boot_id() or socket.gethostname()


@lru_cache(maxsize=None)
def _boot_id() -> str:
    return _read_first_line(_BOOT_ID_FILE)


@lru_cache(maxsize=None)
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> Optional[str]:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot).

    None if there is no such process or it is a zombie (it has died; only its exit status is
    left). Raises OSError when ``/proc`` will not say (hidepid, a sandbox): no proof either way.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and ')'
    if len(fields) < 20:
        raise OSError(f"/proc/{pid}/stat has no start time")
    return None if fields[0] in ("Z", "X") else fields[19]


def process_start(pid: int) -> Optional[str]:
    """``boot id/pid namespace/start ticks`` of a process, or None if unknown (non-Linux) or gone.

    Together with the pid this names one process for ever: a pid reused after the
    owner's death has another start time, a reboot another boot id. Raises OSError
    when ``/proc`` exists but will not tell.
    """
    boot = _boot_id()
    ticks = _start_ticks(pid) if boot else None
    if ticks is None:
        return None
    return f"{boot}/{_pid_namespace()}/{ticks}"


def own_start() -> Optional[str]:
    """:func:`process_start` of this process (computed anew after a fork); None if unknown."""
    try:
        return process_start(os.getpid())
    except OSError:
        return None


def this_machine(machine: Optional[str], start: Optional[str]) -> bool:
    """Was a record written on this machine since its last boot? A machine id alone can lie (a
    cloned VM keeps it), so a recorded boot id must match too; a reboot makes a run foreign, to
    be judged by its age, which is slower but never wrong."""
    if not machine or machine != machine_id():
        return False
    return not start or start.split("/", 1)[0] == _boot_id()


def judge(machine: Optional[str], pid: int, start: Optional[str]) -> Verdict:
    """Is the process that wrote a run record alive? Only this machine's own processes are judged."""
    if not machine or machine != machine_id() or not start:
        return Verdict.UNKNOWN
    boot, namespace, _ticks = (start.split("/", 2) + ["", ""])[:3]
    if boot != _boot_id() or namespace != _pid_namespace():
        return Verdict.UNKNOWN  # another boot (or a clone with our machine id), another container
    try:
        now = process_start(pid)
    except OSError:
        return Verdict.UNKNOWN
    return Verdict.ALIVE if now == start else Verdict.DEAD


def heartbeat_interval() -> float:
    """``$TAOS_PERSONA_HEARTBEAT`` seconds if set to a positive number, else :data:`HEARTBEAT_INTERVAL`."""
    raw = os.environ.get("TAOS_PERSONA_HEARTBEAT", "").strip()
    try:
        value = float(raw) if raw else HEARTBEAT_INTERVAL
    except ValueError:
        return HEARTBEAT_INTERVAL
    return value if value > 0 else HEARTBEAT_INTERVAL


Beat = Callable[[], Optional[str]]
"""One run's heartbeat: refresh what shows it alive; return a warning to show, or None."""


class Heartbeat:
    """One daemon thread that calls every registered run's beat each interval.

    The thread is started on the first :meth:`add` and ends when nothing is left;
    a forked child starts with no beats (the runs are its parent's).
    """

    def __init__(self) -> None:
        self._beats: Dict[str, Beat] = {}
        self._guard = threading.RLock()  # re-entrant: a signal handler may end a run mid-add
        self._wake = threading.Condition(self._guard)
        self._thread: Optional[threading.Thread] = None

    def add(self, key: str, beat: Beat) -> None:
        """Beat ``beat`` every interval from now on. Never raises: without a thread (a process
        at its thread limit), the lock and the witness still speak for the run; a warning says so."""
        with self._guard:
            self._beats[key] = beat
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="taos-persona-heartbeat",
                                                daemon=True)
                try:
                    self._thread.start()
                except RuntimeError as exc:
                    self._thread = None
                    warnings.warn(f"taos-persona cannot start its heartbeat thread ({exc}): a sweep on "
                                  "another host may take this run for an old one", ResourceLeftWarning,
                                  stacklevel=3)

    def remove(self, key: str) -> None:
        with self._guard:
            self._beats.pop(key, None)
            if not self._beats:
                self._wake.notify_all()  # the thread ends now, not an interval later

    def beat_now(self) -> None:
        """Call every beat once, on the caller's thread (tests, and the first beat)."""
        with self._guard:
            beats = list(self._beats.values())
        for beat in beats:
            _run_beat(beat)

    def _loop(self) -> None:
        interval = heartbeat_interval()
        while True:
            with self._guard:
                if not self._beats:
                    self._thread = None
                    return
                self._wake.wait(interval)
                beats = list(self._beats.values())
            for beat in beats:
                _run_beat(beat)

    def _after_fork_in_child(self) -> None:
        self._beats = {}
        self._guard = threading.RLock()
        self._wake = threading.Condition(self._guard)
        self._thread = None


def _run_beat(beat: Beat) -> None:
    try:
        message = beat()
    except Exception as exc:  # noqa: BLE001 - a heartbeat never kills its thread or the test
        message = f"taos-persona heartbeat failed: {exc}"
    if message:
        warnings.warn(message, ResourceLeftWarning, stacklevel=2)


HEARTBEAT = Heartbeat()
"""The process's one heartbeat thread."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=HEARTBEAT._after_fork_in_child)

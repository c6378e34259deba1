"""The registry directory: where run records live, how they are written, read and set aside.

Every change is a whole-file rewrite: a temp file in the same directory,
flush, fsync, ``os.replace``, fsync of the directory. A reader sees the old
file or the new one, never half of one. Files are 0600, the directory 0700,
and no symlink is ever followed.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from ._faults import fault_point
from .errors import RegistryError, UnsafeRegistryError
from .records import CorruptRecordError, RunRecord

__all__ = ["Registry", "DirEntry", "default_registry_dir", "MAX_RECORD_BYTES"]

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""A run file larger than this is not ours: it goes to quarantine unread."""

_RUN_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_ENTRY_RES = (
    ("json", re.compile(rf"({_RUN_ID})\.json\Z")),
    ("lock", re.compile(rf"({_RUN_ID})\.lock\Z")),
    ("temp", re.compile(rf"\.({_RUN_ID})\.json\.[A-Za-z0-9_-]+\.tmp\Z")),
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NOT_A_RECORD = {getattr(errno, name) for name in ("ELOOP", "ENXIO", "ENODEV", "EOPNOTSUPP", "EISDIR")
                 if hasattr(errno, name)}
"""open() errors that say the path is no file of ours (a symlink, a socket, a device)."""
_NO_DIR_FSYNC = {getattr(errno, name) for name in ("EINVAL", "ENOTSUP", "EOPNOTSUPP", "EBADF")
                 if hasattr(errno, name)}
"""fsync() errors that say a directory cannot be synced here, not that the write failed."""
QUARANTINE = "quarantine"
_PROJECT_MARKERS = (".taos", ".git", "setup.cfg", "pyproject.toml", "setup.py")


def default_registry_dir() -> str:
    """``$TAOS_PERSONA_DIR``, else ``.taos/test-fixtures`` in the project root above the cwd."""
    configured = os.environ.get("TAOS_PERSONA_DIR")
    if configured:
        return os.path.abspath(configured)
    here = os.getcwd()
    probe = here
    while True:
        if any(os.path.exists(os.path.join(probe, marker)) for marker in _PROJECT_MARKERS):
            return os.path.join(probe, ".taos", "test-fixtures")
        parent = os.path.dirname(probe)
        if parent == probe:
            return os.path.join(here, ".taos", "test-fixtures")
        probe = parent


@dataclass(frozen=True)
class DirEntry:
    """A registry directory entry, classified by name: json, lock, temp or foreign."""

    name: str
    kind: str
    run_id: Optional[str]
    is_symlink: bool
    is_dir: bool


class Registry:
    """One registry directory. Creating it is lazy; :meth:`ensure` checks it is safe to use."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = os.path.abspath(os.fspath(path)) if path is not None else default_registry_dir()

    def json_path(self, run_id: str) -> str:
        return os.path.join(self.path, f"{run_id}.json")

    def lock_path(self, run_id: str) -> str:
        return os.path.join(self.path, f"{run_id}.lock")

    def ensure(self) -> None:
        """Create the directory 0700 if needed, and refuse one that others could tamper with."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry directory {self.path}: {exc.strerror}; "
                                "set TAOS_PERSONA_DIR or registry_dir= to a writable place") from exc
        self.check_safe()

    def check_safe(self) -> None:
        """Refuse a registry directory that is a symlink, not ours, or writable by others."""
        info = os.lstat(self.path)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise UnsafeRegistryError(f"registry path {self.path} is not a plain directory "
                                      "(a symlink or a file); point TAOS_PERSONA_DIR at a real one")
        if sys.platform == "win32":
            return
        if info.st_uid != os.getuid():
            raise UnsafeRegistryError(f"registry directory {self.path} is owned by uid {info.st_uid}, "
                                      f"not by you (uid {os.getuid()}); use a directory of your own")
        if info.st_mode & 0o022:
            raise UnsafeRegistryError(f"registry directory {self.path} is writable by group or others "
                                      f"(mode {stat.S_IMODE(info.st_mode):o}); run: chmod 700 {self.path}")

    def write(self, run: RunRecord) -> None:
        """Atomically replace ``{run_id}.json`` with the run's current state."""
        self.write_bytes(self.json_path(run.run_id), run.to_bytes(), temp_prefix=f".{run.run_id}.json.")

    def write_bytes(self, path: str, data: bytes, *, temp_prefix: str) -> None:
        """temp file, flush, fsync, rename, fsync the directory; no temp file survives a failure."""
        temp = os.path.join(self.path, f"{temp_prefix}{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            fault_point("registry.mid_write")
            os.replace(temp, path)
        except BaseException as exc:
            _unlink_quietly(temp)
            if isinstance(exc, OSError):
                raise RegistryError(f"cannot write registry file {path}: {exc.strerror}; free disk "
                                    "space or make the registry directory writable") from exc
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        if sys.platform == "win32":
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # VirtualBox shared folders, some FUSE and 9p file systems cannot sync a directory
            # (EINVAL): the rename is then as durable as that file system makes anything.
            if exc.errno not in _NO_DIR_FSYNC:
                raise RegistryError(f"cannot sync registry directory {self.path}: {exc.strerror}; "
                                    "set TAOS_PERSONA_DIR to a local file system") from exc

    def read(self, run_id: str) -> RunRecord:
        """Read a run record; CorruptRecordError for anything we cannot trust."""
        return RunRecord.from_bytes(self.read_bytes(self.json_path(run_id)))

    def read_bytes(self, path: str) -> bytes:
        try:
            # O_NONBLOCK: a FIFO named like a run record must not hang the sweep in open().
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            if exc.errno in _NOT_A_RECORD:
                raise CorruptRecordError(f"cannot open {os.path.basename(path)}: {exc.strerror}") from None
            # EACCES, EMFILE, EIO...: a file we may not read now is not corrupt; moving it to
            # quarantine would hide a run (maybe live, maybe another user's) from every sweep.
            raise RegistryError(f"cannot read {path}: {exc.strerror}; it is left in place") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise CorruptRecordError("not a regular file")
            if info.st_size > MAX_RECORD_BYTES:
                raise CorruptRecordError(f"{info.st_size} bytes, more than a run record can be")
            return handle.read(MAX_RECORD_BYTES + 1)

    def remove(self, path: str) -> None:
        _unlink_quietly(path)

    def entries(self) -> Iterator[DirEntry]:
        """Every entry but the quarantine folder, classified by its name."""
        try:
            scan = os.scandir(self.path)
        except FileNotFoundError:
            return
        with scan:
            for entry in scan:
                if entry.name == QUARANTINE:
                    continue
                yield _classify(entry)

    def quarantine(self, name: str) -> Optional[str]:
        """Move ``name`` (never following a symlink) into ``quarantine/``; None if it vanished."""
        folder = os.path.join(self.path, QUARANTINE)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        target = os.path.join(folder, f"{name}.{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
        try:
            os.rename(os.path.join(self.path, name), target)
        except FileNotFoundError:
            return None
        return target


def is_odd_file(path: str) -> bool:
    """True if ``path`` exists and is not a regular file (a directory, symlink, FIFO...)."""
    try:
        return not stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _classify(entry: "os.DirEntry[str]") -> DirEntry:
    is_symlink = entry.is_symlink()
    is_dir = entry.is_dir(follow_symlinks=False)
    for kind, pattern in _ENTRY_RES:
        match = pattern.match(entry.name)
        if match:
            return DirEntry(entry.name, kind, match.group(1), is_symlink, is_dir)
    return DirEntry(entry.name, "foreign", None, is_symlink, is_dir)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # the caller's own error is the one worth seeing

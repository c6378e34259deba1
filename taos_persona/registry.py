"""The registry directory: where run records live, how they are written, read and set aside.

Every change is a whole-file rewrite: a temp file in the same directory,
flush, fsync, ``os.replace``, fsync of the directory. A reader sees the old
file or the new one, never half of one. Files are 0600, the directory 0700,
the directories above it safe from other users, and no symlink is ever
followed: every call goes through one directory descriptor, by base name.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Set

from . import liveness
from ._faults import fault_point
from .errors import NotARegistryError, RegistryError, ResourceLeftWarning, UnsafeRegistryError
from .locking import BaseRunLock, RunLock
from .naming import DEFAULT_RUN_ID
from .records import CorruptRecordError, RunRecord

__all__ = ["Registry", "DirEntry", "default_registry_dir", "MAX_RECORD_BYTES", "MARKER"]

MAX_RECORD_BYTES = 1024 * 1024
"""One run record is at most 1 MiB (a persona holds a handful of resources; thousands fit).
Enforced when writing (the intent write fails before the provider is called) and when
reading (a larger file goes to quarantine unread, and counts as left)."""

_RUN_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_ENTRY_RES = (
    ("json", re.compile(rf"({_RUN_ID})\.json\Z")),
    ("lock", re.compile(rf"({_RUN_ID})\.lock\Z")),
    ("temp", re.compile(rf"\.({_RUN_ID})\.json\.[A-Za-z0-9_-]+\.tmp\Z")),
    ("probe", re.compile(r"\.probe\.([0-9a-f]+)\.tmp\Z")),
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_USE_DIR_FD = os.open in os.supports_dir_fd and os.scandir in os.supports_fd
_NOT_A_RECORD = {getattr(errno, name) for name in ("ELOOP", "ENXIO", "ENODEV", "EOPNOTSUPP", "EISDIR")
                 if hasattr(errno, name)}
"""open() errors that say the path is no file of ours (a symlink, a socket, a device)."""
_NO_DIR_FSYNC = {getattr(errno, name) for name in ("EINVAL", "ENOTSUP", "EOPNOTSUPP", "EBADF")
                 if hasattr(errno, name)}
"""fsync() errors that say a directory cannot be synced here, not that the write failed."""
QUARANTINE = "quarantine"
MARKER = ".taos-registry"
"""Written into a registry directory when it is made: the sweep acts only where it finds it (or,
in a registry made before the marker, where every entry is named like ours)."""
_MARKER_TEXT = b"taos-persona registry: run records of persona tests; python -m taos_persona.sweep\n"
_QUARANTINED_RECORD = re.compile(rf"{_RUN_ID}\.json\.[0-9]{{8}}T[0-9]{{6}}-[0-9a-f]+\Z")
_PROJECT_MARKERS = (".taos", ".git", "setup.cfg", "pyproject.toml", "setup.py")


def default_registry_dir() -> str:
    """``$TAOS_PERSONA_DIR``, else ``.taos/test-fixtures`` in the project root above the cwd."""
    configured = os.environ.get("TAOS_PERSONA_DIR", "").strip()
    if configured:  # an empty value is unset: never the current directory
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
    """A registry directory entry, classified by name: json, lock, temp, probe, marker or foreign."""

    name: str
    kind: str
    run_id: Optional[str]
    is_symlink: bool
    is_dir: bool


class Registry:
    """One registry directory, used through one descriptor opened once (it cannot be swapped
    under us). Opening is lazy; :meth:`ensure` (or :meth:`check_safe`) opens and checks it,
    :meth:`close` drops the descriptor (safe twice; a later use opens it again)."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = _given_path(path) if path is not None else default_registry_dir()
        self._dir_fd: Optional[int] = None

    def json_path(self, run_id: str) -> str:
        return os.path.join(self.path, f"{run_id}.json")

    def lock_path(self, run_id: str) -> str:
        return os.path.join(self.path, f"{run_id}.lock")

    def lock(self, run_id: str) -> RunLock:
        """The run's lock, opened through the directory descriptor."""
        return RunLock(self.lock_path(run_id), dir_fd=self.dir_fd() if _USE_DIR_FD else None)

    def keep_alive(self, run_id: str, lock: BaseRunLock) -> None:
        """Start the run's heartbeat (see :mod:`.liveness`): touch its json every interval, so a
        sweeper of another host sees it young, and take a new lock file if ours was deleted."""
        path = self.json_path(run_id)

        def beat() -> Optional[str]:
            try:
                os.utime(path, follow_symlinks=False)
            except FileNotFoundError:
                pass  # not written yet, or finished a moment ago
            return lock.refresh()

        liveness.HEARTBEAT.add(path, beat)

    def stop_heartbeat(self, run_id: str) -> None:
        """End the run's heartbeat; safe to call twice."""
        liveness.HEARTBEAT.remove(self.json_path(run_id))

    def ensure(self) -> None:
        """Create the directory 0700 if needed, and refuse one that others could tamper with."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry directory {self.path}: {exc.strerror}; "
                                "set TAOS_PERSONA_DIR or registry_dir= to a writable place") from exc
        self.check_safe()
        self.check_is_registry(adopt=True)

    def check_is_registry(self, *, adopt: bool = False) -> None:
        """Refuse a directory that does not look like a registry: no :data:`MARKER` and some entry
        not named like a run file of ours with a default run id (``.git``, ``src/``, ``notes.txt``,
        ``package.json``...). ``adopt``
        writes the marker into a registry that passes without one (made before the marker).

        Raises NotARegistryError naming the path and the fix; FileNotFoundError if it is gone.
        """
        if self._has_marker():
            return
        foreign = sorted(entry.name for entry in self.entries() if entry.kind == "foreign"
                         or (entry.kind != "probe" and not DEFAULT_RUN_ID.match(entry.run_id or "")))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise NotARegistryError(
                f"{self.path} does not look like a taos-persona registry: it has no {MARKER} file and "
                f"holds entries that are not run files ({shown}); nothing was touched. Point "
                "TAOS_PERSONA_DIR, registry_dir= or --dir at the registry (default .taos/test-fixtures), "
                f"or, if this is one, create the file {os.path.join(self.path, MARKER)}")
        if adopt:
            self._write_marker()

    def _write_marker(self) -> None:
        """Create :data:`MARKER` (its content is only a note to a reader); one already there is fine."""
        try:
            fd = os.open(flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode=0o600, **self._at(MARKER))
        except FileExistsError:
            return
        except OSError as exc:
            raise RegistryError(f"cannot write {os.path.join(self.path, MARKER)}: {exc.strerror}; make the "
                                "registry directory writable") from exc
        try:
            _write_all(fd, _MARKER_TEXT)
        except OSError:
            pass  # disk full: the file's presence is the marker, its text only a note
        finally:
            os.close(fd)

    def _has_marker(self) -> bool:
        try:
            return stat.S_ISREG(os.stat(follow_symlinks=False, **self._at(MARKER)).st_mode)
        except FileNotFoundError:
            return False

    def quarantined_records(self) -> List[str]:
        """Paths of the run records in ``quarantine/`` (moved there by this or an earlier sweep):
        what they held may still be alive, so they count as left until someone deletes them.

        Raises RegistryError when ``quarantine`` is there but not a plain directory we can list
        (a symlink, a file): what it holds cannot be counted, so it is never "none left".
        """
        folder = os.path.join(self.path, QUARANTINE)
        try:
            if _USE_DIR_FD:
                fd = os.open(QUARANTINE, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=self.dir_fd())
                try:
                    names = os.listdir(fd)
                finally:
                    os.close(fd)
            else:
                _check_plain_dir(folder, os.lstat(folder))
                names = os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RegistryError(f"cannot list {folder}: {exc.strerror}; it must be a plain directory (not a "
                                "symlink or a file): move it aside and check by hand what it holds") from None
        return [os.path.join(folder, name) for name in sorted(names) if _QUARANTINED_RECORD.match(name)]

    def check_safe(self) -> None:
        """Refuse a registry directory that is a symlink, not ours, or writable by others, or
        that lies below a directory others could rename it in (as ssh checks ``~/.ssh``)."""
        self.dir_fd()

    def dir_fd(self) -> int:
        """The directory's descriptor, opened (never through a symlink) and checked once.

        Raises FileNotFoundError if it does not exist, UnsafeRegistryError if it is unsafe.
        """
        if self._dir_fd is not None:
            return self._dir_fd
        if not _USE_DIR_FD:
            _check_plain_dir(self.path, os.lstat(self.path))
            return -1
        try:
            fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise UnsafeRegistryError(f"registry path {self.path} is not a plain directory ({exc.strerror}: "
                                      "a symlink or a file?); point TAOS_PERSONA_DIR at a real one") from None
        try:
            _check_plain_dir(self.path, os.fstat(fd))
            _check_ancestors(self.path)
        except BaseException:
            os.close(fd)
            raise
        self._dir_fd = fd
        return fd

    def close(self) -> None:
        """Close the directory descriptor; safe to call twice."""
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None and fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit there is no one left to tell
            pass

    def _at(self, name: str) -> Dict[str, Any]:
        """``path`` (and ``dir_fd``) keywords for an ``os`` call on one file of the registry."""
        if _USE_DIR_FD:
            return {"path": os.path.basename(name), "dir_fd": self.dir_fd()}
        return {"path": os.path.join(self.path, os.path.basename(name))}

    def write(self, run: RunRecord) -> None:
        """Atomically replace ``{run_id}.json`` with the run's current state (see :meth:`write_record`)."""
        self.write_record(run.run_id, run.to_bytes())

    def write_record(self, run_id: str, data: bytes) -> None:
        """Atomically replace ``{run_id}.json`` with ``data`` (an encoded run record).

        Raises RegistryError, before anything changes, for a record over MAX_RECORD_BYTES.
        """
        path = self.json_path(run_id)
        if len(data) > MAX_RECORD_BYTES:
            raise RegistryError(f"run record {path} would be {len(data)} bytes, more than the limit of "
                                f"{MAX_RECORD_BYTES} bytes: a backend's options or token are too large "
                                "for the registry; pass large data by reference")
        try:
            self.write_bytes(path, data, temp_prefix=f".{run_id}.json.")
        except RegistryError:
            if not self._vanished():
                raise
            # ``git clean -fdx`` (or rm -r) took the directory under a live run: make it again and
            # write the whole state there, so a crash from now on still leaves a record.
            self.close()
            self.ensure()
            self.write_bytes(path, data, temp_prefix=f".{run_id}.json.")
            warnings.warn(f"registry directory {self.path} was deleted under a live run (git clean?); "
                          "taos-persona made it again and wrote the run's record: keep .taos/ out of "
                          "cleaning tools", ResourceLeftWarning, stacklevel=3)

    def _vanished(self) -> bool:
        """Was our directory removed while we held it open? (Writes into it then fail.)"""
        if not _USE_DIR_FD or self._dir_fd is None:
            return not os.path.isdir(self.path)
        try:
            return os.fstat(self._dir_fd).st_nlink == 0
        except OSError:
            return False

    def write_bytes(self, path: str, data: bytes, *, temp_prefix: str) -> None:
        """temp file, flush, fsync, rename, fsync the directory; no temp file survives a failure."""
        temp = f"{temp_prefix}{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode=0o600, **self._at(temp))
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            fault_point("registry.mid_write")
            self._replace(temp, os.path.basename(path))
        except BaseException as exc:
            self._unlink_quietly(temp)
            if isinstance(exc, OSError):
                raise RegistryError(f"cannot write registry file {path}: {exc.strerror}; free disk "
                                    "space or make the registry directory writable") from exc
            raise
        self._fsync_dir()

    def _replace(self, source: str, target: str) -> None:
        if _USE_DIR_FD:
            os.replace(source, target, src_dir_fd=self.dir_fd(), dst_dir_fd=self.dir_fd())
        else:
            os.replace(os.path.join(self.path, source), os.path.join(self.path, target))

    def _fsync_dir(self) -> None:
        """Make the rename durable. A file system that cannot sync a directory (EINVAL on
        VirtualBox shared folders, some FUSE and 9p mounts) makes it as durable as it makes
        anything: no error. Any other failure is a RegistryError naming the fix."""
        try:
            if _USE_DIR_FD:
                os.fsync(self.dir_fd())
            elif sys.platform != "win32":  # a POSIX without dir_fd support: by path, as before
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            if exc.errno not in _NO_DIR_FSYNC:
                raise RegistryError(f"cannot sync registry directory {self.path}: {exc.strerror}; "
                                    "set TAOS_PERSONA_DIR to a local file system") from exc

    def read(self, run_id: str) -> RunRecord:
        """Read a run record; CorruptRecordError for anything we cannot trust."""
        return RunRecord.from_bytes(self.read_bytes(self.json_path(run_id)))

    def read_bytes(self, path: str) -> bytes:
        """A registry file's bytes; CorruptRecordError for a non-file or one over MAX_RECORD_BYTES."""
        try:
            # O_NONBLOCK: a FIFO named like a run record must not hang the sweep in open().
            fd = os.open(flags=os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0), **self._at(path))
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
            data = handle.read(MAX_RECORD_BYTES + 1) if info.st_size <= MAX_RECORD_BYTES else b""
            if info.st_size > MAX_RECORD_BYTES or len(data) > MAX_RECORD_BYTES:
                raise CorruptRecordError(f"{max(info.st_size, len(data))} bytes, more than a run record "
                                         f"may be ({MAX_RECORD_BYTES})")
            return data

    def mtime(self, name: str) -> Optional[float]:
        """When the file system last stamped a registry file (never through a symlink); None if gone."""
        try:
            return os.stat(follow_symlinks=False, **self._at(name)).st_mtime
        except FileNotFoundError:
            return None

    def probe_now(self) -> float:
        """"Now" by the registry file system's own clock: the mtime of a probe file made here.

        Files of other hosts are judged against this, never against their clocks or ours.
        """
        name = f".probe.{secrets.token_hex(6)}.tmp"
        fd = os.open(flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode=0o600, **self._at(name))
        try:
            os.write(fd, b"probe")
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            self._unlink_quietly(name)

    def is_odd_file(self, name: str) -> bool:
        """True if ``name`` exists and is not a regular file (a directory, symlink, FIFO...)."""
        try:
            return not stat.S_ISREG(os.stat(follow_symlinks=False, **self._at(name)).st_mode)
        except OSError:
            return False

    def remove(self, path: str) -> None:
        """Delete a registry file by its (base) name; a missing one is fine."""
        self._unlink_quietly(path)

    def _unlink_quietly(self, name: str) -> None:
        try:
            os.unlink(**self._at(name))
        except (OSError, RegistryError):
            pass  # gone already, or the caller's own error is the one worth seeing

    def entries(self) -> Iterator[DirEntry]:
        """Every entry but the quarantine folder, classified by its name."""
        try:
            scan = os.scandir(self.dir_fd() if _USE_DIR_FD else self.path)
        except FileNotFoundError:
            return
        with scan:
            for entry in scan:
                if entry.name != QUARANTINE:
                    yield _classify(entry)

    def quarantine(self, name: str) -> Optional[str]:
        """Move ``name`` (never following a symlink) into ``quarantine/``; None if it vanished.

        Raises OSError, or UnsafeRegistryError when ``quarantine`` is not a plain directory of ours.
        """
        target = f"{name}.{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        folder = os.path.join(self.path, QUARANTINE)
        if not _USE_DIR_FD:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            _check_plain_dir(folder, os.lstat(folder))
            try:
                os.rename(os.path.join(self.path, name), os.path.join(folder, target))
            except FileNotFoundError:
                return None
            return os.path.join(folder, target)
        folder_fd = self._quarantine_fd()
        try:
            os.rename(name, target, src_dir_fd=self.dir_fd(), dst_dir_fd=folder_fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(folder_fd)
        return os.path.join(folder, target)

    def _quarantine_fd(self) -> int:
        try:
            os.mkdir(QUARANTINE, 0o700, dir_fd=self.dir_fd())
        except FileExistsError:
            pass
        fd = os.open(QUARANTINE, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=self.dir_fd())
        try:
            _check_plain_dir(os.path.join(self.path, QUARANTINE), os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd


def _given_path(path: "str | os.PathLike[str]") -> str:
    """A registry path as given, made absolute; an empty one is an error (it would be the cwd)."""
    text = os.fspath(path)
    if not text.strip():
        raise RegistryError("registry directory is empty (registry_dir='', TAOS_PERSONA_DIR='' or --dir ''), "
                            "which would mean the current directory; name a directory, or leave it unset "
                            "for the default .taos/test-fixtures")
    return os.path.abspath(text)


def _check_plain_dir(path: str, info: os.stat_result) -> None:
    """A directory of ours that only we may write; UnsafeRegistryError naming the fix otherwise."""
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeRegistryError(f"registry path {path} is not a plain directory "
                              "(a symlink or a file); point TAOS_PERSONA_DIR at a real one")
    if sys.platform == "win32":
        return
    if info.st_uid != os.getuid():
        raise UnsafeRegistryError(f"registry directory {path} is owned by uid {info.st_uid}, "
                              f"not by you (uid {os.getuid()}); use a directory of your own")
    if info.st_mode & 0o022:
        raise UnsafeRegistryError(f"registry directory {path} is writable by group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):o}); run: chmod 700 {path}")


def _check_ancestors(path: str) -> None:
    """Every directory above the registry must be owned by root or us, and not writable by
    others unless sticky (``/tmp``): else another user could rename our registry away and
    put one of theirs in its place. The path as given and its real path are both checked."""
    uid = os.getuid()
    parent = os.path.dirname(path)
    for folder in sorted(_ancestors(parent) | _ancestors(os.path.realpath(parent))):
        try:
            info = os.stat(folder)
        except OSError:
            continue
        if info.st_uid not in (0, uid):
            raise UnsafeRegistryError(f"directory {folder} above the registry {path} is owned by uid "
                                      f"{info.st_uid}, neither root nor you: another user could swap the "
                                      "registry; set TAOS_PERSONA_DIR to a directory below your own")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise UnsafeRegistryError(f"directory {folder} above the registry {path} is writable by group "
                                      f"or others (mode {stat.S_IMODE(info.st_mode):o}) and not sticky: "
                                      f"run chmod go-w {folder}, or set TAOS_PERSONA_DIR elsewhere")


def _ancestors(path: str) -> Set[str]:
    """``path`` and every directory above it, up to the root."""
    found = {path}
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        found.add(path)
    return found


def _classify(entry: "os.DirEntry[str]") -> DirEntry:
    is_symlink = entry.is_symlink()
    is_dir = entry.is_dir(follow_symlinks=False)
    if entry.name == MARKER:
        return DirEntry(entry.name, "marker", None, is_symlink, is_dir)
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

"""The liveness lock: one exclusive OS lock on ``{run_id}.lock`` for a run's whole life.

The kernel drops the lock when its owner dies, however it dies, so a
sweeper that can take it knows the owner is gone, and one that cannot
leaves the run alone. We never lock the json itself: ``os.replace`` swaps
in a new inode and a lock on the old one would protect nothing.
"""
from __future__ import annotations

import errno
import os
import threading
import weakref
from typing import Any, Dict, Optional, Tuple

from ..errors import RegistryError

_OPEN_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NOT_A_FILE = {getattr(errno, name) for name in ("EISDIR", "ELOOP", "ENXIO", "ENODEV", "EOPNOTSUPP")
               if hasattr(errno, name)}
"""open() errors that mean the lock path is not a regular file."""


class BaseRunLock:
    """An exclusive, non-blocking lock on one file. Contention is ``False``, not an exception."""

    unlink_while_held = True
    """POSIX unlinks before unlocking, so nobody can lock a file that is about to vanish;
    Windows cannot delete an open file, so it unlinks after closing (``_is_current``
    makes the small race harmless)."""

    def __init__(self, path: str, *, dir_fd: Optional[int] = None) -> None:
        """``path`` names the lock file; with ``dir_fd`` (the registry's directory descriptor)
        every operation goes through that descriptor and the file's base name."""
        self.path = path
        self._dir_fd = dir_fd
        self._fd: Optional[int] = None
        # The heartbeat thread may swap the descriptor; re-entrant, because a signal handler
        # (lifetime) may release the lock while this thread is inside try_acquire.
        self._guard = threading.RLock()
        self.created = False
        """True when the file we hold was made by us: no proof that an earlier owner is dead."""
        _ALL_LOCKS.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _at(self) -> Dict[str, Any]:
        """The name and ``dir_fd`` keyword for an ``os`` call on the lock file."""
        if self._dir_fd is None:
            return {"path": self.path}
        return {"path": os.path.basename(self.path), "dir_fd": self._dir_fd}

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it. Retries if the file was unlinked under us."""
        with self._guard:
            if self._fd is not None:
                return True
            fd = self._take()
            if fd is None:
                return False
            self._fd = fd
            return True

    def _take(self) -> Optional[int]:
        """A descriptor of the current lock file, locked by us; None if someone holds it."""
        for _ in range(10):
            fd, created = self._open()
            if not self._lock(fd):
                os.close(fd)
                return None
            if self._is_current(fd):
                self.created = created
                return fd
            os.close(fd)  # a cleaner unlinked the file between our open and our lock
        raise RegistryError(f"lock file {self.path} keeps being replaced; is another tool deleting it?")

    def refresh(self) -> Optional[str]:
        """The owner's heartbeat: if our lock file was deleted or replaced, take a new one.

        Returns a warning to show when it had to, else None. While another process
        holds the new file (a sweeper that made it), we try again at the next beat.
        """
        with self._guard:
            if self._fd is None or self._is_current(self._fd):
                return None
            fresh = self._take()
            if fresh is None:
                return None
            old, self._fd = self._fd, fresh
            os.close(old)
        return (f"lock file {self.path} of a live run was deleted or replaced (rm, git clean?); "
                "taos-persona made a new one and holds it: keep .taos/ out of cleaning tools")

    def release(self, *, unlink: bool = False) -> None:
        """Drop the lock (and delete the file first if ``unlink``). Safe to call twice."""
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        if unlink and self.unlink_while_held:
            self._unlink()
        self._unlock(fd)
        os.close(fd)
        if unlink and not self.unlink_while_held:
            self._unlink()

    def _forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking.

        flock belongs to the open file: unlocking here would unlock the parent's lock,
        while merely closing leaves the parent's hold intact and lets the lock die with
        the parent, not with the last of its children.
        """
        fd, self._fd = self._fd, None
        self._guard = threading.RLock()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _unlink(self) -> None:
        try:
            os.unlink(**self._at())
        except FileNotFoundError:
            pass

    def _open(self) -> Tuple[int, bool]:
        """Open the lock file, creating it if missing; (descriptor, whether we created it)."""
        for _ in range(10):
            try:
                return os.open(flags=_OPEN_FLAGS, **self._at()), False
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._open_error(exc) from exc
            try:
                return os.open(flags=_OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode=0o600, **self._at()), True
            except FileExistsError:
                continue  # someone made it between our two opens: open theirs
            except OSError as exc:
                raise self._open_error(exc) from exc
        raise RegistryError(f"lock file {self.path} keeps appearing and vanishing; is another tool deleting it?")

    def _open_error(self, exc: OSError) -> RegistryError:
        """A read-only or full disk, or missing permission, is not a bad lock file: say which."""
        hint = ("it must be a regular file, not a symlink or a directory (move it aside or run "
                "the sweep to quarantine it)") if exc.errno in _NOT_A_FILE else (
                "make the registry directory writable, or set TAOS_PERSONA_DIR to one that is")
        return RegistryError(f"cannot open lock file {self.path}: {exc.strerror}; {hint}")

    def _is_current(self, fd: int) -> bool:
        """Is ``fd`` still the file at ``path``? (Not if a cleaner unlinked or replaced it.)"""
        try:
            on_disk = os.stat(follow_symlinks=False, **self._at())
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def _lock(self, fd: int) -> bool:
        raise NotImplementedError

    def _unlock(self, fd: int) -> None:
        raise NotImplementedError


_ALL_LOCKS: "weakref.WeakSet[BaseRunLock]" = weakref.WeakSet()


def _close_inherited_locks() -> None:
    for lock in list(_ALL_LOCKS):
        lock._forget_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)

"""The liveness lock: one exclusive OS lock on ``{run_id}.lock`` for a run's whole life.

The kernel drops the lock when its owner dies, however it dies, so a
sweeper that can take it knows the owner is gone, and one that cannot
leaves the run alone. We never lock the json itself: ``os.replace`` swaps
in a new inode and a lock on the old one would protect nothing.
"""
from __future__ import annotations

import errno
import os
from typing import Optional

from ..errors import RegistryError

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NOT_A_FILE = {getattr(errno, name) for name in ("EISDIR", "ELOOP", "ENXIO", "ENODEV", "EOPNOTSUPP")
               if hasattr(errno, name)}
"""open() errors that mean the lock path is not a regular file."""


class BaseRunLock:
    """An exclusive, non-blocking lock on one file. Contention is ``False``, not an exception."""

    unlink_while_held = True
    """POSIX unlinks before unlocking, so nobody can lock a file that is about to vanish;
    Windows cannot delete an open file, so it unlinks after closing (``_is_current``
    makes the small race harmless)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it. Retries if the file was unlinked under us."""
        if self._fd is not None:
            return True
        for _ in range(10):
            fd = self._open()
            if not self._lock(fd):
                os.close(fd)
                return False
            if self._is_current(fd):
                self._fd = fd
                return True
            os.close(fd)  # a cleaner unlinked the file between our open and our lock
        raise RegistryError(f"lock file {self.path} keeps being replaced; is another tool deleting it?")

    def release(self, *, unlink: bool = False) -> None:
        """Drop the lock (and delete the file first if ``unlink``). Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if unlink and self.unlink_while_held:
            self._unlink()
        self._unlock(fd)
        os.close(fd)
        if unlink and not self.unlink_while_held:
            self._unlink()

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _open(self) -> int:
        try:
            return os.open(self.path, _OPEN_FLAGS, 0o600)
        except OSError as exc:
            # A read-only or full disk, or missing permission, is not a bad lock file: say which.
            hint = ("it must be a regular file, not a symlink or a directory (move it aside or run "
                    "the sweep to quarantine it)") if exc.errno in _NOT_A_FILE else (
                    "make the registry directory writable, or set TAOS_PERSONA_DIR to one that is")
            raise RegistryError(f"cannot open lock file {self.path}: {exc.strerror}; {hint}") from exc

    def _is_current(self, fd: int) -> bool:
        """Is ``fd`` still the file at ``path``? (Not if a cleaner unlinked or replaced it.)"""
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def _lock(self, fd: int) -> bool:
        raise NotImplementedError

    def _unlock(self, fd: int) -> None:
        raise NotImplementedError

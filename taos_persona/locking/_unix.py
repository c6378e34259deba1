"""flock(2)-based lock. Importable everywhere; raises NotImplementedError where fcntl is missing."""
from __future__ import annotations

import errno

from ._api import BaseRunLock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class UnixRunLock(BaseRunLock):
    """flock, not lockf: flock locks belong to the open file, so a second open in the
    same process conflicts (a fixture's startup sweep never takes its own run), and
    closing some unrelated descriptor of the file does not drop the lock."""

    def _lock(self, fd: int) -> bool:
        if fcntl is None:
            raise NotImplementedError("fcntl is not available on this platform")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        return True

    def _unlock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

"""msvcrt-based lock. Importable everywhere; raises NotImplementedError where msvcrt is missing."""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

from ._api import BaseRunLock

msvcrt: Optional[ModuleType]
try:  # imported by name: type checkers on POSIX know msvcrt without its Windows-only functions
    msvcrt = importlib.import_module("msvcrt")
except ImportError:
    msvcrt = None


class WindowsRunLock(BaseRunLock):
    """msvcrt locks the byte at the current position: seek to 0 before locking and unlocking."""

    unlink_while_held = False

    def _lock(self, fd: int) -> bool:
        if msvcrt is None:
            raise NotImplementedError("msvcrt is only available on Windows")
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(self, fd: int) -> None:
        assert msvcrt is not None  # _lock succeeded
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

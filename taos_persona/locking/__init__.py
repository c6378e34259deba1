"""Pick the platform's run lock. See ``_api`` for why the lock lives in its own file."""
from __future__ import annotations

import sys

from ._api import BaseRunLock
from ._unix import UnixRunLock
from ._windows import WindowsRunLock

__all__ = ["RunLock", "BaseRunLock", "UnixRunLock", "WindowsRunLock"]

RunLock = WindowsRunLock if sys.platform == "win32" else UnixRunLock

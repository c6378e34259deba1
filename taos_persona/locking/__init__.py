"""Pick the platform's run lock. See ``_api`` for why the lock lives in its own file."""
from __future__ import annotations

import sys

from ._api import BaseRunLock
from ._unix import UnixRunLock
from ._windows import WindowsRunLock

if sys.platform == "win32":
    from ._windows import WindowsRunLock as RunLock
else:
    from ._unix import UnixRunLock as RunLock

__all__ = ["RunLock", "BaseRunLock", "UnixRunLock", "WindowsRunLock"]

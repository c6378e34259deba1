"""Test-only crash points: ``fault_point("acquire.after_create")`` SIGKILLs this process
when ``TAOS_PERSONA_FAULT`` names that point.

The variable is read once at import; when it is unset a fault point costs one
global lookup and a falsy test. ``NAME:N`` fires on the N-th pass (1-based),
so a test can kill the third acquisition, or the second release.
"""
from __future__ import annotations

import os
import signal
from typing import Dict

__all__ = ["fault_point", "FAULT_POINTS"]

FAULT_POINTS = (
    "acquire.before_intent",   # nothing on disk, nothing at the provider
    "acquire.after_intent",    # intent on disk, provider not called yet
    "acquire.after_create",    # provider created it, the token is not recorded
    "acquire.after_record",    # token recorded as held
    "release.before",          # about to ask the provider to release
    "release.after_provider",  # provider released it, the record still says held
    "release.between",         # one resource released (recorded within 0.25 s), the next not started
    "registry.mid_write",      # temp file written and synced, not yet renamed into place
)


def _parse(spec: str) -> Dict[str, int]:
    armed: Dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition(":")
        armed[name] = int(nth) if nth else 1
    return armed


_ARMED = _parse(os.environ.get("TAOS_PERSONA_FAULT", ""))
_SEEN: Dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die by SIGKILL here if this point is armed and its turn has come."""
    if not _ARMED or name not in _ARMED:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _ARMED[name]:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

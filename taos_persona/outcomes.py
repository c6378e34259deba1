"""What happened to one resource: the one outcome type behind every report.

The release path (fixture exit, signals, atexit, sweep) returns an
:class:`Outcome` per resource; the sweep's table, its JSON and its exit
status all read :attr:`Outcome.result`, so they can never disagree.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

__all__ = ["Result", "Outcome", "public_identity", "PUBLIC_KEYS", "plural"]


class Result(str, enum.Enum):
    """The fate of one resource record. ``str`` so that JSON shows the plain word."""

    RELEASED = "released"
    """The provider confirmed the release (or said it was already gone)."""
    NOTHING_CREATED = "nothing created"
    """An intent whose create never happened: recover() found nothing, past its grace,
    or the call failed before any request was sent."""
    EXPIRED = "expired at the provider"
    """An intent we cannot look up, older than the provider's own lifetime for it."""
    FORGOTTEN = "forgotten"
    """Dropped by hand (``sweep --forget RUN_ID:SEQ``) after the operator checked it."""
    KEPT = "kept"
    """Still (maybe) alive: the record stays for the next sweep, with its last error."""
    WOULD_RELEASE = "would release"
    """Dry run: the real sweep would try to release (or recover) it."""
    WOULD_KEEP = "would keep"
    """Dry run: the real sweep would keep it (no recover, young intent, wrong endpoint...)."""

    @property
    def gone(self) -> bool:
        """The record leaves the registry: nothing of it is alive (or the operator said so)."""
        return self in (Result.RELEASED, Result.NOTHING_CREATED, Result.EXPIRED, Result.FORGOTTEN)

    @property
    def left(self) -> bool:
        """Something may still be alive and its record stays: counts toward exit status 1."""
        return self in (Result.KEPT, Result.WOULD_KEEP)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    """One resource's outcome.

    ``identity`` is the resource's public identity (address, number, username,
    provider id), never a secret; ``error`` says why it was kept, with the fix.
    """

    run_id: str
    seq: int
    backend: str
    state: str
    result: Result
    error: Optional[str] = None
    identity: Optional[str] = None

    @property
    def kept(self) -> bool:
        return self.result.left

    def to_json(self) -> Dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq, "backend": self.backend, "state": self.state,
                "result": self.result.value, "error": self.error, "identity": self.identity}


PUBLIC_KEYS = ("address", "number", "phone_number", "username", "email", "login", "sid", "id",
               "activation_id", "user_id", "name", "friendly_name")
"""Token or plan keys that name a resource publicly (never a password, key or token)."""
_SHOWN = 120
"""Characters of an identity shown at most."""


def public_identity(data: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The first public name of a resource found in its token or plan, for operators' reports;
    for an intent that planned only a mailbox's local part, the address as planned."""
    data = data or {}
    for key in PUBLIC_KEYS:
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return f"{key}={str(value)[:_SHOWN]}"
    return _planned_address(data)


def _planned_address(plan: Mapping[str, Any]) -> Optional[str]:
    """``address=LOCAL@DOMAIN`` from a plan's ``local`` and ``domain`` (``LOCAL@?`` while the
    provider has yet to choose the domain); None without a local part."""
    local, domain = plan.get("local"), plan.get("domain")
    if not isinstance(local, str) or not local:
        return None
    return f"address={local}@{domain if isinstance(domain, str) and domain else '?'}"[:_SHOWN + 8]


def plural(count: int, noun: str, many: str = "") -> str:
    """``1 resource``, ``2 resources``: ``many`` where the plural is not ``noun + "s"``."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"

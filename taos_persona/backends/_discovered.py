"""What ``Backend.discover`` yields: one resource the provider holds under our name prefix.

Discovery is the last line of defence when a registry is lost with its machine
(issue 10): the provider is asked what it holds, and each answer carries what
the discovery sweep needs to judge it on its own, with no registry at hand.
"""
from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from ..naming import run_id_in_name

__all__ = ["Discovered", "provider_time", "carries_prefix"]


@dataclass(frozen=True)
class Discovered:
    """One resource found at the provider.

    ``token`` releases it, as an acquire's token would (the discovery sweep records
    today's origin in it, where a backend records origins: it was found there). ``name`` is the
    provider-side name we chose (mailbox local part, FriendlyName, username),
    or None when the provider keeps no client-chosen name. ``created`` is the
    provider's own creation time in epoch seconds (None when it does not say).
    ``identity`` is public: address, number, username; never a secret.
    """

    token: Dict[str, Any]
    name: Optional[str]
    identity: str
    created: Optional[float] = None


_ISO_FRACTION = re.compile(r"\.\d+")


def provider_time(value: Any) -> Optional[float]:
    """Epoch seconds from a provider's timestamp, or None if it cannot be read.

    Accepts epoch seconds (int/float or a numeric string), ISO 8601 (``Z`` or
    an offset; no offset is taken as UTC) and RFC 2822 (Twilio's
    ``Tue, 01 Jul 2025 12:00:00 +0000``).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:  # Python 3.9's fromisoformat knows neither "Z" nor every fraction length
        parsed = datetime.fromisoformat(_ISO_FRACTION.sub("", text).replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def carries_prefix(name: Optional[str], prefix: str) -> bool:
    """True if ``name`` is one we chose: ``<prefix>-<run id>-...`` (``_`` in sql names), the
    prefix case-sensitive and the run id well-formed (:func:`taos_persona.naming.run_id_in_name`).

    Prefixes are letters and digits only (see :func:`taos_persona.naming.name_prefix`), so
    ``taos`` never matches another project's ``taosx-...`` names, nor ``taos_smith``.
    """
    return run_id_in_name(name, prefix) is not None

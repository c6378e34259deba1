"""Defence in depth for secrets: scrub credential values out of text we persist or print.

Backends already keep keys out of their messages; this catches the one that
forgets, before an error string reaches a registry file or the CLI.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

__all__ = ["redact", "scrub", "describe_error"]

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH|CREDENTIAL)", re.IGNORECASE)
_MAX_ERROR = 500


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value replaced by ``***``, longest first."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable replaced by ***."""
    return scrub(text, (value for name, value in os.environ.items()
                        if _SECRET_NAME.search(name) and len(value) >= 6))


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of an exception, fit for the registry."""
    message = str(exc) or type(exc).__name__
    text = f"{type(exc).__name__}: {message}" if type(exc).__name__ not in message else message
    return redact(text)[:_MAX_ERROR]

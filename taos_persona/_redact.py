"""Defence in depth for secrets: scrub credential values out of text we persist or print.

Backends already keep keys out of their messages; this catches the one that
forgets, before an error string reaches a registry file or the CLI.
"""
from __future__ import annotations

import os
import re

__all__ = ["redact", "describe_error"]

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH|CREDENTIAL)", re.IGNORECASE)
_MAX_ERROR = 500


def _secret_values() -> list:
    values = [value for name, value in os.environ.items()
              if _SECRET_NAME.search(name) and len(value) >= 6]
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable replaced by ***."""
    for value in _secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of an exception, fit for the registry."""
    message = str(exc) or type(exc).__name__
    text = f"{type(exc).__name__}: {message}" if type(exc).__name__ not in message else message
    return redact(text)[:_MAX_ERROR]

"""What a persona holds: the values tests get back from acquisitions.

A mailbox and a phone number can be read (``wait_for_message``,
``wait_for_code``); they poll their backend politely, with backoff and a
deadline, through two small reader methods the backend provides.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, TypeVar

from .errors import WaitTimeout

__all__ = ["Message", "Mailbox", "PhoneNumber", "OAuthGrant", "UserAccount", "ApiToken",
           "extract_code", "extract_link"]

_CODE_RE = re.compile(r"(?<!\d)(\d{4,8})(?!\d)")
_LINK_RE = re.compile(r"https?://[^\s<>\"')]+")

T = TypeVar("T")


def extract_code(text: str, pattern: Optional[str] = None) -> Optional[str]:
    """The first 4-8 digit code in ``text`` (or the first group of ``pattern``)."""
    match = re.search(pattern, text) if pattern else _CODE_RE.search(text)
    if not match:
        return None
    return str(match.group(1) if match.groups() else match.group(0))


def extract_link(text: str, contains: str = "") -> Optional[str]:
    """The first http(s) link in ``text`` that contains ``contains``."""
    for link in _LINK_RE.findall(text):
        if contains in link:
            return str(link)
    return None


@dataclass(frozen=True)
class Message:
    """One email as a persona reads it."""

    id: str
    sender: str
    subject: str
    text: str
    html: str = ""

    def code(self, pattern: Optional[str] = None) -> Optional[str]:
        """The verification code in the message body, if any."""
        return extract_code(self.text or self.html, pattern)

    def link(self, contains: str = "") -> Optional[str]:
        """The first link in the message body that contains ``contains``."""
        return extract_link(self.text or self.html, contains)


async def poll(fetch: Callable[[], Awaitable[Optional[T]]], *, timeout: float, what: str,
               first_delay: float = 0.2, max_delay: float = 5.0) -> T:
    """Call ``fetch`` until it returns something, backing off, until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        found = await fetch()
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; "
                              "raise timeout= or check that the app under test sent it")
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.6, max_delay)


@dataclass
class Mailbox:
    """A disposable mailbox. ``reader`` is the backend call that lists its messages."""

    address: str
    reader: Callable[[], Awaitable[Sequence[Message]]] = field(repr=False)

    async def messages(self) -> List[Message]:
        return list(await self.reader())

    async def wait_for_message(self, *, subject: Optional[str] = None, sender: Optional[str] = None,
                               timeout: float = 60.0) -> Message:
        """The first message whose subject contains ``subject`` and sender ``sender``."""

        async def fetch() -> Optional[Message]:
            for message in await self.reader():
                if subject is not None and subject not in message.subject:
                    continue
                if sender is not None and sender not in message.sender:
                    continue
                return message
            return None

        return await poll(fetch, timeout=timeout, what=f"an email to {self.address}"
                          + (f" with subject containing {subject!r}" if subject else ""))

    def __str__(self) -> str:
        return self.address


@dataclass
class PhoneNumber:
    """A rented number. ``reader`` is the backend call that lists the SMS texts it received."""

    number: str
    reader: Callable[[], Awaitable[Sequence[str]]] = field(repr=False)

    async def wait_for_code(self, *, timeout: float = 120.0, pattern: Optional[str] = None) -> str:
        """The first code (4-8 digits, or ``pattern``'s first group) in an SMS to this number."""

        async def fetch() -> Optional[str]:
            for text in await self.reader():
                code = extract_code(text, pattern)
                if code is not None:
                    return code
            return None

        return await poll(fetch, timeout=timeout, what=f"an SMS code to {self.number}")

    def __str__(self) -> str:
        return self.number


@dataclass(frozen=True)
class OAuthGrant:
    """An OAuth access token the persona holds; revoked on release."""

    provider: str
    access_token: str = field(repr=False)
    scopes: Sequence[str] = ()
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class UserAccount:
    """A user of the app under test."""

    id: Any
    username: str
    password: str = field(repr=False)
    email: Optional[str] = None


@dataclass(frozen=True)
class ApiToken:
    """An API token of the app under test; ``str(token)`` is the secret."""

    id: Any
    name: str
    secret: str = field(repr=False)

    def __str__(self) -> str:
        return self.secret

"""What the email backends share: an inbox reader that fetches each message body once."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, Tuple

from ..resources import Message

__all__ = ["CachedInbox"]

Summary = Tuple[str, Any]
"""``(message id, the provider's list entry for it)``."""


class CachedInbox:
    """A ``Mailbox.reader``: list the inbox, fetch only messages not seen before.

    Polling for a verification email lists the inbox many times; fetching
    every body each time would multiply requests against rate-limited
    providers for nothing.
    """

    def __init__(self, list_inbox: Callable[[], Awaitable[List[Summary]]],
                 fetch: Callable[[str, Any], Awaitable[Message]]) -> None:
        self._list_inbox = list_inbox
        self._fetch = fetch
        self._cache: Dict[str, Message] = {}

    async def __call__(self) -> List[Message]:
        """Every message in the inbox, oldest first."""
        found = []
        for message_id, summary in await self._list_inbox():
            if message_id not in self._cache:
                self._cache[message_id] = await self._fetch(message_id, summary)
            found.append(self._cache[message_id])
        return found

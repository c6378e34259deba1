"""mailsac private addresses (https://mailsac.com/api; key in ``MAILSAC_API_KEY``).

The address is chosen in ``plan`` (``<persona prefix>-<hex>@mailsac.com``),
reserved with ``POST /addresses/{email}`` and released with ``DELETE
/addresses/{email}?deleteAddressMessages=true``. The key goes in the
``Mailsac-Key`` header, never in the URL, and is read from the environment on
every call, so nothing secret reaches the registry.

"Already gone" on release: mailsac answers 400 "not currently owned by the
account, or already deleted"; that is success once ``GET /addresses/{email}``
confirms the account does not own it (the same 400 covers both). On reserve, a 400 means "you
already own it" (a retry whose first try went through): confirmed with
``GET /addresses/{email}`` before it is taken as ours.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional
from urllib.parse import quote

from ..errors import ConfigurationError, InvalidTokenError, ProviderError
from ..naming import Persona
from ..resources import Mailbox, Message
from ._http import HttpBackend, HttpResponse
from ._origin import account_of
from ._mail import CachedInbox, Summary
from ._discovered import Discovered, carries_prefix, provider_time
from .base import Lease, register

__all__ = ["MailsacBackend", "KEY_ENV"]

KEY_ENV = "MAILSAC_API_KEY"
_ADDRESS_RE = re.compile(r"[a-z0-9._+-]{1,64}@[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})+\Z")


def _path(email: str) -> str:
    return quote(email.lower(), safe="@+")


def _address(record: Dict[str, Any]) -> str:
    """The record's address, lower-cased, if it is an email address; else InvalidTokenError."""
    address = record.get("address")
    if not isinstance(address, str) or not _ADDRESS_RE.match(address.lower()):
        raise InvalidTokenError(f"mailsac: the record's address {address!r} is not an email address; "
                                "not acted on")
    return address.lower()


@register("mailsac")
class MailsacBackend(HttpBackend):
    """Reserved mailsac addresses: ``Lease.value`` is a :class:`Mailbox`."""

    name_fields = ("address",)

    provider = "mailsac"
    default_base_url = "https://mailsac.com/api"
    base_url_env = "TAOS_PERSONA_MAILSAC_URL"
    account_env = KEY_ENV

    def account(self) -> str:
        """A keyed hash of ``MAILSAC_API_KEY``: which account, never the key."""
        return account_of(self.credential(KEY_ENV))

    def plan(self, persona: Persona, *, domain: str = "mailsac.com", **options: Any) -> Dict[str, Any]:
        """Choose the address now, so that a crash after the reserve can be recovered."""
        if options:
            raise ConfigurationError(f"mailsac takes only domain=, not {', '.join(sorted(options))}")
        return self.stamp({"address": f"{persona.unique_name()}@{domain}".lower()})

    async def call(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        """A request authenticated with the key from ``MAILSAC_API_KEY``."""
        headers = {"Mailsac-Key": self.credential(KEY_ENV)}
        return await self.request(method, path, headers=headers, credential_env=(KEY_ENV,), **kwargs)

    async def acquire(self, persona: Persona, *, address: Optional[str] = None,
                      domain: str = "mailsac.com", **planned: Any) -> Lease:
        """Reserve the planned address (or a fresh one) as a private address of the account."""
        self.take_origin(planned, "address")
        if planned:
            raise ConfigurationError(f"mailsac takes only domain=, not {', '.join(sorted(planned))}")
        address = _address({"address": address or self.plan(persona, domain=domain)["address"]})
        response = await self.call("POST", f"/addresses/{_path(address)}", ok=(200, 201), gone=(400,))
        if response.status == 400 and await self._owned(address) is None:
            raise ProviderError(f"mailsac: POST /addresses/{address} answered 400 and the address is "
                                f"not ours: {response.text[:200]}")
        token = self.stamp({"address": address})
        return Lease(self.mailbox(token), token)

    async def _owned(self, address: str) -> Optional[Dict[str, Any]]:
        """The address record if this account owns it, else None."""
        response = await self.call("GET", f"/addresses/{_path(address)}", ok=(200,))
        record = response.json()
        return record if isinstance(record, dict) and record.get("owner") else None

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The token of the planned address if the account owns it, else None."""
        self.check_origin(planned, f"address {planned.get('address')!r}")
        address = _address(planned)
        if await self._owned(address) is None:
            return None
        return self.stamp({"address": address})

    async def release(self, token: Dict[str, Any]) -> None:
        """Release the address and delete its messages; one already released is success."""
        self.check_origin(token, f"address {token.get('address')!r}")
        address = _address(token)
        response = await self.call("DELETE", f"/addresses/{_path(address)}",
                                   params={"deleteAddressMessages": "true"}, ok=(200, 204), gone=(400, 404))
        # 400 also means "not owned by this account": gone only if the account does not own it.
        if response.status == 400 and await self._owned(address) is not None:
            raise ProviderError(f"{response.what} answered 400 though the account still owns {address}: "
                                f"{response.text[:200]!r}; it stays in the registry for the next sweep")

    def mailbox(self, token: Dict[str, Any]) -> Mailbox:
        """The :class:`Mailbox` of a release token, reading through this backend."""
        address = token["address"]

        async def list_inbox() -> List[Summary]:
            response = await self.call("GET", f"/addresses/{_path(address)}/messages", ok=(200,))
            return [(m["_id"], m) for m in reversed(response.json() or [])]  # newest first

        async def fetch(message_id: str, summary: Any) -> Message:
            response = await self.call("GET", f"/text/{_path(address)}/{quote(message_id)}", ok=(200,))
            sender = (summary.get("from") or [{}])[0].get("address", "")
            return Message(id=message_id, sender=sender, subject=summary.get("subject") or "",
                           text=response.text)

        return Mailbox(address, CachedInbox(list_inbox, fetch))

    async def discover(self, prefix: str) -> List[Discovered]:
        """``GET /addresses``: the account's private addresses whose local part carries ``prefix``."""
        response = await self.call("GET", "/addresses", ok=(200,))
        found = []
        for row in response.json() or []:
            address = str(row.get("_id", "")).lower() if isinstance(row, dict) else ""
            local = address.partition("@")[0]
            if carries_prefix(local, prefix) and row.get("owner"):
                found.append(Discovered({"address": address}, local, address, provider_time(row.get("created"))))
        return found

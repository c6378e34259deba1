"""mail.tm disposable mailboxes (https://api.mail.tm; no API key).

A mailbox is an account: ``POST /accounts {address, password}``; reading and
deleting need a bearer from ``POST /token {address, password}``. So the
mailbox's own password is in the plan and in the release token: it is the
throwaway resource's credential, made up by us, not a provider key, and
without it nothing could delete the account from another process.

"Already gone" on release: ``POST /token`` answering 401 ("Invalid
credentials.") means the account no longer exists, since nobody else knows
its password; ``DELETE /accounts/{id}`` answering 404 means the same. A 401
on the DELETE (a bearer whose account vanished in between) is settled by
logging in once more.

mail.tm allows about 8 requests per second per IP: ``max_rate`` keeps
under it (override with ``TAOS_PERSONA_MAILTM_MAX_RATE``).
"""
from __future__ import annotations

import json
import re
import secrets
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigurationError, InvalidTokenError, ProviderError
from ..naming import Persona
from ..resources import Mailbox, Message
from ._http import HttpBackend
from ._mail import CachedInbox, Summary
from .base import Lease, register

__all__ = ["MailTmBackend"]


def _members(payload: Any) -> List[Dict[str, Any]]:
    """The items of a hydra collection (or of a plain JSON list, mail.tm's other format)."""
    if isinstance(payload, dict):
        payload = payload.get("hydra:member", [])
    return [item for item in payload or [] if isinstance(item, dict)]


def _violations(body: str) -> str:
    """The ``hydra:description`` of a 422 body (which never repeats the password)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("hydra:description"):
        return str(payload["hydra:description"])
    return "the address is taken or its domain is not offered"


@register("mailtm")
class MailTmBackend(HttpBackend):
    """Disposable mailboxes at mail.tm: ``Lease.value`` is a :class:`Mailbox`."""

    name_fields = ("address", "local")

    provider = "mailtm"
    default_base_url = "https://api.mail.tm"
    base_url_env = "TAOS_PERSONA_MAILTM_URL"
    max_rate = 8.0

    def plan(self, persona: Persona, *, domain: Optional[str] = None, **options: Any) -> Dict[str, Any]:
        """Choose the local part and password now; the domain too, if given."""
        if options:
            raise ConfigurationError(f"mailtm takes only domain=, not {', '.join(sorted(options))}")
        return self.stamp({"local": persona.unique_name(), "password": secrets.token_urlsafe(18),
                           "domain": domain})

    async def domains(self) -> List[str]:
        """The active public domains mail.tm offers now."""
        response = await self.request("GET", "/domains", ok=(200,))
        return [d["domain"] for d in _members(response.json()) if d.get("isActive", True)]

    async def acquire(self, persona: Persona, *, local: Optional[str] = None,
                      password: Optional[str] = None, domain: Optional[str] = None,
                      **planned: Any) -> Lease:
        """Create the account; a planned one is created under the planned name."""
        self.take_origin(planned, "mailbox")
        if planned:
            raise ConfigurationError(f"mailtm takes only domain=, not {', '.join(sorted(planned))}")
        if local is None or password is None:
            planned = self.plan(persona, domain=domain)
            local, password = planned["local"], planned["password"]
        if domain is None:
            found = await self.domains()
            if not found:
                raise ProviderError("mailtm: GET /domains listed no active domain; try later")
            domain = found[0]
        address = f"{local}@{domain}"
        response = await self.request("POST", "/accounts", json={"address": address, "password": password},
                                      ok=(201,), gone=(422,))
        token: Dict[str, Any] = {"address": address, "password": password}
        if response.status == 422:
            token = await self._created_before(token, response.text)
        else:
            token["id"] = _checked_id(response.field("id"))
        token = self.stamp(token)
        return Lease(self.mailbox(token), token)

    async def _created_before(self, token: Dict[str, Any], body: str) -> Dict[str, Any]:
        """After a 422: ours if our password opens it (a retried create that had gone through)."""
        login = await self.login(token["address"], token["password"])
        if login is None:
            raise ProviderError(f"mailtm: POST /accounts refused {token['address']} with 422: "
                                f"{_violations(body)}")
        return dict(token, id=_checked_id(login[0]))

    async def login(self, address: str, password: str) -> Optional[Tuple[str, str]]:
        """``(account id, bearer)``, or None if no account opens with these credentials."""
        response = await self.request("POST", "/token", json={"address": address, "password": password},
                                      ok=(200,), gone=(401,))
        if response.status == 401:
            return None
        return response.field("id"), response.field("token")

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Log in with the planned credentials on each candidate domain; the token if one opens.

        Without a planned domain the candidates are the domains offered now: an
        account on a domain mail.tm has since retired cannot be found (plan
        with ``domain=`` to rule that out).
        """
        self.check_origin(planned, f"mailbox {planned.get('local')!r}")
        local, password = _checked(planned, "local", _LOCAL_RE), _checked(planned, "password", _PASSWORD_RE)
        candidates = [planned["domain"]] if planned.get("domain") else await self.domains()
        for domain in candidates:
            address = f"{local}@{domain}"
            login = await self.login(address, password)
            if login is not None:
                return self.stamp({"address": address, "password": password, "id": login[0]})
        return None

    async def release(self, token: Dict[str, Any]) -> None:
        """Delete the account; an account that is already gone is success."""
        self.check_origin(token, f"mailbox {token.get('address')!r}")
        _checked(token, "address", _ADDRESS_RE)
        _checked(token, "password", _PASSWORD_RE)
        for _ in range(2):
            login = await self.login(token["address"], token["password"])
            if login is None:
                return
            response = await self.request("DELETE", f"/accounts/{_checked_id(login[0])}", ok=(204, 200),
                                          gone=(404, 401), headers=_bearer(login[1]))
            if response.status != 401:
                return
        raise ProviderError(f"mailtm: DELETE /accounts/{token.get('id')} kept refusing a fresh bearer "
                            f"for {token['address']}")

    def mailbox(self, token: Dict[str, Any]) -> Mailbox:
        """The :class:`Mailbox` of a release token, reading through this backend."""
        return Mailbox(token["address"], _Inbox(self, token).reader)


_ADDRESS_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9.-]{1,253}\Z")
_LOCAL_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}\Z")
_PASSWORD_RE = re.compile(r"[\x21-\x7e]{1,128}\Z")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def _checked(record: Dict[str, Any], key: str, pattern: "re.Pattern[str]") -> str:
    """``record[key]`` if it is a string of the expected form, else :class:`InvalidTokenError`."""
    value = record.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidTokenError(f"mailtm: the record's {key} is not a valid mail.tm {key} "
                                f"({'***' if key == 'password' else repr(value)}); not acted on")
    return value


def _checked_id(account_id: Any) -> str:
    """An account id as mail.tm makes them (hex/uuid-like), safe in a URL path."""
    if not isinstance(account_id, str) or not _ID_RE.match(account_id):
        raise ProviderError(f"mailtm: answered an account id that is not one: {str(account_id)[:80]!r}")
    return account_id


def _bearer(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _Inbox:
    """Reads one mail.tm account, keeping its bearer and logging in again when it is refused."""

    def __init__(self, backend: MailTmBackend, token: Dict[str, Any]) -> None:
        self.backend = backend
        self.token = token
        self.bearer: Optional[str] = None
        self.reader = CachedInbox(self._list, self._fetch)

    async def _get(self, path: str) -> Any:
        """GET with the bearer; one fresh login if the bearer was refused."""
        for _ in range(2):
            if self.bearer is None:
                login = await self.backend.login(self.token["address"], self.token["password"])
                if login is None:
                    raise ProviderError(f"mailtm: the mailbox {self.token['address']} no longer exists")
                self.bearer = login[1]
            response = await self.backend.request("GET", path, ok=(200,), gone=(401,),
                                                  headers=_bearer(self.bearer))
            if response.status == 200:
                return response.json()
            self.bearer = None
        raise ProviderError(f"mailtm: GET {path} refused a fresh bearer for {self.token['address']}")

    async def _list(self) -> List[Summary]:
        members = _members(await self._get("/messages"))
        return [(m["id"], m) for m in reversed(members)]  # mail.tm lists newest first

    async def _fetch(self, message_id: str, summary: Any) -> Message:
        full = await self._get(f"/messages/{message_id}")
        html = full.get("html") or []
        return Message(id=message_id, sender=(full.get("from") or {}).get("address", ""),
                       subject=full.get("subject", ""), text=full.get("text", ""),
                       html="".join(html) if isinstance(html, list) else str(html))

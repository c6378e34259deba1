"""mailsac in the sandbox: the real routes under ``/mailsac`` (base ``https://mailsac.com/api``).

Follows mailsac's OpenAPI description (``../shared/specs/mailsac_openapi.json``):
the API key comes in the ``Mailsac-Key`` header or the ``_mailsacKey`` query
parameter, and a wrong or missing one is a 401. ``POST /addresses/{email}``
reserves (200, or 400 if this account already owns it); ``GET /addresses``
lists the addresses this account owns, each with ``created``; ``GET
/addresses/{email}`` answers 200 with ``owner`` only when this account owns
it; ``GET /addresses/{email}/availability`` tells whether it could be
reserved; ``DELETE /addresses/{email}`` releases (200, or 400 "not owned or
already deleted"), and with ``deleteAddressMessages=true`` deletes its mail
too; ``GET /addresses/{email}/messages`` lists newest first (``limit``,
default 20 per the spec's ``limit`` schema, and ``until``); ``GET|DELETE
/addresses/{email}/messages/{messageId}`` and ``DELETE
/addresses/{email}/messages``; ``GET /text/{email}/{messageId}`` gives the
plain text; ``GET /me`` the account. Errors, unserved routes included, carry
``{"error", "message"}`` as the spec's ErrorResponseBody. Fields the spec
types as strings and that have no value (``catchAll``, ``savedBy``) are left
out rather than sent as ``null``, which the spec's schema does not allow.
"""
from __future__ import annotations

import hmac
import time
from datetime import datetime
from typing import Any, Awaitable, Callable, Dict, List, Optional

from aiohttp import web

from ..store import Entry, SandboxStore

__all__ = ["CREDENTIALS", "ACCOUNT", "ERROR_PAGES", "setup"]

CREDENTIALS: Dict[str, str] = {"MAILSAC_API_KEY": "sandbox-mailsac-key"}
ACCOUNT = "sandbox-account"
"""The mailsac account that the sandbox key belongs to; it owns what that key reserves."""

_PROVIDER = "mailsac"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _unserved(request: web.Request, status: int) -> web.Response:
    """An ErrorResponseBody for a route (404) or method (405) mailsac does not have."""
    reason = "Not Found" if status == 404 else "Method Not Allowed"
    return _error(status, reason, f"{request.method} {request.path[len('/mailsac'):]} is not a mailsac API route")


ERROR_PAGES = {"/mailsac": _unserved}


def _authenticated(handler: Handler) -> Handler:
    """Refuse a request whose Mailsac-Key (header or ``_mailsacKey``) is not the sandbox key."""

    async def check(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Mailsac-Key") or request.query.get("_mailsacKey") or ""
        if not hmac.compare_digest(key.encode(), CREDENTIALS["MAILSAC_API_KEY"].encode()):
            return _error(401, "Unauthorized", "Invalid or missing API key. Set the Mailsac-Key "
                          "header or the _mailsacKey query parameter.")
        return await handler(request)

    return check


def _email(request: web.Request) -> str:
    return request.match_info["email"].strip().lower()


def _message_id(message: Dict[str, Any]) -> str:
    return f"sandbox{message['seq']:08d}-0"


def _message_json(message: Dict[str, Any]) -> Dict[str, Any]:
    """A stored delivery as mailsac's EmailMessage."""
    inbox = message.get("to", "")
    return {"_id": _message_id(message), "from": [{"address": message.get("from", ""), "name": ""}],
            "to": [{"address": inbox, "name": ""}], "cc": [], "bcc": [],
            "subject": message.get("subject", ""), "originalInbox": inbox,
            "inbox": inbox, "domain": inbox.rpartition("@")[2], "received": _iso(message["created"]),
            "size": len(message.get("text", "")), "attachments": [], "ip": "127.0.0.1",
            "via": "127.0.0.1", "folder": "inbox", "labels": [], "read": False, "rtls": False,
            "links": [], "spam": 0}


def _address_json(email: str, entry: Optional[Entry]) -> Dict[str, Any]:
    """An EmailAddress; ``owner`` and ``created`` only when this account owns it."""
    if entry is None or not entry.alive:
        return {"_id": email}
    return dict(entry.data, _id=email, created=_iso(entry.created))


def _bool(value: Optional[str]) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _until(value: Optional[str]) -> Optional[float]:
    """The ``until`` query parameter (ISO 8601) as epoch seconds; None when absent or unreadable."""
    try:
        return datetime.fromisoformat((value or "").replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


class _Mailsac:
    """Route handlers over one store."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    def _owned(self, email: str) -> Optional[Entry]:
        entry = self.store.entry(_PROVIDER, email)
        return entry if entry is not None and entry.alive else None

    async def list_addresses(self, request: web.Request) -> web.Response:
        """The addresses this key's account owns (what a discovery sweep lists), oldest first."""
        return web.json_response([_address_json(e.rid, e) for e in self.store.entries(_PROVIDER)])

    async def get_address(self, request: web.Request) -> web.Response:
        email = _email(request)
        return web.json_response(_address_json(email, self._owned(email)))

    async def availability(self, request: web.Request) -> web.Response:
        email = _email(request)
        owned = self._owned(email) is not None
        return web.json_response({"available": not owned, "email": email, "owned": owned})

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response({"_id": ACCOUNT, "email": f"{ACCOUNT}@example.com",
                                  "invoiceEmail": f"{ACCOUNT}@example.com", "capturePrivate": False,
                                  "messageLimit": 1000, "privateDomain": 0, "privateAddressCredits": 100,
                                  "whitelistAccess": 0, "moAPICount": 0, "apiMonthlyLimit": 100000,
                                  "recents": [], "labels": []})

    async def reserve(self, request: web.Request) -> web.Response:
        email = _email(request)
        if "@" not in email:
            return _error(400, "Bad Request", f"{email} is not a valid email address")
        if self._owned(email) is not None:
            return _error(400, "Bad Request", f"{email} is already reserved by your account")
        data = {"owner": ACCOUNT, "info": "", "forward": "", "enabledws": False, "webhook": "",
                "webhookSlack": "", "webhookSlackToFrom": False, "implicit": False,
                "updated": _iso(time.time())}
        self.store.create(_PROVIDER, email, data, key=email)
        return web.json_response(_address_json(email, self._owned(email)))

    async def release(self, request: web.Request) -> web.Response:
        """Release; ``deleteAddressMessages=true`` deletes the inbox's mail as well (spec)."""
        email = _email(request)
        if not self.store.delete(_PROVIDER, email):
            return _error(400, "Bad Request",
                          f"{email} is not currently owned by your account, or already deleted")
        if _bool(request.query.get("deleteAddressMessages")):
            self.store.delete_messages(email)
        return web.json_response({"message": f"{email} was released"})

    def _messages(self, email: str) -> List[Dict[str, Any]]:
        return list(reversed(self.store.messages(email)))

    async def messages(self, request: web.Request) -> web.Response:
        """Newest first, received up to ``until``, at most ``limit`` (default 20, at most 1000)."""
        try:
            limit = min(max(int(request.query.get("limit", "20")), 0), 1000)
        except ValueError:
            return _error(400, "Bad Request", "limit must be an integer from 0 to 1000")
        until = _until(request.query.get("until"))
        found = [m for m in self._messages(_email(request)) if until is None or m["created"] <= until]
        return web.json_response([_message_json(m) for m in found[:limit]])

    def _message(self, request: web.Request) -> Optional[Dict[str, Any]]:
        wanted = request.match_info["message_id"]
        return next((m for m in self._messages(_email(request)) if _message_id(m) == wanted), None)

    async def message(self, request: web.Request) -> web.Response:
        found = self._message(request)
        return web.json_response(_message_json(found)) if found else _error(404, "Not Found", "Message not found")

    async def delete_message(self, request: web.Request) -> web.Response:
        found = self._message(request)
        if found is None:
            return _error(404, "Not Found", "Message not found")
        self.store.delete_messages(found["to"], [found["seq"]])
        return web.json_response({"_id": _message_id(found), "inbox": found["to"],
                                  "message": "Message was deleted."})

    async def delete_messages(self, request: web.Request) -> web.Response:
        self.store.delete_messages(_email(request))
        return web.Response(status=204)

    async def text(self, request: web.Request) -> web.Response:
        found = self._message(request)
        if found is None:
            return _error(404, "Not Found", "Message not found")
        return web.Response(text=found.get("text", ""), content_type="text/plain")


def setup(app: web.Application, store: SandboxStore) -> None:
    """Add mailsac's routes under ``/mailsac``."""
    api = _Mailsac(store)
    routes = [("GET", "/addresses", api.list_addresses),
              ("GET", "/addresses/{email}", api.get_address),
              ("POST", "/addresses/{email}", api.reserve),
              ("DELETE", "/addresses/{email}", api.release),
              ("GET", "/addresses/{email}/availability", api.availability),
              ("GET", "/addresses/{email}/messages", api.messages),
              ("DELETE", "/addresses/{email}/messages", api.delete_messages),
              ("GET", "/addresses/{email}/messages/{message_id}", api.message),
              ("DELETE", "/addresses/{email}/messages/{message_id}", api.delete_message),
              ("GET", "/me", api.me),
              ("GET", "/text/{email}/{message_id}", api.text)]
    for method, path, handler in routes:
        app.router.add_route(method, "/mailsac" + path, _authenticated(handler))

"""mailsac in the sandbox: the real routes under ``/mailsac`` (base ``https://mailsac.com/api``).

Follows mailsac's OpenAPI description (``../shared/specs/mailsac_openapi.json``):
the API key comes in the ``Mailsac-Key`` header or the ``_mailsacKey`` query
parameter, and a wrong or missing one is a 401. ``POST /addresses/{email}``
reserves (200, or 400 if this account already owns it); ``GET
/addresses/{email}`` answers 200 with ``owner`` only when this account owns
it; ``DELETE /addresses/{email}`` releases (200, or 400 "not owned or already
deleted"); ``GET /addresses/{email}/messages`` lists newest first and
``GET /text/{email}/{messageId}`` gives the plain text. Errors carry
``{"error", "message"}`` as the spec's ErrorResponseBody.
"""
from __future__ import annotations

import hmac
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from aiohttp import web

from ..store import SandboxStore

__all__ = ["CREDENTIALS", "ACCOUNT", "setup"]

CREDENTIALS: Dict[str, str] = {"MAILSAC_API_KEY": "sandbox-mailsac-key"}
ACCOUNT = "sandbox-account"
"""The mailsac account that the sandbox key belongs to; it owns what that key reserves."""

_PROVIDER = "mailsac"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


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
            "subject": message.get("subject", ""), "savedBy": None, "originalInbox": inbox,
            "inbox": inbox, "domain": inbox.rpartition("@")[2], "received": _iso(message["created"]),
            "size": len(message.get("text", "")), "attachments": [], "ip": "127.0.0.1",
            "via": "127.0.0.1", "folder": "inbox", "labels": [], "read": False, "rtls": False,
            "links": [], "spam": 0}


def _address_json(email: str, data: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """An EmailAddress; ``owner`` only when this account owns it (``data`` is not None)."""
    if data is None:
        return {"_id": email}
    return dict(data, _id=email)


class _Mailsac:
    """Route handlers over one store."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    async def list_addresses(self, request: web.Request) -> web.Response:
        return web.json_response([_address_json(rid, data)
                                  for rid, data in self.store.list(_PROVIDER)])

    async def get_address(self, request: web.Request) -> web.Response:
        email = _email(request)
        return web.json_response(_address_json(email, self.store.get(_PROVIDER, email)))

    async def reserve(self, request: web.Request) -> web.Response:
        email = _email(request)
        if "@" not in email:
            return _error(400, "Bad Request", f"{email} is not a valid email address")
        if self.store.get(_PROVIDER, email) is not None:
            return _error(400, "Bad Request", f"{email} is already reserved by your account")
        now = _iso(time.time())
        data = {"owner": ACCOUNT, "info": "", "forward": "", "enabledws": False, "webhook": "",
                "webhookSlack": "", "webhookSlackToFrom": False, "catchAll": None,
                "implicit": False, "created": now, "updated": now}
        self.store.create(_PROVIDER, email, data, key=email)
        return web.json_response(_address_json(email, data))

    async def release(self, request: web.Request) -> web.Response:
        email = _email(request)
        if not self.store.delete(_PROVIDER, email):
            return _error(400, "Bad Request",
                          f"{email} is not currently owned by your account, or already deleted")
        return web.json_response({"message": f"{email} was released"})

    def _messages(self, email: str) -> List[Dict[str, Any]]:
        return list(reversed(self.store.messages(email)))

    async def messages(self, request: web.Request) -> web.Response:
        return web.json_response([_message_json(m) for m in self._messages(_email(request))])

    async def text(self, request: web.Request) -> web.Response:
        for message in self._messages(_email(request)):
            if _message_id(message) == request.match_info["message_id"]:
                return web.Response(text=message.get("text", ""), content_type="text/plain")
        return _error(404, "Not Found", "Message not found")


def setup(app: web.Application, store: SandboxStore) -> None:
    """Add mailsac's routes under ``/mailsac``."""
    api = _Mailsac(store)
    routes = [("GET", "/addresses", api.list_addresses),
              ("GET", "/addresses/{email}", api.get_address),
              ("POST", "/addresses/{email}", api.reserve),
              ("DELETE", "/addresses/{email}", api.release),
              ("GET", "/addresses/{email}/messages", api.messages),
              ("GET", "/text/{email}/{message_id}", api.text)]
    for method, path, handler in routes:
        app.router.add_route(method, "/mailsac" + path, _authenticated(handler))

"""mail.tm in the sandbox: the real routes under ``/mailtm``, answering hydra JSON-LD.

Mirrors https://api.mail.tm as documented at https://docs.mail.tm: ``GET
/domains``; ``POST /accounts`` (201, 422 with a ConstraintViolationList when
the address is taken or its domain unknown); ``POST /token`` (200 ``{"id",
"token"}``, 401 ``{"code": 401, "message": "Invalid credentials."}``);
``GET /me``, ``GET|DELETE /accounts/{id}``, ``GET /messages?page=N``,
``GET|PATCH|DELETE /messages/{id}``, ``GET /messages/{id}/download`` (the
raw ``.eml``) and ``GET /sources/{id}`` with ``Authorization: Bearer``. A
bearer whose account was deleted is refused with 401, as a JWT for a
vanished user is. Collections page by 30 with a ``hydra:view``
(https://docs.mail.tm/api/messages: "up to 30 messages per page"); a page
past the last is empty. Unserved routes answer a hydra error (404/405).

mail.tm needs no API key, so ``CREDENTIALS`` is empty. Bearer tokens are
HMAC-signed account ids: they stay valid across a sandbox restart, as real
JWTs do.
"""
from __future__ import annotations

import base64
import email.message
import email.utils
import hashlib
import hmac
import secrets
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from aiohttp import web

from ..store import SandboxStore

__all__ = ["CREDENTIALS", "DOMAIN", "ERROR_PAGES", "PAGE_SIZE", "setup"]

CREDENTIALS: Dict[str, str] = {}
DOMAIN = "mailtm.sandbox.test"
"""The one domain the sandbox offers (``.test`` is reserved: it can never be real)."""

_PROVIDER = "mailtm"
PAGE_SIZE = 30
"""Members per collection page, as mail.tm documents."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AccountHandler = Callable[[web.Request, Dict[str, Any]], Awaitable[web.StreamResponse]]
_DOMAIN_ID = "0000000000000000000000d0"
_SIGNING_KEY = b"taos-persona-sandbox-mailtm"  # sandbox only: nothing real is signed with it


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(timestamp))


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _sign(account_id: str) -> str:
    payload = base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")
    mac = hmac.new(_SIGNING_KEY, payload.encode(), hashlib.sha256).hexdigest()
    return f"sandbox.{payload}.{mac}"


def _verify(token: str) -> Optional[str]:
    """The account id a bearer token was issued for, or None if it is forged or malformed."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "sandbox":
        return None
    mac = hmac.new(_SIGNING_KEY, parts[1].encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, parts[2]):
        return None
    return base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"code": 401, "message": message}, status=401)


def _hydra_error(status: int, description: str) -> web.Response:
    return web.json_response({"@context": "/contexts/Error", "@type": "hydra:Error",
                              "hydra:title": "An error occurred", "hydra:description": description},
                             status=status, content_type="application/ld+json")


def _not_found() -> web.Response:
    return _hydra_error(404, "Not Found")


def _unserved(request: web.Request, status: int) -> web.Response:
    """API Platform's hydra error for a route (404) or method (405) mail.tm does not have."""
    if status == 405:
        return _hydra_error(405, f'No route found for "{request.method} {request.path[len("/mailtm"):]}": '
                                 "Method Not Allowed")
    return _hydra_error(404, f'No route found for "{request.method} {request.path[len("/mailtm"):]}"')


ERROR_PAGES = {"/mailtm": _unserved}


def _violation(path: str, message: str) -> web.Response:
    return web.json_response(
        {"@context": "/contexts/ConstraintViolationList", "@type": "ConstraintViolationList",
         "hydra:title": "An error occurred", "hydra:description": f"{path}: {message}",
         "violations": [{"propertyPath": path, "message": message}]},
        status=422, content_type="application/ld+json")


def _collection(request: web.Request, context: str, path: str, members: List[Dict[str, Any]]) -> web.Response:
    """One page (``?page=``, from 1) of a hydra collection, with its ``hydra:view`` when paged."""
    try:
        page = max(int(request.query.get("page", "1")), 1)
    except ValueError:
        return _hydra_error(400, 'Page should not be less than 1')
    body = {"@context": f"/contexts/{context}", "@id": path, "@type": "hydra:Collection",
            "hydra:member": members[(page - 1) * PAGE_SIZE:page * PAGE_SIZE],
            "hydra:totalItems": len(members)}
    last = max((len(members) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    if "page" in request.query or last > 1:
        view = {"@id": f"{path}?page={page}", "@type": "hydra:PartialCollectionView",
                "hydra:first": f"{path}?page=1", "hydra:last": f"{path}?page={last}"}
        if page > 1:
            view["hydra:previous"] = f"{path}?page={page - 1}"
        if page < last:
            view["hydra:next"] = f"{path}?page={page + 1}"
        body["hydra:view"] = view
    return web.json_response(body, content_type="application/ld+json")


def _account_json(data: Dict[str, Any]) -> Dict[str, Any]:
    public = {k: v for k, v in data.items() if not k.startswith("_")}
    return {"@context": "/contexts/Account", "@id": f"/accounts/{data['id']}", "@type": "Account",
            **public}


def _message_json(message: Dict[str, Any], full: bool, account_id: str = "") -> Dict[str, Any]:
    """A stored delivery as mail.tm shows it: summary in lists, text and html when ``full``."""
    text = message.get("text", "")
    body = {"@id": f"/messages/{_message_id(message)}", "@type": "Message",
            "id": _message_id(message), "accountId": f"/accounts/{account_id}",
            "msgid": f"<{message['seq']}@sandbox.test>",
            "from": {"address": message.get("from", ""), "name": ""},
            "to": [{"address": message.get("to", ""), "name": ""}],
            "subject": message.get("subject", ""), "intro": " ".join(text.split())[:120],
            "seen": bool(message.get("seen")), "isDeleted": False, "hasAttachments": False, "size": len(text),
            "downloadUrl": f"/messages/{_message_id(message)}/download",
            "createdAt": _iso(message["created"]), "updatedAt": _iso(message["created"])}
    if full:
        html = message.get("html") or ""
        body.update({"cc": [], "bcc": [], "text": text, "html": [html] if html else [],
                     "attachments": [], "verifications": [], "retention": True})
    return body


def _message_id(message: Dict[str, Any]) -> str:
    return f"{message['seq']:024x}"


def _eml(message: Dict[str, Any]) -> bytes:
    """The message as the raw RFC 822 source a download gives."""
    raw = email.message.EmailMessage()
    raw["Message-ID"] = f"<{message['seq']}@sandbox.test>"
    raw["Date"] = email.utils.formatdate(message["created"], usegmt=True)
    raw["From"], raw["To"] = message.get("from", ""), message.get("to", "")
    raw["Subject"] = message.get("subject", "")
    raw.set_content(message.get("text", ""))
    if message.get("html"):
        raw.add_alternative(message["html"], subtype="html")
    return bytes(raw)


async def _json_body(request: web.Request) -> Optional[Dict[str, Any]]:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _MailTm:
    """Route handlers over one store."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    def authenticated(self, handler: AccountHandler) -> Handler:
        """Wrap ``handler(request, account)``: 401s for a missing, forged or orphaned bearer."""

        async def check(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return _unauthorized("JWT Token not found")
            account_id = _verify(header[len("Bearer "):].strip())
            account = self.store.get(_PROVIDER, account_id) if account_id else None
            if account is None:  # forged, or the account was deleted after the token was issued
                return _unauthorized("Invalid JWT Token")
            return await handler(request, account)

        return check

    async def domains(self, request: web.Request) -> web.Response:
        domain = {"@id": f"/domains/{_DOMAIN_ID}", "@type": "Domain", "id": _DOMAIN_ID,
                  "domain": DOMAIN, "isActive": True, "isPrivate": False,
                  "createdAt": _iso(0), "updatedAt": _iso(0)}
        return _collection(request, "Domain", "/domains", [domain])

    async def create_account(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body is None:
            return web.json_response({"hydra:description": "Syntax error"}, status=400)
        address = str(body.get("address") or "").strip().lower()
        password = str(body.get("password") or "")
        if not password:
            return _violation("password", "This value should not be blank.")
        if address.count("@") != 1 or address.split("@")[1] != DOMAIN or address.startswith("@"):
            return _violation("address", "This value is not valid.")
        if self.store.find(_PROVIDER, address) is not None:
            return _violation("address", "This value is already used.")
        now, account_id = time.time(), secrets.token_hex(12)
        data: Dict[str, Any] = {"id": account_id, "address": address, "quota": 40000000, "used": 0,
                "isDisabled": False, "isDeleted": False, "createdAt": _iso(now),
                "updatedAt": _iso(now), "_passwordHash": _hash(password), "_created": now}
        self.store.create(_PROVIDER, account_id, data, key=address)
        return web.json_response(_account_json(data), status=201, content_type="application/ld+json")

    async def token(self, request: web.Request) -> web.Response:
        body = await _json_body(request) or {}
        found = self.store.find(_PROVIDER, str(body.get("address") or "").strip().lower())
        password = str(body.get("password") or "")
        if found is None or not hmac.compare_digest(found[1]["_passwordHash"], _hash(password)):
            return _unauthorized("Invalid credentials.")
        return web.json_response({"id": found[0], "token": _sign(found[0])})

    async def me(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        return web.json_response(_account_json(account), content_type="application/ld+json")

    def _other_account(self, request: web.Request, account: Dict[str, Any]) -> Optional[web.Response]:
        """None if the path names the bearer's own account; else 404 (no such) or 403 (another's)."""
        wanted = request.match_info["id"]
        if wanted == account["id"]:
            return None
        if self.store.get(_PROVIDER, wanted) is None:
            return _not_found()
        return web.json_response({"@type": "hydra:Error", "hydra:title": "An error occurred",
                                  "hydra:description": "Access Denied."}, status=403)

    async def get_account(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        refusal = self._other_account(request, account)
        return refusal or await self.me(request, account)

    async def delete_account(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        refusal = self._other_account(request, account)
        if refusal is not None:
            return refusal
        self.store.delete(_PROVIDER, account["id"])
        return web.Response(status=204)

    def _mail(self, account: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The account's mail, oldest first: mail to its address from before it existed is not."""
        return [m for m in self.store.messages(account["address"]) if m["created"] >= account["_created"]]

    async def messages(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        members = [_message_json(m, False, account["id"]) for m in reversed(self._mail(account))]
        return _collection(request, "Message", "/messages", members)

    def _find(self, request: web.Request, account: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The account's message named by the path's ``id``, or None."""
        return next((m for m in self._mail(account) if _message_id(m) == request.match_info["id"]), None)

    async def message(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        found = self._find(request, account)
        if found is None:
            return _not_found()
        body = dict(_message_json(found, True, account["id"]), **{"@context": "/contexts/Message"})
        return web.json_response(body, content_type="application/ld+json")

    async def mark_seen(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        """``PATCH /messages/{id}`` ``{"seen": true}``: mark it read; answers ``{"seen": true}``."""
        found, body = self._find(request, account), await _json_body(request) or {}
        if found is None:
            return _not_found()
        self.store.update_message(found["seq"], dict(found, seen=bool(body.get("seen", True))))
        return web.json_response({"seen": bool(body.get("seen", True))}, content_type="application/ld+json")

    async def delete_message(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        found = self._find(request, account)
        if found is None:
            return _not_found()
        self.store.delete_messages(found["to"], [found["seq"]])
        return web.Response(status=204)

    async def download(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        """The message's raw source, as the advertised ``downloadUrl`` gives it."""
        found = self._find(request, account)
        if found is None:
            return _not_found()
        return web.Response(body=_eml(found), content_type="message/rfc822",
                            headers={"Content-Disposition": f'attachment; filename="{request.match_info["id"]}.eml"'})

    async def source(self, request: web.Request, account: Dict[str, Any]) -> web.Response:
        """``GET /sources/{id}``: the raw source inside a ``Source`` resource."""
        found = self._find(request, account)
        if found is None:
            return _not_found()
        ident = request.match_info["id"]
        return web.json_response({"@context": "/contexts/Source", "@id": f"/sources/{ident}", "@type": "Source",
                                  "id": ident, "downloadUrl": f"/messages/{ident}/download",
                                  "data": _eml(found).decode()}, content_type="application/ld+json")


def setup(app: web.Application, store: SandboxStore) -> None:
    """Add mail.tm's routes under ``/mailtm``."""
    api = _MailTm(store)
    app.router.add_get("/mailtm/domains", api.domains)
    app.router.add_post("/mailtm/accounts", api.create_account)
    app.router.add_post("/mailtm/token", api.token)
    for method, path, handler in (("GET", "/me", api.me), ("GET", "/accounts/{id}", api.get_account),
                                  ("DELETE", "/accounts/{id}", api.delete_account),
                                  ("GET", "/messages", api.messages),
                                  ("GET", "/messages/{id}", api.message),
                                  ("PATCH", "/messages/{id}", api.mark_seen),
                                  ("DELETE", "/messages/{id}", api.delete_message),
                                  ("GET", "/messages/{id}/download", api.download),
                                  ("GET", "/sources/{id}", api.source)):
        app.router.add_route(method, "/mailtm" + path, api.authenticated(handler))

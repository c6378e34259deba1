"""A tiny app under test, under ``/example_app``: an admin users/tokens API and a signup flow.

Admin API (``Authorization: Bearer <TAOS_PERSONA_APP_TOKEN>``, else 401), the
shape the ``rest_user`` and ``rest_token`` backends speak:

- ``POST /example_app/users`` ``{"username", "password", "email"?}`` -> 201
  ``{"id", "username", "email", "created_at"}``; 400 without username or
  password, 409 for a taken username. ``GET /example_app/users?username=``
  (exact) or ``?prefix=`` (names that start with it; what a discovery sweep
  lists) -> 200 ``[...]``, oldest first, each with its ``created_at`` (the
  store's creation time, ISO 8601 UTC, backdatable through ``/_sandbox/``);
  ``GET|DELETE /example_app/users/{id}`` -> 200 / 204, 404.
- ``POST /example_app/tokens`` ``{"name"}`` -> 201 ``{"id", "name", "token"}``;
  ``GET /example_app/tokens?name=`` or ``?prefix=``; ``DELETE /example_app/tokens/{id}``.

What a persona uses: ``POST /example_app/login`` ``{"username", "password"}``
-> 200 or 401; ``GET /example_app/me`` with ``Authorization: Bearer <api token>``
-> 200 or 401; ``POST /example_app/signup`` ``{"email", "phone"?}`` -> 201, and
the app "sends" a verification email (a code and a link) to the address and
an SMS code to the phone, delivered through the store so that the mail and
SMS backends' readers see them; ``POST /example_app/verify`` ``{"email" or
"phone", "code"}`` (or ``GET`` with the same query, as the link does) -> 200
or 400. Users and tokens live in the store (``example_app.users``,
``example_app.tokens``); pending signups only in memory.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple
from urllib.parse import urlencode

from aiohttp import web

from ..store import SandboxStore

__all__ = ["setup", "CREDENTIALS", "PREFIX", "SENDER", "ERROR_PAGES"]

CREDENTIALS = {"TAOS_PERSONA_APP_TOKEN": "sandbox-app-admin-token"}
PREFIX = "/example_app"
SENDER = "no-reply@example-app.test"


def _digest(secret: str, salt: str = "") -> str:
    """What the app keeps instead of a password or token: never the value itself."""
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


ERROR_PAGES = {PREFIX: lambda request, status: _error(status, "not found" if status == 404 else "method not allowed")}


async def _json_body(request: web.Request) -> Dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


class _Collection:
    """One admin collection (users or tokens) stored under ``example_app.<kind>``, keyed by name."""

    def __init__(self, store: SandboxStore, kind: str, key_field: str) -> None:
        self.store = store
        self.namespace = f"example_app.{kind}"
        self.kind = kind
        self.key_field = key_field

    def public(self, rid: str, data: Dict[str, Any]) -> Dict[str, Any]:
        """A row as the API shows it: no password or token digests."""
        return dict({k: v for k, v in data.items() if not k.endswith("_digest")}, id=rid)

    def create(self, name: str, data: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        """(rid, public row), or (None, {}) when the name is taken."""
        if self.store.find(self.namespace, name) is not None:
            return None, {}
        rid = f"{self.kind[0]}_{secrets.token_hex(6)}"
        row = dict(data, **{self.key_field: name}, created_at=_iso(time.time()))
        self.store.create(self.namespace, rid, row, key=name)
        return rid, self.public(rid, row)

    async def listing(self, request: web.Request) -> web.Response:
        """Rows named exactly ``?<key_field>=``, or starting with ``?prefix=``, oldest first."""
        name = request.query.get(self.key_field)
        entries = self.store.entries(self.namespace, name or request.query.get("prefix", ""))
        return web.json_response([dict(self.public(e.rid, e.data), created_at=_iso(e.created)) for e in entries
                                  if name is None or e.data.get(self.key_field) == name])

    async def show(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        data = self.store.get(self.namespace, rid)
        return web.json_response(self.public(rid, data)) if data else _error(404, "not found")

    async def remove(self, request: web.Request) -> web.Response:
        if not self.store.delete(self.namespace, request.match_info["id"]):
            return _error(404, "not found")
        return web.Response(status=204)

    def find_by(self, field: str, value: str) -> Optional[Tuple[str, Dict[str, Any]]]:
        for rid, data in self.store.list(self.namespace):
            if data.get(field) == value:
                return rid, data
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _admin_only(handler: Handler) -> Handler:
    """Wrap an admin handler: 401 unless the admin bearer token is sent."""

    async def checked(request: web.Request) -> web.StreamResponse:
        expected = f"Bearer {CREDENTIALS['TAOS_PERSONA_APP_TOKEN']}".encode()
        given = request.headers.get("Authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            return _error(401, "unauthorized: admin bearer token required",
                          **{"WWW-Authenticate": 'Bearer realm="example_app"'})
        return await handler(request)

    return checked


class ExampleApp:
    """The app's handlers over the shared store."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store
        self.users = _Collection(store, "users", "username")
        self.tokens = _Collection(store, "tokens", "name")
        self.signups: Dict[str, Dict[str, str]] = {}
        """email -> {"email_code", "phone", "sms_code", "verified"}: pending signups."""

    async def create_user(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not body.get("username") or not body.get("password"):
            return _error(400, "username and password are required")
        salt = secrets.token_hex(8)
        rid, row = self.users.create(str(body["username"]), {
            "email": body.get("email"), "salt": salt,
            "password_digest": _digest(str(body["password"]), salt)})
        if rid is None:
            return _error(409, "username already taken")
        row.pop("salt", None)
        return web.json_response(row, status=201)

    async def create_token(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not body.get("name"):
            return _error(400, "name is required")
        secret = "exa_" + secrets.token_urlsafe(24)
        rid, row = self.tokens.create(str(body["name"]), {"token_digest": _digest(secret)})
        if rid is None:
            return _error(409, "a token of that name exists")
        return web.json_response(dict(row, token=secret), status=201)

    async def login(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        found = self.store.find(self.users.namespace, str(body.get("username", "")))
        if found is None or _digest(str(body.get("password", "")), found[1]["salt"]) \
                != found[1]["password_digest"]:
            return _error(401, "wrong username or password")
        return web.json_response({"id": found[0], "username": found[1]["username"]})

    async def me(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        found = self.tokens.find_by("token_digest", _digest(token)) if scheme == "Bearer" else None
        if found is None:
            return _error(401, "invalid API token", **{"WWW-Authenticate": 'Bearer realm="example_app"'})
        return web.json_response({"token_id": found[0], "token_name": found[1]["name"]})

    async def signup(self, request: web.Request) -> web.Response:
        """Start a signup: email a code and a link, and text a code when a phone is given."""
        body = await _json_body(request)
        email = str(body.get("email", "")).strip().lower()
        phone = str(body.get("phone", "")).strip()
        if "@" not in email:
            return _error(400, "a valid email is required")
        pending = {"email_code": f"{secrets.randbelow(10 ** 6):06d}", "phone": phone,
                   "sms_code": f"{secrets.randbelow(10 ** 6):06d}", "verified": ""}
        self.signups[email] = pending
        link = (f"{request.scheme}://{request.host}{PREFIX}/verify?"
                + urlencode({"email": email, "code": pending["email_code"]}))
        # The code comes before the link: a reader takes the first 4-8 digit run as the code.
        self.store.add_message(email, {
            "to": email, "from": SENDER, "subject": "Verify your email for Example App",
            "text": f"Your Example App verification code is {pending['email_code']}.\n\n"
                    f"Or confirm by opening this link:\n{link}\n", "html": ""})
        if phone:
            self.store.add_message(phone, {"to": phone, "from": "ExampleApp",
                                           "text": f"Example App: your code is {pending['sms_code']}"})
        return web.json_response({"status": "verification_sent", "email": email,
                                  "sms": bool(phone)}, status=201)

    async def verify(self, request: web.Request) -> web.Response:
        """Check an email code (``email``) or an SMS code (``phone``)."""
        body = dict(request.query) if request.method == "GET" else await _json_body(request)
        code = str(body.get("code", ""))
        for email, pending in self.signups.items():
            if body.get("email") and str(body["email"]).strip().lower() == email:
                ok, channel = pending["email_code"] == code, "email"
            elif body.get("phone") and str(body["phone"]).strip() == pending["phone"]:
                ok, channel = pending["sms_code"] == code, "phone"
            else:
                continue
            if ok:
                return web.json_response({"verified": channel, "email": email})
            break
        return _error(400, "invalid or expired verification code")


def setup(app: web.Application, store: SandboxStore) -> None:
    """Mount the admin API (behind the bearer check) and the persona-facing routes."""
    example = ExampleApp(store)
    for collection, create in ((example.users, example.create_user),
                               (example.tokens, example.create_token)):
        base = f"{PREFIX}/{collection.kind}"
        app.router.add_post(base, _admin_only(create))
        app.router.add_get(base, _admin_only(collection.listing))
        app.router.add_get(base + "/{id}", _admin_only(collection.show))
        app.router.add_delete(base + "/{id}", _admin_only(collection.remove))
    app.router.add_post(f"{PREFIX}/login", example.login)
    app.router.add_get(f"{PREFIX}/me", example.me)
    app.router.add_post(f"{PREFIX}/signup", example.signup)
    app.router.add_post(f"{PREFIX}/verify", example.verify)
    app.router.add_get(f"{PREFIX}/verify", example.verify)

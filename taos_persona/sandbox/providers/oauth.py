"""Sandboxed OAuth servers: GitHub under ``/github``, Google under ``/google``, RFC 7009 under ``/oauth``.

Each speaks its provider's real paths, encodings, status codes and error
bodies for what the backends use:

- GitHub: ``POST /github/login/oauth/access_token`` (errors come back with
  status 200, as GitHub sends them; JSON when asked with ``Accept``, else
  form-encoded), ``DELETE /github/applications/{client_id}/grant`` and
  ``.../token`` (Basic auth with the app's id and secret: 401 "Bad
  credentials" when wrong, 404 for an unknown token, 422 without one), and
  ``GET /github/user`` to use a token: the authenticated user with ``login``,
  ``id``, ``name``, ``email`` and the other fields of GitHub's "Get the
  authenticated user" (docs.github.com/rest/users/users). Unserved routes
  answer GitHub's ``{"message": "Not Found", "documentation_url", "status"}``.
- Google: ``POST /google/token`` for ``authorization_code`` and
  ``refresh_token`` grants (developers.google.com/identity/protocols/oauth2/
  web-server#offline: the refresh answer has no new refresh token; 401
  ``invalid_client``, 400 ``invalid_grant``), ``POST /google/revoke`` (200, or
  400 ``invalid_token`` for a token that is unknown or already revoked) and
  ``GET /google/tokeninfo``.
- Generic: ``POST /oauth/token`` (both grants, RFC 6749 4.1.3 and 6) and
  ``POST /oauth/revoke`` with HTTP Basic
  client auth (401 ``invalid_client``); revocation answers 200 even for an
  unknown token (RFC 7009 2.2); a replayed code is refused and revokes what
  it issued (RFC 6749 4.1.2); ``GET /oauth/userinfo`` to use a token.

Consent is the one step a test cannot do at a real provider, so every
prefix has an auto-approving ``GET .../authorize`` (GitHub:
``/github/login/oauth/authorize``, Google: ``/google/o/oauth2/v2/auth``)
that redirects to ``redirect_uri`` with a fresh code, and ``POST
/_sandbox/oauth/code`` ``{"provider", "user"?, "scope"?, "redirect_uri"?,
"code_challenge"?}`` returns one as JSON. Codes live in memory for ten
minutes; grants live in the store under ``github``, ``google`` and ``oauth``.
A grant stays alive until nothing of it can be used any more: at Google,
revoking either token ends it; at the generic server, only revoking the
refresh token does (RFC 7009 leaves that choice to the server).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlencode

from aiohttp import web

from ..store import SandboxStore

__all__ = ["setup", "CREDENTIALS", "FLAVORS", "OAuthServer", "ERROR_PAGES"]

CREDENTIALS = {
    "GITHUB_CLIENT_ID": "sandbox-github-client-id",
    "GITHUB_CLIENT_SECRET": "sandbox-github-client-secret",
    "GOOGLE_CLIENT_ID": "sandbox-google-client-id.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": "sandbox-google-client-secret",
    "TAOS_PERSONA_OAUTH_CLIENT_ID": "sandbox-oauth-client-id",
    "TAOS_PERSONA_OAUTH_CLIENT_SECRET": "sandbox-oauth-client-secret",
}

_CODE_LIFETIME = 600.0
_GITHUB_DOCS = "https://docs.github.com/rest"
_GITHUB_TOKEN_ERRORS = {
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for this "
                             "application.",
    "bad_verification_code": "The code passed is incorrect or expired.",
}


@dataclass(frozen=True)
class Flavor:
    """How one provider spells the same OAuth steps."""

    name: str
    client_id: str
    client_secret: str
    token_prefix: str
    bad_code: str
    """The error code for a used, expired or unknown authorization code."""
    refresh: bool
    """Whether the token response carries a refresh token."""
    access_revokes_grant: bool
    """Whether revoking an access token also revokes its refresh token (Google documents so)."""


FLAVORS = {
    "github": Flavor("github", CREDENTIALS["GITHUB_CLIENT_ID"], CREDENTIALS["GITHUB_CLIENT_SECRET"],
                     "gho_", "bad_verification_code", refresh=False, access_revokes_grant=True),
    "google": Flavor("google", CREDENTIALS["GOOGLE_CLIENT_ID"], CREDENTIALS["GOOGLE_CLIENT_SECRET"],
                     "ya29.", "invalid_grant", refresh=True, access_revokes_grant=True),
    "oauth": Flavor("oauth", CREDENTIALS["TAOS_PERSONA_OAUTH_CLIENT_ID"],
                    CREDENTIALS["TAOS_PERSONA_OAUTH_CLIENT_SECRET"], "at_", "invalid_grant",
                    refresh=True, access_revokes_grant=False),
}


@dataclass
class _Code:
    user: str
    scope: str
    redirect_uri: str = ""
    challenge: str = ""
    expires: float = field(default_factory=lambda: time.time() + _CODE_LIFETIME)
    grant: Optional[str] = None
    """The grant this code was exchanged for: set once, so a replay is recognised."""


def _basic(request: web.Request) -> Optional[Tuple[str, str]]:
    """(user, password) of an HTTP Basic Authorization header, or None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") else ""


async def _fields(request: web.Request) -> Dict[str, str]:
    """Query, form or JSON parameters merged, as the real token endpoints accept them."""
    merged = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        merged.update({k: str(v) for k, v in body.items()} if isinstance(body, dict) else {})
    else:
        merged.update({k: str(v) for k, v in (await request.post()).items()})
    return merged


def _oauth_error(status: int, error: str, description: str = "", **headers: str) -> web.Response:
    body = {"error": error, **({"error_description": description} if description else {})}
    return web.json_response(body, status=status, headers=headers or None)


def _challenge_ok(challenge: str, verifier: str) -> bool:
    """PKCE S256: base64url(sha256(verifier)) without padding must equal the challenge."""
    if not challenge:
        return True
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge


class OAuthServer:
    """One provider's OAuth endpoints over the shared store; codes are kept in memory."""

    def __init__(self, flavor: Flavor, store: SandboxStore) -> None:
        self.flavor = flavor
        self.store = store
        self.codes: Dict[str, _Code] = {}

    def mint_code(self, user: str = "", scope: str = "", redirect_uri: str = "",
                  challenge: str = "") -> str:
        """A fresh authorization code, as if ``user`` had just clicked "Authorize"."""
        code = secrets.token_hex(10)
        self.codes[code] = _Code(user or f"persona-{secrets.token_hex(3)}", scope, redirect_uri,
                                 challenge)
        return code

    async def authorize(self, request: web.Request) -> web.Response:
        """Auto-approve: redirect to ``redirect_uri`` with a code and the caller's ``state``."""
        query = request.query
        code = self.mint_code(query.get("login", ""), query.get("scope", ""),
                              query.get("redirect_uri", ""), query.get("code_challenge", ""))
        answer = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        if not query.get("redirect_uri"):
            return web.json_response(answer)
        separator = "&" if "?" in query["redirect_uri"] else "?"
        raise web.HTTPFound(query["redirect_uri"] + separator + urlencode(answer))

    def client_ok(self, fields: Dict[str, str], request: web.Request) -> bool:
        """Client authentication by Basic header or by form fields, per RFC 6749 2.3.1."""
        given = _basic(request) or (fields.get("client_id", ""), fields.get("client_secret", ""))
        expected = f"{self.flavor.client_id}\0{self.flavor.client_secret}"
        return secrets.compare_digest("\0".join(given).encode(), expected.encode())

    def redeem(self, fields: Dict[str, str]) -> Tuple[Optional[Dict[str, Any]], str]:
        """Exchange a code: (token response, "") or (None, the error code to send)."""
        code = self.codes.get(fields.get("code", ""))
        if code is None or code.expires < time.time():
            return None, self.flavor.bad_code
        if code.grant is not None:  # a replay: RFC 6749 4.1.2 says revoke what it issued
            self.store.delete(self.flavor.name, code.grant)
            return None, self.flavor.bad_code
        if code.redirect_uri and fields.get("redirect_uri") not in (None, code.redirect_uri):
            return None, "redirect_uri_mismatch" if self.flavor.name == "github" else "invalid_grant"
        if not _challenge_ok(code.challenge, fields.get("code_verifier", "")):
            return None, self.flavor.bad_code
        grant = self.issue(code.user, code.scope)
        code.grant = grant["rid"]
        return grant, ""

    def issue(self, user: str, scope: str) -> Dict[str, Any]:
        """Create a grant in the store and return its token response (with ``rid``)."""
        rid = secrets.token_hex(8)
        access = self.flavor.token_prefix + secrets.token_urlsafe(24)
        data: Dict[str, Any] = {"user": user, "scope": scope, "client_id": self.flavor.client_id,
                                "access_token": access, "access_alive": True}
        if self.flavor.refresh:
            data["refresh_token"] = "rt_" + secrets.token_urlsafe(24)
        self.store.create(self.flavor.name, rid, data, key=access)
        return dict(data, rid=rid)

    def lookup(self, token: str) -> Optional[Tuple[str, Dict[str, Any], str]]:
        """(rid, data, "access_token" | "refresh_token") of the live grant holding ``token``."""
        if not token:
            return None
        for rid, data in self.store.list(self.flavor.name):
            if token == data.get("refresh_token"):
                return rid, data, "refresh_token"
            if token == data["access_token"] and data.get("access_alive", True):
                return rid, data, "access_token"
        return None

    def refresh(self, fields: Dict[str, str]) -> Tuple[Optional[Dict[str, Any]], str]:
        """A ``refresh_token`` grant: (grant with a new access token, "") or (None, "invalid_grant")."""
        found = self.lookup(fields.get("refresh_token", ""))
        if found is None or found[2] != "refresh_token":
            return None, "invalid_grant"
        rid, data, _ = found
        data = dict(data, access_token=self.flavor.token_prefix + secrets.token_urlsafe(24), access_alive=True)
        self.store.update(self.flavor.name, rid, data)
        return dict(data, rid=rid), ""

    def grant(self, fields: Dict[str, str]) -> Tuple[Optional[Dict[str, Any]], str]:
        """The token endpoint's two grants; ("", "unsupported_grant_type") for any other."""
        if fields.get("grant_type") == "authorization_code":
            return self.redeem(fields)
        if fields.get("grant_type") == "refresh_token" and self.flavor.refresh:
            return self.refresh(fields)
        return None, "unsupported_grant_type"

    def revoke(self, token: str) -> bool:
        """Revoke ``token``; a refresh token (or the last usable token) ends its whole grant."""
        found = self.lookup(token)
        if found is None:
            return False
        rid, data, kind = found
        if kind == "refresh_token" or not data.get("refresh_token") or self.flavor.access_revokes_grant:
            return self.store.delete(self.flavor.name, rid)
        return self.store.update(self.flavor.name, rid, dict(data, access_alive=False))


def _token_response(grant: Dict[str, Any], token_type: str, expires: bool = True) -> Dict[str, Any]:
    body = {"access_token": grant["access_token"], "token_type": token_type, "scope": grant["scope"]}
    if expires:
        body["expires_in"] = 3599
    if grant.get("refresh_token"):
        body["refresh_token"] = grant["refresh_token"]
    return body


# --- GitHub -------------------------------------------------------------------------------------

def _github_message(status: int, message: str, docs: str = _GITHUB_DOCS) -> web.Response:
    return web.json_response({"message": message, "documentation_url": docs, "status": str(status)},
                             status=status)


def _github_unserved(request: web.Request, status: int) -> web.Response:
    return _github_message(status, "Not Found" if status == 404 else "Method Not Allowed")


ERROR_PAGES = {"/github": _github_unserved}


def _github_user(login: str) -> Dict[str, Any]:
    """The authenticated user as GitHub's ``GET /user`` shows it; the id is stable per login."""
    user_id = int.from_bytes(hashlib.sha256(login.encode()).digest()[:4], "big") % 10 ** 8 + 1
    url = f"https://api.github.com/users/{login}"
    return {"login": login, "id": user_id, "node_id": base64.b64encode(f"04:User{user_id}".encode()).decode(),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4", "gravatar_id": "",
            "url": url, "html_url": f"https://github.com/{login}", "type": "User", "site_admin": False,
            "name": login.replace("-", " ").title(), "company": None, "blog": "", "location": None,
            "email": f"{login}@users.noreply.github.com", "hireable": None, "bio": None,
            "public_repos": 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}


def _github_answer(request: web.Request, body: Dict[str, Any]) -> web.Response:
    """GitHub answers the token exchange as JSON only when asked to; else form-encoded."""
    if "json" in request.headers.get("Accept", ""):
        return web.json_response(body)
    return web.Response(text=urlencode(body), content_type="application/x-www-form-urlencoded")


def _github_routes(server: OAuthServer) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/github/login/oauth/access_token")
    async def access_token(request: web.Request) -> web.Response:
        fields = await _fields(request)
        if not server.client_ok(fields, request):
            error = "incorrect_client_credentials"
        else:
            grant, error = server.redeem(fields)
            if grant is not None:
                body = _token_response(grant, "bearer", expires=False)
                return _github_answer(request, dict(body, scope=body["scope"].replace(" ", ",")))
        # GitHub sends token errors with status 200.
        return _github_answer(request, {"error": error, "error_description": _GITHUB_TOKEN_ERRORS[error],
                                        "error_uri": "https://docs.github.com/apps/managing-oauth-apps/"
                                                     "troubleshooting-oauth-app-access-token-request-errors"})

    @routes.delete("/github/applications/{client_id}/{kind:grant|token}")
    async def delete_authorization(request: web.Request) -> web.Response:
        if _basic(request) is None or not server.client_ok({}, request):
            return _github_message(401, "Bad credentials")
        if request.match_info["client_id"] != server.flavor.client_id:
            return _github_message(404, "Not Found")
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            return _github_message(422, "Invalid request.\n\n\"access_token\" wasn't supplied.")
        found = server.lookup(str(token))
        if found is None:
            return _github_message(404, "Not Found")
        rid, data, _ = found
        doomed = [rid] if request.match_info["kind"] == "token" else [
            other for other, d in server.store.list("github") if d.get("user") == data.get("user")]
        for victim in doomed:
            server.store.delete("github", victim)
        return web.Response(status=204)

    @routes.get("/github/user")
    async def user(request: web.Request) -> web.Response:
        found = server.lookup(_bearer(request))
        if found is None or found[2] != "access_token":
            return _github_message(401, "Bad credentials")
        return web.json_response(_github_user(found[1]["user"]),
                                 headers={"X-OAuth-Scopes": found[1]["scope"].replace(" ", ", ")})

    routes.get("/github/login/oauth/authorize")(server.authorize)
    return routes


# --- Google -------------------------------------------------------------------------------------

def _google_routes(server: OAuthServer) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/google/token")
    async def token(request: web.Request) -> web.Response:
        fields = await _fields(request)
        if fields.get("grant_type") not in ("authorization_code", "refresh_token"):
            return _oauth_error(400, "unsupported_grant_type",
                                f"Invalid grant_type: {fields.get('grant_type', '')}")
        if not server.client_ok(fields, request):
            return _oauth_error(401, "invalid_client", "Unauthorized")
        grant, error = server.grant(fields)
        if grant is None:
            return _oauth_error(400, error, "Bad Request")
        body = _token_response(grant, "Bearer")
        if fields["grant_type"] == "refresh_token":  # Google keeps the refresh token it issued
            body.pop("refresh_token", None)
        return web.json_response(body)

    @routes.post("/google/revoke")
    async def revoke(request: web.Request) -> web.Response:
        fields = await _fields(request)
        if not server.revoke(fields.get("token", "")):
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        return web.json_response({})

    @routes.get("/google/tokeninfo")
    async def tokeninfo(request: web.Request) -> web.Response:
        found = server.lookup(request.query.get("access_token", ""))
        if found is None or found[2] != "access_token":
            return _oauth_error(400, "invalid_token", "Invalid Value")
        client = server.flavor.client_id
        return web.json_response({"azp": client, "aud": client, "scope": found[1]["scope"],
                                  "expires_in": "3599", "access_type": "offline"})

    routes.get("/google/o/oauth2/v2/auth")(server.authorize)
    return routes


# --- RFC 6749 / RFC 7009 ------------------------------------------------------------------------

_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="oauth"'}


def _rfc_routes(server: OAuthServer) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/oauth/token")
    async def token(request: web.Request) -> web.Response:
        fields = await _fields(request)
        if not server.client_ok(fields, request):
            return _oauth_error(401, "invalid_client", **_BASIC_CHALLENGE)
        grant, error = server.grant(fields)
        if error == "unsupported_grant_type":
            return _oauth_error(400, error)
        if grant is None:
            return _oauth_error(400, error, "The authorization code is invalid, expired or used")
        return web.json_response(_token_response(grant, "Bearer"),
                                 headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @routes.post("/oauth/revoke")
    async def revoke(request: web.Request) -> web.Response:
        fields = await _fields(request)
        if not server.client_ok(fields, request):
            return _oauth_error(401, "invalid_client", **_BASIC_CHALLENGE)
        if not fields.get("token"):
            return _oauth_error(400, "invalid_request", "token is required")
        server.revoke(fields["token"])  # RFC 7009 2.2: 200 whether or not it was valid
        return web.Response(status=200)

    @routes.get("/oauth/userinfo")
    async def userinfo(request: web.Request) -> web.Response:
        found = server.lookup(_bearer(request))
        if found is None or found[2] != "access_token":
            return web.json_response({"error": "invalid_token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return web.json_response({"sub": found[1]["user"], "scope": found[1]["scope"]})

    routes.get("/oauth/authorize")(server.authorize)
    return routes


def _mint_route(servers: Dict[str, OAuthServer]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/_sandbox/oauth/code")
    async def mint(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        server = servers.get(body.get("provider", "")) if isinstance(body, dict) else None
        if server is None:
            return web.json_response({"error": f"provider must be one of {', '.join(servers)}"},
                                     status=400)
        code = server.mint_code(body.get("user", ""), body.get("scope", ""),
                                body.get("redirect_uri", ""), body.get("code_challenge", ""))
        return web.json_response({"code": code, "provider": server.flavor.name}, status=201)

    return routes


def setup(app: web.Application, store: SandboxStore) -> None:
    """Mount ``/github``, ``/google``, ``/oauth`` and ``POST /_sandbox/oauth/code``."""
    servers = {name: OAuthServer(flavor, store) for name, flavor in FLAVORS.items()}
    app.router.add_routes(_github_routes(servers["github"]))
    app.router.add_routes(_google_routes(servers["google"]))
    app.router.add_routes(_rfc_routes(servers["oauth"]))
    app.router.add_routes(_mint_route(servers))

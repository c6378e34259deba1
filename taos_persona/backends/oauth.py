"""OAuth grants: adopt or obtain a persona's access token, and revoke it on release.

A grant cannot be created without the user's consent, so ``acquire`` takes
what the persona's browser or device flow produced: either ``access_token=``
(adopted as is, so that it gets revoked) or ``code=`` (plus ``redirect_uri=``
and ``code_verifier=`` where the flow used them), which is exchanged at the
provider's token endpoint. The release token holds the persona's own access
(and refresh) token, because that is what gets revoked; the OAuth app's
client secret is read from the environment at acquire and at release time
and is never written anywhere.

Three registered backends share one base:

``github``
    Code exchange at ``POST {web}/login/oauth/access_token``, revocation at
    ``DELETE {api}/applications/{client_id}/grant`` (option ``revoke="token"``:
    ``.../token``, which drops this one token and keeps the grant); ``{web}`` is
    ``TAOS_PERSONA_GITHUB_URL`` (default ``https://github.com``), ``{api}`` is
    ``TAOS_PERSONA_GITHUB_API_URL`` (default ``https://api.github.com``).
    Credentials ``GITHUB_CLIENT_ID`` and ``GITHUB_CLIENT_SECRET``.
``google``
    ``POST {TAOS_PERSONA_GOOGLE_URL or https://oauth2.googleapis.com}/token`` and ``/revoke``.
    ``GOOGLE_CLIENT_ID`` and ``GOOGLE_CLIENT_SECRET`` are needed for the code exchange only.
``oauth_rfc7009``
    Any RFC 6749 / RFC 7009 server: ``TAOS_PERSONA_OAUTH_TOKEN_URL`` and
    ``TAOS_PERSONA_OAUTH_REVOKE_URL`` (full URLs), client authentication by
    HTTP Basic with ``TAOS_PERSONA_OAUTH_CLIENT_ID`` and ``TAOS_PERSONA_OAUTH_CLIENT_SECRET``.

Under ``TAOS_PERSONA_SANDBOX`` every URL defaults to the sandbox's
``/github``, ``/google`` and ``/oauth`` prefixes. Where a refresh token is
known it is revoked first: revoking only an access token may leave the
grant, and its refresh token, alive.
"""
from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Dict, FrozenSet, Mapping, Optional, Tuple
from urllib.parse import quote

from ..errors import ConfigurationError, InvalidTokenError, ProviderAuthError, ProviderError
from ..naming import Persona
from ..resources import OAuthGrant
from ._http import SANDBOX_ENV, HttpBackend, HttpResponse
from ._origin import Origin, account_of
from .base import Lease, register

__all__ = ["OAuthBackend", "GitHubOAuth", "GoogleOAuth", "RFC7009OAuth", "endpoint_base",
           "GITHUB_CLIENT_ID_ENV", "GITHUB_CLIENT_SECRET_ENV", "GITHUB_URL_ENV",
           "GITHUB_API_URL_ENV", "GOOGLE_CLIENT_ID_ENV", "GOOGLE_CLIENT_SECRET_ENV",
           "GOOGLE_URL_ENV", "OAUTH_CLIENT_ID_ENV", "OAUTH_CLIENT_SECRET_ENV",
           "OAUTH_TOKEN_URL_ENV", "OAUTH_REVOKE_URL_ENV"]

GITHUB_CLIENT_ID_ENV = "GITHUB_CLIENT_ID"
GITHUB_CLIENT_SECRET_ENV = "GITHUB_CLIENT_SECRET"  # noqa: S105 - the variable's name, not its value
GITHUB_URL_ENV = "TAOS_PERSONA_GITHUB_URL"
"""Base URL of GitHub's web host (the token exchange), default ``https://github.com``."""
GITHUB_API_URL_ENV = "TAOS_PERSONA_GITHUB_API_URL"
"""Base URL of GitHub's REST API (the revocation), default ``https://api.github.com``."""
GOOGLE_CLIENT_ID_ENV = "GOOGLE_CLIENT_ID"
GOOGLE_CLIENT_SECRET_ENV = "GOOGLE_CLIENT_SECRET"  # noqa: S105 - the variable's name, not its value
GOOGLE_URL_ENV = "TAOS_PERSONA_GOOGLE_URL"
"""Base URL of Google's OAuth endpoints, default ``https://oauth2.googleapis.com``."""
OAUTH_CLIENT_ID_ENV = "TAOS_PERSONA_OAUTH_CLIENT_ID"
OAUTH_CLIENT_SECRET_ENV = "TAOS_PERSONA_OAUTH_CLIENT_SECRET"  # noqa: S105 - the variable's name, not its value
OAUTH_TOKEN_URL_ENV = "TAOS_PERSONA_OAUTH_TOKEN_URL"  # noqa: S105 - the variable's name, not its value
OAUTH_REVOKE_URL_ENV = "TAOS_PERSONA_OAUTH_REVOKE_URL"

_CLIENT_ERRORS = frozenset({"invalid_client", "incorrect_client_credentials", "unauthorized_client"})
"""OAuth error codes that mean the app's client id or secret is wrong (RFC 6749 5.2, GitHub)."""
_CODE_ERRORS = frozenset({"invalid_grant", "bad_verification_code"})
"""OAuth error codes that mean the authorization code was used, expired or never issued."""
_GITHUB_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
_DESCRIPTION_LIMIT = 200
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}\Z")
"""An OAuth token as RFC 6750 allows it: visible ASCII, no spaces."""


def _checked_token(record: Mapping[str, Any], key: str, backend: str) -> str:
    """``record[key]`` if it looks like an OAuth token, else :class:`InvalidTokenError` (never shown)."""
    value = record.get(key)
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        raise InvalidTokenError(f"{backend}: the record's {key} is not an OAuth token; not acted on")
    return value


class _CodeRejected(ProviderError):
    """The provider refused the authorization code: used already, expired or never issued."""


def endpoint_base(env_name: str, sandbox_path: str, default: str) -> str:
    """Explicit ``env_name`` > ``$TAOS_PERSONA_SANDBOX`` + ``sandbox_path`` > ``default``.

    OAuth providers spread their endpoints over several hosts (github.com and
    api.github.com), so each endpoint gets its own setting.
    """
    override = os.environ.get(env_name, "").strip()
    if override:
        return override.rstrip("/")
    sandbox = os.environ.get(SANDBOX_ENV, "").strip()
    if sandbox:
        return sandbox.rstrip("/") + sandbox_path
    if not default:
        raise ConfigurationError(f"set {env_name} to the provider's endpoint URL "
                                 f"(or point {SANDBOX_ENV} at a sandbox)")
    return default


def _scopes(raw: Any) -> Tuple[str, ...]:
    """Scopes from a token response (``"repo,gist"`` at GitHub, space-separated elsewhere)."""
    if isinstance(raw, (list, tuple)):
        return tuple(str(s) for s in raw)
    return tuple(s for s in str(raw or "").replace(",", " ").split() if s)


class OAuthBackend(HttpBackend):
    """What the three OAuth backends share: options, code exchange, error mapping, release."""

    client_id_env: ClassVar[str] = ""
    client_secret_env: ClassVar[str] = ""
    client_auth: ClassVar[str] = "post"
    """How the token endpoint authenticates the app: ``post`` (form fields) or ``basic``."""
    gone_errors: ClassVar[FrozenSet[str]] = frozenset()
    """Error codes of a 400 from the revocation endpoint that mean "already revoked"."""
    options: ClassVar[FrozenSet[str]] = frozenset(
        {"access_token", "refresh_token", "scopes", "code", "redirect_uri", "code_verifier"})
    revoke_url_env: ClassVar[str] = ""
    """The setting that points at the revocation endpoint (named in a mismatch's fix)."""
    revoke_path: ClassVar[str] = ""
    """The tail of :meth:`revoke_url` that ``revoke_url_env`` does not set."""

    def account(self) -> str:
        """Which OAuth app issued the grant: a keyed hash of its client id.

        A client id is public, but some set-ups treat every ``*OAUTH*`` variable as a
        secret; a hash compares as well and shows nothing.
        """
        return account_of(self.credential(self.client_id_env))

    def origin(self) -> Origin:
        """The revocation endpoint and the app: where a grant is revoked, and by whom."""
        return Origin(self.revoke_url(), self.account(), self.revoke_url_env, self.client_id_env,
                      self.revoke_path)

    @property
    def base_url(self) -> str:
        """Empty on purpose: every request passes a full URL built by :func:`endpoint_base`."""
        return ""

    @property
    def credential_envs(self) -> Tuple[str, str]:
        return (self.client_id_env, self.client_secret_env)

    def token_url(self) -> str:
        raise NotImplementedError

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        """Check the options: exactly one of ``access_token=`` and ``code=``, nothing unknown."""
        unknown = sorted(set(options) - self.options)
        if unknown:
            raise ConfigurationError(f"{self.name}: unknown option(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(sorted(self.options))}")
        if bool(options.get("access_token")) == bool(options.get("code")):
            raise ConfigurationError(
                f"{self.name}: pass exactly one of access_token= (a token the persona's browser or "
                "device flow already obtained) and code= (an authorization code to exchange)")
        if options.get("code"):  # fail here, before an intent is written, if a setting is missing
            self._client_auth()
        else:
            self._check_release_credentials()
        planned = dict(options)
        if "scopes" in planned:
            planned["scopes"] = list(_scopes(planned["scopes"]))
        return self.stamp(planned)

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        """Adopt ``access_token`` or exchange ``code``; the lease's token revokes it."""
        self.take_origin(options, "grant")
        planned = self.plan(persona, **options)
        tokens = await self._exchange(planned) if planned.get("code") else self._adopt(planned)
        return Lease(self._grant(tokens), self._release_token(tokens, planned))

    recover_is_final = True  # a rejected replay means the code's tokens are revoked (RFC 6749 4.1.2)

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The token to revoke after a crash inside ``acquire(**planned)``, or None.

        An adopted token is known from the intent itself. A code is exchanged
        again: if the first exchange never happened this yields the token
        (which the sweep then revokes); if it did, the provider refuses the
        replayed code, and an RFC 6749 (4.1.2) server also revokes every token
        issued from it, so there is nothing left that we could name.
        """
        self.check_origin(planned, "grant")
        if planned.get("access_token"):
            return self._release_token(self._adopt(planned), planned)
        try:
            tokens = await self._exchange(planned)
        except _CodeRejected:
            return None
        return self._release_token(tokens, planned)

    async def release(self, token: Dict[str, Any]) -> None:
        """Revoke the refresh token (if any), then the access token; "already revoked" is fine."""
        self.check_origin(token, "grant")
        for hint in ("refresh_token", "access_token"):
            if token.get(hint):
                await self._revoke_one(_checked_token(token, hint, self.name), hint)

    def _adopt(self, planned: Mapping[str, Any]) -> Dict[str, Any]:
        """A token response for a token the persona already holds; checks release credentials."""
        self._check_release_credentials()
        adopted = {"access_token": planned["access_token"], "scope": " ".join(planned.get("scopes", ()))}
        if planned.get("refresh_token"):
            adopted["refresh_token"] = planned["refresh_token"]
        return adopted

    def _check_release_credentials(self) -> None:
        """Fail at acquire, not at release, when the revocation needs an unset variable."""
        for env_name in self.credential_envs:
            self.credential(env_name)

    def _release_token(self, tokens: Mapping[str, Any], planned: Mapping[str, Any]) -> Dict[str, Any]:
        """What ``release`` needs: the persona's tokens, never the app's secret."""
        return self.stamp({key: tokens[key] for key in ("access_token", "refresh_token") if tokens.get(key)})

    def _grant(self, tokens: Mapping[str, Any]) -> OAuthGrant:
        extra = {k: tokens[k] for k in ("token_type", "expires_in", "refresh_token", "id_token")
                 if tokens.get(k) is not None}
        return OAuthGrant(provider=self.name, access_token=tokens["access_token"],
                          scopes=_scopes(tokens.get("scope")), extra=extra)

    def _client_auth(self) -> Tuple[Dict[str, str], Optional[Tuple[str, str]]]:
        """(form fields, basic auth) that authenticate the OAuth app at the token endpoint."""
        client = (self.credential(self.client_id_env), self.credential(self.client_secret_env))
        if self.client_auth == "basic":
            return {}, client
        return {"client_id": client[0], "client_secret": client[1]}, None

    async def _exchange(self, planned: Mapping[str, Any]) -> Dict[str, Any]:
        """Trade an authorization code for tokens at the provider's token endpoint."""
        fields, auth = self._client_auth()
        form = dict(fields, grant_type="authorization_code", code=planned["code"])
        form.update({k: planned[k] for k in ("redirect_uri", "code_verifier") if planned.get(k)})
        response = await self.request("POST", self.token_url(), data=form, auth=auth,
                                      headers={"Accept": "application/json"}, ok=(200, 400),
                                      credential_env=self.credential_envs)
        payload = response.json()
        self._raise_oauth_error(response, payload)
        if not isinstance(payload, dict) or not payload.get("access_token"):
            raise ProviderError(f"{response.what} answered {response.status} without an access_token")
        return payload

    def _raise_oauth_error(self, response: HttpResponse, payload: Any) -> None:
        """Raise what an OAuth error body means (GitHub sends its errors with status 200)."""
        error = payload.get("error") if isinstance(payload, dict) else None
        if not error and response.status == 200:
            return
        description = str(payload.get("error_description", "") if error else "")[:_DESCRIPTION_LIMIT]
        said = f"{error or 'no error code'}" + (f": {description}" if description else "")
        if error in _CLIENT_ERRORS:
            raise ProviderAuthError(f"{response.what} refused the OAuth app's credentials ({said}); "
                                    f"check {' and '.join(self.credential_envs)}")
        if error in _CODE_ERRORS:
            raise _CodeRejected(f"{response.what} refused the authorization code ({said}); codes are "
                                "single-use and expire within minutes: run the consent flow again")
        raise ProviderError(f"{response.what} answered {response.status} ({said})")

    def revoke_url(self) -> str:
        raise NotImplementedError

    def _revoke_form(self, value: str, hint: str) -> Tuple[Dict[str, str], Optional[Tuple[str, str]]]:
        raise NotImplementedError

    async def _revoke_one(self, value: str, hint: str) -> None:
        """POST one token to an RFC 7009 style revocation endpoint; 200 means revoked."""
        form, auth = self._revoke_form(value, hint)
        response = await self.request("POST", self.revoke_url(), data=form, auth=auth,
                                      ok=(200,), gone=(400,), credential_env=self.credential_envs)
        if response.status == 400:
            payload = response.json()
            if isinstance(payload, dict) and payload.get("error") in self.gone_errors:
                return
            self._raise_oauth_error(response, payload)


@register("github")
class GitHubOAuth(OAuthBackend):
    """A GitHub OAuth app's grant; release deletes the grant (or, ``revoke="token"``, the token)."""

    provider = "github"
    client_id_env = GITHUB_CLIENT_ID_ENV
    client_secret_env = GITHUB_CLIENT_SECRET_ENV
    options = OAuthBackend.options | {"revoke"}
    revoke_url_env = GITHUB_API_URL_ENV

    def revoke_url(self) -> str:
        """GitHub's REST API base: grants are deleted under ``/applications/{client_id}``."""
        return endpoint_base(GITHUB_API_URL_ENV, "/github", "https://api.github.com")

    def token_url(self) -> str:
        return endpoint_base(GITHUB_URL_ENV, "/github", "https://github.com") + "/login/oauth/access_token"

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        planned = super().plan(persona, **options)
        if planned.setdefault("revoke", "grant") not in ("grant", "token"):
            raise ConfigurationError(f"github: revoke= must be 'grant' (delete the app's whole grant "
                                     f"for the user) or 'token' (this token only), not {planned['revoke']!r}")
        return planned

    def _release_token(self, tokens: Mapping[str, Any], planned: Mapping[str, Any]) -> Dict[str, Any]:
        """GitHub revokes by access token alone; the client id names the app that issued it."""
        return self.stamp({"access_token": tokens["access_token"],
                           "client_id": self.credential(self.client_id_env),
                           "revoke": planned.get("revoke", "grant")})

    async def release(self, token: Dict[str, Any]) -> None:
        """``DELETE /applications/{client_id}/grant`` (or ``/token``); 404 is gone once confirmed.

        GitHub answers 404 to wrong Basic credentials as well as to a missing
        grant (its REST docs' troubleshooting page), so a 404 is proof only
        when the persona's own token no longer works: ``GET /user`` with it
        answers 401. 422 ("validation failed, or the endpoint has been
        spammed") is not taken for "gone" either: the record is kept.
        """
        self.check_origin(token, "grant")
        access_token = _checked_token(token, "access_token", self.name)
        client_id, kind = self.credential(self.client_id_env), token.get("revoke", "grant")
        if token.get("client_id") != client_id or kind not in ("grant", "token"):
            raise InvalidTokenError(f"github: the record's client_id or revoke= does not fit "
                                    f"{GITHUB_CLIENT_ID_ENV}'s app; not acted on")
        response = await self.request(
            "DELETE", f"{self.revoke_url()}/applications/{quote(client_id, safe='')}/{kind}",
            json={"access_token": access_token}, auth=(client_id, self.credential(self.client_secret_env)),
            headers=_GITHUB_HEADERS, ok=(204,), gone=(404,), credential_env=self.credential_envs)
        if response.status == 404:
            await self._confirm_revoked(access_token, response)

    async def _confirm_revoked(self, access_token: str, refusal: HttpResponse) -> None:
        """After a 404: gone only if the token itself is refused (``GET /user``: 401)."""
        headers = dict(_GITHUB_HEADERS, Authorization=f"Bearer {access_token}")
        check = await self.request("GET", f"{self.revoke_url()}/user", headers=headers, ok=(200,),
                                   gone=(401,), credential_env=self.credential_envs)
        if check.status == 200:
            raise ProviderAuthError(
                f"{refusal.what} answered 404, but the persona's token still works ({check.what}: 200): "
                f"GitHub answers 404 to wrong app credentials too; check {GITHUB_CLIENT_ID_ENV} and "
                f"{GITHUB_CLIENT_SECRET_ENV}. The grant is kept for the next sweep")


@register("google")
class GoogleOAuth(OAuthBackend):
    """A Google OAuth grant; release posts its tokens to ``/revoke`` (no client secret needed)."""

    provider = "google"
    client_id_env = GOOGLE_CLIENT_ID_ENV
    client_secret_env = GOOGLE_CLIENT_SECRET_ENV
    gone_errors = frozenset({"invalid_token"})
    revoke_url_env = GOOGLE_URL_ENV
    revoke_path = "/revoke"

    def account(self) -> str:
        """Google revokes a token for whoever holds it: no app account to compare."""
        return ""

    def _check_release_credentials(self) -> None:
        """Google's revocation endpoint takes the token alone: nothing to check."""

    def token_url(self) -> str:
        return endpoint_base(GOOGLE_URL_ENV, "/google", "https://oauth2.googleapis.com") + "/token"

    def revoke_url(self) -> str:
        return endpoint_base(GOOGLE_URL_ENV, "/google", "https://oauth2.googleapis.com") + self.revoke_path

    def _revoke_form(self, value: str, hint: str) -> Tuple[Dict[str, str], Optional[Tuple[str, str]]]:
        return {"token": value}, None


@register("oauth_rfc7009")
class RFC7009OAuth(OAuthBackend):
    """Any RFC 6749 server with an RFC 7009 revocation endpoint and HTTP Basic client auth."""

    provider = "oauth"
    client_id_env = OAUTH_CLIENT_ID_ENV
    client_secret_env = OAUTH_CLIENT_SECRET_ENV
    client_auth = "basic"
    revoke_url_env = OAUTH_REVOKE_URL_ENV

    def token_url(self) -> str:
        return endpoint_base(OAUTH_TOKEN_URL_ENV, "/oauth/token", "")

    def revoke_url(self) -> str:
        return endpoint_base(OAUTH_REVOKE_URL_ENV, "/oauth/revoke", "")

    def _revoke_form(self, value: str, hint: str) -> Tuple[Dict[str, str], Optional[Tuple[str, str]]]:
        client = (self.credential(self.client_id_env), self.credential(self.client_secret_env))
        return {"token": value, "token_type_hint": hint}, client

    def _check_release_credentials(self) -> None:
        super()._check_release_credentials()
        self.revoke_url()  # an unset revocation URL is a ConfigurationError now, not at release

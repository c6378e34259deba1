"""Users and API tokens of the app under test, made through its admin REST API.

The app is expected to speak a small, common shape (the sandbox's
``/example_app`` speaks it too):

======================================  ==========================================
``POST {users}`` ``{"username", "password", "email"?}``  201 ``{"id", "username", ...}``
``GET {users}?username=<name>``          200 ``[{"id", "username", ...}]``
``DELETE {users}/{id}``                   204; 404 or 410 means already gone
``POST {tokens}`` ``{"name"}``            201 ``{"id", "name", "token"}``
``GET {tokens}?name=<name>``              200 ``[{"id", "name", ...}]``
``DELETE {tokens}/{id}``                  204; 404 or 410 means already gone
======================================  ==========================================

Settings (environment):

``TAOS_PERSONA_APP_URL``
    Base URL of the app's API (under ``TAOS_PERSONA_SANDBOX``: the sandbox's ``/example_app``).
``TAOS_PERSONA_APP_TOKEN``
    Admin bearer token, sent as ``Authorization: Bearer ...``; read at acquire and release time.
``TAOS_PERSONA_APP_USERS_PATH``, ``TAOS_PERSONA_APP_TOKENS_PATH``
    Collection paths, default ``/users`` and ``/tokens``.

Names (username, token name) are chosen in ``plan`` from the persona's
prefix, before anything is created, so ``recover`` can look them up after
a crash. A list answer may also be wrapped as ``{"items"|"results"|"data"|
"users"|"tokens": [...]}``.
"""
from __future__ import annotations

import os
import secrets
from typing import Any, ClassVar, Dict, List, Optional, Sequence
from urllib.parse import parse_qsl, quote

from ..errors import ConfigurationError, ProviderError
from ..naming import Persona
from ..resources import ApiToken, UserAccount
from ._http import SANDBOX_ENV, HttpBackend
from ._discovered import Discovered, carries_prefix, provider_time
from .base import Lease, register

__all__ = ["RestUser", "RestToken", "APP_URL_ENV", "APP_TOKEN_ENV", "APP_USERS_PATH_ENV",
           "APP_TOKENS_PATH_ENV", "APP_USERS_LIST_ENV", "APP_TOKENS_LIST_ENV"]

APP_URL_ENV = "TAOS_PERSONA_APP_URL"
APP_TOKEN_ENV = "TAOS_PERSONA_APP_TOKEN"
APP_USERS_PATH_ENV = "TAOS_PERSONA_APP_USERS_PATH"
APP_TOKENS_PATH_ENV = "TAOS_PERSONA_APP_TOKENS_PATH"
APP_USERS_LIST_ENV = "TAOS_PERSONA_APP_USERS_LIST"
APP_TOKENS_LIST_ENV = "TAOS_PERSONA_APP_TOKENS_LIST"
_CREATED_KEYS = ("created_at", "created", "date_created", "createdAt")

_LIST_KEYS = ("items", "results", "data", "users", "tokens")


def _rows(payload: Any) -> List[Dict[str, Any]]:
    """The rows of a list answer: a JSON list, or one wrapped under a usual key."""
    if isinstance(payload, dict):
        payload = next((payload[k] for k in _LIST_KEYS if isinstance(payload.get(k), list)), None)
    if not isinstance(payload, list):
        raise ProviderError(f"expected a JSON list of rows (or one under {'/'.join(_LIST_KEYS)}), "
                            f"got {type(payload).__name__}")
    return [row for row in payload if isinstance(row, dict)]


class _AppResource(HttpBackend):
    """One collection of the app's admin API: create by name, delete by id, find by name."""

    provider = "example_app"
    base_url_env = APP_URL_ENV
    key_field: ClassVar[str] = ""
    """The client-chosen name field: ``username`` or ``name``."""
    path_env: ClassVar[str] = ""
    default_path: ClassVar[str] = ""

    @property
    def base_url(self) -> str:
        """``TAOS_PERSONA_APP_URL`` > the sandbox's ``/example_app``; there is no public default."""
        url = super().base_url
        if not url:
            raise ConfigurationError(f"{self.name} needs {APP_URL_ENV}, the base URL of the app "
                                     f"under test's API (or point {SANDBOX_ENV} at a sandbox)")
        return url

    @property
    def collection(self) -> str:
        path = os.environ.get(self.path_env, "").strip() or self.default_path
        return "/" + path.strip("/")

    def _admin(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.credential(APP_TOKEN_ENV)}",
                "Accept": "application/json"}

    def _name(self, persona: Persona, options: Dict[str, Any]) -> str:
        """The option's name, which must carry the persona's prefix, or a fresh unique one."""
        name = options.get(self.key_field) or persona.unique_name()
        if not str(name).startswith(persona.prefix):
            raise ConfigurationError(f"{self.name}: {self.key_field}={name!r} must start with "
                                     f"{persona.prefix!r} so that a crashed run's leftovers can be found")
        return str(name)

    async def _create(self, body: Dict[str, Any]) -> Dict[str, Any]:
        response = await self.request("POST", self.collection, json=body, headers=self._admin(),
                                      ok=(200, 201), credential_env=(APP_TOKEN_ENV,))
        created = response.json()
        if not isinstance(created, dict) or created.get("id") is None:
            raise ProviderError(f"{response.what} answered {response.status} without an id")
        return created

    async def release(self, token: Dict[str, Any]) -> None:
        """``DELETE {collection}/{id}``; 404 or 410 means it is already gone."""
        path = f"{self.collection}/{quote(str(token['id']), safe='')}"
        await self.request("DELETE", path, headers=self._admin(), ok=(200, 202, 204),
                           gone=(404, 410), credential_env=(APP_TOKEN_ENV,))

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """``GET {collection}?{key_field}=<name>``: the release token of the match, or None."""
        name = planned[self.key_field]
        response = await self.request("GET", self.collection, params={self.key_field: name},
                                      headers=self._admin(), ok=(200,), credential_env=(APP_TOKEN_ENV,))
        for row in _rows(response.json()):
            if row.get(self.key_field) == name and row.get("id") is not None:
                return {"id": row["id"], self.key_field: name}
        return None

    list_env: ClassVar[str] = ""
    """Env var naming the listing route for discovery (path and query, ``{prefix}`` filled in)."""

    async def discover(self, prefix: str) -> List[Discovered]:
        """``GET`` the listing route (default: the collection itself, unfiltered): rows whose
        name carries ``prefix``, with their ``created_at`` (or ``created``, ``date_created``)."""
        route = os.environ.get(self.list_env, "").strip() or self.collection
        path, _, query = route.replace("{prefix}", quote(prefix, safe="")).partition("?")
        response = await self.request("GET", "/" + path.strip("/"), params=dict(parse_qsl(query)) or None,
                                      headers=self._admin(), ok=(200,), credential_env=(APP_TOKEN_ENV,))
        found = []
        for row in _rows(response.json()):
            name = row.get(self.key_field)
            if carries_prefix(name, prefix) and row.get("id") is not None:
                created = next((row[k] for k in _CREATED_KEYS if row.get(k) is not None), None)
                found.append(Discovered({"id": row["id"], self.key_field: name}, name, str(name),
                                        provider_time(created)))
        return found


def _password() -> str:
    """A random password that also passes the usual upper/lower/digit/symbol rules."""
    return secrets.token_urlsafe(18) + "-Aa1"


@register("rest_user")
class RestUser(_AppResource):
    """A user of the app under test: ``POST /users``, released by ``DELETE /users/{id}``.

    Options: ``username`` (default: a fresh name under the persona's prefix) and
    ``email`` (e.g. a disposable mailbox's address). The password is made at
    acquire time and returned in the value only, never in the plan or the token.
    """

    key_field = "username"
    path_env = APP_USERS_PATH_ENV
    list_env = APP_USERS_LIST_ENV
    default_path = "/users"

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        _reject_unknown(self.name, options, ("username", "email"))
        planned: Dict[str, Any] = {"username": self._name(persona, options)}
        if options.get("email"):
            planned["email"] = str(options["email"])
        return planned

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        planned = self.plan(persona, **options)
        password = _password()
        created = await self._create(dict(planned, password=password))
        user = UserAccount(id=created["id"], username=created.get("username", planned["username"]),
                           password=password, email=created.get("email", planned.get("email")))
        return Lease(user, {"id": user.id, "username": user.username})


@register("rest_token")
class RestToken(_AppResource):
    """An API token of the app under test: ``POST /tokens``, released by ``DELETE /tokens/{id}``."""

    key_field = "name"
    path_env = APP_TOKENS_PATH_ENV
    list_env = APP_TOKENS_LIST_ENV
    default_path = "/tokens"

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        _reject_unknown(self.name, options, ("name",))
        return {"name": self._name(persona, options)}

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        planned = self.plan(persona, **options)
        created = await self._create(planned)
        if not created.get("token"):
            raise ProviderError(f"{self.name}: the app created token {created['id']!r} but sent no "
                                "'token' field; the sweep will delete it")
        value = ApiToken(id=created["id"], name=created.get("name", planned["name"]),
                         secret=created["token"])
        return Lease(value, {"id": value.id, "name": value.name})


def _reject_unknown(backend: str, options: Dict[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigurationError(f"{backend}: unknown option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(known)}")

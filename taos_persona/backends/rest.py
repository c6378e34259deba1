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
import re
import secrets
from typing import Any, ClassVar, Dict, List, Optional, Sequence
from urllib.parse import parse_qsl, quote

from ..errors import ConfigurationError, InvalidTokenError, ProviderError
from ..naming import Persona
from ..resources import ApiToken, UserAccount
from ._http import SANDBOX_ENV, HttpBackend, HttpResponse
from ._origin import Origin, account_of
from ._discovered import Discovered, carries_prefix, provider_time
from .base import Lease, register

__all__ = ["RestUser", "RestToken", "APP_URL_ENV", "APP_TOKEN_ENV", "APP_USERS_PATH_ENV",
           "APP_TOKENS_PATH_ENV", "APP_USERS_LIST_ENV", "APP_TOKENS_LIST_ENV"]

APP_URL_ENV = "TAOS_PERSONA_APP_URL"
APP_TOKEN_ENV = "TAOS_PERSONA_APP_TOKEN"  # noqa: S105 - the variable's name, not its value
APP_USERS_PATH_ENV = "TAOS_PERSONA_APP_USERS_PATH"
APP_TOKENS_PATH_ENV = "TAOS_PERSONA_APP_TOKENS_PATH"
APP_USERS_LIST_ENV = "TAOS_PERSONA_APP_USERS_LIST"
APP_TOKENS_LIST_ENV = "TAOS_PERSONA_APP_TOKENS_LIST"
_CREATED_KEYS = ("created_at", "created", "date_created", "createdAt")

_LIST_KEYS = ("items", "results", "data", "users", "tokens")
_ID_RE = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}\Z")
"""What a row id may look like in ``DELETE {collection}/{id}``: no ``/``, ``?``, ``#`` or ``%``."""
_NAME_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,128}\Z")


def _checked_id(value: Any, backend: str) -> str:
    """A row id that stays one path segment: not empty, ``.`` or ``..``; else InvalidTokenError."""
    text = str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or text in (".", "..") \
            or not _ID_RE.match(text):
        raise InvalidTokenError(f"{backend}: the record's id {text[:80]!r} is not a row id (one URL path "
                                "segment of letters, digits and _.:@+-); not acted on")
    return text


def _checked_name(record: Dict[str, Any], key: str, backend: str) -> str:
    name = record.get(key)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidTokenError(f"{backend}: the record's {key} {str(name)[:80]!r} is not a name we "
                                "make; not acted on")
    return name


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

    account_env = APP_TOKEN_ENV

    def account(self) -> str:
        """A keyed hash of the admin token: which admin, never the token."""
        return account_of(self.credential(APP_TOKEN_ENV))

    def origin(self) -> Origin:
        """The app's base URL and collection path, and the admin's account."""
        return Origin(self.base_url + self.collection, self.account(), self.base_url_env, self.account_env,
                      self.collection)

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

    async def _post(self, body: Dict[str, Any]) -> HttpResponse:
        """``POST {collection}``: 200/201 created, or 409 "that name exists"."""
        return await self.request("POST", self.collection, json=body, headers=self._admin(),
                                  ok=(200, 201), gone=(409,), credential_env=(APP_TOKEN_ENV,))

    def _created(self, response: HttpResponse) -> Dict[str, Any]:
        created = response.json()
        if not isinstance(created, dict) or created.get("id") is None:
            raise ProviderError(f"{response.what} answered {response.status} without an id")
        _checked_id(created["id"], self.name)
        return created

    async def _taken(self, response: HttpResponse, name: str) -> Dict[str, Any]:
        """After a 409 for our planned name: the row, which a create whose answer was lost made.

        The name carries this run's unique prefix, so a row of that name is ours; if
        none is found, the 409 meant something else and is an error.
        """
        row = await self._find(name)
        if row is None:
            raise ProviderError(f"{response.what} answered 409 for {self.key_field} {name!r}, but no "
                                f"row of that name is listed: {response.text[:200]!r}")
        return row

    async def _find(self, name: str) -> Optional[Dict[str, Any]]:
        """``GET {collection}?{key_field}=<name>``: the row of that name, or None."""
        response = await self.request("GET", self.collection, params={self.key_field: name},
                                      headers=self._admin(), ok=(200,), credential_env=(APP_TOKEN_ENV,))
        for row in _rows(response.json()):
            if row.get(self.key_field) == name and row.get("id") is not None:
                _checked_id(row["id"], self.name)
                return row
        return None

    async def release(self, token: Dict[str, Any]) -> None:
        """Look the row up by its name, then ``DELETE {collection}/{id}``; no row of that name (or a
        404 or 410) means it is already gone. A row of that name with another id is not ours
        to delete: :class:`InvalidTokenError`, the record is kept."""
        row_id = _checked_id(token.get("id"), self.name)
        name = _checked_name(token, self.key_field, self.name)
        self.check_origin(token, f"{self.key_field} {name!r} (id {row_id})")
        row = await self._find(name)
        if row is None:
            return
        if str(row["id"]) != row_id:
            raise InvalidTokenError(f"{self.name}: the row named {name!r} has id {row['id']!r}, not the "
                                    f"record's {row_id!r}; not deleted")
        await self._delete(row_id)

    async def _delete(self, row_id: str) -> None:
        await self.request("DELETE", f"{self.collection}/{quote(row_id, safe='')}", headers=self._admin(),
                           ok=(200, 202, 204), gone=(404, 410), credential_env=(APP_TOKEN_ENV,))

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The release token of the row named as planned, or None."""
        name = _checked_name(planned, self.key_field, self.name)
        self.check_origin(planned, f"{self.key_field} {name!r}")
        row = await self._find(name)
        return None if row is None else self.stamp({"id": row["id"], self.key_field: name})

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
    name_fields = ("username",)
    path_env = APP_USERS_PATH_ENV
    list_env = APP_USERS_LIST_ENV
    default_path = "/users"

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        _reject_unknown(self.name, options, ("username", "email"))
        planned: Dict[str, Any] = {"username": self._name(persona, options)}
        if options.get("email"):
            planned["email"] = str(options["email"])
        return self.stamp(planned)

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        """Create the user; a 409 for the planned name (a retried create) adopts it."""
        self.take_origin(options, "user")
        planned = self.plan(persona, **options)
        planned.pop("origin")
        password = _password()
        response = await self._post(dict(planned, password=password))
        # After a 409 the row is the one our lost first try made, with this same password.
        created = (self._created(response) if response.status != 409
                   else await self._taken(response, planned["username"]))
        user = UserAccount(id=created["id"], username=created.get("username", planned["username"]),
                           password=password, email=created.get("email", planned.get("email")))
        return Lease(user, self.stamp({"id": user.id, "username": user.username}))


@register("rest_token")
class RestToken(_AppResource):
    """An API token of the app under test: ``POST /tokens``, released by ``DELETE /tokens/{id}``."""

    key_field = "name"
    name_fields = ("name",)
    path_env = APP_TOKENS_PATH_ENV
    list_env = APP_TOKENS_LIST_ENV
    default_path = "/tokens"

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        _reject_unknown(self.name, options, ("name",))
        return self.stamp({"name": self._name(persona, options)})

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        """Create the token; a 409 for the planned name (a retried create) deletes the orphan,
        whose secret was in the lost answer, and creates it again."""
        self.take_origin(options, "token")
        planned = self.plan(persona, **options)
        planned.pop("origin")
        response = await self._post(planned)
        if response.status == 409:
            await self._delete(str((await self._taken(response, planned["name"]))["id"]))
            response = await self._post(planned)
        if response.status == 409:
            raise ProviderError(f"{response.what} answered 409 again after its orphan was deleted")
        created = self._created(response)
        if not created.get("token"):
            raise ProviderError(f"{self.name}: the app created token {created['id']!r} but sent no "
                                "'token' field; the sweep will delete it")
        value = ApiToken(id=created["id"], name=created.get("name", planned["name"]),
                         secret=created["token"])
        return Lease(value, self.stamp({"id": value.id, "name": value.name}))


def _reject_unknown(backend: str, options: Dict[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigurationError(f"{backend}: unknown option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(known)}")

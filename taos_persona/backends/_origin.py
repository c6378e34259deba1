"""Where a resource lives: the endpoint and the account it was created in.

A resource is not only its id: ``user 42`` of the sandbox on port A is not
``user 42`` of the sandbox on port B, nor of the real provider. So every
release token (and every intent) records its :class:`Origin`, and release and
recover act only where today's configuration points at the same endpoint with
the same account. Anything else raises :class:`EndpointMismatchError`, which
the release path turns into "kept", with the fix in the message. A record is
data, not authority: credentials are never sent to a recorded URL that
today's configuration does not name.

The account is never a secret: an id the provider shows anyway (Twilio's
account SID) or a short keyed hash (:func:`account_of`) of an API key or an
OAuth client id, which tells them apart without revealing them.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Dict, Mapping

from ..errors import EndpointMismatchError

__all__ = ["Origin", "ORIGIN_FIELD", "account_of", "check_origin", "without_userinfo"]

ORIGIN_FIELD = "origin"
"""The key under which a token or an intent records its :class:`Origin`."""
_ACCOUNT_KEY = b"taos-persona-account"
_ACCOUNT_HEX = 12


def account_of(secret: str) -> str:
    """A non-secret name of the account a key opens: 12 hex of HMAC-SHA256(key=const, msg=secret).

    The same key always gives the same name, so two records can be compared;
    12 hex digits (48 bits) tell keys apart and reveal nothing usable.
    """
    digest = hmac.new(_ACCOUNT_KEY, secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return "key:" + digest[:_ACCOUNT_HEX]


@dataclass(frozen=True)
class Origin:
    """Where today's configuration creates resources: ``endpoint`` (URL or database) and ``account``.

    ``endpoint_env`` and ``account_env`` name the settings that choose them, for
    the fix a mismatch message gives; ``path`` is the tail of ``endpoint`` that
    ``endpoint_env`` does not set (a collection path). None of the three is compared.
    """

    endpoint: str
    account: str = ""
    endpoint_env: str = ""
    account_env: str = ""
    path: str = ""

    def __post_init__(self) -> None:
        # A base URL may carry ``user:password@``: never into a record, a message or a comparison.
        object.__setattr__(self, "endpoint", without_userinfo(self.endpoint))

    def to_json(self) -> Dict[str, str]:
        return {"endpoint": self.endpoint, "account": self.account}

    def stamp(self, mapping: Mapping[str, Any]) -> Dict[str, Any]:
        """A copy of ``mapping`` (a token or an intent) that records this origin."""
        return dict(mapping, **{ORIGIN_FIELD: self.to_json()})


def without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part before its host."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def _same_endpoint(recorded: str, today: str) -> bool:
    """Equal URLs up to a trailing slash and the case of scheme and host."""
    def norm(url: str) -> str:
        url = url.rstrip("/")
        scheme, sep, rest = url.partition("://")
        if not sep:
            return url
        host, slash, path = rest.partition("/")
        return f"{scheme.lower()}://{host.lower()}{slash}{path}"

    return norm(recorded) == norm(today)


def check_origin(recorded: Mapping[str, Any], today: Origin, what: str) -> None:
    """Raise :class:`EndpointMismatchError` unless ``recorded`` names ``today``'s endpoint and account.

    ``recorded`` is a token or an intent; ``what`` names the resource in the
    message (``"mailtm mailbox a@b.test"``). A record without an origin (written by a
    taos-persona before 0.2) is kept too: where it lives cannot be known.
    """
    origin = recorded.get(ORIGIN_FIELD)
    if not isinstance(origin, dict) or not isinstance(origin.get("endpoint"), str):
        raise EndpointMismatchError(
            f"this {what} was recorded without the endpoint it was created at (an older "
            f"taos-persona, or an edited record); check at {today.endpoint} and at the provider by "
            "hand, then remove the entry from the registry")
    endpoint, account = origin["endpoint"], str(origin.get("account") or "")
    if not _same_endpoint(endpoint, today.endpoint):
        raise EndpointMismatchError(
            f"this {what} was created at {endpoint}, but today's configuration points at "
            f"{today.endpoint}; {_endpoint_fix(endpoint, today)} and run the sweep again")
    if account != today.account:
        raise EndpointMismatchError(
            f"this {what} was created at {endpoint} in account {account or '(none)'}, but today's "
            f"credentials open account {today.account or '(none)'}; set "
            f"{today.account_env or 'the credentials'} to that account's and run the sweep again")


def _endpoint_fix(endpoint: str, today: Origin) -> str:
    """The setting that points a backend at ``endpoint``: the sandbox root, or the backend's own URL."""
    from ._http import SANDBOX_ENV

    base = endpoint[:-len(today.path)] if today.path and endpoint.endswith(today.path) else endpoint
    own = f"{today.endpoint_env}={base}" if today.endpoint_env else ""
    scheme, _, rest = endpoint.partition("://")
    host = rest.partition("/")[0]
    if host.startswith(("127.0.0.1", "localhost", "[::1]")):  # a sandbox: its root serves them all
        return f"set {SANDBOX_ENV}={scheme}://{host}" + (f" (or {own})" if own else "")
    return f"set {own}" if own else "point the backend's base URL setting there"

"""HTTP plumbing shared by the provider backends: one session, retries, redaction.

Every HTTP backend subclasses :class:`HttpBackend` and calls :meth:`request`.
That one method decides what is transient (5xx, 429, timeouts, refused or
dropped connections: retried with capped, jittered backoff, then
:class:`RetryableProviderError`), what is a credential problem (401/403:
:class:`ProviderAuthError` naming the env var to fix) and what is final
(anything else unexpected: :class:`ProviderError`). Messages name the method
and the URL path; secret query parameters are masked, and no header, password
or secret value ever reaches a message.

aiohttp is imported inside the methods that make requests, so importing a
backend module costs nothing and works without aiohttp installed.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import importlib
import json as _json
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, ClassVar, Collection, Dict, List, Mapping,
                    Optional, Sequence, Tuple)
from urllib.parse import parse_qsl, urlencode, urlsplit

from .._redact import scrub
from ..errors import ConfigurationError, ProviderAuthError, ProviderError, RetryableProviderError
from ._origin import Origin
from .base import Backend, note_request

if TYPE_CHECKING:  # pragma: no cover
    import aiohttp

__all__ = ["HttpBackend", "HttpResponse", "SANDBOX_ENV", "RETRIES_ENV", "BACKOFF_ENV",
           "TIMEOUT_ENV", "redact_url", "retry_after_seconds", "retry_delay"]

SANDBOX_ENV = "TAOS_PERSONA_SANDBOX"
RETRIES_ENV = "TAOS_PERSONA_HTTP_RETRIES"
BACKOFF_ENV = "TAOS_PERSONA_HTTP_BACKOFF"
TIMEOUT_ENV = "TAOS_PERSONA_HTTP_TIMEOUT"

DEFAULT_TIMEOUT = 30.0
"""Seconds one attempt may take, whole (``TAOS_PERSONA_HTTP_TIMEOUT``)."""
DEFAULT_RETRIES = 4
"""Retries after the first attempt of a transient failure (``TAOS_PERSONA_HTTP_RETRIES``)."""
DEFAULT_BACKOFF = 0.5
"""Base of the exponential backoff between attempts, in seconds (``TAOS_PERSONA_HTTP_BACKOFF``)."""
_MAX_BACKOFF = 30.0
"""No single exponential backoff sleep is longer than this many seconds."""
_MAX_RETRY_AFTER = 60.0
"""A 429's Retry-After is honoured up to this many seconds, never more."""
_EXCERPT = 200
REFUSALS = frozenset({400, 401, 403, 404, 405, 422})
"""Statuses by which a provider definitively refuses a request: it processed nothing (404 and
405 on a create: no such route, a wrong base URL)."""

_SECRET_NAME = re.compile(
    r"(?i)(api_?key|^key$|token|secret|password|passwd|signature|sig$|auth|mailsackey|credential)")
"""Parameter names whose values are masked in messages (``api_key``, ``_mailsacKey``, ...)."""

_NEXT_SLOT: Dict[str, float] = {}
"""provider -> monotonic time of its next free request slot (the client-side throttle)."""


@dataclass(frozen=True)
class HttpResponse:
    """A finished response, read whole: ``status``, ``headers``, ``text`` and :meth:`json`."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    text: str = field(repr=False)
    what: str = ""
    """``METHOD /redacted/path``, for messages about this response."""

    def json(self) -> Any:
        """The body parsed as JSON; a body that is not JSON is a :class:`ProviderError`."""
        try:
            return _json.loads(self.text) if self.text else None
        except ValueError:
            raise ProviderError(f"{self.what} answered {self.status} with a body that is "
                                f"not JSON: {_excerpt(self.text)!r}") from None

    def field(self, key: str, kind: type = str) -> Any:
        """``json()[key]`` if the body is an object holding a ``kind`` there, else ProviderError.

        A malformed answer is our error naming the request, never a bare KeyError or TypeError.
        """
        body = self.json()
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ProviderError(f"{self.what} answered {self.status} without {kind.__name__} field "
                                f"{key!r}: {_excerpt(self.text)!r}")
        return value

    def rows(self, key: str) -> List[Dict[str, Any]]:
        """The JSON objects in the list ``json()[key]``; a malformed answer is a ProviderError."""
        return [row for row in self.field(key, list) if isinstance(row, dict)]


def _env_number(name: str, default: float, kind: type = float) -> Any:
    """A non-negative number from env var ``name``, or ``default`` when it is unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(f"{name}={raw!r} is not a non-negative "
                                 f"{'integer' if kind is int else 'number'}; unset it or fix it")
    return value


def missing_hint() -> str:
    """How to supply a missing setting: a real value, or the sandbox's, if one is in use.

    Never tells the user to set :data:`SANDBOX_ENV` when it is set already.
    """
    sandbox = os.environ.get(SANDBOX_ENV, "").strip()
    if sandbox:
        return (f"unset or empty; {SANDBOX_ENV} is set ({sandbox}), but a sandbox's credentials "
                "come from the environment too: set it to the sandbox's value "
                "(taos_persona.sandbox.sandbox_env() lists them)")
    return f"unset or empty; set it (or point {SANDBOX_ENV} at a sandbox)"


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The path and query of ``url``, with the values of secret-named parameters masked."""
    parts = urlsplit(url)
    pairs = [(k, "***" if _is_secret_name(k) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return parts.path + ("?" + urlencode(pairs, safe="*") if pairs else "")


def _host(url: str) -> str:
    """``scheme://host:port`` of ``url``, without any user:password part."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if parts.scheme else host


def wait_settings() -> str:
    """The settings that govern how long a request may take, with their current values."""
    return (f"{TIMEOUT_ENV}={_env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT):g}s per attempt, "
            f"{RETRIES_ENV}={_env_number(RETRIES_ENV, DEFAULT_RETRIES, int)}, "
            f"{BACKOFF_ENV}={_env_number(BACKOFF_ENV, DEFAULT_BACKOFF):g}s")


def _with_query(url: str, params: Optional[Mapping[str, Any]]) -> str:
    """``url`` with ``params`` appended, as the request will send it (for messages only)."""
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode([(k, str(v)) for k, v in params.items()])


def _basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header value (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _excerpt(text: str) -> str:
    """A short, single-line excerpt of a response body."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "..."


def _secret_values(params: Optional[Mapping[str, Any]], data: Any, json: Any,
                   headers: Optional[Mapping[str, str]], auth: Optional[Tuple[str, str]]) -> List[str]:
    """Every value of this request that must never appear in a message."""
    values: List[str] = list((headers or {}).values())
    if auth is not None:
        values.extend(auth)
    for mapping in (params, data, json):
        if isinstance(mapping, Mapping):
            values.extend(str(v) for k, v in mapping.items() if _is_secret_name(str(k)))
    return [v for v in values if v and len(str(v)) >= 4]


def retry_after_seconds(value: Optional[str], cap: float = _MAX_RETRY_AFTER) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


def retry_delay(attempt: int, base: float, cap: float = _MAX_BACKOFF) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap, base * (2 ** attempt)))


_aiohttp: Any = None
"""The aiohttp module once fully imported (``sys.modules`` can hold a half-imported one)."""


async def _import_aiohttp() -> Any:
    """aiohttp, imported on a worker thread the first time: its import takes a few hundred
    milliseconds, which would otherwise stall the test's event loop (asyncio debug mode,
    on in IsolatedAsyncioTestCase, reports it as a slow callback). A second caller while
    the first import runs waits on Python's per-module import lock in its own thread."""
    global _aiohttp
    if _aiohttp is None:
        _aiohttp = await asyncio.get_running_loop().run_in_executor(None, importlib.import_module, "aiohttp")
    return _aiohttp


class _SessionSlot:
    """One aiohttp session, made on first use and again in a new event loop.

    A session belongs to the loop it was made in; a slot reused from another
    loop (an ``atexit`` release, say) makes a fresh one.
    """

    def __init__(self) -> None:
        self._session: Optional["aiohttp.ClientSession"] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def session(self) -> "aiohttp.ClientSession":
        aiohttp = await _import_aiohttp()
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            timeout = aiohttp.ClientTimeout(total=_env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT))
            self._session, self._loop = aiohttp.ClientSession(timeout=timeout), loop
            # aiohttp >= 3.10 silently resends a GET/PUT/DELETE once when a pooled connection
            # drops: that hides an ambiguous attempt from our own retry rules (a second create
            # for a backend that cannot recover). No public switch exists; every retry is ours.
            if hasattr(self._session, "_retry_connection"):
                setattr(self._session, "_retry_connection", False)  # noqa: B010
        return self._session

    async def aclose(self) -> None:
        """Close the session if it is open and of this loop; safe to call twice."""
        session, loop = self._session, self._loop
        self._session = self._loop = None
        if session is not None and not session.closed and loop is asyncio.get_running_loop():
            await session.close()


class _Transient(Exception):
    """Internal: one attempt failed in a way worth retrying.

    ``processed``: the provider may have processed it (False only when it certainly did
    not: a connection that was never made, a 429).
    """

    def __init__(self, reason: str, wait: Optional[float] = None, processed: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.processed = processed


def _client_failure(exc: Exception, what: str) -> Exception:
    """Our error for an aiohttp failure, naming its type and never its URL or arguments.

    Refused, reset or dropped connections, truncated or malformed answers are
    worth retrying (a proxy or a provider having a bad moment); a URL aiohttp
    cannot use is a setting to fix.
    """
    aiohttp = _aiohttp
    kind = type(exc).__name__
    if aiohttp is not None and isinstance(exc, aiohttp.InvalidURL) or isinstance(exc, ValueError):
        return ConfigurationError(f"{what}: the URL is not usable ({kind}); check the backend's "
                                  f"base URL setting or {SANDBOX_ENV}")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientConnectorError):
        return _Transient(f"connection failed ({kind})", processed=False)  # never connected: nothing sent
    if aiohttp is not None and isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return _Transient(f"connection failed ({kind})")
    detail = getattr(exc, "message", "")  # a parser's own words, e.g. "Invalid status line"
    detail = f": {_excerpt(str(detail))}" if isinstance(detail, str) and detail else ""
    return _Transient(f"malformed answer ({kind}{detail})")


def _note_answer(status: int, ok: Collection[int], gone: Collection[int]) -> None:
    """Tell the acquire's watch what an answer means: a refusal or a 429 processed nothing."""
    expected = status in ok or status in gone
    refused = not expected and status in REFUSALS
    note_request(touched=expected or not (refused or status == 429 or status >= 500),
                 ambiguous=not expected and status >= 500, refused=refused)


class HttpBackend(Backend):
    """A backend that talks HTTP to one provider through one lazily made aiohttp session."""

    provider: ClassVar[str] = ""
    """Short provider name; the sandbox serves this provider under ``/<provider>``."""
    default_base_url: ClassVar[str] = ""
    """The real provider's base URL; request paths are relative to it."""
    base_url_env: ClassVar[str] = ""
    """Env var that overrides the base URL outright (e.g. ``TAOS_PERSONA_MAILTM_URL``)."""
    max_rate: ClassVar[float] = 0
    """Client-side throttle in requests per second for this provider (0 = none)."""
    account_env: ClassVar[str] = ""
    """The env var that chooses the account (named in a mismatch's fix)."""

    # A class-level default, so that a subclass with its own __init__ needs no super() call.
    _own_session: Optional["_SessionSlot"] = None

    @property
    def base_url(self) -> str:
        """Explicit override > ``$TAOS_PERSONA_SANDBOX/<provider>`` > the real provider."""
        override = os.environ.get(self.base_url_env, "").strip() if self.base_url_env else ""
        if override:
            return override.rstrip("/")
        sandbox = os.environ.get(SANDBOX_ENV, "").strip()
        if sandbox:
            return f"{sandbox.rstrip('/')}/{self.provider}"
        return self.default_base_url.rstrip("/")

    def credential(self, env_name: str) -> str:
        """The value of env var ``env_name``; a missing or empty one is a ConfigurationError."""
        value = os.environ.get(env_name, "").strip()
        if not value:
            raise ConfigurationError(f"{self.provider or type(self).__name__} needs the environment "
                                     f"variable {env_name}, which is {missing_hint()}")
        return value

    def account(self) -> str:
        """A non-secret name of the account today's credentials open ("" if the provider has none).

        Key-based providers return :func:`account_of` their key; see :mod:`._origin`.
        """
        return ""

    def origin(self) -> Optional[Origin]:
        """Today's base URL and account: where this backend creates, and may release."""
        return Origin(self.base_url, self.account(), self.base_url_env, self.account_env)

    async def _session(self) -> "aiohttp.ClientSession":
        """The owner's shared session (one per fixture or sweep), else this instance's own."""
        if self.shared is not None:
            found = self.shared.setdefault("aiohttp.session", _SessionSlot())
            slot = found if isinstance(found, _SessionSlot) else _SessionSlot()
        else:
            slot = self._own_session = self._own_session or _SessionSlot()
        return await slot.session()

    async def aclose(self) -> None:
        """Close this instance's own session, if it made one (a shared one is the owner's)."""
        slot, self._own_session = self._own_session, None
        if slot is not None:
            await slot.aclose()

    def max_request_window(self) -> float:
        """Timeout times attempts, plus every backoff in between: a create sent now lands by then."""
        retries = _env_number(RETRIES_ENV, 4, int)
        backoff = _env_number(BACKOFF_ENV, 0.5)
        waits = sum(min(_MAX_BACKOFF, backoff * (2 ** n)) for n in range(retries))
        return float(_env_number(TIMEOUT_ENV, 30.0) * (retries + 1) + waits)

    @property
    def rate(self) -> float:
        """Requests per second: ``TAOS_PERSONA_<PROVIDER>_MAX_RATE`` if set, else ``max_rate``."""
        return float(_env_number(f"TAOS_PERSONA_{self.provider.upper()}_MAX_RATE", self.max_rate))

    async def _throttle(self) -> None:
        """Wait for this provider's next request slot when a rate is set.

        Slots are shared by every instance in the process: a provider's limit
        is per client IP, not per backend object.
        """
        rate = self.rate
        if rate <= 0:
            return
        now = time.monotonic()
        # No await between reading and writing the slot: atomic within one event loop.
        slot = max(now, _NEXT_SLOT.get(self.provider, 0.0))
        _NEXT_SLOT[self.provider] = slot + 1.0 / rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def request(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
                      data: Any = None, json: Any = None, headers: Optional[Mapping[str, str]] = None,
                      auth: Optional[Tuple[str, str]] = None, ok: Collection[int] = (200, 201, 204),
                      gone: Collection[int] = (), credential_env: Sequence[str] = (),
                      creates: bool = False) -> HttpResponse:
        """Send one request, retrying transient failures; return it if its status is ok or gone.

        ``creates``: this request creates a resource. If the backend cannot ``recover`` one, a
        failure after which the provider may have processed it is not retried (a retry could
        make a second, unrecorded resource): :class:`ProviderError` saying so, at once.
        """
        method = method.upper()
        url = self.base_url + path
        what = (f"{self.provider or type(self).__name__}: {method} "
                f"{_host(url)}{redact_url(_with_query(url, params))}")
        secrets = _secret_values(params, data, json, headers, auth)
        retries = _env_number(RETRIES_ENV, DEFAULT_RETRIES, int)
        backoff = _env_number(BACKOFF_ENV, DEFAULT_BACKOFF)
        if auth is not None:
            headers = dict(headers or {}, Authorization=_basic_auth(*auth))
        kwargs = dict(params=params, data=data, json=json, headers=headers)
        attempt = 0
        while True:
            try:
                response = await self._attempt(method, url, what, kwargs)
                _note_answer(response.status, ok, gone)
                return self._judge(response, ok, gone, credential_env, secrets)
            except _Transient as failure:
                transient = failure
            # Outside the except block: the error we raise keeps no __context__ at all.
            note_request(touched=False, ambiguous=transient.processed)
            if transient.processed and creates and not self.can_recover():
                raise ProviderError(
                    f"{what} may have been processed ({scrub(transient.reason, secrets)}), and "
                    f"{self.provider or type(self).__name__} cannot look up what it created, so it is not "
                    "retried: its intent stays on record until the provider ends it")
            if attempt >= retries:
                raise RetryableProviderError(
                    f"{what} kept failing after {attempt + 1} attempts; last: "
                    f"{scrub(transient.reason, secrets)}; the next sweep will try again "
                    f"(the wait is set by {wait_settings()})")
            wait = transient.wait if transient.wait is not None else retry_delay(attempt, backoff)
            attempt += 1
            await asyncio.sleep(wait)

    async def _attempt(self, method: str, url: str, what: str, kwargs: Dict[str, Any]) -> HttpResponse:
        """One try: the whole response, or :class:`_Transient` for a network-level failure.

        No aiohttp exception escapes: its text can hold the whole URL, query
        secrets included. The failure is raised outside the ``except`` block,
        so not even ``__context__`` keeps the original.
        """
        session = await self._session()
        await self._throttle()
        try:
            # Never follow a redirect: aiohttp would resend our custom credential headers
            # (Mailsac-Key, ...) to whatever host the Location names. _judge refuses a 3xx.
            async with session.request(method, url, allow_redirects=False, **kwargs) as raw:
                text = await raw.text(errors="replace")
                return HttpResponse(raw.status, raw.headers.copy(), text, what)
        except asyncio.TimeoutError:
            failure: Exception = _Transient("timed out")
        except Exception as exc:  # noqa: BLE001 - every client error is rewritten without the URL
            failure = _client_failure(exc, what)
        raise failure

    def _judge(self, response: HttpResponse, ok: Collection[int], gone: Collection[int],
               credential_env: Sequence[str], secrets: List[str]) -> HttpResponse:
        """Return the response, or raise the error its status means."""
        status, what = response.status, response.what
        if status in ok or status in gone:
            return response
        body = scrub(_excerpt(response.text), secrets)
        if 300 <= status < 400:
            raise ProviderError(f"{what} answered {status}, a redirect to "
                                f"{_host(response.headers.get('Location', '')) or 'a path'}; not "
                                "followed, so no credential leaves the configured host: point the "
                                "backend's base URL setting at the final address")
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            raise _Transient(f"429 Too Many Requests: {body!r}", wait, processed=False)
        if status >= 500:
            raise _Transient(f"{status}: {body!r}")
        if status in (401, 403):
            fix = (f"check {' and '.join(credential_env)}" if credential_env
                   else "check the provider's credentials")
            raise ProviderAuthError(f"{what} was refused with {status}: {body!r}; {fix}")
        hint = "; check the backend's base URL setting" if status in (404, 405) else ""
        raise ProviderError(f"{what} answered {status}: {body!r}{hint}")

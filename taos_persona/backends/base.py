"""The small interface every backend implements, and the plain dict that names them.

The fixture and the sweep know nothing of providers: they call ``plan``,
``acquire``, ``release`` and ``recover`` and store what comes back. A backend
is built with no arguments; its configuration (base URLs, credentials) comes
from the environment, at acquire time and again at release time, so that
nothing secret is ever written to the registry.
"""
from __future__ import annotations

import contextlib
import importlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import (Any, Callable, ClassVar, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple,
                    Type, TypeVar)

from ..errors import UnknownBackendError
from ..naming import Persona, name_prefix
from ..outcomes import public_identity
from ._discovered import Discovered
from ._origin import ORIGIN_FIELD, Origin, check_origin

__all__ = ["Backend", "Lease", "Shared", "BACKENDS", "register", "backend_class", "class_path", "load_class",
           "Discovered", "CreateWatch", "watch_create", "note_request", "name_mismatch"]


@dataclass
class CreateWatch:
    """What the requests of one ``acquire`` told about the provider's side.

    ``touched``: some request may have changed something there (it was answered, or
    failed after it was sent). ``ambiguous``: one failed after it was sent (a timeout, a
    dropped answer, a 5xx), so it may have been processed. ``refused``: the provider
    definitively refused one (400/401/403/422). ``refused and not touched`` proves
    nothing was created.
    """

    touched: bool = False
    ambiguous: bool = False
    refused: bool = False

    def nothing_created(self) -> bool:
        return self.refused and not self.touched


_WATCH: "ContextVar[Optional[CreateWatch]]" = ContextVar("taos_persona_create_watch", default=None)


@contextlib.contextmanager
def watch_create() -> Iterator[CreateWatch]:
    """Watch the requests made inside the block (same task, or tasks it starts)."""
    watch = CreateWatch()
    reset = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(reset)


def note_request(*, touched: bool, ambiguous: bool = False, refused: bool = False) -> None:
    """Tell the current watch (if any) about one attempt (see :class:`CreateWatch`)."""
    watch = _WATCH.get()
    if watch is not None:
        watch.touched |= touched or ambiguous
        watch.ambiguous |= ambiguous
        watch.refused |= refused


@dataclass(frozen=True)
class Lease:
    """What ``acquire`` returns: ``value`` for the test, ``token`` for ``release``.

    ``token`` must be JSON-able and enough, on its own, to release the
    resource from another process; it must not hold provider keys. It may hold
    the resource's own credential where release needs it (a mail.tm mailbox's
    password, an OAuth grant's token), so it never shows in ``repr()``.
    """

    value: Any
    token: Dict[str, Any] = field(repr=False)


class Shared(Dict[str, Any]):
    """What the backends of one fixture (or one sweep) share, such as one HTTP session.

    The owner attaches it to every backend it makes and closes it on exit;
    each value that has an ``aclose()`` coroutine is closed then.
    """

    async def aclose(self) -> None:
        """Close every shared value; safe to call twice."""
        values = list(self.values())
        self.clear()
        for value in values:
            closer = getattr(value, "aclose", None)
            if closer is not None:
                await closer()


class Backend:
    """Base class of every backend. Subclasses implement ``acquire`` and ``release``.

    ``plan`` and ``recover`` are optional. A backend that implements both
    (client-chosen names, looked up after a crash) closes the window between
    the provider's create and our record of it.
    """

    name: ClassVar[str] = ""
    max_lifetime: ClassVar[Optional[float]] = None
    """Seconds after which the provider itself ends whatever this backend created, if it
    does. The sweep then drops an intent it cannot recover once it is that old."""
    recover_is_final: ClassVar[bool] = False
    """True when ``recover`` returning None is final even while a create may be in flight (it
    replays the create, like an OAuth code exchange, so a late first create leaves nothing):
    the sweep then drops the intent at once instead of waiting out its deadline."""
    shared: Optional[Shared] = None
    """Set by the owner (fixture or sweep) through :meth:`attach`; None when used alone."""

    def attach(self, shared: Shared) -> "Backend":
        """Share the owner's connections (one HTTP session per fixture); returns self."""
        self.shared = shared
        return self

    async def acquire(self, persona: Persona, **options: Any) -> Lease:
        raise NotImplementedError(f"{type(self).__name__}.acquire")

    async def release(self, token: Dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__}.release")

    def plan(self, persona: Persona, **options: Any) -> Dict[str, Any]:
        """Turn options into concrete ones (names chosen here) before anything is created."""
        return dict(options)

    async def recover(self, planned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Find what a crash after ``acquire(**planned)`` may have created.

        Return its release token, or ``None`` if nothing was created. The
        default cannot know, and says so by raising ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot recover a half-made resource")

    def identity(self, data: Dict[str, Any]) -> Optional[str]:
        """A resource's public identity (address, number, username, provider id) from its token or
        plan, for operators' reports; never a secret. Override where the default keys mislead."""
        return public_identity(data)

    name_fields: ClassVar[Tuple[str, ...]] = ()
    """Token or plan fields that hold the provider-side name ``plan`` chose, which always carries
    the run (``<prefix>-<run id>-...``; of an address, its local part). Empty: names tell nothing."""

    def resource_name(self, data: Mapping[str, Any]) -> Optional[str]:
        """The run-carrying name in a token or plan (see :attr:`name_fields`), or None."""
        for key in self.name_fields:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value.partition("@")[0]
        return None

    def foreign_to(self, data: Mapping[str, Any], run_id: str) -> Optional[str]:
        """Why a resource (token or plan) is not run ``run_id``'s own, or None when it may be.

        Only names tell: a backend without :meth:`resource_name` cannot say, and says None.
        A record copied under another run id, or crafted, then names another run's resource.
        """
        name = self.resource_name(data)
        if name is None:
            return None
        return name_mismatch(name, run_id)

    def origin(self) -> Optional[Origin]:
        """Where today's configuration creates this backend's resources (endpoint, account).

        ``None`` (the default) means there is nothing to compare: tokens then carry no origin.
        Backends that talk to a provider return one; it may raise ConfigurationError when a
        setting it needs is missing, which keeps a record rather than guessing.
        """
        return None

    def stamp(self, mapping: Mapping[str, Any]) -> Dict[str, Any]:
        """``mapping`` (a token or an intent) with today's origin recorded in it."""
        origin = self.origin()
        return origin.stamp(mapping) if origin is not None else dict(mapping)

    def check_origin(self, recorded: Mapping[str, Any], what: str) -> None:
        """Refuse (:class:`EndpointMismatchError`) a token or intent made elsewhere than today's origin."""
        origin = self.origin()
        if origin is not None:
            check_origin(recorded, origin, f"{self.name or type(self).__name__} {what}".rstrip())

    def take_origin(self, options: MutableMapping[str, Any], what: str = "resource") -> None:
        """Remove the origin ``plan`` recorded from ``options``; check it still holds (acquire)."""
        recorded = options.pop(ORIGIN_FIELD, None)
        if recorded is not None:
            self.check_origin({ORIGIN_FIELD: recorded}, what)

    def max_request_window(self) -> float:
        """Seconds from now within which a create sent now could still land at the provider
        (its timeout times its attempts); the sweep keeps an unfound intent that long."""
        return 0.0

    @classmethod
    def can_recover(cls) -> bool:
        return cls.recover is not Backend.recover

    async def aclose(self) -> None:
        """Close connections; safe to call twice."""

    async def discover(self, prefix: str) -> List[Discovered]:
        """What the provider holds under the name prefix ``prefix`` (``"taos"``), for the
        discovery sweep (issue 10): names for which ``carries_prefix(name, prefix)`` holds.
        The default cannot list, and says so by raising ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list what the provider holds")

    @classmethod
    def can_discover(cls) -> bool:
        return cls.discover is not Backend.discover


BACKENDS: Dict[str, Type[Backend]] = {}
"""Name -> backend class. Fill it with :func:`register`."""

B = TypeVar("B", bound=Type[Backend])


def _name_key(text: str) -> str:
    """Names and run ids compared alike: lower case, ``_`` as ``-`` (sql names use ``_``)."""
    return text.lower().replace("_", "-")


def name_mismatch(name: str, run_id: str) -> Optional[str]:
    """None if ``name`` is ``<prefix>-<run_id>``, or that followed by a character that cannot
    continue a run id (``-``, ``_``, ``@``, ...; any case); else what it names instead, for the
    report: ``named for run X``. So run ``r1`` never claims the names of run ``r12``."""
    own = _name_key(f"{name_prefix()}-{run_id}")
    key = _name_key(name)
    if key == own or key.startswith(own) and not key[len(own)].isalnum():
        return None
    prefix = _name_key(name_prefix()) + "-"
    if not key.startswith(prefix):
        return (f"named {name!r}, which carries no run of ours (or was made under another "
                f"TAOS_PERSONA_PREFIX than today's {name_prefix()!r})")
    other = key[len(prefix):].rpartition("-")[0] or key[len(prefix):]
    return f"named for run {other}, not this record's run {run_id}"


def register(name: str) -> Callable[[B], B]:
    """Class decorator: put the class into ``BACKENDS`` under ``name`` and return it."""

    def decorate(cls: B) -> B:
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return decorate


def backend_class(name: str) -> Type[Backend]:
    """Look up a backend by name; an unknown one lists the known ones.

    A registered name costs a dict lookup; a built-in one imports only the module that
    defines it; only an unknown name imports them all, to list them.
    """
    from . import load_builtin, load_builtin_for

    if name not in BACKENDS:
        load_builtin_for(name)
    if name not in BACKENDS:
        load_builtin()
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS)) or "none"
        raise UnknownBackendError(
            f"unknown backend {name!r}; known backends: {known}. Register your own with "
            "@taos_persona.backends.register('name')"
        ) from None


def class_path(cls: type) -> str:
    """``module:QualName`` of a class, as the registry stores it."""
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(path: str) -> Type[Backend]:
    """Import a ``module:QualName`` path written by :func:`class_path`."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise TypeError(f"{path} is not a taos_persona Backend subclass")
    return obj

"""Connecting to the fleet registry: settings, keepalives, the driver imported lazily.

Why asyncpg (not psycopg 3): one self-contained wheel per Python 3.9-3.13
with the protocol built in (psycopg needs libpq, or a second
``psycopg-binary`` wheel that bundles it), asyncio-native, and session
settings passed in the startup packet (``server_settings``), which is where
the TCP keepalive settings that bound a dead machine's lock must go.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Type

from ..errors import ConfigurationError, RegistryError

__all__ = ["Keepalive", "FleetSettings", "is_postgres_url", "safe_url", "lock_key", "connect",
           "connection_errors"]

_SCHEMES = ("postgresql", "postgres")
DEFAULT_LEASE = 60.0


def is_postgres_url(value: Optional[str]) -> bool:
    """True for ``postgresql://...`` or ``postgres://...`` (a fleet registry), else a directory."""
    return bool(value) and urllib.parse.urlsplit(str(value)).scheme in _SCHEMES


def safe_url(url: str) -> str:
    """The URL without its password: what errors, reports and reprs may show."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def lock_key(run_id: str) -> int:
    """The advisory lock key of a run: 63 bits of a hash, never negative (pg_locks splits it in two)."""
    digest = hashlib.sha256(f"taos-persona:{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Keepalive:
    """TCP keepalive for the lock's connection, set on both ends.

    The server ends a silent peer's session after about ``idle + interval *
    count`` seconds, or ``user_timeout_ms`` when data is unacknowledged; its
    advisory lock goes with it. The defaults end a dead machine's session in
    about 11 s (issue 11 asks for 15 s at most).
    """

    idle: int = 5
    interval: int = 2
    count: int = 3
    user_timeout_ms: int = 10_000

    def server_settings(self) -> Dict[str, str]:
        return {"tcp_keepalives_idle": str(self.idle), "tcp_keepalives_interval": str(self.interval),
                "tcp_keepalives_count": str(self.count), "tcp_user_timeout": str(self.user_timeout_ms)}

    def apply_to(self, sock: Optional[socket.socket]) -> None:
        """The client's side: our own end notices a dead server as fast (Linux options only)."""
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", self.idle), ("TCP_KEEPINTVL", self.interval),
                            ("TCP_KEEPCNT", self.count), ("TCP_USER_TIMEOUT", self.user_timeout_ms)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    @classmethod
    def from_text(cls, text: str) -> "Keepalive":
        """``idle,interval,count,user_timeout_ms`` as in ``$TAOS_PERSONA_PG_KEEPALIVE``."""
        try:
            idle, interval, count, user_timeout = (int(part) for part in text.split(","))
        except ValueError:
            raise ConfigurationError(f"TAOS_PERSONA_PG_KEEPALIVE={text!r} is not four integers "
                                     "'idle,interval,count,user_timeout_ms' (e.g. 5,2,3,10000)") from None
        return cls(idle, interval, count, user_timeout)


@dataclass(frozen=True)
class FleetSettings:
    """How long a run may be silent before it can be swept, and how often its owner speaks.

    ``lease``: seconds since the last heartbeat (server clock) after which a
    run whose lock is free may be swept. ``heartbeat``: seconds between two
    heartbeats (default a quarter of the lease). ``op_timeout``: seconds one
    statement may take before the connection counts as lost.
    """

    lease: float = DEFAULT_LEASE
    heartbeat: Optional[float] = None
    keepalive: Keepalive = Keepalive()
    op_timeout: float = 10.0

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.lease / 4.0

    @classmethod
    def from_env(cls) -> "FleetSettings":
        """``$TAOS_PERSONA_LEASE``, ``$TAOS_PERSONA_HEARTBEAT`` (seconds), ``$TAOS_PERSONA_PG_KEEPALIVE``."""
        keepalive = os.environ.get("TAOS_PERSONA_PG_KEEPALIVE", "").strip()
        return cls(lease=_seconds_from_env("TAOS_PERSONA_LEASE", DEFAULT_LEASE),
                   heartbeat=_seconds_from_env("TAOS_PERSONA_HEARTBEAT", None),
                   keepalive=Keepalive.from_text(keepalive) if keepalive else Keepalive())


def _seconds_from_env(name: str, default: Optional[float]) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigurationError(f"{name}={raw!r} is not a positive number of seconds")
    return value


_PLANNING = {"plan_cache_mode": "force_generic_plan"}
"""Our statements are few and prepared once per session: plan them once, not on every save."""


def _driver() -> Any:
    try:
        import asyncpg  # noqa: PLC0415 - the driver is an optional extra, imported on first use
    except ImportError:
        raise ConfigurationError("a postgresql:// registry needs the asyncpg driver: "
                                 "pip install 'taos-persona[postgres]'") from None
    return asyncpg


def connection_errors() -> Tuple[Type[BaseException], ...]:
    """What a lost or refused connection raises: retry on a new connection."""
    asyncpg = _driver()
    return (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncio.TimeoutError,
            TimeoutError, asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError)


async def connect(url: str, settings: FleetSettings, *, timeout: Optional[float] = None) -> Any:
    """An asyncpg connection with the keepalive settings on both ends.

    Raises :class:`RegistryError` naming the server (never its password) and the fix.
    """
    asyncpg = _driver()
    try:
        conn = await asyncpg.connect(url, timeout=timeout or settings.op_timeout,
                                     server_settings={**settings.keepalive.server_settings(), **_PLANNING})
    except (OSError, asyncio.TimeoutError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RegistryError(f"cannot connect to the fleet registry {safe_url(url)}: {exc}; check "
                            "TAOS_PERSONA_REGISTRY (or --registry) and that the server is up") from None
    transport = getattr(conn, "_transport", None)
    if transport is not None:
        settings.keepalive.apply_to(transport.get_extra_info("socket"))
    return conn

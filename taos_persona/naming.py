"""Persona names, run ids and the provider-side names derived from them.

Names end up in file names (the registry) and in provider-side names
(mailbox addresses, usernames), so they are checked once, here, against a
narrow alphabet: nothing that could be a path separator, ``..``, NUL or
shell-special ever gets through.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Optional

from .errors import InvalidNameError

__all__ = ["Persona", "validate_persona_name", "validate_run_id", "new_run_id", "DEFAULT_RUN_ID", "NAME_PREFIX",
           "PREFIX_ENV", "name_prefix", "has_name_prefix", "run_id_in_name"]

NAME_PREFIX = "taos"
"""Every provider-side name we choose starts with this (or ``$TAOS_PERSONA_PREFIX``), then the run id."""
PREFIX_ENV = "TAOS_PERSONA_PREFIX"
_PREFIX_RE = re.compile(r"[a-z0-9]{1,16}\Z")

_NAMED_RUN_ID = re.compile(r"([0-9]{8}t[0-9]{6})[-_]([0-9a-f]{12})(?=[-_]|\Z)")
"""A default run id (:func:`new_run_id`) as a provider-side name carries it: lower case, and
``_`` for ``-`` in sql names."""
_PERSONA_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


def validate_persona_name(name: object) -> str:
    """Return ``name`` if it is a safe persona name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _PERSONA_RE.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid persona name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '..' (for example 'novice_sarah')"
        )
    return name


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is safe as a file name, else raise :class:`InvalidNameError`."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidNameError(
            f"invalid run id {run_id!r}: use 1-64 letters, digits, '_' or '-', starting "
            "with a letter or digit, or leave run_id=None to get a fresh one"
        )
    return run_id


def name_prefix() -> str:
    """The project's name prefix: ``$TAOS_PERSONA_PREFIX``, default ``taos``.

    Two projects sharing one provider account set different prefixes, so that
    ``sweep --discover`` never releases the other's resources. Letters and digits
    only: with a ``-`` in it, ``taos`` would match another project's ``taos-x-...``.
    """
    prefix = os.environ.get(PREFIX_ENV, "").strip().lower() or NAME_PREFIX
    if not _PREFIX_RE.match(prefix):
        raise InvalidNameError(f"{PREFIX_ENV}={prefix!r} is not a valid name prefix: use 1-16 "
                               "letters or digits (no '-' or '_'), for example 'shopapp'")
    return prefix


def has_name_prefix(name: object, prefix: str) -> bool:
    """True if ``name`` starts as every name we choose does: ``<prefix>-`` or ``<prefix>_``.

    The loose test, for a release: which run a name belongs to is the release path's own check
    (custom run ids included). Discovery, which acts on names alone, uses :func:`run_id_in_name`.
    """
    return isinstance(name, str) and bool(prefix) and name.startswith((f"{prefix}-", f"{prefix}_"))


def run_id_in_name(name: object, prefix: str) -> Optional[str]:
    """The run id inside a provider-side name we chose, or None if the name is not ours.

    Ours is ``<prefix>-<YYYYmmddtHHMMSS>-<12 hex>...`` exactly as :class:`Persona` writes it
    (``_`` for ``-`` in sql names): the prefix case-sensitive, then a well-formed default run id.
    ``taos_smith``, ``Taos_Pueblo`` or ``taos-fan-club`` are someone else's. Returns the run id
    as :func:`new_run_id` made it, with ``-`` (``20260101T000000-0123456789ab``).
    """
    if not isinstance(name, str) or not prefix or not name.startswith(prefix) \
            or name[len(prefix):len(prefix) + 1] not in ("-", "_"):
        return None
    match = _NAMED_RUN_ID.match(name, len(prefix) + 1)
    return None if match is None else f"{match.group(1).upper()}-{match.group(2)}"


DEFAULT_RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{12}\Z")
"""What :func:`new_run_id` makes (``20260101T000000-0123456789ab``)."""


def new_run_id() -> str:
    """A fresh run id (:data:`DEFAULT_RUN_ID`): sortable by start time, unique by 48 random bits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)


@dataclass(frozen=True)
class Persona:
    """What a backend learns about the persona it serves.

    ``prefix`` starts every provider-side name this run chooses, so that
    ``recover`` and ``discover`` can find what a crashed run created.
    """

    name: str
    run_id: str

    @property
    def prefix(self) -> str:
        return f"{name_prefix()}-{self.run_id}".lower()

    def unique_name(self, length: int = 6) -> str:
        """A new provider-side name: the run's prefix plus ``length`` random hex digits."""
        return f"{self.prefix}-{secrets.token_hex((length + 1) // 2)[:length]}"

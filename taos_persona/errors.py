"""The one exception tree of taos-persona.

Every error says what it is about (a path, a resource, a variable) and how
to fix it. Catch :class:`PersonaError` to catch them all.
"""
from __future__ import annotations

__all__ = [
    "PersonaError",
    "InvalidNameError",
    "UnknownBackendError",
    "ConfigurationError",
    "EndpointMismatchError",
    "InvalidTokenError",
    "RegistryError",
    "UnsafeRegistryError",
    "NotARegistryError",
    "RunInUseError",
    "ProviderError",
    "ProviderAuthError",
    "RetryableProviderError",
    "WaitTimeout",
    "ResourceLeftWarning",
    "SchemaVersionError",
    "FencedError",
]


class PersonaError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidNameError(PersonaError, ValueError):
    """A persona name or run id that could escape the registry directory."""


class UnknownBackendError(PersonaError, LookupError):
    """A backend name that is not in ``BACKENDS``; the message lists the known ones."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class ConfigurationError(PersonaError):
    """Missing or malformed settings: an environment variable, an option."""


class EndpointMismatchError(ConfigurationError):
    """A record names another endpoint or account than today's configuration: kept, never released
    elsewhere. The message names where it lives and the setting that points there."""


class InvalidTokenError(PersonaError, ValueError):
    """A release token or intent field that fails its backend's checks (a tampered or foreign
    record): never acted on, kept and reported."""


class RegistryError(PersonaError):
    """The registry directory or one of its files cannot be used."""


class UnsafeRegistryError(RegistryError):
    """The registry directory is writable by others, owned by another user, or a symlink."""


class NotARegistryError(RegistryError):
    """The directory does not look like a registry (no marker file, entries that are not run
    files): nothing in it is touched."""


class RunInUseError(RegistryError):
    """A run id claimed by a live owner (its lock is held): pick another run id."""


class ProviderError(PersonaError):
    """A provider answered in a way that cannot succeed by retrying."""


class ProviderAuthError(ProviderError):
    """401/403 from a provider: the credential named in the message is wrong or missing."""


class RetryableProviderError(ProviderError):
    """A transient failure (5xx, 429, timeout, refused connection) that outlived its retries.

    A release that fails this way keeps its record, so the next sweep tries again.
    """


class WaitTimeout(PersonaError, TimeoutError):
    """An awaited email or SMS code did not arrive before the deadline."""


class ResourceLeftWarning(UserWarning):
    """A resource could not be released now; it stays in the registry for the next sweep."""


class SchemaVersionError(RegistryError):
    """The fleet registry's schema is newer than this taos-persona knows: upgrade it."""


class FencedError(RegistryError):
    """This process's run was swept while it was cut off from the fleet registry.

    Its resources were released under it; it must not go on using them. The
    message lists what was released.
    """

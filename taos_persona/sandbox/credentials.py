"""The fake credentials the sandbox accepts, as environment variables for the backends."""
from __future__ import annotations

from typing import Dict

from .app import provider_modules

__all__ = ["sandbox_credentials", "sandbox_env"]


def sandbox_credentials() -> Dict[str, str]:
    """Every provider module's ``CREDENTIALS`` merged: env var name -> sandbox value."""
    merged: Dict[str, str] = {}
    for module in provider_modules():
        merged.update(getattr(module, "CREDENTIALS", {}))
    return merged


def sandbox_env(url: str) -> Dict[str, str]:
    """Env vars that point every backend at the sandbox at ``url`` with working credentials."""
    return {"TAOS_PERSONA_SANDBOX": url.rstrip("/"), **sandbox_credentials()}

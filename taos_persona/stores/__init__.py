"""Where runs live: the file registry (default) or a fleet registry on PostgreSQL.

``TAOS_PERSONA_REGISTRY`` (or a fixture's ``registry=``, or ``sweep
--registry``) picks one: a ``postgresql://`` URL for the fleet registry,
anything else a registry directory. Importing this never imports a driver.
"""
from __future__ import annotations

import atexit
import os
from typing import TYPE_CHECKING, Any, Dict, Optional

from ..registry import Registry
from ..store import FileStore, RunStore
from ._pgconn import is_postgres_url, safe_url

if TYPE_CHECKING:  # pragma: no cover
    from ..sweep_report import SweepReport
    from .postgres import PostgresStore

__all__ = ["REGISTRY_ENV", "open_store", "is_postgres_url", "safe_url", "sweep_store"]

REGISTRY_ENV = "TAOS_PERSONA_REGISTRY"
_fleet_stores: Dict[str, "PostgresStore"] = {}  # one per URL per process: one thread, one sweeper session


def open_store(registry: Optional[str] = None, registry_dir: Optional[str] = None) -> RunStore:
    """The store for ``registry`` (else ``$TAOS_PERSONA_REGISTRY``): PostgreSQL for a URL, else files.

    Fleet stores are shared by every fixture of the process and closed at exit.
    """
    chosen = registry or os.environ.get(REGISTRY_ENV) or None
    if chosen is not None and is_postgres_url(chosen):
        store = _fleet_stores.get(chosen)
        if store is None:
            from .postgres import PostgresStore  # noqa: PLC0415 - no driver until a URL asks for it

            store = _fleet_stores[chosen] = PostgresStore(chosen)
            if len(_fleet_stores) == 1:
                atexit.register(_close_fleet_stores)
        return store
    return FileStore(Registry(registry_dir if registry_dir is not None else chosen))


async def sweep_store(store: RunStore, **options: Any) -> Optional["SweepReport"]:
    """A fixture's startup sweep of its store: a directory, or the fleet database; None for a
    store that sweeps its own way."""
    if isinstance(store, FileStore):
        from ..sweeper import sweep_async  # noqa: PLC0415

        return await sweep_async(store.location, **options)
    from .postgres import PostgresStore  # noqa: PLC0415 - imports no driver

    if not isinstance(store, PostgresStore):
        return None
    from .pgsweep import sweep_fleet  # noqa: PLC0415

    return await sweep_fleet(store, **options)


def _close_fleet_stores() -> None:
    for store in list(_fleet_stores.values()):
        store.close()
    _fleet_stores.clear()

"""Which Iceberg catalog: a SQLite file under the state directory, or a REST server.

Default (``SANDBOX_CATALOG_TYPE=sql``): pyiceberg's ``SqlCatalog`` on
``<state_dir>/catalog.db`` in WAL mode (the sink appends while `top10` reads, in another
process), with a local ``file://<state_dir>/warehouse``. ``SANDBOX_CATALOG_URI`` and
``SANDBOX_WAREHOUSE`` override both. ``SANDBOX_CATALOG_TYPE=rest`` selects a REST catalog at
``SANDBOX_CATALOG_URI``; nothing else changes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from pipeline.lake.exceptions import CatalogConfigError
from sandbox.settings import Settings

CATALOG_NAME = "sandbox"


def warehouse_location(settings: Settings) -> str:
    if settings.warehouse:
        return settings.warehouse
    return (settings.state_dir.resolve() / "warehouse").as_uri()


def sqlite_path(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "catalog.db"


def open_catalog(settings: Settings) -> Catalog:
    """The catalog the settings name, with the namespace ``settings.catalog_namespace``."""
    if settings.catalog_type == "sql":
        uri = settings.catalog_uri or f"sqlite:///{sqlite_path(settings)}"
        if uri.startswith("sqlite:///"):
            _enable_wal(Path(uri.removeprefix("sqlite:///")))
        warehouse = warehouse_location(settings)
        if warehouse.startswith("file://"):
            Path(warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        catalog = load_catalog(CATALOG_NAME, type="sql", uri=uri, warehouse=warehouse)
    elif settings.catalog_type == "rest":
        if not settings.catalog_uri:
            raise CatalogConfigError(
                "SANDBOX_CATALOG_TYPE=rest needs SANDBOX_CATALOG_URI (e.g. http://127.0.0.1:8181)"
            )
        props = {"type": "rest", "uri": settings.catalog_uri}
        if settings.warehouse:
            props["warehouse"] = settings.warehouse
        catalog = load_catalog(CATALOG_NAME, **props)
    else:
        raise CatalogConfigError(
            f"SANDBOX_CATALOG_TYPE={settings.catalog_type!r}: expected 'sql' or 'rest'"
        )
    catalog.create_namespace_if_not_exists(settings.catalog_namespace)
    return catalog


def _enable_wal(path: Path) -> None:
    # WAL is a property of the database file: set once, every later connection uses it, so
    # a reader (top10) never blocks the sink's commit and vice versa.
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()

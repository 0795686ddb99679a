"""Which Iceberg catalog: a SQLite file under the state directory, or a REST server.

Default (``SANDBOX_CATALOG_TYPE=sql``): pyiceberg's ``SqlCatalog`` on
``<state_dir>/catalog.db`` in WAL mode (the sink appends while `top10` reads, in another
process), with a local ``file://<state_dir>/warehouse``. ``SANDBOX_CATALOG_URI`` and
``SANDBOX_WAREHOUSE`` override both. ``SANDBOX_CATALOG_TYPE=rest`` selects a REST catalog at
``SANDBOX_CATALOG_URI`` (unset: the local server `sandbox up` starts from Maven jars,
infra/catalog_server.py); nothing else changes. An ``s3://`` warehouse is reached with
``SANDBOX_S3_*`` (endpoint, credentials, region), path-style, on any S3-compatible server.
Everything here reads a :class:`~pipeline.lake.config.LakeConfig`, not the whole settings.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from pipeline.lake.config import LakeConfig
from pipeline.lake.exceptions import CatalogConfigError, CatalogUnreachableError

CATALOG_NAME = "sandbox"


def warehouse_location(lake: LakeConfig) -> str:
    if lake.warehouse:
        return lake.warehouse
    return (lake.state_dir.resolve() / "warehouse").as_uri()


def sqlite_path(lake: LakeConfig) -> Path:
    return lake.state_dir.resolve() / "catalog.db"


def rest_uri(lake: LakeConfig) -> str:
    """The REST catalog's URI: the one configured, else the local one `sandbox up` starts."""
    return lake.catalog_uri or f"http://127.0.0.1:{lake.rest_port}"


def storage_properties(lake: LakeConfig) -> dict[str, str]:
    """pyiceberg's FileIO properties of an s3:// warehouse (path-style, any S3 server)."""
    props: dict[str, str] = {}
    if lake.s3_endpoint:
        props["s3.endpoint"] = lake.s3_endpoint
        props["s3.force-virtual-addressing"] = "false"
    if lake.s3_access_key and lake.s3_secret_key:
        props["s3.access-key-id"] = lake.s3_access_key
        props["s3.secret-access-key"] = lake.s3_secret_key
    if props:
        props["s3.region"] = lake.s3_region
    return props


def open_catalog(lake: LakeConfig) -> Catalog:
    """The catalog ``lake`` names, with its namespace ``lake.namespace`` created."""
    try:
        catalog = _load(lake)
        catalog.create_namespace_if_not_exists(lake.namespace)
    except OSError as exc:  # requests' connection errors are OSErrors too
        where = rest_uri(lake) if lake.catalog_type == "rest" else warehouse_location(lake)
        raise CatalogUnreachableError(
            f"the Iceberg catalog at {where} cannot be reached ({_first_line(exc)}); "
            "is the stack up (`sandbox status`)?"
        ) from exc
    return catalog


def _load(lake: LakeConfig) -> Catalog:
    if lake.catalog_type == "sql":
        uri = lake.catalog_uri or f"sqlite:///{sqlite_path(lake)}"
        if uri.startswith("sqlite:///"):
            _enable_wal(Path(uri.removeprefix("sqlite:///")))
        warehouse = warehouse_location(lake)
        if warehouse.startswith("file://"):
            Path(warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return load_catalog(
            CATALOG_NAME, type="sql", uri=uri, warehouse=warehouse, **storage_properties(lake)
        )
    if lake.catalog_type == "rest":
        _quiet_redundant_metadata_deletes()
        props = {"type": "rest", "uri": rest_uri(lake), **storage_properties(lake)}
        if lake.warehouse:
            props["warehouse"] = lake.warehouse
        return load_catalog(CATALOG_NAME, **props)
    raise CatalogConfigError(
        f"SANDBOX_CATALOG_TYPE={lake.catalog_type!r}: expected 'sql' or 'rest'"
    )


class _AlreadyDeletedByTheServer(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to delete metadata file")


_QUIET = _AlreadyDeletedByTheServer()


def _quiet_redundant_metadata_deletes() -> None:
    # With a REST catalog the server deletes the metadata files that fall off the table's
    # metadata log (write.metadata.delete-after-commit.enabled) when it commits; pyiceberg
    # then deletes the same files from the client, finds them gone and warns on every
    # commit. The server's delete is the one that counts (checked: 21 metadata files kept
    # for previous-versions-max 20), so that warning says nothing here.
    logger = logging.getLogger("pyiceberg.catalog")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _enable_wal(path: Path) -> None:
    # WAL is a property of the database file: set once, every later connection uses it, so
    # a reader (top10) never blocks the sink's commit and vice versa.
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def ensure_bucket(lake: LakeConfig) -> str | None:
    """Create the bucket of an ``s3://`` warehouse if it is missing; returns its name."""
    warehouse = warehouse_location(lake)
    if not warehouse.startswith("s3://"):
        return None
    from pyarrow import fs

    bucket = warehouse.removeprefix("s3://").split("/", 1)[0]
    endpoint = lake.s3_endpoint or ""
    s3 = fs.S3FileSystem(
        access_key=lake.s3_access_key,
        secret_key=lake.s3_secret_key,
        region=lake.s3_region,
        endpoint_override=endpoint.split("://", 1)[-1] or None,
        scheme=endpoint.split("://", 1)[0] if "://" in endpoint else "https",
        allow_bucket_creation=True,
        connect_timeout=5,
        request_timeout=10,
    )
    try:
        if s3.get_file_info(bucket).type == fs.FileType.NotFound:
            s3.create_dir(bucket)
    except OSError as exc:
        raise CatalogUnreachableError(
            f"the object store at {endpoint or 'AWS'} cannot be reached or refuses bucket "
            f"{bucket!r} ({_first_line(exc)})"
        ) from exc
    return bucket

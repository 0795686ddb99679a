"""Read-only SQL over the lake: DuckDB, its iceberg extension loaded offline, a view per table.

:func:`connect_offline` opens an in-memory DuckDB with extensions loaded by file path from
the ``duckdb-ext-*`` wheels (auto-install and auto-load off: nothing is downloaded).
:func:`open_lake` adds one view per table of the lake's namespace, named like the table, over
``iceberg_scan('<the table's current metadata.json>')`` as the catalog reports it now (a
snapshot of the lake at connection time), then locks the connection down.
:meth:`LakeSql.query` runs one read query on it (`sandbox sql`).

Read-only, three ways, each enough for the common case and the three together for the rest:

1. **Statement type.** The text is parsed (``duckdb.extract_statements``) and must be exactly
   one statement of type SELECT (which covers WITH, VALUES, FROM-first, DESCRIBE, SHOW,
   SUMMARIZE, PRAGMA-as-table-function) or EXPLAIN. CREATE, INSERT, COPY, ATTACH, INSTALL,
   LOAD, SET, CALL... are refused with a line saying which type it was, before anything runs.
2. **No external access.** Once the views exist, ``allowed_directories`` is set to the
   tables' own locations and ``enable_external_access`` to false, then
   ``lock_configuration``: even a SELECT reads only the lake's files (``read_csv('/etc/..')``,
   ``glob()``, another bucket: a permission error), writes no file, loads or installs no
   extension, and no SET can undo it.
3. **Nothing to write to.** The database is in memory, nothing is attached; the Iceberg
   tables are reached only through ``iceberg_scan``, which reads.

An ``s3://`` warehouse is read through the httpfs extension (the ``duckdb-ext-httpfs`` wheel)
with a temporary S3 secret from :class:`~pipeline.lake.config.LakeConfig`: path-style URLs,
the endpoint without its scheme, ``USE_SSL false`` for an ``http://`` endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import LakeConfig
from pipeline.lake.exceptions import LakeError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection
    from pyiceberg.catalog import Catalog

#: Extensions every lake connection loads; iceberg needs avro (manifests) loaded first.
EXTENSIONS = ("avro", "iceberg")
#: The extension (and wheel) an s3:// warehouse needs.
S3_EXTENSION = "httpfs"
S3_WHEEL = "duckdb-ext-httpfs"
#: Statement types that only read (see the module doc).
READ_STATEMENT_TYPES = ("SELECT", "EXPLAIN")


class SqlError(LakeError):
    """A query DuckDB rejects (syntax, unknown table or column, types) or that is not a single
    read query; printed as one line, exit code 1."""


@dataclass(frozen=True, slots=True)
class LakeView:
    """A table of the namespace as the SQL console sees it."""

    name: str
    metadata_location: str  # the current metadata.json: the view's snapshot
    location: str  # the table's base location: its files, the only ones readable


@dataclass(frozen=True, slots=True)
class SqlResult:
    columns: tuple[str, ...]  # unique: a repeated name gets _2, _3...
    types: tuple[str, ...]  # DuckDB's type names
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows than the limit: only the first ``limit`` are here


# --------------------------------------------------------------------------- connections


def extension_path(name: str) -> Path:
    """``<name>.duckdb_extension`` of the installed duckdb version, from a duckdb-ext wheel."""
    import duckdb
    import duckdb_ext

    version = duckdb.__version__
    # duckdb_ext is a namespace package (no __init__): look in each of its paths.
    bases = [Path(p) / "extensions" / f"v{version}" for p in duckdb_ext.__path__]
    found = sorted(f for base in bases for f in base.glob(f"*/{name}.duckdb_extension"))
    if not found:
        raise FileNotFoundError(f"no {name} extension for duckdb {version} under {bases}")
    return found[0]


def connect_offline(extensions: Sequence[str] = EXTENSIONS) -> DuckDBPyConnection:
    """An in-memory DuckDB connection with ``extensions`` loaded from the wheels' files,
    auto-install and auto-load off (nothing is downloaded), time zone UTC."""
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute("SET TimeZone = 'UTC'")
    for name in extensions:
        con.execute(f"LOAD {_literal(str(extension_path(name)))}")
    return con


def lake_views(catalog: Catalog, namespace: str) -> list[LakeView]:
    """Every table of ``namespace`` with its current metadata location, sorted by name."""
    views = []
    for ident in catalog.list_tables(namespace):
        table = catalog.load_table(ident)
        views.append(LakeView(ident[-1], table.metadata_location, table.metadata.location))
    return sorted(views, key=lambda v: v.name)


def open_lake(lake: LakeConfig, catalog: Catalog | None = None) -> LakeSql:
    """A locked-down connection with a view per table of the lake's namespace."""
    import duckdb

    catalog = catalog if catalog is not None else open_catalog(lake)
    views = lake_views(catalog, lake.namespace)
    on_s3 = any(_is_s3(v.location) or _is_s3(v.metadata_location) for v in views)
    extensions = (*EXTENSIONS, S3_EXTENSION) if on_s3 else EXTENSIONS
    try:
        con = connect_offline(extensions)
    except FileNotFoundError as exc:
        if on_s3 and S3_EXTENSION in str(exc):
            raise SqlError(
                f"the lake is on S3 and DuckDB's {S3_EXTENSION} extension is not installed "
                f"(pip install {S3_WHEEL}=={_duckdb_version()}.*)"
            ) from exc
        raise SqlError(f"DuckDB's iceberg extension cannot be loaded: {exc}") from exc
    try:
        if on_s3:
            con.execute(s3_secret_sql(lake))
        for v in views:  # binding a view reads its metadata.json: an unreadable one fails here
            con.execute(
                f"CREATE VIEW {_identifier(v.name)} AS "
                f"SELECT * FROM iceberg_scan({_literal(v.metadata_location)})"
            )
        allowed = sorted({p for v in views for p in _readable_prefixes(v.location)})
        con.execute(f"SET allowed_directories = [{', '.join(_literal(p) for p in allowed)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise SqlError(f"the lake's tables cannot be opened in DuckDB: {one_line(exc)}") from exc
    return LakeSql(con, lake.namespace, views)


def s3_secret_sql(lake: LakeConfig) -> str:
    """The CREATE SECRET of an s3:// warehouse: path-style, any S3-compatible server."""
    parts = ["TYPE s3", "URL_STYLE 'path'", f"REGION {_literal(lake.s3_region)}"]
    if lake.s3_endpoint:
        scheme, _, host = lake.s3_endpoint.rpartition("://")
        parts.append(f"ENDPOINT {_literal(host.rstrip('/'))}")
        parts.append(f"USE_SSL {'false' if scheme == 'http' else 'true'}")
    if lake.s3_access_key and lake.s3_secret_key:
        parts.append(f"KEY_ID {_literal(lake.s3_access_key)}")
        parts.append(f"SECRET {_literal(lake.s3_secret_key)}")
    return f"CREATE OR REPLACE TEMPORARY SECRET lake_s3 ({', '.join(parts)})"


class LakeSql:
    """A connection of :func:`open_lake`: run read queries, then close."""

    def __init__(self, con: DuckDBPyConnection, namespace: str, views: list[LakeView]) -> None:
        self.con = con
        self.namespace = namespace
        self.views = views

    def __enter__(self) -> LakeSql:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def query(self, sql: str, limit: int | None = None) -> SqlResult:
        """Run one read query; at most ``limit`` rows (None: all). DuckDB's errors and a
        statement that is not a read become a one-line :class:`SqlError`."""
        import duckdb

        try:
            statement = read_statement(sql)
            cursor = self.con.execute(statement)
            described = cursor.description or []
            rows = cursor.fetchall() if limit is None else cursor.fetchmany(limit + 1)
        except duckdb.Error as exc:
            raise SqlError(self._explain(exc)) from exc
        truncated = limit is not None and len(rows) > limit
        return SqlResult(
            columns=_unique(str(d[0]) for d in described),
            types=tuple(str(d[1]) for d in described),
            rows=rows[:limit] if truncated else rows,
            truncated=truncated,
        )

    def _explain(self, exc: BaseException) -> str:
        message = one_line(exc)
        if message.startswith("Catalog Error: Table with name"):
            names = ", ".join(v.name for v in self.views) or "none yet (run `sandbox up`)"
            message += f" (tables of {self.namespace}: {names})"
        return message


def read_statement(sql: str) -> Any:
    """The one statement of ``sql``, if it only reads; else a :class:`SqlError`."""
    import duckdb

    statements = duckdb.extract_statements(sql)
    if not statements:
        raise SqlError("no SQL statement given")
    if len(statements) > 1:
        raise SqlError(f"one statement at a time, got {len(statements)}")
    (statement,) = statements
    kind = statement.type.name
    if kind not in READ_STATEMENT_TYPES:
        words = re.sub(r"--[^\n]*|/\*.*?\*/", " ", statement.query, flags=re.S).split(None, 1)
        first = words[0].upper() if words else kind
        what = kind if first == kind else f"{first} (a {kind} statement)"
        raise SqlError(
            "read-only: only a query (SELECT, WITH, VALUES, DESCRIBE, SHOW, EXPLAIN) runs "
            f"here, not {what}"
        )
    return statement


def one_line(exc: BaseException) -> str:
    """DuckDB's message without the ``LINE n: ...^`` excerpt, on one line."""
    text = str(exc).split("\nLINE ", 1)[0]
    return " ".join(text.split())


# ------------------------------------------------------------------------------- helpers


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_s3(location: str) -> bool:
    return location.startswith(("s3://", "s3a://", "s3n://"))


def _readable_prefixes(location: str) -> list[str]:
    """How DuckDB may be asked for the files under ``location``: as the catalog wrote it and,
    for local files, as a plain path (``file:///x``, ``file:/x`` -> ``/x``)."""
    base = location.rstrip("/") + "/"
    out = [base]
    local = re.match(r"^file:(?://)?(/.*)$", base)
    if local:
        out += [local.group(1), f"file://{local.group(1)}"]
    return out


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return tuple(out)


def _duckdb_version() -> str:
    import duckdb

    return str(duckdb.__version__)

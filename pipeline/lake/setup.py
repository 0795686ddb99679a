"""Everything the lake needs before the first event: the bucket, the namespace, the tables.

`sandbox up` (and compose's ``init``) call :func:`prepare_lake`, so the sink, the batch jobs
and a learner's SQL find every table from the start, on either catalog.
"""

from __future__ import annotations

from pipeline.lake.catalog import ensure_bucket, open_catalog
from pipeline.lake.config import LakeConfig, TitlesSource
from pipeline.lake.tables import ALL_TABLES, TITLES, ensure_table
from pipeline.lake.titles import sync_titles

__all__ = ["prepare_lake"]


def prepare_lake(lake: LakeConfig, titles: TitlesSource | None) -> list[str]:
    """Create what is missing and fill the titles table from ``titles`` (None: the packaged
    catalog); returns a line per step for the user. Idempotent."""
    said = []
    bucket = ensure_bucket(lake)
    if bucket is not None:
        said.append(f"storage: bucket {bucket} on {lake.s3_endpoint or 'S3'}")
    catalog = open_catalog(lake)
    for spec in ALL_TABLES:
        if spec is not TITLES:
            ensure_table(catalog, lake.namespace, spec)
    sync_titles(catalog, lake.namespace, titles)
    said.append(
        f"lake: {len(ALL_TABLES)} Iceberg tables in {lake.namespace} ({lake.catalog_type} catalog)"
    )
    return said

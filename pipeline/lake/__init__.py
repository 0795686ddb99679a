"""The lakehouse: Kafka -> Iceberg sinks, weekly Top-10, stream/batch reconciliation.

One module per stage: ``config`` (what the lake reads of the settings: ``LakeConfig``,
``SinkConfig``, ``BatchConfig``), ``catalog`` (which Iceberg catalog), ``tables`` (every
table's schema, partitioning and sort order, declared once), ``setup`` (the tables before the
first event), ``commit`` (exactly once: the Kafka offsets in the snapshot, the commit loop
both sinks share), ``events_sink`` (playback events and dead letters), ``outputs_sink`` and
``outputs_tables`` (the stream job's panes and late events), ``titles`` (the title
dimension), ``top10`` (weekly batch job) with the pure ``ranking`` and ``weeks``,
``reconcile`` (stream panes vs a batch recomputation). A second engine for tests and the
benchmark (DuckDB) lives in tests/support/duckdb_check.py. See docs/lakehouse.md.
"""

"""The lakehouse: Kafka -> Iceberg sink, weekly Top-10, stream/batch reconciliation.

One module per stage: ``catalog`` (which Iceberg catalog), ``tables`` (every table's
schema, partitioning and sort order, declared once), ``sink`` (exactly-once Kafka ->
Iceberg for playback events), ``stream_sink`` and ``stream_tables`` (the stream job's panes
and late events), ``titles`` (the title dimension), ``top10`` (weekly batch job) with the pure
``ranking`` and ``weeks``, ``reconcile`` (stream panes vs a batch recomputation) and
``duckdb_check`` (a second engine for tests and the benchmark). See docs/lakehouse.md.
"""

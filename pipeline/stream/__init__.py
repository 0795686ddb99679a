"""The stream job: viewing metrics per (title_id, country) and minute of event time.

Two stages joined by a repartition topic (``<job id>-routed``), so that every
``(title_id, country)`` is aggregated in exactly one place however many workers share the
work, and so that the watermark of every window is still the minimum over *all* partitions
of the events topic (docs/stream-job.md, "Several workers")::

    events topic, partition p
      stage 1  router.Router.process(p, records)        decode, validate, route
        -> dead-letter topic   undecodable / invalid records, original bytes + dl.* headers
        -> <id>-routed         one RoutedBatch per target partition q = f(title_id, country),
                               every q, with p's newest event time (its watermark marker)
    <id>-routed, partition q
      stage 2  window_stage.WindowJob(q).process(batches)   event-time windows
        -> viewing-metrics     panes, key "window_start|title_id|country"
        -> late-events         events for closed windows, with lateness
    table "engine-state"       "source/<p>", "window/<q>" snapshots, before the acks

The parts, each in its own module:

* ``records``: what the parts share: the topics (``JobTopics``), a record to produce
  (``Output``), the keys (``pane_key``, ``route_partition``, ``status_key``), the engine
  settings, the snapshot version. Pure.
* ``router``: stage 1 (``Router``), per events partition. Pure.
* ``window_stage``: stage 2 (``WindowJob``), per routed partition, over
  ``pipeline/windows.py``. Pure.
* ``dead_letter``: the one shape of a rejected record. Pure.
* ``chunked_state``: a snapshot split in chunks (it outgrows a Kafka record). Pure.
* ``worker``: ``JobWorker``, what one process holds and the protocol around the stages:
  apply a batch, send its outputs, checkpoint (flush, snapshot), and only then ack;
  restore on assignment; the status record.
* ``faust_consumer``: the fenced copy of Faust's consumer internals (the batch hand-off
  and a cheaper per-message one), with its version guard.
* ``app``: the Faust app, wiring only (agent, timers, callbacks -> the worker), and
  ``run_worker``, the `sandbox worker`.
* ``readback``: the job's outputs read back: panes, late events, the merged status, lag.

The pure modules import no Kafka client, no Faust and no lake (a contract in
pyproject.toml checks it); time enters them only as ``now_ms``.
"""

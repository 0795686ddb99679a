"""Exactly once from Kafka into Iceberg, without transactions: the offsets live in the table.

Both sinks (``events_sink``: playback events and dead letters; ``outputs_sink``: panes and
late events) write the same way, with :func:`commit_with_offsets`:

* every write records, in its snapshot summary, the Kafka position it covers:
  ``kafka.offsets = {"<topic>": {"<partition>": <next offset>}}``, the whole map merged with
  what was stored before, so the newest snapshot carrying it is enough (:func:`stored_offsets`);
* a sink seeks each partition it is assigned to the table's stored offset, not to its consumer
  group's committed offset (which is for monitoring only);
* before each write, and again after a commit conflict with the table refreshed, records below
  the stored offset of their partition are dropped (the ``write`` callback gets the stored
  offsets): a batch already committed, e.g. by a sink killed before it committed its group
  offsets, or by another sink after a rebalance, is never written again;
* pyiceberg's own commit retry is off on these tables (``tables.SINK_TABLE_PROPERTIES``): it
  would re-apply the write with stale offsets. The retry here re-reads and re-merges them.

An unreachable or failing store or catalog (:data:`TRANSIENT_ERRORS`) is ridden out with
:class:`Outage`: the sink keeps its batch and retries it with a growing delay.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    ServerError,
    ServiceUnavailableError,
)
from pyiceberg.table import Table

from pipeline.lake.exceptions import SinkError

log = logging.getLogger(__name__)

OFFSETS_PROPERTY = "kafka.offsets"
#: Commit conflicts in a row before a sink gives up (SinkError).
COMMIT_RETRIES = 10

Offsets = dict[int, int]  # partition -> next offset to read
T = TypeVar("T")

#: What an unreachable, hung or failing object store or catalog raises: pyarrow's S3
#: errors and requests' connection errors are OSErrors; a REST catalog answers 5xx. A commit
#: whose outcome is unknown is retried like the others: the table's stored offsets drop
#: whatever it did write.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ServerError,
    ServiceUnavailableError,
    CommitStateUnknownException,
)


def stored_offsets(table: Table, topic: str) -> Offsets:
    """The Kafka position the table has committed for ``topic`` (newest snapshot with one)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        raw = summary.additional_properties.get(OFFSETS_PROPERTY) if summary else None
        if raw is not None:
            return {int(p): int(o) for p, o in json.loads(raw).get(topic, {}).items()}
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return {}


def merge_offsets(stored: Offsets, covers: Offsets) -> Offsets:
    """The stored map with each partition moved forward to what ``covers`` reached (never back:
    another sink may have committed further meanwhile)."""
    return {**stored, **{p: max(o, stored.get(p, 0)) for p, o in covers.items()}}


def offsets_json(topic: str, offsets: Offsets) -> str:
    """The value of the ``kafka.offsets`` snapshot property."""
    return json.dumps({topic: {str(p): o for p, o in sorted(offsets.items())}}, sort_keys=True)


def drop_committed(data: pa.Table, part_col: str, off_col: str, stored: Offsets) -> pa.Table:
    """Rows of ``data`` the table does not cover yet (offset >= stored[partition])."""
    if not stored or data.num_rows == 0:
        return data
    # Vectorised: map each partition to its stored offset via a small lookup table.
    keys = pa.array(sorted(stored), pa.int32())
    values = pa.array([stored[p] for p in sorted(stored)], pa.int64())
    idx = pc.index_in(data[part_col], value_set=keys)
    floor = pc.fill_null(pc.take(values, idx), 0)
    return data.filter(pc.greater_equal(data[off_col], floor))


def commit_with_offsets(
    table: Table,
    topic: str,
    covers: Offsets,
    write: Callable[[Offsets, dict[str, str]], T],
    *,
    on_conflict: Callable[[], None] | None = None,
) -> T | None:
    """Write what ``table`` lacks of a batch that read ``topic`` up to ``covers``, with the
    merged offsets in the same snapshot.

    ``write(stored, properties)`` gets the offsets the table has stored (to drop the records
    below them) and the snapshot properties to commit with, writes, and returns what the
    caller wants back. On a commit conflict (another writer committed first) the table is
    refreshed and ``write`` is called again with the new stored offsets; after COMMIT_RETRIES
    conflicts in a row, SinkError. Returns None, without calling ``write``, when the table
    already covers ``covers``.
    """
    for attempt in range(COMMIT_RETRIES):
        stored = stored_offsets(table, topic)
        merged = merge_offsets(stored, covers)
        if merged == stored:
            return None  # everything in this batch is already in the table
        try:
            return write(stored, {OFFSETS_PROPERTY: offsets_json(topic, merged)})
        except CommitFailedException:
            if on_conflict is not None:
                on_conflict()
            log.warning("commit conflict on %s (attempt %d); refreshing", table.name(), attempt)
            table.refresh()
    raise SinkError(f"{table.name()}: {COMMIT_RETRIES} commit conflicts in a row")


class Outage:
    """Backoff while the lake is unreachable: the batch is kept and retried, nothing is
    dropped, and the sink keeps serving its consumer group meanwhile."""

    FIRST_DELAY_S = 1.0
    MAX_DELAY_S = 30.0

    def __init__(self) -> None:
        self.since: float | None = None  # monotonic time of the first failure
        self._retry_at = 0.0
        self._delay_s = self.FIRST_DELAY_S

    @property
    def active(self) -> bool:
        return self.since is not None

    def due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self._retry_at = now + self._delay_s
        log.warning(
            "%s failed, retrying in %.0f s (the lake has been unreachable for %.0f s): %s",
            what,
            self._delay_s,
            now - self.since,
            " ".join(str(exc).split())[:300],
        )
        self._delay_s = min(self._delay_s * 2, self.MAX_DELAY_S)

    def recovered(self, what: str) -> None:
        if self.since is not None:
            log.warning("%s succeeded after %.0f s", what, time.monotonic() - self.since)
        self.since = None
        self._delay_s = self.FIRST_DELAY_S

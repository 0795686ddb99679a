"""Stream/batch reconciliation: viewing_metrics (stream panes) vs a batch recomputation.

For every (window_start, title_id, country) in [from, to), with windows of
``BatchConfig.window_size_ms``, the additive metrics (events, plays, watch_ms, rebuffer_ms)
must satisfy::

    batch (playback_events) = stream (latest pane) + late (late_events) + invalid

where *invalid* are events the stream job rejects to the dead-letter topic but the sink keeps
(:func:`pipeline.validate.invalid_mask`: the very rules of stage 1). A key whose
window the stream has not closed yet (window_end > the highest pane watermark) is *pending*.
Anything left is *unexplained* and listed. Client duplicates (same event_id at different
offsets) are counted by both sides and reported; sink duplicates (the same Kafka offset twice)
would break exactly-once and are reported too (always 0).

The comparison (:func:`compare`) is pure; :func:`run_reconcile` does the scans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from pipeline.lake.config import BatchConfig, TitlesSource
from pipeline.lake.outputs_tables import latest_revisions
from pipeline.lake.tables import LATE_EVENTS, PLAYBACK_EVENTS, VIEWING_METRICS, ensure_table
from pipeline.lake.titles import ensure_titles
from pipeline.validate import REQUIRED_IDS, TitleIndex, invalid_mask

METRICS = ("events", "plays", "watch_ms", "rebuffer_ms")
Key = tuple[int, str, str]  # (window_start_ms, title_id, country)
Counts = tuple[int, int, int, int]  # METRICS, in order
ZERO: Counts = (0, 0, 0, 0)

#: "Now" of the future-event-time rule. Stage 1 compares event_time with its wall clock at the
#: moment it reads the event, and playback_events keeps no time of that moment (sent_time is
#: the device's clock; kafka_partition/offset are positions). A "now" far in the future keeps
#: the rule from calling any row invalid on a guess: an event stage 1 dead-lettered only for
#: being too far ahead of its clock is listed as unexplained (or pending), not explained away.
NO_STAGE1_CLOCK_MS = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp()) * 1000


def _add(a: Counts, b: Counts) -> Counts:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _sub(a: Counts, b: Counts) -> Counts:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3])


@dataclass
class Reconciliation:
    keys: int = 0
    matched: int = 0  # stream == batch
    explained_by_late: int = 0  # keys whose difference is exactly their late events
    explained_by_invalid: int = 0  # ... their invalid events (and late ones)
    pending: int = 0  # window not closed by the stream yet
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.unexplained

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def compare(
    batch: Mapping[Key, Counts],
    stream: Mapping[Key, Counts],
    late: Mapping[Key, Counts],
    invalid: Mapping[Key, Counts],
    window_size_ms: int,
    stream_watermark_ms: int | None,
) -> Reconciliation:
    """Explain every difference between the batch and the stream, key by key."""
    out = Reconciliation()
    keys = sorted(set(batch) | set(stream) | set(late) | set(invalid))
    out.keys = len(keys)
    totals = {name: [0, 0, 0, 0] for name in ("batch", "stream", "late", "invalid")}
    for key in keys:
        b, s = batch.get(key, ZERO), stream.get(key, ZERO)
        lt, inv = late.get(key, ZERO), invalid.get(key, ZERO)
        for name, c in (("batch", b), ("stream", s), ("late", lt), ("invalid", inv)):
            for i in range(4):
                totals[name][i] += c[i]
        diff = _sub(b, s)
        if diff == ZERO and lt == ZERO and inv == ZERO:
            out.matched += 1
        elif diff == lt and inv == ZERO:
            out.explained_by_late += 1
        elif diff == _add(lt, inv):
            out.explained_by_invalid += 1
        elif key not in stream and (
            stream_watermark_ms is None or key[0] + window_size_ms > stream_watermark_ms
        ):
            out.pending += 1
        else:
            out.unexplained.append(
                {
                    "window_start": datetime.fromtimestamp(key[0] / 1000, tz=UTC).isoformat(),
                    "title_id": key[1],
                    "country": key[2],
                    "batch": dict(zip(METRICS, b, strict=True)),
                    "stream": dict(zip(METRICS, s, strict=True)),
                    "late": dict(zip(METRICS, lt, strict=True)),
                    "invalid": dict(zip(METRICS, inv, strict=True)),
                }
            )
    out.totals = {n: dict(zip(METRICS, v, strict=True)) for n, v in totals.items()}
    return out


# -- I/O: scans and pyarrow aggregations -----------------------------------------------------


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _window_start_ms(ts: pa.ChunkedArray, size_ms: int) -> pa.Array:
    ms = pc.divide(pc.cast(ts, pa.int64()), 1000)
    return pc.multiply(pc.divide(ms, size_ms), size_ms)  # integer division: floor for >= 0


def _aggregate(data: pa.Table, size_ms: int, time_col: str) -> dict[Key, Counts]:
    """Rows [time_col, title_id, country, event_type, watched_ms, buffer_ms] -> per-key Counts."""
    if data.num_rows == 0:
        return {}
    t = pa.table(
        {
            "w": _window_start_ms(data[time_col], size_ms),
            "title_id": data["title_id"],
            "country": data["country"],
            "play": pc.cast(pc.equal(data["event_type"], "PLAY"), pa.int64()),
            "watched_ms": data["watched_ms"],
            "buffer_ms": data["buffer_ms"],
        }
    )
    agg = t.group_by(["w", "title_id", "country"]).aggregate(
        [("title_id", "count"), ("play", "sum"), ("watched_ms", "sum"), ("buffer_ms", "sum")]
    )
    return {
        (w, tid, c): (n, p, wm, bm)
        for w, tid, c, n, p, wm, bm in zip(
            *(
                agg[name].to_pylist()
                for name in (
                    "w",
                    "title_id",
                    "country",
                    "title_id_count",
                    "play_sum",
                    "watched_ms_sum",
                    "buffer_ms_sum",
                )
            ),
            strict=True,
        )
    }


def _title_index(catalog: Catalog, namespace: str, source: TitlesSource | None) -> TitleIndex:
    """The catalog stage 1 validates against, from the lake's titles table."""
    t = ensure_titles(catalog, namespace, source).scan(
        selected_fields=("title_id", "runtime_ms", "countries")
    )
    return TitleIndex.from_records(t.to_arrow().to_pylist())


def run_reconcile(
    config: BatchConfig, catalog: Catalog, from_ms: int, to_ms: int
) -> Reconciliation:
    """Reconcile the windows starting in [from_ms, to_ms) (aligned to the window size)."""
    size = config.window_size_ms
    lo, hi = from_ms // size * size, -(-to_ms // size) * size
    ns = config.lake.namespace
    events = ensure_table(catalog, ns, PLAYBACK_EVENTS)
    panes_t = ensure_table(catalog, ns, VIEWING_METRICS)
    late_t = ensure_table(catalog, ns, LATE_EVENTS)
    titles = _title_index(catalog, ns, config.titles)
    where = f"event_time >= '{_iso(lo)}' AND event_time < '{_iso(hi)}'"
    fields = ("event_time", "title_id", "country", "event_type", "watched_ms", "buffer_ms")
    checked = (*REQUIRED_IDS, "position_ms")  # the other columns validate() reads
    scanned = dict.fromkeys((*fields, *checked, "kafka_partition", "kafka_offset"))  # deduped
    data = events.scan(row_filter=where, selected_fields=tuple(scanned)).to_arrow()
    bad = invalid_mask(
        data,
        titles,
        now_ms=NO_STAGE1_CLOCK_MS,
        max_future_ms=config.max_event_future_ms,
    )
    batch = _aggregate(data.select(list(fields)), size, "event_time")
    invalid = _aggregate(data.filter(bad).select(list(fields)), size, "event_time")
    late_rows = late_t.scan(row_filter=where, selected_fields=fields).to_arrow()
    late = _aggregate(late_rows, size, "event_time")

    panes = latest_revisions(
        panes_t.scan(
            row_filter=f"window_start >= '{_iso(lo)}' AND window_start < '{_iso(hi)}'"
        ).to_arrow()
    )
    stream: dict[Key, Counts] = {}
    ws = pc.divide(pc.cast(panes["window_start"], pa.int64()), 1000).to_pylist()
    for w, tid, c, n, p, wm, bm in zip(
        ws,
        *(
            panes[x].to_pylist()
            for x in ("title_id", "country", "events", "plays", "watch_ms", "rebuffer_ms")
        ),
        strict=True,
    ):
        stream[(w, tid, c)] = (n, p, wm, bm)
    all_panes = panes_t.scan(selected_fields=("watermark",)).to_arrow()
    watermark = (
        pc.max(pc.cast(all_panes["watermark"], pa.int64())).as_py() // 1000
        if all_panes.num_rows
        else None
    )
    result = compare(batch, stream, late, invalid, size, watermark)
    n = data.num_rows
    result.duplicates = {
        "client_duplicate_events": n - pc.count_distinct(data["event_id"]).as_py() if n else 0,
        "sink_duplicate_offsets": (
            n - data.group_by(["kafka_partition", "kafka_offset"]).aggregate([]).num_rows
            if n
            else 0
        ),
    }
    return result

"""Reconciliation: stream panes written into viewing_metrics vs the batch recomputation."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from lake_helpers import W47_START_MS, append_events, lake_only_settings, simulated

from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import BatchConfig
from pipeline.lake.outputs_tables import late_arrow, panes_arrow, upsert_panes
from pipeline.lake.reconcile import compare, run_reconcile
from pipeline.lake.tables import LATE_EVENTS, PLAYBACK_EVENTS, VIEWING_METRICS, ensure_table
from pipeline.lake.titles import sync_titles

WINDOW_MS = 60_000


def _panes(events: list[dict], revision: int = 0, watermark_ms: int = 0) -> list[dict]:
    """What the stream job emits for these events (additive metrics; one pane per key)."""
    acc: dict[tuple, dict] = defaultdict(
        lambda: {"events": 0, "plays": 0, "watch_ms": 0, "rebuffer_ms": 0, "viewers": set()}
    )
    for e in events:
        w = e["event_time"] // WINDOW_MS * WINDOW_MS
        a = acc[(w, e["title_id"], e["country"])]
        a["events"] += 1
        a["plays"] += e["event_type"] == "PLAY"
        a["watch_ms"] += e["watched_ms"]
        a["rebuffer_ms"] += e["buffer_ms"]
        a["viewers"].add(e["profile_id"])
    return [
        {
            "window_start": w,
            "window_end": w + WINDOW_MS,
            "title_id": t,
            "country": c,
            "events": a["events"],
            "plays": a["plays"],
            "viewers": len(a["viewers"]),
            "watch_ms": a["watch_ms"],
            "rebuffer_ms": a["rebuffer_ms"],
            "rebuffer_ratio": 0.0,
            "completions": 0,
            "pane": "ON_TIME",
            "revision": revision,
            "watermark": watermark_ms,
            "emitted_at": watermark_ms,
        }
        for (w, t, c), a in acc.items()
    ]


def _late(e: dict, watermark_ms: int) -> dict:
    w = e["event_time"] // WINDOW_MS * WINDOW_MS
    return {
        "event": e,
        "source_topic": "events",
        "source_partition": 0,
        "source_offset": 0,
        "window_start": w,
        "window_end": w + WINDOW_MS,
        "watermark": watermark_ms,
        "lateness_ms": watermark_ms - e["event_time"],
        "reason": "window closed",
        "emitted_at": watermark_ms,
    }


@pytest.mark.integration
def test_late_and_invalid_events_explain_every_difference(tmp_path: Path) -> None:
    settings = lake_only_settings(tmp_path).model_copy(update={"window_size_ms": WINDOW_MS})
    config = BatchConfig.from_settings(settings)
    catalog = open_catalog(config.lake)
    sync_titles(catalog, config.lake.namespace, None)
    ns = settings.catalog_namespace
    events_t = ensure_table(catalog, ns, PLAYBACK_EVENTS)
    panes_t = ensure_table(catalog, ns, VIEWING_METRICS)
    late_t = ensure_table(catalog, ns, LATE_EVENTS)

    events = simulated(6_000, start_ms=W47_START_MS)
    end_ms = events[-1]["event_time"]
    late = events[100:6_000:97]  # 61 injected late events, spread over many keys
    late_ids = {e["event_id"] for e in late}
    invalid = [
        dict(events[5], event_id="bad-title", title_id="t9999"),
        dict(events[6], event_id="bad-watch", watched_ms=-5),
    ]
    append_events(events_t, events + invalid)

    on_time = [e for e in events if e["event_id"] not in late_ids]
    # Revision 0 of every pane undercounts; revision 1 is final; an old revision 0 replayed
    # afterwards must not win.
    first = _panes(on_time[: len(on_time) // 2], revision=0, watermark_ms=end_ms)
    final = _panes(on_time, revision=1, watermark_ms=end_ms + WINDOW_MS)
    upsert_panes(panes_t, panes_arrow(first), {})
    upsert_panes(panes_t, panes_arrow(final), {})
    upsert_panes(panes_t, panes_arrow(first), {})
    assert panes_t.scan().count() == len(final)
    late_t.append(late_arrow([_late(e, end_ms) for e in late]))

    result = run_reconcile(config, catalog, W47_START_MS, end_ms + WINDOW_MS)
    assert result.ok, result.unexplained[:3]
    assert result.totals["late"]["events"] == len(late)
    assert result.totals["invalid"]["events"] == len(invalid)
    assert result.totals["batch"]["events"] == len(events) + len(invalid)
    assert result.totals["stream"]["events"] == len(on_time)
    assert result.explained_by_late + result.explained_by_invalid >= len(
        {(e["event_time"] // WINDOW_MS, e["title_id"], e["country"]) for e in late}
    )
    assert result.duplicates == {"client_duplicate_events": 0, "sink_duplicate_offsets": 0}

    # An event lost without a trace (not late, not invalid) is unexplained, with its key.
    lost = on_time[10]
    keep = [e for e in on_time if e is not lost]
    upsert_panes(
        panes_t, panes_arrow(_panes(keep, revision=2, watermark_ms=end_ms + WINDOW_MS)), {}
    )
    result = run_reconcile(config, catalog, W47_START_MS, end_ms + WINDOW_MS)
    assert [(u["title_id"], u["country"]) for u in result.unexplained] == [
        (lost["title_id"], lost["country"])
    ]
    u = result.unexplained[0]
    assert u["batch"]["events"] - u["stream"]["events"] - u["late"]["events"] == 1


@pytest.mark.unit
def test_compare_classifies_keys() -> None:
    k = (0, "t1", "US")
    pending = (120_000, "t2", "US")
    r = compare(
        batch={k: (5, 1, 50, 0), pending: (1, 1, 1, 0)},
        stream={k: (3, 1, 30, 0)},
        late={k: (2, 0, 20, 0)},
        invalid={},
        window_size_ms=60_000,
        stream_watermark_ms=60_000,
    )
    assert (r.keys, r.explained_by_late, r.pending, r.ok) == (2, 1, 1, True)
    r = compare({k: (5, 1, 50, 0)}, {k: (3, 1, 30, 0)}, {k: (1, 0, 10, 0)}, {}, 60_000, 60_000)
    assert not r.ok and r.unexplained[0]["title_id"] == "t1"

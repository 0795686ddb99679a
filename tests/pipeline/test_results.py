"""merge_status: one view of the stream job from the status records of its workers."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.stream.readback import STALE_STATUS_MS, merge_status

pytestmark = pytest.mark.unit


def source(p: int, records_in: int, watermark_ms: int | None = 1_000) -> dict[str, Any]:
    return {
        "partition": p,
        "watermark_ms": watermark_ms,
        "max_event_time_ms": None,
        "last_offset": records_in - 1,
        "idle": False,
        "assigned": True,
        "counters": {"records_in": records_in, "dead_letters": 1},
    }


def window(q: int, watermark_ms: int | None, events_in: int) -> dict[str, Any]:
    return {
        "partition": q,
        "watermark_ms": watermark_ms,
        "sources": [],
        "open_windows": [[0, 60_000], [60_000 * q, 60_000 * (q + 1)]],
        "state_size": 2,
        "engine": {"events_in": events_in},
        "counters": {"panes_on_time": q + 1},
    }


def worker(name: str, time_ms: int, sources: list[Any], windows: list[Any]) -> dict[str, Any]:
    return {
        "time_ms": time_ms,
        "worker": name,
        "job_id": "job",
        "events_topic": "events",
        "started": True,
        "sources": sources,
        "windows": windows,
        "config": {},
    }


def test_two_workers_add_up_and_the_job_watermark_is_the_lowest() -> None:
    merged = merge_status(
        [
            worker("a", 10_000, [source(0, 5)], [window(0, 7_000, 4)]),
            worker("b", 10_500, [source(1, 3)], [window(1, 9_000, 2), window(2, 8_000, 1)]),
        ]
    )
    assert merged["workers"] == ["a", "b"]
    assert [(p["partition"], p["worker"]) for p in merged["partitions"]] == [(0, "a"), (1, "b")]
    assert [q["partition"] for q in merged["windows"]] == [0, 1, 2]
    assert merged["watermark_ms"] == 7_000
    assert merged["counters"] == {"dead_letters": 2, "panes_on_time": 6, "records_in": 8}
    assert merged["engine"] == {"events_in": 7}
    assert merged["open_windows"] == [(0, 60_000), (60_000, 120_000), (120_000, 180_000)]
    assert merged["state_size"] == 6


def test_a_routed_partition_without_watermark_leaves_the_job_without_one() -> None:
    merged = merge_status([worker("a", 1, [], [window(0, 7_000, 1), window(1, None, 0)])])
    assert merged["watermark_ms"] is None


def test_a_partition_handed_over_is_taken_from_the_newer_worker_and_a_gone_one_is_dropped() -> None:
    merged = merge_status(
        [
            worker("gone", 1_000, [source(2, 100)], []),
            worker("old", 20_000, [source(0, 5)], [window(0, 1_000, 5)]),
            worker("new", 20_000 + STALE_STATUS_MS, [source(0, 9)], [window(0, 2_000, 9)]),
        ]
    )
    assert merged["workers"] == ["old", "new"]
    assert [(p["partition"], p["counters"]["records_in"]) for p in merged["partitions"]] == [(0, 9)]
    assert merged["watermark_ms"] == 2_000 and merged["engine"] == {"events_in": 9}

"""`sandbox watch`'s rendering of the merged status of several workers."""

from __future__ import annotations

import pytest
from rich.console import Console

from config.settings import Settings
from pipeline.stream.readback import merge_status
from sandbox.views.watch import render

pytestmark = pytest.mark.unit

T0 = 1_748_772_000_000


def test_watch_shows_each_partition_with_its_worker_and_what_holds_a_routed_watermark() -> None:
    def source(p: int, watermark_ms: int) -> dict[str, object]:
        return {
            "partition": p,
            "watermark_ms": watermark_ms,
            "max_event_time_ms": watermark_ms + 10_000,
            "last_offset": 9,
            "idle": False,
            "assigned": True,
            "counters": {"records_in": 10},
        }

    window = {
        "partition": 0,
        "watermark_ms": T0,
        "sources": [
            {"partition": 0, "watermark_ms": T0, "idle": False},
            {"partition": 1, "watermark_ms": T0 + 60_000, "idle": False},
        ],
        "open_windows": [[T0, T0 + 60_000]],
        "state_size": 4,
        "engine": {"events_in": 20, "on_time": 20},
        "counters": {"panes_on_time": 3},
    }
    status = merge_status(
        [
            {"time_ms": T0, "worker": "host:111", "sources": [source(0, T0)], "windows": [window]},
            {"time_ms": T0, "worker": "host:222", "sources": [source(1, T0 + 60_000)]},
        ]
    )
    console = Console(width=200, record=True)
    console.print(render(status, [], T0 + 5_000, Settings()))
    text = console.export_text()
    assert "host:111" in text and "host:222" in text
    assert "events 0" in text  # routed partition 0 is held back by events partition 0
    assert "events 1" not in text
    assert "records 20" in text

"""`sandbox watch`: the stream job seen live, from its status and metrics topics.

The job publishes a JSON status every second (pipeline/stream/app.py, timer "job-status");
this view merges the workers' records and shows the watermark of every events partition
next to the wall clock (how far event time lags), whether it is idle, which worker owns it;
the watermark of every routed partition and the source partitions holding it back; the
open windows, the latest panes and the late and dead-letter counters. It only reads
topics: it works against a job started by `sandbox up` or by `sandbox worker` in another
terminal.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from config.clock import iso_ms
from config.clock import now_ms as wall_ms
from config.settings import Settings
from kafka_io.reader import make_consumer
from pipeline.stream.readback import latest_panes, merge_status
from schemas.codec import DecodeError
from schemas.topics import codec

_iso = iso_ms


def _behind(now_ms: int, ms: int | None) -> str:
    if ms is None:
        return "-inf"
    seconds = (now_ms - ms) / 1000
    return f"{seconds:,.1f}s" if abs(seconds) < 3600 else f"{seconds / 3600:,.1f}h"


def render(
    status: dict[str, Any] | None, panes: list[dict[str, Any]], now_ms: int, settings: Settings
) -> Group:
    if status is None:
        return Group(
            Text(
                f"waiting for the job {settings.stream_job_id} to publish its status "
                f"on {settings.job_status_topic} (is `sandbox worker` running?)"
            )
        )
    parts: list[Any] = []
    wm = status.get("watermark_ms")
    parts.append(
        Text(
            f"job {status.get('job_id')}  wall clock {_iso(now_ms)}  watermark {_iso(wm)}  "
            f"(event time behind the wall clock by {_behind(now_ms, wm)})"
        )
    )
    table = Table(title="partitions of " + str(status.get("events_topic")))
    for col in (
        "partition",
        "watermark",
        "behind wall clock",
        "newest event",
        "last offset",
        "idle",
        "worker",
    ):
        table.add_column(col)
    for p in status.get("partitions", []):
        table.add_row(
            str(p["partition"]),
            _iso(p["watermark_ms"]),
            _behind(now_ms, p["watermark_ms"]),
            _iso(p["max_event_time_ms"]),
            str(p["last_offset"]),
            "yes" if p["idle"] else "no",
            str(p.get("worker", "-")),
        )
    parts.append(table)
    routed = Table(title="routed partitions (each aggregates its own titles x countries)")
    for col in ("partition", "watermark", "behind wall clock", "held by", "state", "worker"):
        routed.add_column(col)
    for q in status.get("windows", []):
        wm_q = q["watermark_ms"]
        holding = [
            str(src["partition"])
            for src in q["sources"]
            if not src["idle"] and (wm_q is None or src["watermark_ms"] == wm_q)
        ]
        routed.add_row(
            str(q["partition"]),
            _iso(wm_q),
            _behind(now_ms, wm_q),
            ", ".join(f"events {p}" for p in holding) or "-",
            str(q["state_size"]),
            str(q.get("worker", "-")),
        )
    parts.append(routed)
    windows = status.get("open_windows", [])
    shown = ", ".join(_iso(start)[11:19] for start, _end in windows[-8:])
    parts.append(
        Text(
            f"open windows: {len(windows)}  ({shown})  state entries: {status.get('state_size', 0)}"
        )
    )
    c = status.get("counters", {})
    e = status.get("engine", {})
    parts.append(
        Text(
            f"records {c.get('records_in', 0):,}  on time {e.get('on_time', 0):,}  "
            f"unobservably late {e.get('unobservably_late', 0):,}  late updates "
            f"{e.get('late_updates', 0):,}  late (dropped) {c.get('late_events', 0):,}  "
            f"dead letters {c.get('dead_letters', 0):,}  "
            f"panes {c.get('panes_on_time', 0):,} on time / {c.get('panes_late', 0):,} late"
        )
    )
    latest = Table(title="latest panes")
    for col in ("window", "title", "country", "events", "viewers", "pane", "rev"):
        latest.add_column(col)
    for p in panes[-10:]:
        latest.add_row(
            _iso(p["window_start"]),
            p["title_id"],
            p["country"],
            str(p["events"]),
            str(p["viewers"]),
            p["pane"],
            str(p["revision"]),
        )
    parts.append(latest)
    return Group(*parts)


def watch_job(settings: Settings, *, console: Console, seconds: float | None) -> None:
    consumer = make_consumer(
        settings.bootstrap_servers,
        f"sandbox-watch-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": False},
    )
    consumer.subscribe([settings.job_status_topic, settings.viewing_metrics_topic])
    decode = codec("viewing_metric", "ms").decode
    prefix = f"{settings.stream_job_id}/".encode()
    workers: dict[bytes, dict[str, Any]] = {}
    panes: dict[tuple[int, str, str], dict[str, Any]] = {}
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        with Live(
            render(None, [], wall_ms(), settings),
            console=console,
            refresh_per_second=2,
        ) as live:
            while deadline is None or time.monotonic() < deadline:
                for msg in consumer.consume(2000, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    if msg.topic() == settings.job_status_topic:
                        key = msg.key()
                        value = msg.value()
                        if key is not None and key.startswith(prefix) and value is not None:
                            workers[key] = json.loads(value)
                        continue
                    try:
                        pane = decode(msg.value())  # type: ignore[arg-type]
                    except DecodeError:
                        continue
                    panes[(pane["window_start"], pane["title_id"], pane["country"])] = pane
                if len(panes) > 5000:  # keep the newest windows only
                    for k in sorted(panes)[:-1000]:
                        del panes[k]
                live.update(
                    render(
                        merge_status(list(workers.values())) if workers else None,
                        latest_panes(list(panes.values())),
                        wall_ms(),
                        settings,
                    )
                )
    finally:
        consumer.close()

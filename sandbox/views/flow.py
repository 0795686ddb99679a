"""The live "events flowing" view (`sandbox flow`, and step 3 of the demo).

Reads the events topic with a fresh consumer group (from the beginning), tallies events per
country and type (pipeline/event_counts.py) and redraws a rich table a few times a second.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from config.settings import Settings
from kafka_io.reader import make_consumer, read_messages
from pipeline.event_counts import EventTally
from schemas.topics import events_codec

EVENT_TYPES = ("PLAY", "PAUSE", "BUFFER", "HEARTBEAT", "STOP")


def render(tally: EventTally, title: str, top: int = 12) -> Group:
    table = Table(title=title, title_justify="left")
    table.add_column("country")
    for etype in EVENT_TYPES:
        table.add_column(etype, justify="right")
    table.add_column("total", justify="right", style="bold")
    for country in tally.countries()[:top]:
        row = [tally.by_country_type.get((country, e), 0) for e in EVENT_TYPES]
        table.add_row(country, *(f"{n:,}" for n in row), f"{sum(row):,}")
    parts = ", ".join(f"p{p}={n:,}" for p, n in sorted(tally.partitions.items()))
    errors = ", ".join(f"{k}={n}" for k, n in tally.decode_errors.items()) or "none"
    footer = Text(
        f"{tally.events:,} events  |  per partition: {parts or '-'}  |  decode errors: {errors}"
    )
    return Group(table, footer)


def watch_flow(
    settings: Settings,
    *,
    group: str,
    seconds: float,
    stop_at_end: bool = False,
    console: Console | None = None,
) -> EventTally:
    """Tally the events topic for ``seconds`` (or until caught up); draw it if ``console``."""
    codec = events_codec(timestamps="ms")
    tally = EventTally()
    consumer = make_consumer(settings.bootstrap_servers, group)
    consumer.subscribe([settings.events_topic])
    title = f"events on {settings.events_topic} (per country and type)"
    deadline = time.monotonic() + seconds
    live = Live(render(tally, title), console=console, refresh_per_second=4) if console else None
    try:
        if live:
            live.start()
        while time.monotonic() < deadline:
            window = min(0.5, deadline - time.monotonic())
            for msg in read_messages(consumer, timeout_s=window, stop_at_end=stop_at_end):
                tally.add(codec, msg.value(), msg.partition() or 0)
            if live:
                live.update(render(tally, title))
            if stop_at_end and tally.events and _caught_up(consumer):
                break
    finally:
        if live:
            live.update(render(tally, title))
            live.stop()
        consumer.close()
    return tally


def _caught_up(consumer: Any) -> bool:
    """Every assigned partition's position is at its high watermark."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    for tp in consumer.position(assignment):
        _, high = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
        if tp.offset < 0 or tp.offset < high:
            return False
    return True

"""`sandbox produce` and catalog publishing: the simulator, paced or not, into Kafka.

Backfill mode produces a past span as fast as the machine allows. Real-time mode starts at
the current time and never sends an event before the wall clock reaches its event time, so
the stream job sees a live feed. Ctrl-C stops generating, then every produced event is still
flushed and counted.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.clock import now_ms, parse_iso_ms
from config.errors import SandboxError
from kafka_io.publisher import Publisher
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.topics import events_codec, titles_codec


class ProduceError(SandboxError):
    """Events or titles could not be delivered."""


@dataclass(frozen=True)
class ProduceRequest:
    """What `sandbox produce` was asked for; give ``events`` or ``duration_ms`` (or both)."""

    events: int | None = None  # stop after exactly this many
    duration_ms: int | None = None  # or after this much event time
    rate: float | None = None  # target events/s; None: derived from `clients`
    backfill_start_ms: int | None = None  # None: real time, starting now
    clients: int = 200
    countries: tuple[str, ...] | None = None  # None: every country of the catalog
    seed: int | None = None  # None: a fresh random seed (printed in the summary)
    ground_truth: str | None = None  # JSONL path
    partition: int | None = None  # None: the key decides

    def __post_init__(self) -> None:
        if self.events is None and self.duration_ms is None:
            raise ValueError("give a number of events or a duration")
        if self.duration_ms is not None and self.duration_ms <= 0:
            raise ValueError("the duration must be positive")


def parse_countries(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    codes = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    known = set(load_catalog().countries)
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise ValueError(
            f"unknown country code(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return codes


def parse_start(text: str) -> int:
    """ISO date or date-time (UTC unless it names an offset) -> epoch ms."""
    try:
        return parse_iso_ms(text)
    except ValueError as exc:
        raise ValueError(f"--backfill {text!r} is not an ISO date/time like 2026-11-16") from exc


def publish_catalog(bootstrap: str, titles_topic: str) -> int:
    """Every title to the compacted titles topic, keyed by title_id; returns the count."""
    catalog = load_catalog()
    codec = titles_codec()
    with Publisher(bootstrap) as pub:
        for title in catalog.titles:
            pub.send(
                titles_topic,
                codec.encode(catalog.to_record(title)),
                title.title_id.encode(),
            )
        pub.flush()
    if pub.counts.failed:
        raise ProduceError(f"publishing the catalog failed: {pub.counts.errors}")
    return pub.counts.acked


def simulate(request: ProduceRequest, seed: int, start_ms: int) -> Iterator[dict[str, Any]]:
    """The events a request asks for, in event-time order (not yet paced)."""
    sim = Simulator(
        load_catalog(),
        seed=seed,
        clients=request.clients,
        countries=request.countries,
        start_ms=start_ms,
        rate=request.rate,
    )
    end_ms = start_ms + request.duration_ms if request.duration_ms is not None else None
    events = sim.events(end_ms)
    if request.events is not None:
        events = itertools.islice(events, request.events)
    return events


def run_produce(
    bootstrap: str, topic: str, request: ProduceRequest, console: Console | None = None
) -> dict[str, Any]:
    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
    wall_start_ms = now_ms()
    realtime = request.backfill_start_ms is None
    start_ms = wall_start_ms if request.backfill_start_ms is None else request.backfill_start_ms
    events = simulate(request, seed, start_ms)
    codec = events_codec()
    interrupted = False
    started = time.perf_counter()
    with ExitStack() as stack:
        pub = stack.enter_context(Publisher(bootstrap))
        truth = None
        if request.ground_truth:
            from producers.ground_truth import GroundTruthWriter

            truth = stack.enter_context(GroundTruthWriter(request.ground_truth))
        progress, task = _progress(console, request, stack)
        try:
            for i, event in enumerate(events, 1):
                if realtime and event["event_time"] > wall_start_ms + 5:
                    # Never send an event before its time: wait (serving delivery reports).
                    while (lag := event["event_time"] - now_ms()) > 0:
                        pub.wait(min(lag / 1000, 0.2))
                pub.send(topic, codec.encode(event), key_for(event), request.partition)
                if truth is not None:
                    truth.write(event)
                if progress is not None and i % 2000 == 0:
                    progress.update(
                        task, completed=_done(request, i, event["event_time"] - start_ms)
                    )
        except KeyboardInterrupt:
            interrupted = True
        unreported = pub.flush(60)
        if progress is not None:
            progress.update(task, completed=_done(request, pub.counts.sent, None))
    elapsed_s = time.perf_counter() - started
    c = pub.counts
    return {
        "topic": topic,
        "mode": "real-time" if realtime else "backfill",
        "seed": seed,
        "sent": c.sent,
        "acked": c.acked,
        "failed": c.failed,
        "errors": c.errors,
        "unreported": unreported,
        "interrupted": interrupted,
        "elapsed_s": round(elapsed_s, 3),
        "events_per_s": round(c.acked / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "ground_truth": request.ground_truth,
    }


def _progress(
    console: Console | None, request: ProduceRequest, stack: ExitStack
) -> tuple[Progress | None, Any]:
    if console is None:
        return None, None
    total = request.events if request.events is not None else (request.duration_ms or 0) // 1000
    unit = "events" if request.events is not None else "s of event time"
    progress = Progress(
        TextColumn(f"producing ({unit})"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    stack.enter_context(progress)
    return progress, progress.add_task("produce", total=total)


def _done(request: ProduceRequest, count: int, elapsed_event_ms: int | None) -> int:
    """Progress in the bar's unit: events, or seconds of event time (None: finished)."""
    if request.events is not None:
        return count
    if elapsed_event_ms is None:
        return (request.duration_ms or 0) // 1000
    return max(0, elapsed_event_ms // 1000)

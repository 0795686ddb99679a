"""`sandbox demo` (= `make demo`): the whole pipeline, step by step, with what each step shows.

1. start the stack: Kafka (KRaft), topics, title catalog, the stream worker, the lake sink;
2. back-fill last week for five countries: the stream job handles history in event time,
   the sink writes it to Iceberg;
3. live clients for a few seconds, counted back from Kafka;
4. the stream job's windowed metrics (panes);
5. an injection: events five minutes late, which the job sets aside on the late topic;
6. the weekly Top-10 for last week, computed from the lake.

Each step calls the same functions as the command a learner would type for it (shown in
the step's title; sandbox/reports.py and the library), so the demo is also a tour of the CLI.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console

from config.clock import DAY_MS, now_ms
from config.errors import SandboxError
from config.settings import Settings
from infra import stack
from producers.run import ProduceRequest, publish_catalog, run_produce
from sandbox import reports
from sandbox.views.flow import watch_flow

DEMO_COUNTRIES = ("US", "GB", "BR", "IN", "JP")
BACKFILL_CLIENTS = 10  # ~100k events over a week: about half a minute for the stream job


def previous_week(today: date) -> tuple[str, int]:
    """The last complete ISO week before ``today``: (name like 2026-W46, Monday 00:00 UTC ms)."""
    monday = today - timedelta(days=today.weekday() + 7)
    year, week, _ = monday.isocalendar()
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return f"{year}-W{week:02d}", int(start.timestamp() * 1000)


def run_demo(settings: Settings, *, seconds: float, rate: float, console: Console) -> None:
    today = datetime.now(tz=UTC).date()
    week, monday_ms = previous_week(today)

    console.rule("[bold]1. Start the stack[/]  (sandbox up)")
    for line in stack.up(settings):
        console.print(line)
    titles = publish_catalog(settings.bootstrap_servers, settings.titles_topic)
    console.print(f"titles: {titles} published to {settings.titles_topic}")

    console.rule(
        f"[bold]2. Back-fill last week, {week}[/]  (sandbox produce --backfill ... --duration 7d)"
    )
    marker = settings.state_dir / f"demo-backfill-{week}.done"
    if marker.exists():
        console.print(f"{week} was back-filled by an earlier demo run; not sending it twice.")
    else:
        summary = run_produce(
            settings.bootstrap_servers,
            settings.events_topic,
            ProduceRequest(
                duration_ms=7 * DAY_MS,
                backfill_start_ms=monday_ms,
                clients=BACKFILL_CLIENTS,
                countries=DEMO_COUNTRIES,
                seed=42,
            ),
            console=console,
        )
        console.print(
            f"{summary['acked']:,} events of {week} for {', '.join(DEMO_COUNTRIES)} "
            f"sent in {summary['elapsed_s']:.1f}s"
        )
        if summary["failed"]:
            raise SandboxError(
                f"{summary['failed']} events were not delivered: {summary['errors']}"
            )
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{summary['acked']}\n")

    console.rule(
        f"[bold]3. Live clients for {seconds:g}s[/]  (sandbox produce --rate; sandbox flow)"
    )
    live(settings, seconds=seconds, rate=rate, console=console)

    console.rule("[bold]4. Windowed metrics from the stream job[/]  (sandbox results --wait)")
    console.print(
        "Panes of 1-minute event-time windows per (title, country); last week's "
        "windows fired as the job's watermark moved through the back-fill."
    )
    reports.show_panes(settings, console, wait_s=300.0, limit=12)

    console.rule(
        "[bold]5. Inject 20 events 5 minutes late[/]  "
        "(sandbox inject late --count 20 --by 5m; sandbox late --wait)"
    )
    from producers.inject import late as inject_late

    inject_late(
        settings.bootstrap_servers,
        settings.events_topic,
        count=20,
        by_ms=300_000,
        now_ms=now_ms(),
        seed=int(time.time()),
        partition=None,
    )
    console.print(
        f"Their windows closed more than {settings.allowed_lateness_ms // 1000}s "
        "(the allowed lateness) before the watermark, so the job leaves its panes "
        "unchanged and sends the events to the late topic, with how late they were:"
    )
    reports.show_late(settings, console, wait_s=120.0, limit=8)

    console.rule(
        f"[bold]6. Weekly Top-10 for {week} from the Iceberg lake[/]  "
        f"(sandbox top10 --week {week} --show --wait)"
    )
    reports.run_top10(settings, console, week=week, show=True, wait_s=300.0)

    console.rule()
    console.print(
        "The stack is still running. Poke it: `sandbox watch`, "
        "`sandbox inject offline-sync --devices 5 --offline-for 6h`, "
        "`sandbox reconcile --from ... --to ...`; then `sandbox down`."
    )


def live(settings: Settings, *, seconds: float, rate: float, console: Console) -> None:
    """Clients play for ``seconds`` at ``rate`` events/s while the flow view reads them back."""
    request = ProduceRequest(duration_ms=round(seconds * 1000), rate=rate, clients=400)
    summary: dict[str, Any] = {}
    producer = threading.Thread(
        target=lambda: summary.update(
            run_produce(settings.bootstrap_servers, settings.events_topic, request)
        ),
        name="demo-producer",
        daemon=True,
    )
    producer.start()
    tally = watch_flow(
        settings, group=f"sandbox-demo-{time.time_ns()}", seconds=seconds + 3, console=console
    )
    producer.join(timeout=30)
    console.print()
    console.print(
        f"produced {summary.get('sent', 0):,} live events ({summary.get('acked', 0):,} acked, "
        f"{summary.get('failed', 0)} failed); the topic holds {tally.events:,} in all."
    )

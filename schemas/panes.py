"""What a pane is, by the viewing_metric.v1 contract: one (window_start, title_id, country),
revised as late events arrive; the highest revision wins (the topic is keyed so, and an
upserting sink keeps that one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PaneKey = tuple[int, str, str]  # (window_start ms, title_id, country)


def pane_of(record: Mapping[str, Any]) -> PaneKey:
    return (record["window_start"], record["title_id"], record["country"])


def latest_revisions(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The highest revision per pane (the later record on a tie: a replayed revision is the
    same pane), sorted by window start, title, country."""
    best: dict[PaneKey, Mapping[str, Any]] = {}
    for record in records:
        key = pane_of(record)
        held = best.get(key)
        if held is None or record["revision"] >= held["revision"]:
            best[key] = record
    return [dict(best[k]) for k in sorted(best)]

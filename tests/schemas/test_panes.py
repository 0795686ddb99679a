"""The latest revision of each pane, the one rule the readers and the lake share."""

from __future__ import annotations

import pytest

from schemas.panes import latest_revisions

pytestmark = pytest.mark.unit


def pane(window_start: int, title: str, revision: int, events: int) -> dict[str, object]:
    return {
        "window_start": window_start,
        "title_id": title,
        "country": "US",
        "revision": revision,
        "events": events,
    }


def test_the_highest_revision_of_each_pane_wins_in_key_order() -> None:
    records = [pane(60, "t2", 0, 1), pane(0, "t1", 1, 5), pane(0, "t1", 0, 3), pane(60, "t2", 2, 9)]
    assert latest_revisions(records) == [pane(0, "t1", 1, 5), pane(60, "t2", 2, 9)]


def test_on_a_tie_the_later_record_wins() -> None:
    assert latest_revisions([pane(0, "t1", 1, 5), pane(0, "t1", 1, 6)]) == [pane(0, "t1", 1, 6)]

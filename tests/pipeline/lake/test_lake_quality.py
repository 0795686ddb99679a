"""Overlapping sessions (pipeline/lake/quality.py): the sweep on hand-made intervals and
against an all-pairs check, then the batch job on a lake of simulated events (which have
none: a simulated profile watches one session at a time) with hand-made overlaps added,
from Python and from the `sandbox` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lake_helpers import W47_START_MS, append_events, lake_only_settings, simulated
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from config.clock import DAY_MS, HOUR_MS, MINUTE_MS
from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import BatchConfig
from pipeline.lake.quality import (
    Overlap,
    Session,
    count_touching,
    find_overlaps,
    read_overlaps,
    run_overlaps,
)
from pipeline.lake.tables import PLAYBACK_EVENTS, ensure_table

SANDBOX = str(Path(sys.executable).parent / "sandbox")  # the installed console script
W48_START_MS = W47_START_MS + 7 * DAY_MS


def pairs(sessions: list[tuple[str, str, int, int]]) -> list[tuple[str, str, int]]:
    return [(o.session_a, o.session_b, o.overlap_ms) for o in find_overlaps(sessions)]


# ---------------------------------------------------------------- the sweep, by hand


@pytest.mark.unit
def test_touching_sessions_do_not_overlap_and_are_counted_as_touching() -> None:
    s = [("p", "a", 0, 10), ("p", "b", 10, 20)]
    assert pairs(s) == []
    assert count_touching(s) == 1


@pytest.mark.unit
def test_identical_sessions_overlap_unless_zero_length() -> None:
    assert pairs([("p", "b", 5, 9), ("p", "a", 5, 9)]) == [("a", "b", 4)]
    assert pairs([("p", "a", 5, 5), ("p", "b", 5, 5)]) == []
    assert count_touching([("p", "a", 5, 5), ("p", "b", 5, 5)]) == 1  # once, not twice


@pytest.mark.unit
def test_a_nested_session_overlaps_by_its_own_length() -> None:
    assert pairs([("p", "outer", 0, 100), ("p", "inner", 20, 30)]) == [("inner", "outer", 10)]


@pytest.mark.unit
def test_a_chain_gives_two_pairs_not_three() -> None:
    # a overlaps b, b overlaps c, a ends before c starts
    s = [("p", "c", 25, 40), ("p", "a", 0, 20), ("p", "b", 10, 30)]
    assert pairs(s) == [("a", "b", 10), ("b", "c", 5)]


@pytest.mark.unit
def test_one_session_users_and_other_profiles_have_no_pairs() -> None:
    s = [("p1", "a", 0, 100), ("p2", "b", 0, 100), ("p3", "c", 50, 60)]
    assert pairs(s) == []
    assert count_touching(s) == 0


@pytest.mark.unit
def test_a_zero_length_session_overlaps_nothing_even_inside_another() -> None:
    s = [("p", "long", 0, 100), ("p", "one-event", 50, 50), ("p", "at-end", 100, 100)]
    assert pairs(s) == []
    assert count_touching(s) == 1  # "at-end" touches "long"'s end; "one-event" touches nothing


@pytest.mark.unit
def test_pairs_carry_both_intervals_ordered_by_session_id() -> None:
    (o,) = find_overlaps([Session("p", "z", 0, 10), Session("p", "m", 5, 20)])
    assert o == Overlap("p", "m", 5, 20, "z", 0, 10)
    assert (o.overlap_ms, o.later_start_ms) == (5, 5)
    assert o.as_dict()["overlap_ms"] == 5


@pytest.mark.unit
def test_touching_in_a_week_counts_the_pairs_whose_later_start_is_in_it() -> None:
    s = [("p", "a", 0, 10), ("p", "b", 10, 20), ("p", "c", 20, 30)]
    assert count_touching(s) == 2
    assert count_touching(s, 10, 20) == 1  # (a, b): b starts at 10
    assert count_touching(s, 11, 20) == 0


@pytest.mark.unit
def test_a_session_id_twice_or_backwards_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        find_overlaps([("p", "a", 0, 10), ("q", "a", 0, 10)])
    with pytest.raises(ValueError, match="ends before it starts"):
        count_touching([("p", "a", 10, 0)])


# ---------------------------------------------------------- the sweep vs all pairs


def brute_overlaps(sessions: list[tuple[str, str, int, int]]) -> list[dict[str, Any]]:
    """The definition, literally, over every pair."""
    out = []
    for x, y in combinations(sessions, 2):
        (p, sx, xs, xe), (q, sy, ys, ye) = x, y
        if p == q and xs < xe and ys < ye and xs < ye and ys < xe:
            (a, a0, a1), (b, b0, b1) = sorted([(sx, xs, xe), (sy, ys, ye)])
            out.append(
                {
                    "profile_id": p,
                    "session_a": a,
                    "a_start_ms": a0,
                    "a_end_ms": a1,
                    "session_b": b,
                    "b_start_ms": b0,
                    "b_end_ms": b1,
                    "overlap_ms": min(xe, ye) - max(xs, ys),
                }
            )
    return sorted(out, key=lambda r: (r["profile_id"], r["session_a"], r["session_b"]))


def brute_touching(sessions: list[tuple[str, str, int, int]], lo: int, hi: int) -> int:
    n = 0
    for (p, _, xs, xe), (q, _, ys, ye) in combinations(sessions, 2):
        if p == q and (xe == ys or ye == xs) and lo <= max(xs, ys) < hi:
            n += 1
    return n


session_rows = st.lists(
    st.tuples(
        st.text(alphabet="abcdef", min_size=1, max_size=3),  # session id
        st.sampled_from(["p0", "p1", "p2"]),
        st.integers(0, 30),  # start: small, so ties are frequent
        st.integers(0, 12),  # length, 0 = a zero-length session
    ),
    max_size=40,
    unique_by=lambda t: t[0],
)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(rows=session_rows, lo=st.integers(0, 45), width=st.integers(0, 45))
def test_the_sweep_finds_exactly_the_pairs_of_the_all_pairs_check(
    rows: list[tuple[str, str, int, int]], lo: int, width: int
) -> None:
    sessions = [(p, sid, start, start + length) for sid, p, start, length in rows]
    assert [o.as_dict() for o in find_overlaps(sessions)] == brute_overlaps(sessions)
    assert count_touching(sessions) == brute_touching(sessions, -1, 10**9)
    assert count_touching(sessions, lo, lo + width) == brute_touching(sessions, lo, lo + width)


# ------------------------------------------------------------------- the batch job


def spans(events: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """(profile_id, session_id, first, last event_time) of each session of one profile,
    straight from the event dicts (independent of the job's scan and aggregation)."""
    seen: dict[str, list[Any]] = {}
    for e in events:
        span = seen.setdefault(e["session_id"], [set(), e["event_time"], e["event_time"]])
        span[0].add(e["profile_id"])
        span[1] = min(span[1], e["event_time"])
        span[2] = max(span[2], e["event_time"])
    return [(next(iter(ps)), sid, a, b) for sid, (ps, a, b) in seen.items() if len(ps) == 1]


def definition(events: list[dict[str, Any]], week_start_ms: int) -> list[dict[str, Any]]:
    """The week's overlapping pairs by the definition (an all-pairs check): a pair belongs
    to the week of its later start."""
    return [
        r
        for r in brute_overlaps(spans(events))
        if week_start_ms <= max(r["a_start_ms"], r["b_start_ms"]) < week_start_ms + 7 * DAY_MS
    ]


def week_of(week_start_ms: int) -> tuple[int, int]:
    return week_start_ms, week_start_ms + 7 * DAY_MS


def session_events(
    base: dict[str, Any], session_id: str, profile_id: str, *times_ms: int
) -> list[dict[str, Any]]:
    """A hand-made session: one event per time (PLAY first, STOP last), from a template."""
    out = []
    for i, t in enumerate(times_ms):
        kind = "PLAY" if i == 0 else "STOP" if i == len(times_ms) - 1 else "HEARTBEAT"
        out.append(
            dict(
                base,
                event_id=f"{session_id}-{i}",
                event_type=kind,
                event_time=t,
                sent_time=t,
                session_id=session_id,
                profile_id=profile_id,
                seq=i,
            )
        )
    return out


W, H, M = W48_START_MS, HOUR_MS, MINUTE_MS

#: The injected sessions: (session id, profile id, event times). Pairs of 2026-W48:
INJECTED: list[tuple[str, str, tuple[int, ...]]] = [
    ("inj-s1", "inj-p1", (W + 10 * H, W + 11 * H, W + 12 * H)),  # s1-s2 overlap 1 h
    ("inj-s2", "inj-p1", (W + 11 * H, W + 13 * H)),
    ("inj-a", "inj-p2", (W + DAY_MS, W + DAY_MS + 2 * H)),  # chain: a-b 1 h, b-c 30 min
    ("inj-b", "inj-p2", (W + DAY_MS + H, W + DAY_MS + 3 * H)),
    ("inj-c", "inj-p2", (W + DAY_MS + 150 * M, W + DAY_MS + 4 * H)),
    ("inj-x", "inj-p3", (W + 2 * DAY_MS, W + 2 * DAY_MS + H)),  # identical: 1 h
    ("inj-y", "inj-p3", (W + 2 * DAY_MS, W + 2 * DAY_MS + 30 * M, W + 2 * DAY_MS + H)),
    ("inj-outer", "inj-p4", (W + 3 * DAY_MS, W + 3 * DAY_MS + 5 * H)),  # nested: 1 h
    ("inj-inner", "inj-p4", (W + 3 * DAY_MS + H, W + 3 * DAY_MS + 2 * H)),
    ("inj-zero", "inj-p4", (W + 3 * DAY_MS + 30 * M,)),  # one event: overlaps nothing
    ("inj-t1", "inj-p5", (W + 4 * DAY_MS, W + 4 * DAY_MS + H)),  # touching: not a pair
    ("inj-t2", "inj-p5", (W + 4 * DAY_MS + H, W + 4 * DAY_MS + 2 * H)),
    # Both start on Sunday and end in the next week: 90 min (the ends come from the margin).
    ("inj-e", "inj-p6", (W + 7 * DAY_MS - H, W + 7 * DAY_MS + 2 * H)),
    ("inj-f", "inj-p6", (W + 7 * DAY_MS - 30 * M, W + 7 * DAY_MS + H)),
    # g starts the Sunday before, h in the week: the pair is W48's (its later start), 20 min.
    ("inj-g", "inj-p7", (W - 30 * M, W + 30 * M)),
    ("inj-h", "inj-p7", (W + 10 * M, W + H)),
    # Both start the Sunday before: W47's pair, not W48's (40 min).
    ("inj-k", "inj-p8", (W - H, W + H)),
    ("inj-l", "inj-p8", (W - 50 * M, W - 10 * M)),
    ("inj-only", "inj-p10", (W + 5 * DAY_MS, W + 5 * DAY_MS + H)),  # a one-session user
]
EXPECTED_W48 = [
    ("inj-a", "inj-b", H),
    ("inj-b", "inj-c", 30 * M),
    ("inj-e", "inj-f", 90 * M),
    ("inj-g", "inj-h", 20 * M),
    ("inj-inner", "inj-outer", H),
    ("inj-s1", "inj-s2", H),
    ("inj-x", "inj-y", H),
]
N = len(EXPECTED_W48)


def injected(base: dict[str, Any]) -> list[dict[str, Any]]:
    events = [e for sid, p, times in INJECTED for e in session_events(base, sid, p, *times)]
    # A session id with events of two profiles: reported apart, in no pair.
    mixed = session_events(base, "inj-mixed", "inj-p9a", W + 6 * DAY_MS, W + 6 * DAY_MS + H)
    mixed[1]["profile_id"] = "inj-p9b"
    return events + mixed


@pytest.fixture
def lake(tmp_path: Path) -> tuple[BatchConfig, Catalog, Table]:
    config = BatchConfig.from_settings(lake_only_settings(tmp_path))
    catalog = open_catalog(config.lake)
    return config, catalog, ensure_table(catalog, config.lake.namespace, PLAYBACK_EVENTS)


def found(result_pairs: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((r["session_a"], r["session_b"], r["overlap_ms"]) for r in result_pairs)


@pytest.mark.integration
def test_simulated_data_has_no_overlaps(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    """The simulator never starts a session for a profile that is still watching: on plain
    simulated data the all-pairs check and the job both find no pair, and no touching one."""
    config, catalog, events = lake
    sim = simulated(20_000, start_ms=W47_START_MS)
    append_events(events, sim)
    assert definition(sim, W47_START_MS) == []
    profiles = [p for p, *_ in spans(sim)]
    assert len(profiles) - len(set(profiles)) > 50  # sessions of profiles that come back
    result = run_overlaps(config, catalog, "2026-W47")
    assert result.overlaps == []
    assert result.touching_pairs == brute_touching(spans(sim), *week_of(W47_START_MS)) == 0
    assert result.profile_conflicts == []
    assert result.sessions == len({e["session_id"] for e in sim})
    assert result.events_scanned == len(sim)


@pytest.mark.integration
def test_injected_overlaps_are_found_exactly_and_none_in_clean_data(
    lake: tuple[BatchConfig, Catalog, Table], tmp_path: Path
) -> None:
    config, catalog, events = lake
    ns = config.lake.namespace
    clean = simulated(8_000, start_ms=W48_START_MS)  # plain simulated data
    assert definition(clean, W48_START_MS) == []  # clean, by the all-pairs check
    assert len({e["session_id"] for e in clean}) > 200
    append_events(events, clean, partition=0)
    first = run_overlaps(config, catalog, "2026-W48")
    assert first.overlaps == []
    assert read_overlaps(catalog, ns, "2026-W48").num_rows == 0

    extra = injected(clean[0])
    append_events(events, extra, partition=1)
    result = run_overlaps(config, catalog, "2026-W48")
    assert found([o.as_dict() for o in result.overlaps]) == EXPECTED_W48
    assert [o.as_dict() for o in result.overlaps] == definition(clean + extra, W48_START_MS)
    week = week_of(W48_START_MS)
    assert brute_touching(spans(clean), *week) == 0
    assert result.touching_pairs == brute_touching(spans(clean + extra), *week) == 1
    assert [(c.session_id, c.profile_ids) for c in result.profile_conflicts] == [
        ("inj-mixed", ("inj-p9a", "inj-p9b"))
    ]
    assert result.zero_length_sessions >= 1
    assert result.sessions_longer_than_margin == 0

    # The table holds the week's N rows; a rerun writes the same rows, replacing them.
    rows = read_overlaps(catalog, ns, "2026-W48")
    assert rows.num_rows == N
    assert found(rows.to_pylist()) == EXPECTED_W48
    assert set(rows["week"].to_pylist()) == {"2026-W48"}
    again = run_overlaps(config, catalog, "2026-W48")
    assert again.overlaps == result.overlaps
    assert read_overlaps(catalog, ns, "2026-W48").equals(rows)

    # The week before gets its own pair, and W48's rows stay.
    w47 = run_overlaps(config, catalog, "2026-W47")
    assert found([o.as_dict() for o in w47.overlaps]) == [("inj-k", "inj-l", 40 * M)]
    assert read_overlaps(catalog, ns, "2026-W47").num_rows == 1
    assert read_overlaps(catalog, ns, "2026-W48").equals(rows)

    # The command, as a user runs it, on the same lake.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_STATE_DIR"] = str(tmp_path / ".sandbox")
    cli = subprocess.run(
        [SANDBOX, "quality", "overlaps", "--week", "2026-W48", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["overlapping_pairs"] == N
    assert found(report["pairs"]) == EXPECTED_W48
    assert report["touching_pairs"] == result.touching_pairs
    assert report["profile_conflicts"][0]["profile_ids"] == ["inj-p9a", "inj-p9b"]
    assert read_overlaps(catalog, ns, "2026-W48").equals(rows)

    text = subprocess.run(
        [SANDBOX, "quality", "overlaps", "--week", "2026-W48"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**env, "COLUMNS": "200"},
    )
    assert text.returncode == 0, text.stderr
    assert (
        f"{N} overlapping pairs" in text.stdout and "1 touching pairs (not overlaps)" in text.stdout
    )
    assert "inj-mixed" in text.stdout


@pytest.mark.unit
def test_a_week_that_cannot_be_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_STATE_DIR"] = str(tmp_path / ".sandbox")
    result = subprocess.run(
        [SANDBOX, "quality", "overlaps", "--week", "2026-W99"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sandbox quality overlaps: error: '2026-W99': Invalid week: 99 "
        "(see sandbox quality overlaps --help)"
    )

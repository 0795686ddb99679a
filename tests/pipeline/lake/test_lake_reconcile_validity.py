"""Reconciliation calls "invalid" exactly what stage 1 (pipeline/validate.py) rejects."""

from __future__ import annotations

from pathlib import Path

import pytest
from lake_helpers import W47_START_MS, append_events, lake_only_settings, simulated

from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import BatchConfig
from pipeline.lake.reconcile import run_reconcile
from pipeline.lake.tables import PLAYBACK_EVENTS, ensure_table
from pipeline.lake.titles import sync_titles

WINDOW_MS = 60_000


@pytest.mark.integration
def test_every_stage_1_rule_explains_a_difference(tmp_path: Path) -> None:
    settings = lake_only_settings(tmp_path).model_copy(update={"window_size_ms": WINDOW_MS})
    config = BatchConfig.from_settings(settings)
    catalog = open_catalog(config.lake)
    sync_titles(catalog, config.lake.namespace, None)
    events_t = ensure_table(catalog, settings.catalog_namespace, PLAYBACK_EVENTS)
    e = simulated(10, start_ms=W47_START_MS)
    # One event per rule of stage 1 (the former reconcile-only check knew title, country and
    # watched/buffer only) but the future-time one: the lake keeps no stage-1 clock.
    invalid = [
        dict(e[0], session_id="  "),
        dict(e[1], device_id=""),
        dict(e[2], buffer_ms=-1),
        dict(e[3], position_ms=-1),
        dict(e[4], country="us"),
        dict(e[5], country="ZZ"),
        dict(e[6], title_id="t9999"),
        dict(e[7], watched_ms=-1),
    ]
    append_events(events_t, invalid)

    # No stream pane at all: only events stage 1 rejected can explain a key.
    result = run_reconcile(config, catalog, W47_START_MS, e[-1]["event_time"] + WINDOW_MS)
    assert result.ok, result.unexplained[:3]
    assert result.totals["invalid"]["events"] == len(invalid)
    assert result.pending == 0 and result.explained_by_invalid == result.keys

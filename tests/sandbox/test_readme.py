"""The README tells the truth: its settings table and its commands match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.readme_table import render

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_settings_table_matches_the_settings() -> None:
    readme = (REPO / "README.md").read_text()
    assert render(readme) == readme, "run: .venv/bin/python -m sandbox.readme_table"


def test_the_two_commands_are_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()

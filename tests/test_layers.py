"""The import graph: no cycles between our modules (the layer contracts themselves are
import-linter's, run by `make lint`; see ARCHITECTURE.md)."""

from __future__ import annotations

import pytest

from tests.support.import_graph import climbing, cycles, imports_of_ours

pytestmark = pytest.mark.unit


def test_the_cycle_finder_finds_a_cycle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_ours_is_in_an_import_cycle() -> None:
    assert cycles(imports_of_ours()) == []


def test_no_import_climbs_a_layer_or_crosses_to_a_sibling() -> None:
    assert climbing({"pipeline.x": {"producers.y", "schemas.z"}, "config.a": {"sandbox.b"}}) == [
        ("config.a", "sandbox.b"),
        ("pipeline.x", "producers.y"),
    ]
    assert climbing(imports_of_ours()) == []

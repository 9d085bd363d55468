"""Clock skew: a service whose clock is tens of ms off is estimated and corrected before orderings."""

from __future__ import annotations

import pytest

from choreoscope.analysis.clock_skew import solve_offsets
from choreoscope.sample_traces.generate import generate_spans, write_otlp_jsonl
from tests.analysis_fixtures import analysed_store


def _analyse(tmp_path, name, offsets):
    path = tmp_path / f"{name}.otlp.jsonl"
    write_otlp_jsonl(generate_spans("ecommerce", instances=20, clock_offsets_ms=offsets), path)
    return analysed_store([path], tmp_path / f"{name}.duckdb")


def _orderings(con):
    return sorted(con.execute(
        "SELECT step_a, step_b, both_instances, a_before_b, b_started_early FROM step_orderings"
    ).fetchall())


@pytest.mark.parametrize("offset_ms", [-40.0, 55.0])
def test_offset_of_a_calling_service_is_estimated_within_a_few_ms(tmp_path, offset_ms):
    # shipping-service consumes orders.placed and calls order-service back synchronously
    skewed = _analyse(tmp_path, "skewed", {"shipping-service": offset_ms})
    true = _analyse(tmp_path, "true", {})
    offsets = dict(skewed.execute("SELECT service, offset_ns / 1e6 FROM clock_offsets").fetchall())
    assert offsets["shipping-service"] == pytest.approx(offset_ms, abs=3.0)
    others = {s: o for s, o in offsets.items() if s != "shipping-service"}
    assert all(abs(o) < 3.0 for o in others.values()), others
    # Orderings judged on corrected times come out as if the clocks agreed.
    assert _orderings(skewed) == _orderings(true)
    assert _orderings(true), "the scenario has unordered step pairs to compare"


def test_async_hops_only_correct_violations():
    # consumer seen starting 20 ms before its producer: shifted just enough (to lag 0)
    offsets = solve_offsets([], [("a", "b", -20e6, 10)], {"a": 10, "b": 5})
    assert offsets == {"a": 0.0, "b": -20e6}
    # a positive lag alone cannot be told from a slow clock: left alone
    offsets = solve_offsets([], [("a", "b", 30e6, 10)], {"a": 10, "b": 5})
    assert offsets == {"a": 0.0, "b": 0.0}


def test_sync_pairs_chain_along_the_spanning_tree():
    # b is 10 ms ahead of a, c is 5 ms behind b
    offsets = solve_offsets([("a", "b", 10e6, 50), ("b", "c", -5e6, 20)], [], {"a": 100, "b": 50, "c": 20})
    assert offsets["a"] == 0.0
    assert offsets["b"] == pytest.approx(10e6)
    assert offsets["c"] == pytest.approx(5e6)


def test_event_latency_is_never_negative_when_clocks_agree(tmp_path):
    con = _analyse(tmp_path, "true", {})
    lowest = con.execute(
        "SELECT min(latency_p50_ms), count(*) FROM workflow_edges WHERE via = 'event' "
        "AND NOT ('unanswered' = ANY(evidence))"
    ).fetchall()[0]
    assert lowest[1] > 0 and lowest[0] >= 0


def test_a_second_system_in_the_same_store_is_corrected_as_if_alone():
    """Two unrelated systems in one store (the demo loads five): the second system's consumer,
    seen starting 20 ms before its producer, is still corrected, relative to its own root."""
    alone = solve_offsets([], [("c", "d", -20e6, 10)], {"c": 8, "d": 4})
    together = solve_offsets([("a", "b", 1e6, 50)], [("c", "d", -20e6, 10)], {"a": 10, "b": 9, "c": 8, "d": 4})
    assert alone["d"] - alone["c"] == pytest.approx(-20e6)
    assert together["d"] - together["c"] == pytest.approx(-20e6)
    assert together["b"] - together["a"] == pytest.approx(1e6)

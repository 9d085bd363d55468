"""One test over the whole corpus (tests/corpus.py): the generated scenarios and the live captures
of real systems. It prints precision and recall per finding kind, and fails on any look-alike
reported or when a case scores below its F1 floor.

The floor is 0.95 everywhere but three cases, each with its reason (FLOORS): pika's instrumentation
records neither the routing key nor the queue (sample_traces/captures/rabbitmq_pika/README.md), so
the events of its topic exchange cannot be told apart and the three truth findings that name an
event cannot be matched by any analysis of these spans; one independent scenario defines a god
coordinator differently from the detector; in another, timing alone suggests two orderings. Each
floor is today's score, so it can only rise.
"""

from __future__ import annotations

import pytest

from choreoscope.analysis.analyze_cmd import analyze
from tests.corpus import corpus, score, table

MIN_F1 = 0.95
FLOORS = {
    "capture rabbitmq_pika": 0.44,
    # god_coordinator [collections] is missed: its author calls an orchestrator that drives two or
    # more endpoints of each of three or more services a god coordinator (collections: 9 operations
    # of 4 services); the detector's smell is five or more operations of one callee (beyond one
    # resource's create/read/update/delete), which none of collections' callees reaches. Two
    # readings of "knows too much about its callees"; the detector's is kept, not fitted.
    "independent lending_hybrid": 0.9,
    # two timing-path orderings into claims-reporting (an observer of every event): its handling
    # starts a steady ~75 ms after its siblings', one for one, in all 200 instances, with nothing
    # failing; nothing in the spans tells that timing from waiting. Reported at the timing path's
    # ceiling (0.75), never as a consequence; the truth lists no look-alike for them.
    "independent claims_rebalance": 0.87,
}

CASES = corpus()


@pytest.fixture(scope="module")
def scores():
    return {name: score(analyze([str(dump)], ":memory:"), truth) for name, (dump, truth) in CASES.items()}


def test_the_corpus_has_every_live_capture_and_independent_scenario():
    assert {n for n in CASES if n.startswith(("capture ", "independent "))} >= {
        "capture rabbitmq_pika", "capture celery_redis", "capture sns_sqs_moto", "capture node_amqplib_pg",
        "independent race_8_of_200"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_look_alike_is_reported_and_f1_holds(name, scores):
    if name == min(CASES):
        print("\n" + table(scores))
    s = scores[name]
    assert not s.lookalikes, f"{name}: look-alikes reported: {s.lookalikes}"
    floor = FLOORS.get(name, MIN_F1)
    assert s.f1 >= floor - 1e-9, f"{name}: F1 {s.f1:.2f} < {floor}; missed {s.missed}; unexpected {s.unexpected}"


# Captures whose truth workflows cannot be recovered by name, with the reason.
WORKFLOW_GAPS = {
    # loadgen is traced too (the requests instrumentation): every trace's root is its client span
    # `POST`, so the workflow is named after loadgen's call, not shop-api's route it enters by.
    "capture rabbitmq_pika",
}


@pytest.mark.parametrize("name", sorted(n for n in corpus(captures_only=True) if n not in WORKFLOW_GAPS))
def test_every_truth_workflow_is_recovered_with_its_entry_and_instances(name):
    """Each workflow the capture planted is a recovered workflow: entered by the same service and
    operation, with as many instances as were run (a consumer's trace reached from its producer's
    is no entry, even when its long poll started first; a batch consumer's trace linking several
    requests joins one of them, not all into one)."""
    import yaml

    dump, truth = CASES[name]
    recovered = {(w["entry"]["service"], w["entry"]["operation"]): w["instances"]
                 for w in analyze([str(dump)], ":memory:")["workflows"]}
    planted = {(w["entry"]["service"], w["entry"]["operation"]): w["instances"]
               for w in yaml.safe_load(truth.read_text())["workflows"]}
    assert {k: recovered.get(k) for k in planted} == planted

"""Each analysis stage on a small real store (tests/stage_stores.py), asserting the table it owns."""

from __future__ import annotations

from tests.stage_stores import order_flow_store, rows


def test_steps_labels_each_span_with_its_role_and_operation(tmp_path):
    con = order_flow_store(tmp_path, "steps")
    labels = set(rows(con, "SELECT service, role, operation FROM span_labels"))
    assert labels == {
        ("api", "server", "POST /orders"), ("api", "producer", "orders.placed"),
        ("stock", "consumer", "orders.placed"), ("stock", "client", "INSERT reservations"),
        ("ship", "consumer", "orders.placed"), ("ship", "client", "SELECT reservations"),
        ("mail", "consumer", "orders.placed"), ("audit", "consumer", "orders.placed"),
    }
    assert rows(con, "SELECT count(*), count(DISTINCT step_id) FROM span_labels") == [(24, 8)]
    assert rows(con, "SELECT DISTINCT step_id FROM span_labels WHERE service = 'api' AND role = 'server'") == [
        ("api server POST /orders",)]


def test_parent_edges_are_calls_except_producer_to_consumer(tmp_path):
    con = order_flow_store(tmp_path, "parent edges")
    edges = rows(con, """
        SELECT p.service || ' ' || p.role, c.service || ' ' || c.role, e.via, count(*)
        FROM parent_edges e
        JOIN span_labels p ON p.trace_id = e.src_trace_id AND p.span_id = e.src_span_id
        JOIN span_labels c ON c.trace_id = e.dst_trace_id AND c.span_id = e.dst_span_id
        GROUP BY ALL ORDER BY ALL""")
    assert edges == [
        ("api producer", "ship consumer", "event", 3), ("api producer", "stock consumer", "event", 3),
        ("api server", "api producer", "call", 3),
        ("ship consumer", "ship client", "call", 3), ("stock consumer", "stock client", "call", 3),
    ]


def test_causal_edges_add_the_link_and_the_message_id_hop(tmp_path):
    con = order_flow_store(tmp_path, "causal edges")
    by_evidence = dict(rows(con, "SELECT evidence, count(*) FROM causal_edges GROUP BY ALL"))
    assert by_evidence == {"parent": 15, "link": 3, "message_id": 3}
    inferred = rows(con, """
        SELECT DISTINCT c.service, e.via, e.inferred, e.confidence FROM causal_edges e
        JOIN span_labels c ON c.trace_id = e.dst_trace_id AND c.span_id = e.dst_span_id
        WHERE e.evidence <> 'parent' ORDER BY 1""")
    assert inferred == [("audit", "event", True, 0.9), ("mail", "event", False, 1.0)]


def test_instances_stitch_the_linked_and_inferred_traces_to_their_producer(tmp_path):
    con = order_flow_store(tmp_path, "instances")
    assert rows(con, "SELECT count(*), count(DISTINCT instance_id) FROM trace_instances") == [(9, 3)]
    assert rows(con, "SELECT DISTINCT workflow_id, spans, traces, services, errors FROM instances") == [
        ("api server POST /orders", 8, 3, 5, 0)]
    assert rows(con, "SELECT count(*) FROM instances i JOIN trace_instances t ON t.trace_id = i.entry_trace_id "
                     "AND t.instance_id = i.instance_id") == [(3,)]


def test_span_steps_carry_corrected_times_instance_and_workflow(tmp_path):
    con = order_flow_store(tmp_path, "span steps")
    assert rows(con, "SELECT count(*), count(DISTINCT instance_id), count(DISTINCT workflow_id), "
                     "count(*) FILTER (WHERE start_adj = start_ns AND end_adj = end_ns) FROM span_steps") == [
        (24, 3, 1, 24)]  # one consumer per hop and no sync calls across services: no offset is estimated


def test_workflows_model_the_steps_and_edges_of_one_workflow_type(tmp_path):
    con = order_flow_store(tmp_path, "workflows")
    assert rows(con, "SELECT workflow_id, name, instances, services, events FROM workflows") == [
        ("api server POST /orders", "POST /orders (api)", 3, 5, 1)]
    edges = rows(con, "SELECT src_step, dst_step, via, count, instances, inferred, latency_p50_ms "
                      "FROM workflow_edges WHERE via = 'event' ORDER BY dst_step")
    assert edges == [
        ("api producer orders.placed", "audit consumer orders.placed", "event", 3, 3, True, 30.0),
        ("api producer orders.placed", "mail consumer orders.placed", "event", 3, 3, False, 15.0),
        ("api producer orders.placed", "ship consumer orders.placed", "event", 3, 3, False, 60.0),
        ("api producer orders.placed", "stock consumer orders.placed", "event", 3, 3, False, 20.0),
    ]
    assert rows(con, "SELECT count, count(DISTINCT variant_id) OVER () FROM workflow_variants") == [(3, 1)]


def test_patterns_answer_the_three_questions(tmp_path):
    con = order_flow_store(tmp_path, "patterns")
    ((pattern, who, state, errors),) = rows(con, "SELECT pattern, who_knows_the_workflow, where_state_lives, "
                                                  "where_errors_are_handled FROM workflow_patterns")
    assert pattern == "choreography"
    assert who.startswith("nobody: 4 hand-off(s) by events from 1 service(s) (api)")
    assert state == "databases written by stock"
    assert errors == "no compensation or retry seen"


def test_orderings_count_how_often_one_consumer_ended_before_its_sibling_started(tmp_path):
    con = order_flow_store(tmp_path, "orderings")
    ordered = rows(con, """
        SELECT both_instances, a_before_b, b_started_early, gap_p50_ms FROM step_orderings
        WHERE step_a = 'stock consumer orders.placed' AND step_b = 'ship consumer orders.placed'""")
    assert ordered == [(3, 3, 0, 10.0)]
    reverse = rows(con, "SELECT a_before_b, b_started_early FROM step_orderings "
                        "WHERE step_a = 'ship consumer orders.placed' AND step_b = 'stock consumer orders.placed'")
    assert reverse == [(0, 3)]
    causal = rows(con, "SELECT count(*) FROM step_orderings WHERE step_a = 'api server POST /orders'")
    assert causal == [(0,)]  # the entry causes every consumer: no ordering hypothesis about it


def test_instances_connect_a_long_chain_of_linked_traces_in_few_rounds(tmp_path, monkeypatch):
    """Connected components in SQL: 3,000 traces each tied to the next (a chain, the worst case for
    plain label propagation) become one component labelled by the smallest trace id."""
    import duckdb

    from choreoscope.analysis import instances

    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE pairs AS SELECT printf('%05d', i) AS a, printf('%05d', i + 1) AS b "
                "FROM range(3000) t(i) ORDER BY random()")
    con.execute("INSERT INTO pairs VALUES ('x1', 'x2'), ('x3', 'x2')")  # a second component
    monkeypatch.setattr(instances, "MAX_ROUNDS", 20)  # log2(3000) < 12, with room; more raises
    table = instances.connected_traces_sql(con, "SELECT a, b FROM pairs")
    labels = dict(con.execute(f"SELECT label, count(*) FROM {table} GROUP BY ALL").fetchall())
    assert labels == {"00000": 3001, "x1": 3}


def test_instances_keep_requests_apart_that_one_batch_consumer_took_together(tmp_path):
    """A batch consumer's trace links the sends of three independent orders (the messaging
    conventions' batch shape): the orders stay three instances, and the batch trace joins the one
    whose send started first, not all three into one."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, set_span_in_context

    from choreoscope.analysis.pipeline import STAGES, AnalysisContext
    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths
    from choreoscope.sample_traces.generate import write_otlp_jsonl
    from tests.stage_stores import BASE_NS, EVENT, MS, sdk_tracer

    exporter = InMemorySpanExporter()
    api, batch = sdk_tracer(exporter, "api", "t"), sdk_tracer(exporter, "analytics", "t")
    sends = []
    for i in range(3):
        t0 = BASE_NS + i * 50 * MS
        server = api.start_span("POST /orders", kind=SpanKind.SERVER, start_time=t0,
                                attributes={"http.request.method": "POST", "http.route": "/orders"})
        send = api.start_span("orders.placed send", context=set_span_in_context(server), kind=SpanKind.PRODUCER,
                              start_time=t0 + MS, attributes={**EVENT, "messaging.operation.type": "send"})
        send.end(t0 + 2 * MS)
        server.end(t0 + 5 * MS)
        sends.append(send)
    poll = batch.start_span("orders.placed process", context=None, kind=SpanKind.CONSUMER,
                            start_time=BASE_NS + 200 * MS, links=[Link(s.get_span_context()) for s in sends],
                            attributes={**EVENT, "messaging.operation.type": "process"})
    poll.end(BASE_NS + 210 * MS)
    dump = write_otlp_jsonl(list(exporter.get_finished_spans()), tmp_path / "batch.otlp.jsonl")
    con = store.connect(tmp_path / "batch.duckdb")
    assert load_paths(con, [str(dump)]).ok
    ctx = AnalysisContext()
    for stage in STAGES[: [s.name for s in STAGES].index("instances") + 1]:
        stage.run(con, ctx)
    first = format(sends[0].get_span_context().trace_id, "032x")
    poll_trace = format(poll.get_span_context().trace_id, "032x")
    assert rows(con, "SELECT count(*), count(DISTINCT workflow_id) FROM instances") == [(3, 1)]
    assert rows(con, f"SELECT instance_id = (SELECT instance_id FROM trace_instances WHERE trace_id = '{first}') "
                     f"FROM trace_instances WHERE trace_id = '{poll_trace}'") == [(True,)]

"""Importing intended workflows: native YAML (schema, errors with path and line), AsyncAPI 3.0 and
2.x (the 2.x publish/subscribe inversion), message pairing, the mapping file, directory scans."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from intended_fixtures import asyncapi_dir, intended_path

from choreoscope.analysis.intended import IntendedError, load_intended
from choreoscope.analysis.intended.native import intended_schema


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_sample_intended_documents_follow_the_schema():
    for scenario in ("ecommerce", "event_router", "hybrid_billing", "loan_saga", "notification_fanout"):
        jsonschema.validate(yaml.safe_load(Path(intended_path(scenario)).read_text()), intended_schema())


def test_native_events_calls_orderings_compensations_owners():
    model = load_intended(intended_path("hybrid_billing"))
    (wf,) = model.workflows
    assert wf.name == "billing-run" and wf.entry_service == "billing-orchestrator"
    assert ("billing-orchestrator", "revenue-service", "event", "invoice.issued") in wf.edges
    assert ("billing-orchestrator", "tax-service", "call", None) in wf.edges
    assert len(wf.call_operations[("billing-orchestrator", "invoice-service")]) == 2
    (o,) = wf.orderings
    assert (o.before, o.after, o.event) == ("ledger-service", "crm-service", "invoice.issued")
    assert model.owners["crm-service"] == "team-sales"
    saga = load_intended(intended_path("loan_saga")).workflows[0]
    assert saga.compensations[0]["compensated_by"] == {"service": "credit-service",
                                                       "operation": "DELETE /credit-holds/{id}"}


def test_native_error_names_file_line_path_and_expectation(tmp_path):
    path = write(tmp_path, "intended.yaml", """\
        version: 1
        workflows:
          - name: w
            events:
              - {name: a, producers: [x], consumers: [y]}
              - {name: b, producers: [x], consumers: [y]}
              - {name: c, producers: [x], consumers: y}
        """)
    with pytest.raises(IntendedError) as err:
        load_intended(path)
    msg = str(err.value)
    assert f"{path}:7" in msg and "workflows[0].events[2].consumers" in msg and "expected array" in msg


def test_native_typo_and_missing_name_are_reported(tmp_path):
    typo = write(tmp_path, "a.yaml", "workflows:\n  - name: w\n    evnts: []\n")
    with pytest.raises(IntendedError, match=r"a.yaml:3: workflows\[0\].*evnts"):
        load_intended(typo)
    nameless = write(tmp_path, "b.yaml", "workflows:\n  - events: []\n")
    with pytest.raises(IntendedError, match=r"workflows\[0\]: 'name' is required"):
        load_intended(nameless)
    bad_yaml = write(tmp_path, "c.yaml", "workflows: [\n")
    with pytest.raises(IntendedError, match="c.yaml:2: not valid YAML"):
        load_intended(bad_yaml)


def test_asyncapi_3_send_receive():
    model = load_intended(asyncapi_dir("ecommerce"))
    assert ("order-service", "loyalty-service", "event", "orders.placed") in model.global_edges
    assert ("payment-service", "order-service", "event", "payments.completed") in model.global_edges
    assert "inventory.low" in model.global_events  # sent, nobody declares receiving it: no edge
    assert not any(k[3] == "inventory.low" for k in model.global_edges)


ASYNCAPI_2 = """\
    asyncapi: 2.6.0
    info: {title: %s, version: 1.0.0}
    channels:
      orders.placed:
        %s:
          message: {name: orders.placed}
    """


def test_asyncapi_2_publish_means_the_application_receives(tmp_path):
    # 2.x verbs are the client's: the producer declares `subscribe`, the consumer `publish`.
    write(tmp_path, "docs/order-service.yaml", ASYNCAPI_2 % ("order-service", "subscribe"))
    write(tmp_path, "docs/billing.yaml", ASYNCAPI_2 % ("billing", "publish"))
    model = load_intended(str(tmp_path / "docs"))
    assert set(model.global_edges) == {("order-service", "billing", "event", "orders.placed")}


def test_asyncapi_2_sample_documents_pair_with_3_0_ones():
    # inventory-service and notification-service are 2.6 documents in the ecommerce sample
    model = load_intended(asyncapi_dir("ecommerce"))
    assert ("order-service", "inventory-service", "event", "orders.placed") in model.global_edges
    assert ("order-service", "notification-service", "event", "orders.placed") in model.global_edges
    assert ("inventory-service", "order-service", "event", "orders.placed") not in model.global_edges


def test_asyncapi_message_names_restrict_pairs(tmp_path):
    doc = """\
        asyncapi: 3.0.0
        info: {title: %s, version: '1'}
        channels:
          t: {address: topic, messages: {a: {name: A}, b: {name: B}}}
        operations:
          op: {action: %s, channel: {$ref: '#/channels/t'}, messages: [{$ref: '#/channels/t/messages/%s'}]}
        """
    write(tmp_path, "d/p1.yaml", doc % ("p1", "send", "a"))
    write(tmp_path, "d/p2.yaml", doc % ("p2", "send", "b"))
    write(tmp_path, "d/c1.yaml", doc % ("c1", "receive", "a"))
    model = load_intended(str(tmp_path / "d"))
    assert set(model.global_edges) == {("p1", "c1", "event", "topic")}


def test_mapping_file_renames_titles(tmp_path):
    write(tmp_path, "d/a.yaml", ASYNCAPI_2 % ("'Order Service API'", "subscribe"))
    write(tmp_path, "d/b.yaml", ASYNCAPI_2 % ("billing", "publish"))
    write(tmp_path, "d/choreoscope-mapping.yaml", "services:\n  Order Service API: order-service\n")
    model = load_intended(str(tmp_path / "d"))
    assert set(model.global_edges) == {("order-service", "billing", "event", "orders.placed")}


def test_asyncapi_errors(tmp_path):
    bad_action = write(tmp_path, "x.yaml", """\
        asyncapi: 3.0.0
        info: {title: s, version: '1'}
        channels: {t: {address: topic}}
        operations:
          op: {action: publish, channel: {$ref: '#/channels/t'}}
        """)
    with pytest.raises(IntendedError, match=r"x.yaml:5: operations.op.action: expected 'send' or 'receive'"):
        load_intended(bad_action)
    dangling = write(tmp_path, "y.yaml", """\
        asyncapi: 3.0.0
        info: {title: s, version: '1'}
        operations:
          op: {action: send, channel: {$ref: '#/channels/nope'}}
        """)
    with pytest.raises(IntendedError, match="does not resolve"):
        load_intended(dangling)
    with pytest.raises(IntendedError, match="version 2.x or 3.x"):
        load_intended(write(tmp_path, "z.yaml", "asyncapi: 1.2.0\ninfo: {title: s}\n"))
    with pytest.raises(IntendedError, match="info.title"):
        load_intended(write(tmp_path, "w.yaml", "asyncapi: 3.0.0\ninfo: {version: '1'}\n"))


def test_directory_scan_skips_other_yaml_but_an_explicit_file_must_be_a_document(tmp_path):
    from choreoscope.sample_traces.generate import scenario_dir

    model = load_intended(str(scenario_dir("ecommerce")))  # holds truth.yaml too
    assert any(p.endswith("truth.yaml") for p in model.skipped)
    assert model.workflows and model.global_edges
    with pytest.raises(IntendedError, match="neither an AsyncAPI document"):
        load_intended(str(scenario_dir("ecommerce") / "truth.yaml"))
    with pytest.raises(IntendedError, match="no such file"):
        load_intended(str(tmp_path / "missing.yaml"))

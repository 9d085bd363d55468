"""`choreoscope export asyncapi`: exporting observed traffic and re-importing it declares exactly
what was observed (zero undeclared, zero missing edges, events and calls), on the samples and on
every real dump; and a changed export is caught, so the round trip can fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from intended_fixtures import CONFORMANCE_SCENARIOS, analysed, real_trace_files

from choreoscope.analysis.asyncapi_export import build_documents, document_filename, dump_document
from choreoscope.analysis.intended import load_intended
from choreoscope.cli import main
from choreoscope.sample_traces.generate import DUMPS_DIR
from tests.paths import REAL_TRACES

SAMPLE_DUMPS = [str(DUMPS_DIR / f"{s}.otlp.jsonl") for s in CONFORMANCE_SCENARIOS]
REAL_DUMPS = [str(p) for p in real_trace_files()]


def export(path: str, out: Path) -> Path:
    out.mkdir()
    for service, doc in build_documents(analysed(path).con).items():
        (out / f"{document_filename(service)}.yaml").write_text(dump_document(doc))
    return out


def edge_statuses(path: str) -> dict[str, int]:
    return dict(analysed(path).con.execute(
        "SELECT status, count(*) FROM conformance_edges GROUP BY ALL").fetchall())


@pytest.mark.parametrize("path", SAMPLE_DUMPS + REAL_DUMPS, ids=lambda p: Path(p).name)
def test_round_trip_declares_exactly_what_was_observed(path, tmp_path):
    if not Path(path).exists():
        pytest.skip(f"{path} not present")
    docs = export(path, tmp_path / "asyncapi")
    found = analysed(path).conform([str(docs)])
    assert found == []
    statuses = edge_statuses(path)
    assert set(statuses) <= {"matched"}, statuses
    assert statuses.get("matched", 0) > 0  # every dump has cross-service edges: something was compared


def test_real_dumps_are_present():
    if not REAL_TRACES.is_dir():
        pytest.skip(f"{REAL_TRACES} does not exist")
    assert len(REAL_DUMPS) >= 10


def test_round_trip_catches_a_removed_consumer_and_a_removed_call(tmp_path):
    path = SAMPLE_DUMPS[0]  # ecommerce
    docs = export(path, tmp_path / "asyncapi")
    pay = docs / "payment-service.yaml"
    doc = yaml.safe_load(pay.read_text())
    doc["operations"] = {k: v for k, v in doc["operations"].items() if v["action"] != "receive"}
    pay.write_text(yaml.safe_dump(doc))
    ship = docs / "shipping-service.yaml"
    doc = yaml.safe_load(ship.read_text())
    del doc["x-choreoscope-calls"]
    ship.write_text(yaml.safe_dump(doc))
    found = {(f.kind, tuple(f.services), f.event) for f in analysed(path).conform([str(docs)])}
    assert found == {("undeclared_edge", ("order-service", "payment-service"), "orders.placed"),
                     ("undeclared_edge", ("shipping-service", "order-service"), None)}


def test_exported_documents_are_asyncapi_3_with_payloads(tmp_path):
    docs = export(SAMPLE_DUMPS[0], tmp_path / "asyncapi")
    order = yaml.safe_load((docs / "order-service.yaml").read_text())
    assert order["asyncapi"] == "3.0.0" and order["info"]["title"] == "order-service"
    (placed,) = [c for c in order["channels"].values() if c["address"] == "orders.placed"]
    (msg,) = placed["messages"].values()
    # both versions' attributes (1.5.0 added order.channel, removed order.coupon_code)
    assert {"order.id", "order.total", "order.channel", "order.coupon_code"} <= set(msg["payload"]["properties"])
    assert not any(k.startswith("messaging.") for k in msg["payload"]["properties"])
    actions = {(o["action"], o["channel"]["$ref"]) for o in order["operations"].values()}
    assert ("send", "#/channels/ordersPlaced") in actions
    assert load_intended(str(docs)).global_edges


def test_export_command_writes_one_document_per_service(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "asyncapi", SAMPLE_DUMPS[3], "--out", str(out)]) == 0  # loan_saga
    names = sorted(p.stem for p in out.glob("*.yaml"))
    assert "loan-orchestrator" in names and "fraud-service" in names
    assert main(["export", "asyncapi", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err

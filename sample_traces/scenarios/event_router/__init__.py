"""event_router — an event bus that quietly became an orchestrator.

upload-api takes POST /documents and emits `document.uploaded`. Every service only reacts to
events, which looks like choreography — but workflow-router consumes every completion event
(document.uploaded, ocr.completed, classification.completed, archive.completed), keeps the
state in `workflow_state`, and emits the command that starts the next step (ocr.requested,
classify.requested, archive.requested, document.processed): an implicit orchestrator.
When the classifier is unsure (every fourth document) the router sends the document back to
OCR in enhanced mode: classification.completed -> router -> ocr.requested -> ocr-service ->
ocr.completed -> router -> classify.requested -> classifier-service — an event cycle.
ocr-service and archive-service use the old messaging conventions.
"""

from __future__ import annotations

from choreoscope.sample_traces.engine import OLD, Message, Service, Sim

NAMESPACE = "documents"
DEFAULT_INSTANCES = 36
DEFAULT_CLOCK_OFFSETS_MS = {"ocr-service": 22.0, "classifier-service": -9.0}
SPACING_MS = 4000.0


def _route(router: Service, msg: Message, lag: float, command: str, attrs: dict) -> Message:
    """workflow-router: consume a completion event, record state, emit the next command."""
    op = router.consume(msg, msg.sent_ms + lag)
    op.db("UPDATE", "workflow_state", 2)
    out = op.publish(command, attrs)
    op.finish()
    return out


def run(sim: Sim, instances: int) -> None:
    rng = sim.rng
    upload = sim.service("upload-api", "1.6.0")
    router = sim.service("workflow-router", "1.0.3")
    ocr = sim.service("ocr-service", "3.1.0", OLD)
    classifier = sim.service("classifier-service", "0.7.0")
    archive = sim.service("archive-service", "2.0.0", OLD)
    indexer = sim.service("search-indexer", "1.2.1")
    for i in range(instances):
        t0 = i * SPACING_MS
        doc = {"document.id": f"doc-{i:04d}"}
        root = upload.serve("POST", "/documents", "/documents", t0)
        root.db("INSERT", "documents", 3)
        msg = root.publish("document.uploaded", doc)
        root.finish(202)

        msg = _route(router, msg, rng.uniform(2, 10), "ocr.requested", {**doc, "ocr.mode": "standard"})
        passes = 2 if i % 4 == 2 else 1
        for n in range(passes):
            op = ocr.consume(msg, msg.sent_ms + rng.uniform(2, 15))
            op.db("SELECT", "document_blobs", 4)
            op.work(rng.uniform(150, 500) * (1.6 if n else 1.0))
            msg = op.publish("ocr.completed", {**doc, "ocr.pages": 1 + i % 6})
            op.finish()
            msg = _route(router, msg, rng.uniform(2, 10), "classify.requested", doc)
            op = classifier.consume(msg, msg.sent_ms + rng.uniform(2, 15))
            op.work(rng.uniform(40, 160))
            unsure = n + 1 < passes
            msg = op.publish("classification.completed",
                             {**doc, "classification.confidence": 0.41 if unsure else 0.93})
            op.finish()
            if unsure:
                msg = _route(router, msg, rng.uniform(2, 10), "ocr.requested", {**doc, "ocr.mode": "enhanced"})
        msg = _route(router, msg, rng.uniform(2, 10), "archive.requested", doc)
        op = archive.consume(msg, msg.sent_ms + rng.uniform(2, 15))
        op.db("INSERT", "archive_records", rng.uniform(5, 20), system="mongodb")
        msg = op.publish("archive.completed", doc)
        op.finish()
        msg = _route(router, msg, rng.uniform(2, 10), "document.processed", doc)
        op = indexer.consume(msg, msg.sent_ms + rng.uniform(2, 30))
        op.db("INSERT", "document_index", rng.uniform(4, 12), system="elasticsearch")
        op.finish()

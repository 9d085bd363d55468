"""hybrid_billing — orchestration inside a bounded context, choreography between contexts.

billing-orchestrator takes POST /billing-runs and synchronously calls invoice-service
(POST /invoices, then POST /invoices/{id}/finalize) and tax-service (old conventions; its
POST /tax-calculations sometimes answers 503 and is resent with http.request.resend_count=1).
Then it emits `invoice.issued` to other contexts: ledger-service continues the trace,
crm-service (old conventions) is a batch consumer that starts a new trace with a link, and
dunning-service sits behind a legacy bridge that drops the trace headers — its edge can only
be inferred from `messaging.message.id`. The intended flow declares that ledger books the
invoice before crm sees it; crm usually runs later, but every sixth run it is first
(ordering violation, without any error: the declaration is simply not what happens).
"""

from __future__ import annotations

from choreoscope.sample_traces.engine import OLD, Sim

NAMESPACE = "billing"
DEFAULT_INSTANCES = 36
DEFAULT_CLOCK_OFFSETS_MS = {"ledger-service": -6.0, "crm-service": 18.0}
SPACING_MS = 2000.0


def run(sim: Sim, instances: int) -> None:
    rng = sim.rng
    orch = sim.service("billing-orchestrator", "5.2.0")
    invoice = sim.service("invoice-service", "2.8.1")
    tax = sim.service("tax-service", "1.5.0", OLD)
    ledger = sim.service("ledger-service", "4.1.0")
    crm = sim.service("crm-service", "7.0.2", OLD)
    dunning = sim.service("dunning-service", "0.6.0")
    for i in range(instances):
        t0 = i * SPACING_MS
        inv_id = f"inv-{2024000 + i}"
        root = orch.serve("POST", "/billing-runs", "/billing-runs", t0)
        root.db("SELECT", "subscriptions", 4)

        call = root.call(invoice, "POST", "/invoices", "/invoices")
        call.server.db("INSERT", "invoices", rng.uniform(3, 8))
        call.done(201)
        resend = i % 5 == 1
        call = root.call(tax, "POST", "/tax-calculations", "/tax-calculations")
        call.server.work(rng.uniform(5, 15))
        if resend:
            call.done(503, error="tax engine busy")
            root.work(20)
            call = root.call(tax, "POST", "/tax-calculations", "/tax-calculations", attempt=1)
            call.server.work(rng.uniform(5, 15))
        call.server.db("SELECT", "tax_rates", 3)
        call.done(200)
        call = root.call(invoice, "POST", "/invoices/{id}/finalize", f"/invoices/{inv_id}/finalize")
        call.server.db("UPDATE", "invoices", rng.uniform(2, 5))
        call.done(200)
        issued = root.publish("invoice.issued", {"invoice.id": inv_id,
                                                 "invoice.amount": round(rng.uniform(20, 900), 2)})
        root.finish(201)
        sent = issued.sent_ms

        op = ledger.consume(issued, sent + rng.uniform(3, 20))
        op.db("INSERT", "journal_entries", rng.uniform(20, 60))
        op.finish()

        crm_lag = rng.uniform(3, 10) if i % 6 == 4 else rng.uniform(150, 400)
        op = crm.consume(issued, sent + crm_lag, mode="link")
        op.db("UPDATE", "crm_accounts", rng.uniform(5, 15))
        op.finish()

        op = dunning.consume(issued, sent + rng.uniform(20, 200), mode="none")
        op.db("INSERT", "dunning_cases", rng.uniform(3, 8))
        op.finish()

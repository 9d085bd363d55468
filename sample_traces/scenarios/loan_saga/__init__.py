"""loan_saga — an orchestrated saga with a god coordinator and a forgotten compensation.

loan-orchestrator takes POST /loan-applications, keeps the saga state in `loan_applications`,
and calls, in order: identity-service (old HTTP conventions), fraud-service, credit-service
(seven distinct operations: score, history, limits, bureau raw data, exposure, credit hold —
the orchestrator knows far too much about credit: god coordinator), approval-service,
account-service (old conventions) and disbursement-service. When a later step fails the
orchestrator compensates the completed ones (DELETE /credit-holds/{id}, DELETE /accounts/{id}),
except in every other disbursement failure, where the credit hold is never released
(missing compensation). Everything is explicit: the orchestrator is the look-alike that must
NOT be called an implicit orchestrator, and its strictly sequential callees must NOT be
reported as implicitly ordered.
"""

from __future__ import annotations

from choreoscope.sample_traces.engine import OLD, Op, Service, Sim

NAMESPACE = "lending"
DEFAULT_INSTANCES = 40
DEFAULT_CLOCK_OFFSETS_MS = {"credit-service": -12.0, "account-service": 7.5}
SPACING_MS = 2000.0
CREDIT_READS = [
    ("GET", "/credit-scores/{id}", "/credit-scores/{}"),
    ("GET", "/credit-history/{id}", "/credit-history/{}"),
    ("GET", "/credit-limits/{id}", "/credit-limits/{}"),
    ("GET", "/bureau-reports/{id}/raw", "/bureau-reports/{}/raw"),
    ("GET", "/exposures/{id}", "/exposures/{}"),
]


def _step(op: Op, callee: Service, method: str, route: str, path: str, ms: float,
          table: str | None = None, db_op: str = "SELECT", status: int = 200, error: str | None = None) -> int:
    call = op.call(callee, method, route, path)
    call.server.work(ms / 2)
    if table:
        call.server.db(db_op, table, 3)
    call.server.work(ms / 2)
    return call.done(status, error)


def run(sim: Sim, instances: int) -> None:
    rng = sim.rng
    orch = sim.service("loan-orchestrator", "2.3.0")
    identity = sim.service("identity-service", "1.9.0", OLD)
    fraud = sim.service("fraud-service", "0.4.1")
    credit = sim.service("credit-service", "3.0.2")
    approval = sim.service("approval-service", "1.3.0")
    account = sim.service("account-service", "2.2.0", OLD)
    disbursement = sim.service("disbursement-service", "1.0.5")
    for i in range(instances):
        t0 = i * SPACING_MS
        cust = f"cust-{500 + i}"
        loan = f"loan-{9000 + i}"
        root = orch.serve("POST", "/loan-applications", "/loan-applications", t0)
        root.db("INSERT", "loan_applications", 3)

        _step(root, identity, "POST", "/identity-checks", "/identity-checks", rng.uniform(20, 60), "customers")
        root.db("UPDATE", "loan_applications", 2)
        _step(root, fraud, "POST", "/fraud-screenings", "/fraud-screenings", rng.uniform(15, 40))
        for method, route, path in CREDIT_READS:
            _step(root, credit, method, route, path.format(cust), rng.uniform(8, 30), "credit_files")
        _step(root, credit, "POST", "/credit-holds", "/credit-holds", rng.uniform(10, 25),
              "credit_holds", "INSERT", status=201)
        root.db("UPDATE", "loan_applications", 2)

        failed_at = None
        if i % 7 == 3:
            _step(root, approval, "POST", "/approvals", "/approvals", rng.uniform(30, 90),
                  status=500, error="approval engine timeout")
            failed_at = "approval"
        else:
            _step(root, approval, "POST", "/approvals", "/approvals", rng.uniform(30, 90), status=201)
            if i % 11 == 8:
                _step(root, account, "POST", "/accounts", "/accounts", rng.uniform(20, 50),
                      status=503, error="account store unavailable")
                failed_at = "account"
            else:
                _step(root, account, "POST", "/accounts", "/accounts", rng.uniform(20, 50),
                      "accounts", "INSERT", status=201)
                if i % 9 == 5:
                    _step(root, disbursement, "POST", "/disbursements", "/disbursements",
                          rng.uniform(40, 120), status=502, error="payment rail rejected transfer")
                    failed_at = "disbursement"
                else:
                    _step(root, disbursement, "POST", "/disbursements", "/disbursements",
                          rng.uniform(40, 120), "disbursements", "INSERT", status=201)

        if failed_at is None:
            root.db("UPDATE", "loan_applications", 2).finish(201)
            continue
        # compensate what completed, newest first
        if failed_at == "disbursement":
            _step(root, account, "DELETE", "/accounts/{id}", f"/accounts/{loan}", rng.uniform(10, 30),
                  "accounts", "DELETE", status=204)
        forgot_hold = failed_at == "disbursement" and (i // 9) % 2 == 0
        if not forgot_hold:
            _step(root, credit, "DELETE", "/credit-holds/{id}", f"/credit-holds/{loan}", rng.uniform(8, 20),
                  "credit_holds", "DELETE", status=204)
        root.db("UPDATE", "loan_applications", 2).finish(422, error=f"loan application failed at {failed_at}")

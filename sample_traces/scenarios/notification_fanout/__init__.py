"""notification_fanout — honest choreography that must raise nothing.

Four independent flows: signup-service (POST /signups -> `user.registered`), checkout-service
(POST /checkouts -> `order.confirmed`, also consumed by loyalty-service), security-service
(old conventions; POST /password-resets -> `password.reset.requested`) all feed
notification-hub, a high fan-in sink that reads `user_preferences` and hands mail and text
messages to external gateways but never emits anything (not an orchestrator).
status-page (POST /incidents -> `incident.declared`) is consumed by email-sender, sms-sender
(old conventions) and push-sender in whatever order the broker delivers: concurrent consumers,
no ordering between them.
"""

from __future__ import annotations

from choreoscope.sample_traces.engine import OLD, Message, Service, Sim

NAMESPACE = "notify"
DEFAULT_INSTANCES = 25
DEFAULT_CLOCK_OFFSETS_MS = {"notification-hub": 15.0, "sms-sender": -30.0}
SPACING_MS = 2500.0


def _entry(svc: Service, route: str, at: float, event: str, attrs: dict, table: str) -> Message:
    root = svc.serve("POST", route, route, at)
    root.db("INSERT", table, 3)
    msg = root.publish(event, attrs)
    root.finish(201)
    return msg


def _hub(hub: Service, msg: Message, lag: float, channel: str, rng) -> None:
    op = hub.consume(msg, msg.sent_ms + lag)
    op.db("SELECT", "user_preferences", 2)
    if channel == "sms":
        op.call_external("sms-gateway.example.net", "POST", "/v1/messages", rng.uniform(20, 60))
    else:
        op.call_external("smtp-relay.example.net", "POST", "/v3/mail/send", rng.uniform(15, 50))
    op.finish()


def run(sim: Sim, instances: int) -> None:
    rng = sim.rng
    signup = sim.service("signup-service", "2.0.0")
    checkout = sim.service("checkout-service", "5.1.0")
    security = sim.service("security-service", "1.4.2", OLD)
    status = sim.service("status-page", "0.3.0")
    hub = sim.service("notification-hub", "3.3.0")
    loyalty = sim.service("loyalty-service", "1.0.0")
    email = sim.service("email-sender", "1.1.0")
    sms = sim.service("sms-sender", "0.9.4", OLD)
    push = sim.service("push-sender", "2.0.1")
    for i in range(instances):
        t0 = i * SPACING_MS
        msg = _entry(signup, "/signups", t0, "user.registered", {"user.id": f"u-{i}"}, "users")
        _hub(hub, msg, rng.uniform(3, 60), "email", rng)

        msg = _entry(checkout, "/checkouts", t0 + 400, "order.confirmed", {"order.id": f"o-{i}"}, "checkouts")
        _hub(hub, msg, rng.uniform(3, 80), rng.choice(["email", "sms"]), rng)
        op = loyalty.consume(msg, msg.sent_ms + rng.uniform(3, 80))
        op.db("UPDATE", "loyalty_points", 4)
        op.finish()

        msg = _entry(security, "/password-resets", t0 + 800, "password.reset.requested",
                     {"user.id": f"u-{i}"}, "reset_tokens")
        _hub(hub, msg, rng.uniform(3, 40), "email", rng)

        msg = _entry(status, "/incidents", t0 + 1200, "incident.declared", {"incident.id": f"inc-{i}"},
                     "incidents")
        for sender, address, path in ((email, "smtp-relay.example.net", "/v3/mail/send"),
                                      (sms, "sms-gateway.example.net", "/v1/messages"),
                                      (push, "push.example.net", "/v1/send")):
            op = sender.consume(msg, msg.sent_ms + rng.uniform(2, 120))
            op.call_external(address, "POST", path, rng.uniform(10, 70))
            op.finish()

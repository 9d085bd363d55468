"""ecommerce — an order choreography with a hidden dependency.

storefront takes POST /orders and calls order-service, which stores the order and emits
`orders.placed`. inventory-service (old semantic conventions) reserves stock in the
`reservations` table; payment-service charges the card at an external PSP and emits
`payments.completed`, which order-service consumes; notification-service (old conventions)
mails the customer; analytics-service polls in batches long after the event and starts a new
trace linked to the producer. shipping-service *looks* independent but reads `reservations`:
when it runs before inventory finished it fails ("reservation not found") and is redelivered
every 30 ms, so its successful start follows inventory's end tightly (implicit ordering,
shared-data coupling, retry loop). While shipping it calls order-service back
(GET /orders/{id}: callback coupling). order-service 1.5.0 (second half of the instances)
adds `order.channel` and drops `order.coupon_code` from `orders.placed` (schema drift).
inventory-service emits `inventory.low` that nobody consumes (dead event). A separate flow:
an uninstrumented pricing feed sends `prices.updated` to catalog-service (orphan event),
which emits `catalog.updated` for search-service.
"""

from __future__ import annotations

from choreoscope.sample_traces.engine import OLD, Message, Sim

NAMESPACE = "shop"
DEFAULT_INSTANCES = 40
DEFAULT_CLOCK_OFFSETS_MS = {"payment-service": 35.0, "analytics-service": -20.0, "shipping-service": 4.0}
SPACING_MS = 3000.0
ANALYTICS_DELAY_MS = 1800.0
SHIPPING_REDELIVERY_MS = 30.0
DRIFT_VERSION = "1.5.0"


def run(sim: Sim, instances: int) -> None:
    rng = sim.rng
    storefront = sim.service("storefront", "3.2.0")
    inventory = sim.service("inventory-service", "2.1.0", OLD)
    shipping = sim.service("shipping-service", "1.8.2")
    payment = sim.service("payment-service", "4.0.1")
    notification = sim.service("notification-service", "1.2.0", OLD)
    analytics = sim.service("analytics-service", "0.9.0")
    catalog = sim.service("catalog-service", "2.4.0")
    search = sim.service("search-service", "1.1.0")
    for i in range(instances):
        drifted = i >= instances // 2
        orders = sim.service("order-service", DRIFT_VERSION if drifted else "1.4.0")
        t0 = i * SPACING_MS
        order_id = f"ord-{10000 + i}"

        # storefront -> order-service POST /orders -> orders.placed
        root = storefront.serve("POST", "/orders", "/orders", t0)
        root.work(rng.uniform(2, 6))
        call = root.call(orders, "POST", "/orders", "/orders")
        call.server.work(rng.uniform(1, 3)).db("INSERT", "orders", rng.uniform(2, 6))
        fields = {"order.id": order_id, "order.total": round(rng.uniform(10, 400), 2), "order.currency": "EUR"}
        if drifted:
            fields["order.channel"] = rng.choice(["web", "app"])
        else:
            fields["order.coupon_code"] = rng.choice(["", "WELCOME10", "SPRING"])
        placed = call.server.publish("orders.placed", fields)
        call.done(201)
        root.work(1).finish(201)
        sent = placed.sent_ms

        # inventory: reserve (fast most of the time, sometimes slow), maybe emit inventory.low
        inv = inventory.consume(placed, sent + rng.uniform(2, 10))
        inv.db("SELECT", "stock", rng.uniform(2, 5))
        slow = rng.random() < 0.3
        inv.work(rng.uniform(60, 160) if slow else rng.uniform(10, 35))
        inv.db("INSERT", "reservations", rng.uniform(2, 5))
        if i % 3 == 0:
            inv.publish("inventory.low", {"inventory.sku": f"sku-{i % 17}", "inventory.level": i % 5})
        inv.work(1).finish()
        reservation_visible = inv.t

        # shipping: polls for the reservation through redelivery, then calls order-service back
        at = sent + rng.uniform(25, 70)
        attempt = 0
        while True:
            ship = shipping.consume(placed, at, attempt=attempt)
            found = at >= reservation_visible
            ship.work(1).db("SELECT", "reservations", 3)
            if found:
                break
            ship.work(0.5).finish(error="reservation not found")
            attempt += 1
            at += SHIPPING_REDELIVERY_MS
        back = ship.call(orders, "GET", "/orders/{id}", f"/orders/{order_id}")
        back.server.db("SELECT", "orders", rng.uniform(1, 4))
        back.done(200)
        ship.db("INSERT", "shipments", rng.uniform(2, 6))
        ship.work(rng.uniform(5, 20)).finish()

        # payment: external PSP, then payments.completed back to order-service
        pay = payment.consume(placed, sent + rng.uniform(5, 150))
        pay.call_external("psp.example.net", "POST", "/v1/charges", rng.uniform(40, 200))
        pay.db("INSERT", "payments", rng.uniform(2, 5))
        done = pay.publish("payments.completed", {"payment.id": f"pay-{i}", "order.id": order_id})
        pay.finish()
        upd = orders.consume(done, done.sent_ms + rng.uniform(3, 20))
        upd.db("UPDATE", "orders", rng.uniform(2, 5))
        upd.finish()

        # notification: mails the customer, any time
        note = notification.consume(placed, sent + rng.uniform(5, 250))
        note.call_external("mail.example.net", "POST", "/v3/mail/send", rng.uniform(20, 80))
        note.finish()

        # analytics: batch poll long after, new trace linked to the producer
        facts = analytics.consume(placed, sent + ANALYTICS_DELAY_MS + rng.uniform(0, 10), mode="link")
        facts.db("INSERT", "order_facts", rng.uniform(5, 15), system="clickhouse")
        facts.finish()

        # orphan: prices.updated from an uninstrumented pricing feed (no headers at all)
        if i % 4 == 1:
            feed_msg = _uninstrumented(sim, "prices.updated", t0 + 1500)
            cat = catalog.consume(feed_msg, feed_msg.sent_ms + rng.uniform(2, 8))
            cat.db("UPDATE", "products", rng.uniform(3, 9))
            changed = cat.publish("catalog.updated", {"catalog.sku_count": 1 + i % 5})
            cat.finish()
            idx = search.consume(changed, changed.sent_ms + rng.uniform(2, 10))
            idx.db("UPDATE", "product_index", rng.uniform(3, 8), system="elasticsearch")
            idx.finish()


def _uninstrumented(sim: Sim, destination: str, at: float) -> Message:
    """A message from a producer that has no tracing: no span, no headers."""
    return Message(destination, sim.message_id(), {}, "kafka", at)

'use strict';
// payments: consumes payment.requested, "authorizes" the card (a few ms), INSERTs the row into
// `payments`, publishes payment.succeeded, then acks. Also consumes the queue refund.requested,
// whose messages come from an uninstrumented publisher (refund_publisher.js).
const { EXCHANGE, sleep, between, pool, broker, consume, ready } = require('./common');

async function main() {
  const db = pool();
  global.onServiceShutdown(() => db.end());
  const { conn, ch } = await broker();
  await consume(conn, 'payments.payment.requested', 'payment.requested', 10, async (rx, msg, p) => {
    await sleep(between(2, 30));                      // card authorization
    await db.query(
      'INSERT INTO payments (payment_id, order_id, amount, currency, status) VALUES ($1, $2, $3, $4, $5)',
      [p.payment_id, p.order_id, p.amount, p.currency, 'succeeded']);
    const out = { payment_id: p.payment_id, order_id: p.order_id, amount: p.amount };
    ch.publish(EXCHANGE, 'payment.succeeded', Buffer.from(JSON.stringify(out)), {
      messageId: `${p.payment_id}:succeeded`, correlationId: p.order_id, contentType: 'application/json',
    });
    rx.ack(msg);
  });
  await consume(conn, 'refund.requested', 'refund.requested', 10, async (rx, msg, p) => {
    await db.query("UPDATE payments SET status = 'refunded' WHERE payment_id = $1", [p.payment_id]);
    rx.ack(msg);
  });
  ready();
}
main().catch((e) => { console.error(e); process.exit(1); });

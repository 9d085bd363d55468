'use strict';
// receipts: consumes payment.succeeded (only published by payments) and records the receipt.
const { sleep, between, pool, broker, consume, ready } = require('./common');

async function main() {
  const db = pool();
  global.onServiceShutdown(() => db.end());
  const { conn } = await broker();
  await consume(conn, 'receipts.payment.succeeded', 'payment.succeeded', 10, async (rx, msg, p) => {
    await sleep(between(1, 10));                      // render the receipt
    await db.query('INSERT INTO receipts (payment_id, order_id, amount) VALUES ($1, $2, $3)',
      [p.payment_id, p.order_id, p.amount]);
    rx.ack(msg);
  });
  ready();
}
main().catch((e) => { console.error(e); process.exit(1); });

'use strict';
// fraud: independent consumer of payment.requested; scores the payment and records it in its own table.
const { sleep, between, pool, broker, consume, ready } = require('./common');

async function main() {
  const db = pool();
  global.onServiceShutdown(() => db.end());
  const { conn } = await broker();
  await consume(conn, 'fraud.payment.requested', 'payment.requested', 10, async (rx, msg, p) => {
    await sleep(between(1, 60));                      // scoring model
    const score = Math.round(Math.random() * 100) / 100;
    await db.query('INSERT INTO fraud_checks (payment_id, score) VALUES ($1, $2)', [p.payment_id, score]);
    rx.ack(msg);
  });
  ready();
}
main().catch((e) => { console.error(e); process.exit(1); });

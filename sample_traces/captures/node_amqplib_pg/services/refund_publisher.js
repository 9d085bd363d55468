'use strict';
// UNINSTRUMENTED publisher: a plain amqplib script, no OpenTelemetry SDK, so its messages carry no
// trace context and no producer span exists. Publishes refund.requested for every REFUND_EVERY-th
// payment id of IDS_FILE on the `pay` topic exchange.
const fs = require('fs');
const amqp = require('amqplib');

async function main() {
  const every = Number(process.env.REFUND_EVERY || 10);
  const ids = fs.readFileSync(process.env.IDS_FILE, 'utf8').split('\n').filter(Boolean);
  const conn = await amqp.connect(process.env.AMQP_URL);
  const ch = await conn.createConfirmChannel();
  let n = 0;
  for (let i = 0; i < ids.length; i += every) {
    ch.publish('pay', 'refund.requested', Buffer.from(JSON.stringify({ payment_id: ids[i], reason: 'customer' })),
      { messageId: `${ids[i]}:refund`, contentType: 'application/json' });
    n++;
    await new Promise((r) => setTimeout(r, 50));
  }
  await ch.waitForConfirms();
  await conn.close();
  console.log(`published ${n} refund.requested`);
}
main().catch((e) => { console.error(e); process.exit(1); });

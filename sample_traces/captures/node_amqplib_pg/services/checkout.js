'use strict';
// checkout: HTTP API (express). POST /checkout publishes `payment.requested` on the `pay` topic exchange.
const crypto = require('crypto');
const express = require('express');
const { EXCHANGE, broker, ready } = require('./common');

async function main() {
  const { ch } = await broker();
  const app = express();
  app.use(express.json());
  app.post('/checkout', (req, res) => {
    const paymentId = `pay-${crypto.randomUUID()}`;
    const event = { payment_id: paymentId, order_id: req.body.order_id, amount: req.body.amount, currency: 'EUR' };
    ch.publish(EXCHANGE, 'payment.requested', Buffer.from(JSON.stringify(event)), {
      messageId: paymentId, correlationId: req.body.order_id, contentType: 'application/json',
    });
    res.status(202).json({ payment_id: paymentId });
  });
  const server = app.listen(Number(process.env.HTTP_PORT), '127.0.0.1', ready);
  global.onServiceShutdown(() => new Promise((r) => server.close(r)));
}
main().catch((e) => { console.error(e); process.exit(1); });

'use strict';
// Uninstrumented load generator (no OpenTelemetry SDK is loaded): POSTs N checkouts to checkout,
// paced, and writes the returned payment ids (one a line) to IDS_FILE.
const fs = require('fs');
const N = Number(process.env.INSTANCES);
const URL = `http://127.0.0.1:${process.env.CHECKOUT_PORT}/checkout`;
const PACE_MS = Number(process.env.PACE_MS || 120);

async function main() {
  const ids = [];
  const inflight = [];
  for (let i = 0; i < N; i++) {
    const body = { order_id: `ord-${String(i).padStart(5, '0')}`, amount: 5 + (i * 37) % 200 };
    inflight.push(fetch(URL, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      .then((r) => r.json()).then((j) => { ids[i] = j.payment_id; }));
    await new Promise((r) => setTimeout(r, PACE_MS));
  }
  await Promise.all(inflight);
  fs.writeFileSync(process.env.IDS_FILE, ids.join('\n') + '\n');
}
main().catch((e) => { console.error(e); process.exit(1); });

'use strict';
// Broker / database wiring shared by the Node services (no tracing code here).
const fs = require('fs');
const amqp = require('amqplib');
const { Pool } = require('pg');

const AMQP_URL = process.env.AMQP_URL;
const EXCHANGE = 'pay';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const between = (lo, hi) => lo + Math.random() * (hi - lo);

function pool() {
  return new Pool({
    host: '127.0.0.1', port: Number(process.env.PGPORT), user: 'postgres',
    database: process.env.PGDATABASE, max: 4,
  });
}

async function broker() {
  const conn = await amqp.connect(AMQP_URL);
  global.onServiceShutdown(async () => { await conn.close(); });
  const ch = await conn.createChannel();
  await ch.assertExchange(EXCHANGE, 'topic', { durable: false });
  return { conn, ch };
}

// queue `name` bound to routing key `key` on the `pay` exchange; handler(msg, payload) must ack/nack
async function consume(conn, name, key, prefetch, handler) {
  const ch = await conn.createChannel();
  await ch.assertQueue(name, { durable: false });
  await ch.bindQueue(name, EXCHANGE, key);
  await ch.prefetch(prefetch);
  await ch.consume(name, (msg) => {
    handler(ch, msg, JSON.parse(msg.content.toString())).catch((err) => {
      console.error(`handler on ${name} failed`, err);
      ch.nack(msg, false, false);
    });
  });
  return ch;
}

function ready() {
  if (process.env.READY_FILE) fs.writeFileSync(process.env.READY_FILE, 'ready\n');
}

module.exports = { EXCHANGE, sleep, between, pool, broker, consume, ready };

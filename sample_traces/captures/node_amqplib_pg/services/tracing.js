'use strict';
// OpenTelemetry setup shared by the instrumented Node services. Loaded with `node -r ./tracing.js`
// BEFORE amqplib / pg / express are required, so the official instrumentations can patch them.
// Each service is its own process with its own NodeSDK (TracerProvider) and Resource.
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { resourceFromAttributes, defaultResource } = require('@opentelemetry/resources');
const { AmqplibInstrumentation } = require('@opentelemetry/instrumentation-amqplib');
const { PgInstrumentation } = require('@opentelemetry/instrumentation-pg');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express');

const serviceName = process.env.SERVICE_NAME;
const sdk = new NodeSDK({
  autoDetectResources: false,
  resource: defaultResource().merge(resourceFromAttributes({
    'service.name': serviceName,
    'service.version': process.env.SERVICE_VERSION || '1.0.0',
  })),
  // SDK 3.x: span processors take one options object ({ exporter, ... })
  spanProcessors: [new BatchSpanProcessor({
    exporter: new OTLPTraceExporter({ url: process.env.OTLP_TRACES_URL }),
    scheduledDelayMillis: 500, maxQueueSize: 20000, maxExportBatchSize: 512,
  })],
  instrumentations: [
    new HttpInstrumentation(),
    new ExpressInstrumentation(),
    new AmqplibInstrumentation(),
    new PgInstrumentation(),
  ],
});
sdk.start();

const shutdownHooks = [];
global.onServiceShutdown = (fn) => shutdownHooks.push(fn);
let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  for (const fn of shutdownHooks) {
    try { await fn(); } catch (e) { console.error(`${serviceName}: shutdown hook failed`, e); }
  }
  try { await sdk.shutdown(); } catch (e) { console.error(`${serviceName}: sdk shutdown failed`, e); }
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

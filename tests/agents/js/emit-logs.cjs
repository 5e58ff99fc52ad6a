// Emit N log records through the OpenTelemetry JS SDK's OTLP exporter and flush.
// usage: node emit-logs.cjs <base-url> <json|proto> <count> <run-id> <api-key> [gzip|none]
// Exits 0 only when every export succeeded (the SDK reports failures to its diag logger,
// so the result callback of the exporter is wrapped to count them).
'use strict';
const { SeverityNumber } = require('@opentelemetry/api-logs');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const [base, protocol, countText, runId, apiKey, compression = 'none'] = process.argv.slice(2);
const { OTLPLogExporter } = require(
  protocol === 'proto'
    ? '@opentelemetry/exporter-logs-otlp-proto'
    : '@opentelemetry/exporter-logs-otlp-http',
);

const exporter = new OTLPLogExporter({
  url: `${base}/v1/logs`,
  headers: { Authorization: `Bearer ${apiKey}` },
  compression,
  timeoutMillis: 10000,
});
let failures = 0;
const exportOnce = exporter.export.bind(exporter);
exporter.export = (records, done) =>
  exportOnce(records, (result) => {
    if (result.code !== 0) {
      failures += 1;
      console.error(`export failed: ${result.error}`);
    }
    done(result);
  });

const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'js-orders', 'host.name': 'js-host-1' }),
  processors: [
    new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 64, scheduledDelayMillis: 50 }),
  ],
});
const logger = provider.getLogger('tideway-js-test', '1.0.0');
const levels = [
  [SeverityNumber.INFO, 'INFO'],
  [SeverityNumber.WARN, 'WARN'],
  [SeverityNumber.ERROR, 'ERROR'],
];
for (let i = 0; i < Number(countText); i += 1) {
  const [severityNumber, severityText] = levels[i % levels.length];
  logger.emit({
    severityNumber,
    severityText,
    body: `${runId} record ${i}`,
    attributes: { 'run.id': runId, 'record.n': i, 'http.route': '/api/cart', ok: i % 2 === 0 },
  });
}
provider
  .forceFlush()
  .then(() => provider.shutdown())
  .then(() => process.exit(failures === 0 ? 0 : 1))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });

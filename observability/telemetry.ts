import { context, diag, DiagLogLevel, metrics, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace'
import { setSpansExported } from './spans.ts'

export interface Telemetry {
  /** Whether spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT is set). */
  readonly exporting: boolean
  /** The Prometheus text exposition of this process's metrics. */
  metricsText(): Promise<string>
  /** Flushes pending spans and stops. */
  shutdown(): Promise<void>
}

type Env = Record<string, string | undefined>

/** OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, as the OpenTelemetry specification defines them. */
export function samplerFromEnv(env: Env = process.env): Sampler {
  const ratio = Number(env.OTEL_TRACES_SAMPLER_ARG ?? 1)
  const traceIdRatio = () => new TraceIdRatioBasedSampler(Number.isFinite(ratio) ? Math.min(1, Math.max(0, ratio)) : 1)
  switch ((env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase()) {
    case 'always_on': return new AlwaysOnSampler()
    case 'always_off': return new AlwaysOffSampler()
    case 'traceidratio': return traceIdRatio()
    case 'parentbased_always_off': return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio': return new ParentBasedSampler({ root: traceIdRatio() })
    default: return new ParentBasedSampler({ root: new AlwaysOnSampler() })
  }
}

/** OTEL_BSP_SCHEDULE_DELAY, _EXPORT_TIMEOUT, _MAX_QUEUE_SIZE and _MAX_EXPORT_BATCH_SIZE, where set. */
function batchOptionsFromEnv(env: Env) {
  const number = (name: string) => {
    const value = Number(env[name])
    return env[name] !== undefined && Number.isFinite(value) && value >= 0 ? value : undefined
  }
  return Object.fromEntries(Object.entries({
    scheduledDelayMillis: number('OTEL_BSP_SCHEDULE_DELAY'),
    exportTimeoutMillis: number('OTEL_BSP_EXPORT_TIMEOUT'),
    maxQueueSize: number('OTEL_BSP_MAX_QUEUE_SIZE'),
    maxExportBatchSize: number('OTEL_BSP_MAX_EXPORT_BATCH_SIZE'),
  }).filter(([, value]) => value !== undefined))
}

/**
 * The OTLP/HTTP exporter for a protocol, loaded only when spans are exported: loading both
 * exporters (protobuf.js and friends) cost ~30 ms of a worker's ~235 ms start-up.
 */
function traceExporter(protocol: string): SpanExporter {
  if (protocol === 'http/json') {
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http')
    return new OTLPTraceExporter()
  }
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto') as typeof import('@opentelemetry/exporter-trace-otlp-proto')
  return new OTLPTraceExporter()
}

/** Spans leave over OTLP/HTTP only when an endpoint is configured and nothing turns them off. */
export function exportingFromEnv(env: Env = process.env): boolean {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT
  return Boolean(endpoint) && env.OTEL_SDK_DISABLED !== 'true' && env.OTEL_TRACES_EXPORTER !== 'none'
}

/**
 * Sets up OpenTelemetry for one process: W3C trace context carried through AsyncLocalStorage,
 * a tracer provider and a meter provider whose metrics /metrics serves.
 *
 * With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are batched to it over OTLP/HTTP, protobuf or JSON
 * as OTEL_EXPORTER_OTLP_PROTOCOL says (the exporters read the other OTEL_EXPORTER_OTLP_*
 * variables themselves), sampled per OTEL_TRACES_SAMPLER. Without it, spans are never recorded
 * or exported, but trace and span ids are still made and passed on, so tasks and log lines can
 * be correlated at the cost of an id per span.
 */
export function initTelemetry(defaultServiceName: string, env: Env = process.env): Telemetry {
  diag.setLogger({ ...console, verbose: () => {}, debug: () => {}, info: () => {} }, DiagLogLevel.WARN)
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the default name.
  const resource = resourceFromAttributes({ 'service.name': defaultServiceName })
    .merge(detectResources({ detectors: [envDetector] }))

  const exporting = exportingFromEnv(env)
  setSpansExported(exporting)
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim()
  if (exporting && protocol !== 'http/json' && protocol !== 'http/protobuf') {
    console.warn(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported here; sending http/protobuf`)
  }
  const tracerProvider = new TracerProvider({
    resource,
    sampler: exporting ? samplerFromEnv(env) : new AlwaysOffSampler(),
    spanProcessors: exporting
      ? [new BatchSpanProcessor({
          exporter: traceExporter(protocol),
          ...batchOptionsFromEnv(env),
        })]
      : [],
  })
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  trace.setGlobalTracerProvider(tracerProvider)

  const prometheus = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ resource, readers: [prometheus] })
  metrics.setGlobalMeterProvider(meterProvider)
  const serializer = new PrometheusSerializer()

  return {
    exporting,
    async metricsText() {
      const { resourceMetrics, errors } = await prometheus.collect()
      for (const error of errors) diag.warn('collecting metrics failed', error)
      return serializer.serialize(resourceMetrics)
    },
    async shutdown() {
      await Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()])
    },
  }
}

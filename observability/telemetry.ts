import { context, diag, DiagLogLevel, metrics, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import type { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { detectResources, envDetector, resourceFromAttributes, type Resource } from '@opentelemetry/resources'
import type { MeterProvider } from '@opentelemetry/sdk-metrics'
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
  /** The Prometheus text exposition of this process's metrics (empty when metrics are off). */
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
 * a tracer provider and, with `metrics` (the default), a meter provider whose metrics /metrics
 * serves. Without it no meter provider is set and recording a metric costs nothing: a worker
 * that serves no metrics recorded them for nothing (drain 3,900–4,230 → 4,150–4,500 tasks/s
 * without) and took ~90 ms longer to start, loading the metrics SDK (median 279 → 187 ms).
 *
 * With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are batched to it over OTLP/HTTP, protobuf or JSON
 * as OTEL_EXPORTER_OTLP_PROTOCOL says (the exporters read the other OTEL_EXPORTER_OTLP_*
 * variables themselves), sampled per OTEL_TRACES_SAMPLER. Without it, spans are never recorded
 * or exported, but trace and span ids are still made and passed on, so tasks and log lines can
 * be correlated at the cost of an id per span.
 */
export function initTelemetry(defaultServiceName: string, env: Env = process.env, { metrics: withMetrics = true } = {}): Telemetry {
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

  const meters = withMetrics ? prometheusMeters(resource) : undefined
  return {
    exporting,
    async metricsText() {
      if (!meters) return ''
      const { resourceMetrics, errors } = await meters.exporter.collect()
      for (const error of errors) diag.warn('collecting metrics failed', error)
      return meters.serializer.serialize(resourceMetrics)
    },
    async shutdown() {
      await Promise.allSettled([tracerProvider.shutdown(), meters?.provider.shutdown()])
    },
  }
}

/** The global meter provider, read by a Prometheus exporter on demand (its SDK loaded only here). */
function prometheusMeters(resource: Resource): { exporter: PrometheusExporter; serializer: PrometheusSerializer; provider: MeterProvider } {
  const { PrometheusExporter, PrometheusSerializer } = require('@opentelemetry/exporter-prometheus') as typeof import('@opentelemetry/exporter-prometheus')
  const { MeterProvider } = require('@opentelemetry/sdk-metrics') as typeof import('@opentelemetry/sdk-metrics')
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const provider = new MeterProvider({ resource, readers: [exporter] })
  metrics.setGlobalMeterProvider(provider)
  return { exporter, serializer: new PrometheusSerializer(), provider }
}

/**
 * OTLP/HTTP JSON encoding of finished spans (`POST /v1/traces`,
 * `Content-Type: application/json`), as OpenTelemetry collectors accept it:
 * ids in hex, 64-bit integers as decimal strings, enums as numbers.
 *
 * Written here rather than with @opentelemetry/exporter-trace-otlp-http: the
 * SDK exporter needs the SDK's span objects (ReadableSpan with its
 * Resource, InstrumentationScope, hrtime tuples), so every sampled request
 * would build SDK objects on the proxy's hot path only to be flattened again
 * here; and the unsampled path needs nothing from the SDK at all. The
 * encoding is small and fixed, so it is kept local. Batching, the bounded
 * queue and drops are `span_export.ts`.
 */

import { VERSION } from "../version.ts";
import {
  BatchExporter,
  type BatchOptions,
  type Encoder,
  type FinishedSpan,
  type SpanSource,
} from "./span_export.ts";

// SpanKind and StatusCode as numbers (opentelemetry/proto/trace/v1/trace.proto).
const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const STATUS_CODE_UNSET = 0;
const STATUS_CODE_ERROR = 2;

type AnyValue = { stringValue: string } | { intValue: string };
interface KeyValue {
  key: string;
  value: AnyValue;
}

const s = (key: string, v: string): KeyValue => ({ key, value: { stringValue: v } });
const i = (key: string, v: number): KeyValue => ({ key, value: { intValue: String(v) } });

/** Milliseconds since the epoch (fractional) as unix nanoseconds, a decimal string. */
export function unixNanos(epochMs: number): string {
  return (BigInt(Math.round(epochMs * 1000)) * 1000n).toString();
}

/** The span's attributes, OpenTelemetry HTTP semantic conventions plus Istio's tags. */
export function spanAttributes(sp: FinishedSpan): KeyValue[] {
  const a: KeyValue[] = [
    s("http.request.method", sp.method),
    s("url.path", sp.urlPath),
    s("url.scheme", sp.scheme),
    s("network.protocol.name", "http"),
    s("network.protocol.version", sp.protocolVersion),
    s("server.address", sp.serverAddress),
  ];
  if (sp.serverPort > 0) a.push(i("server.port", sp.serverPort));
  if (sp.status > 0) a.push(i("http.response.status_code", sp.status));
  if (sp.peerAddress !== "") a.push(s("network.peer.address", sp.peerAddress));
  if (sp.peerPort > 0) a.push(i("network.peer.port", sp.peerPort));
  a.push(
    s("upstream_cluster", sp.upstreamCluster),
    s("response_flags", sp.responseFlags),
    s("guid:x-request-id", sp.requestId),
    s("peer.principal", sp.peerPrincipal),
    i("http.request.body.size", sp.requestBytes),
    i("http.response.body.size", sp.responseBytes),
    s("component", "proxy"),
  );
  return a;
}

export const otlpJson: Encoder = {
  contentType: "application/json",
  encode(spans: readonly FinishedSpan[], source: SpanSource): string {
    return JSON.stringify({
      resourceSpans: [{
        resource: {
          attributes: [
            s("service.name", source.serviceName),
            s("service.namespace", source.namespace),
            s("k8s.namespace.name", source.namespace),
            s("istio.canonical_service", source.workload),
          ],
        },
        scopeSpans: [{
          scope: { name: "remora", version: VERSION },
          spans: spans.map((sp) => {
            const out: Record<string, unknown> = {
              traceId: sp.traceId,
              spanId: sp.spanId,
              name: sp.name,
              kind: sp.kind === "SERVER" ? SPAN_KIND_SERVER : SPAN_KIND_CLIENT,
              startTimeUnixNano: unixNanos(sp.startEpochMs),
              endTimeUnixNano: unixNanos(sp.startEpochMs + sp.durationMs),
              attributes: spanAttributes(sp),
              status: { code: sp.error ? STATUS_CODE_ERROR : STATUS_CODE_UNSET },
            };
            if (sp.parentSpanId !== "") out.parentSpanId = sp.parentSpanId;
            if (sp.traceState !== "") out.traceState = sp.traceState;
            return out;
          }),
        }],
      }],
    });
  },
};

/** A batching OTLP/HTTP JSON exporter to `url` (e.g. http://collector:4318/v1/traces). */
export function otlpExporter(url: string, source: SpanSource, opts: BatchOptions): BatchExporter {
  return new BatchExporter("otlp", url, otlpJson, source, opts);
}

/**
 * Turns one finished exchange into its metrics record, the same way for the
 * HTTP/1 and HTTP/2 engines: reporter-dependent source and destination
 * labels, response flags joined as Envoy prints them ("-" when none). The
 * same facts go to the telemetry hook (spans, access log) when one is set.
 */

import {
  type Metrics,
  type PeerMeta,
  type Reporter,
  type TcpRecord,
  UNKNOWN_PEER,
} from "../telemetry/metrics.ts";
import type { RequestTrace, TelemetryHook } from "../telemetry/tracing.ts";
import type { ConnInfo } from "./http1.ts";
import { type DestinationLabels, expectedPeerId, type Upstream } from "./target.ts";

/** The workload remora runs beside, for metrics labels. */
export interface SelfInfo {
  workload: string;
  namespace: string;
  /** App, version and canonical service from the workload's labels (unknown when absent). */
  meta?: PeerMeta;
  /** This workload's SPIFFE ID, when it has a mesh identity. */
  principal?: () => string | undefined;
}

/**
 * A SPIFFE ID as Istio's metrics print it: whole, scheme included
 * ("spiffe://cluster.local/ns/x/sa/y"); "unknown" when there is none.
 */
function principalLabel(id: string | undefined): string {
  return id ?? "unknown";
}

/** Per meshed endpoint: the last own identity seen and the upstream identity made from it. */
const expectedOf = new WeakMap<object, { mine: string; id: string }>();

/** The identity a meshed upstream must present, as the pool checks it. */
export function upstreamPrincipal(self: SelfInfo, up: Upstream | undefined): string | undefined {
  const m = up?.meshed;
  const mine = self.principal?.();
  if (m?.serviceAccount === undefined || mine === undefined) return undefined;
  const known = expectedOf.get(m);
  if (known !== undefined && known.mine === mine) return known.id;
  // The trust domain of this workload's own ID (spiffe://<td>/...).
  const id = expectedPeerId(mine.slice(9, mine.indexOf("/", 9)), m)!;
  expectedOf.set(m, { mine, id });
  return id;
}

export interface Observer {
  metrics: Metrics;
  reporter: Reporter;
  self: SelfInfo;
  /** Spans and access logs (telemetry/tracing.ts); absent in tests that need neither. */
  telemetry?: TelemetryHook | undefined;
}

export interface ExchangeFacts {
  labels: DestinationLabels;
  status: number;
  flags: readonly string[];
  grpc: boolean;
  grpcStatus: string;
  startMs: number;
  /** Bytes of the request and of the response, heads included (as Istio's size metrics count). */
  requestBytes: number;
  responseBytes: number;
  /**
   * Of those, what is not body: the head and chunked framing (0 over HTTP/2,
   * where only DATA is counted). Access logs count bodies, as Envoy does.
   */
  requestFramingBytes: number;
  responseFramingBytes: number;
  // For spans and access logs (references only: nothing is built unless they are on).
  /** What `TelemetryHook.onRequest` returned, when the request was forwarded. */
  trace: RequestTrace | undefined;
  method: string;
  /** The request path as received, with the query. */
  path: string;
  authority: string;
  /** "HTTP/1.1", "HTTP/1.0" or "HTTP/2". */
  protocol: string;
  conn: ConnInfo;
  upstream: Upstream | undefined;
  /** SNI of the downstream TLS connection, when known. */
  requestedServerName?: string;
  /** The peer's SPIFFE id, when known. */
  peerPrincipal?: string;
  /**
   * Milliseconds from sending the request upstream (the attempt answered)
   * to its response head: Envoy's x-envoy-upstream-service-time. -1 when no
   * upstream answered.
   */
  upstreamMs: number;
  /**
   * The x-request-id the client sent, read only for exchanges that never
   * reached trace context (local replies); logs make one when absent, as
   * Envoy does before routing.
   */
  clientRequestId: string | undefined;
}

export function observe(o: Observer, x: ExchangeFacts): void {
  const flags = x.flags.length === 0 ? "-" : [...new Set(x.flags)].join(",");
  const durationMs = performance.now() - x.startMs;
  // Outbound, the identity a meshed upstream had to present.
  const upstreamId = o.reporter === "source" ? upstreamPrincipal(o.self, x.upstream) : undefined;
  // Spans and logs name the peer: the verified caller inbound, the identity required of the upstream outbound.
  o.telemetry?.onExchange(x, flags, durationMs, upstreamId);
  o.metrics.recordRequest({
    ...connectionRecord(o, x.conn, x.upstream, x.labels, flags, upstreamId),
    responseCode: x.status,
    requestProtocol: x.grpc ? "grpc" : "http",
    grpcResponseStatus: x.grpcStatus,
    durationMs,
    requestBytes: x.requestBytes,
    responseBytes: x.responseBytes,
  });
}

/**
 * Who talked to whom over a connection, as Istio's metrics label it (shared
 * by the HTTP exchanges and opaque TCP): reporter-dependent workloads and
 * metadata, principals and the security policy. This workload's own
 * identity shows only where its side spoke mTLS (a meshed upstream outbound,
 * a verified peer inbound), as Istio reads it from the connection.
 * `upstreamId` is the upstream's required identity when the caller has it.
 */
export function connectionRecord(
  o: Observer,
  conn: ConnInfo,
  up: Upstream | undefined,
  labels: DestinationLabels,
  flags: string,
  upstreamId = o.reporter === "source" ? upstreamPrincipal(o.self, up) : undefined,
): TcpRecord {
  const source = o.reporter === "source";
  const endpoint = up?.endpoint;
  const peer = conn.peer?.principal;
  return {
    reporter: o.reporter,
    sourceWorkload: source ? o.self.workload : "unknown",
    sourceNamespace: source ? o.self.namespace : "unknown",
    sourcePrincipal: principalLabel(
      source ? (upstreamId !== undefined ? o.self.principal?.() : undefined) : peer,
    ),
    destinationWorkload: source ? endpoint?.workload ?? "unknown" : o.self.workload,
    destinationNamespace: source ? endpoint?.namespace ?? "unknown" : o.self.namespace,
    destinationPrincipal: principalLabel(
      source ? upstreamId : peer !== undefined ? o.self.principal?.() : undefined,
    ),
    destinationService: labels.service,
    destinationServiceName: labels.serviceName,
    destinationServiceNamespace: labels.serviceNamespace,
    // Inbound the caller is not known beyond its identity (no metadata exchange).
    sourceMeta: source ? o.self.meta ?? UNKNOWN_PEER : UNKNOWN_PEER,
    destinationMeta: source ? endpoint?.meta ?? UNKNOWN_PEER : o.self.meta ?? UNKNOWN_PEER,
    responseFlags: flags,
    // As in Istio: the caller's side cannot know how the callee received it.
    connectionSecurityPolicy: source ? "unknown" : peer !== undefined ? "mutual_tls" : "none",
  };
}

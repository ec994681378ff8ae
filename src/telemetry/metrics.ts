/**
 * Prometheus metrics with Istio's standard names and labels, through
 * prom-client. This is the only module that knows Prometheus.
 *
 The hot path calls `recordRequest()` once per request. prom-client's
 * `observe(labels, v)` validates and hashes the label object on every call
 * (its labelled children do too), which cost more than the rest of a
 * request's bookkeeping; so the Istio request series are aggregated here in
 * plain arrays keyed by one joined string, and handed to prom-client's
 * registry as metric objects that it formats at scrape time. Every label
 * value comes from a bounded set (config names, status codes, flags), never
 * from raw paths or ids, so the series map is bounded too. Other metrics are
 * ordinary prom-client metrics. It does not serve HTTP (see `admin/admin.ts`).
 */

import client from "prom-client";

export type Reporter = "source" | "destination";

/**
 * One side of a call as Istio's standard labels describe a workload: app,
 * version, canonical service and revision, and the cluster it runs in.
 * Made once per workload (this proxy's own, each endpoint's) so that a
 * request compares one precomputed `key` instead of five values.
 */
export interface PeerMeta {
  app: string;
  version: string;
  canonicalService: string;
  canonicalRevision: string;
  cluster: string;
  /** The five values joined, for series lookup. */
  key: string;
}

/**
 * A workload's metadata from its labels, with Istio's fallbacks: app from
 * `app` or `app.kubernetes.io/name`, version from `version` or
 * `app.kubernetes.io/version`, the canonical service from
 * `service.istio.io/canonical-name`, then the app name, then the workload
 * name, and the canonical revision from `service.istio.io/canonical-revision`,
 * then the version, then "latest". remora knows no cluster ID: "unknown".
 */
export function peerMeta(labels: Readonly<Record<string, string>>, workload: string): PeerMeta {
  const name = labels["app.kubernetes.io/name"] ?? labels["app"];
  const version = labels["app.kubernetes.io/version"] ?? labels["version"];
  const meta = {
    app: labels["app"] ?? labels["app.kubernetes.io/name"] ?? "unknown",
    version: labels["version"] ?? labels["app.kubernetes.io/version"] ?? "unknown",
    canonicalService: labels["service.istio.io/canonical-name"] ?? name ?? workload,
    canonicalRevision: labels["service.istio.io/canonical-revision"] ?? version ?? "latest",
    cluster: "unknown",
  };
  return { ...meta, key: Object.values(meta).join("\0") };
}

/** The other side when nothing is known of it (no metadata exchange, passthrough). */
export const UNKNOWN_PEER: PeerMeta = {
  app: "unknown",
  version: "unknown",
  canonicalService: "unknown",
  canonicalRevision: "unknown",
  cluster: "unknown",
  key: "unknown\0unknown\0unknown\0unknown\0unknown",
};

/** One finished HTTP request as metrics see it. */
export interface RequestRecord {
  reporter: Reporter;
  sourceWorkload: string;
  sourceNamespace: string;
  sourcePrincipal: string;
  destinationWorkload: string;
  destinationNamespace: string;
  destinationPrincipal: string;
  destinationService: string;
  destinationServiceName: string;
  destinationServiceNamespace: string;
  sourceMeta: PeerMeta;
  destinationMeta: PeerMeta;
  responseCode: number;
  /** "http" or "grpc", as Istio labels it. */
  requestProtocol: string;
  grpcResponseStatus: string;
  responseFlags: string;
  connectionSecurityPolicy: "mutual_tls" | "none" | "unknown";
  durationMs: number;
  requestBytes: number;
  responseBytes: number;
}

const REQUEST_LABELS = [
  "reporter",
  "source_workload",
  "source_workload_namespace",
  "source_principal",
  "source_app",
  "source_version",
  "source_canonical_service",
  "source_canonical_revision",
  "source_cluster",
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "destination_version",
  "destination_canonical_service",
  "destination_canonical_revision",
  "destination_service",
  "destination_service_name",
  "destination_service_namespace",
  "destination_cluster",
  "request_protocol",
  "response_code",
  "grpc_response_status",
  "response_flags",
  "connection_security_policy",
] as const;

/** One TCP connection as metrics see it. */
export interface TcpRecord {
  reporter: Reporter;
  sourceWorkload: string;
  sourceNamespace: string;
  sourcePrincipal: string;
  destinationWorkload: string;
  destinationNamespace: string;
  destinationPrincipal: string;
  destinationService: string;
  destinationServiceName: string;
  destinationServiceNamespace: string;
  sourceMeta: PeerMeta;
  destinationMeta: PeerMeta;
  responseFlags: string;
  connectionSecurityPolicy: "mutual_tls" | "none" | "unknown";
}

const TCP_LABELS = [
  "reporter",
  "source_workload",
  "source_workload_namespace",
  "source_principal",
  "source_app",
  "source_version",
  "source_canonical_service",
  "source_canonical_revision",
  "source_cluster",
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "destination_version",
  "destination_canonical_service",
  "destination_canonical_revision",
  "destination_service",
  "destination_service_name",
  "destination_service_namespace",
  "destination_cluster",
  "response_flags",
  "connection_security_policy",
] as const;

type MetaLabel<S extends string> =
  | `${S}_app`
  | `${S}_version`
  | `${S}_canonical_service`
  | `${S}_canonical_revision`
  | `${S}_cluster`;

function metaLabels<S extends "source" | "destination">(
  side: S,
  m: PeerMeta,
): Record<MetaLabel<S>, string> {
  return {
    [`${side}_app`]: m.app,
    [`${side}_version`]: m.version,
    [`${side}_canonical_service`]: m.canonicalService,
    [`${side}_canonical_revision`]: m.canonicalRevision,
    [`${side}_cluster`]: m.cluster,
  } as Record<MetaLabel<S>, string>;
}

function tcpLabels(r: TcpRecord): Record<string, string> {
  return {
    reporter: r.reporter,
    source_workload: r.sourceWorkload,
    source_workload_namespace: r.sourceNamespace,
    source_principal: r.sourcePrincipal,
    ...metaLabels("source", r.sourceMeta),
    destination_workload: r.destinationWorkload,
    destination_workload_namespace: r.destinationNamespace,
    destination_principal: r.destinationPrincipal,
    ...metaLabels("destination", r.destinationMeta),
    destination_service: r.destinationService,
    destination_service_name: r.destinationServiceName,
    destination_service_namespace: r.destinationServiceNamespace,
    response_flags: r.responseFlags,
    connection_security_policy: r.connectionSecurityPolicy,
  };
}

// Istio's default buckets for request duration (milliseconds) and sizes (bytes).
const DURATION_BUCKETS = [
  0.5,
  1,
  5,
  10,
  25,
  50,
  100,
  250,
  500,
  1000,
  2500,
  5000,
  10000,
  30000,
  60000,
  300000,
  600000,
];
const BYTES_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

type LabelName = (typeof REQUEST_LABELS)[number];

interface Series {
  labels: Record<LabelName, string>;
  count: number;
  duration: Float64Array;
  durationSum: number;
  requestBytes: Float64Array;
  requestBytesSum: number;
  responseBytes: Float64Array;
  responseBytesSum: number;
}

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** Index of the first bucket whose upper bound holds `v` (buckets.length for +Inf). */
function bucketOf(buckets: readonly number[], v: number): number {
  let i = 0;
  while (i < buckets.length && v > buckets[i]!) i++;
  return i;
}

/** Sets k[i] to v; whether it was v already. */
function put(k: string[], i: number, v: string): boolean {
  if (k[i] === v) return true;
  k[i] = v;
  return false;
}

/** A prom-client metric object over the aggregated series (formatted by the registry). */
class SeriesMetric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "histogram",
    readonly aggregator: "sum",
    readonly values: (out: MetricValue[]) => void,
  ) {}
  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    const values: MetricValue[] = [];
    this.values(values);
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    };
  }
  reset(): void {}
}

function histogramValues(
  name: string,
  buckets: readonly number[],
  series: Iterable<Series>,
  pick: (s: Series) => [Float64Array, number],
  out: MetricValue[],
): void {
  for (const s of series) {
    const [counts, sum] = pick(s);
    let cumulative = 0;
    for (let i = 0; i < buckets.length; i++) {
      cumulative += counts[i]!;
      out.push({
        labels: { ...s.labels, le: buckets[i]! },
        value: cumulative,
        metricName: `${name}_bucket`,
      });
    }
    out.push({ labels: { ...s.labels, le: "+Inf" }, value: s.count, metricName: `${name}_bucket` });
    out.push({ labels: s.labels, value: sum, metricName: `${name}_sum` });
    out.push({ labels: s.labels, value: s.count, metricName: `${name}_count` });
  }
}

/** The metric registry of one remora process. */
export class Metrics {
  readonly registry = new client.Registry();
  readonly #series = new Map<string, Series>();
  /** The label values of the last request recorded, and its series. */
  readonly #last: string[] = new Array<string>(15).fill("");
  #lastSeries: Series | undefined;
  readonly #tcp: {
    opened: client.Counter<string>;
    closed: client.Counter<string>;
    sent: client.Counter<string>;
    received: client.Counter<string>;
  };
  readonly configReloads: client.Counter<"result">;
  readonly configVersion: client.Gauge<"version" | "source">;
  readonly downstreamConnections: client.Gauge<"listener">;
  /** Circuit breaking, outlier ejection, retries and hedges, by cluster. */
  readonly resilience: ResilienceMetrics;
  readonly #identityExpiry: client.Gauge<string>;
  #identityExpiryShown = false;
  readonly #identityRotations: client.Counter<"result">;
  readonly #tlsFailures: client.Counter<"side">;
  readonly spansExported: client.Counter<"exporter">;
  readonly spansDropped: client.Counter<"exporter" | "reason">;
  readonly accessLogDropped: client.Counter<string>;

  constructor() {
    const registers = [this.registry];
    this.resilience = new ResilienceMetrics(registers);
    const series = this.#series;
    const metrics = [
      new SeriesMetric(
        "istio_requests_total",
        "Requests handled, by reporter, source, destination and outcome",
        "counter",
        "sum",
        (out) => {
          for (const s of series.values()) out.push({ labels: s.labels, value: s.count });
        },
      ),
      new SeriesMetric(
        "istio_request_duration_milliseconds",
        "Request duration in milliseconds",
        "histogram",
        "sum",
        (out) =>
          histogramValues(
            "istio_request_duration_milliseconds",
            DURATION_BUCKETS,
            series.values(),
            (s) => [
              s.duration,
              s.durationSum,
            ],
            out,
          ),
      ),
      new SeriesMetric(
        "istio_request_bytes",
        "Request size in bytes (head and body)",
        "histogram",
        "sum",
        (out) =>
          histogramValues("istio_request_bytes", BYTES_BUCKETS, series.values(), (s) => [
            s.requestBytes,
            s.requestBytesSum,
          ], out),
      ),
      new SeriesMetric(
        "istio_response_bytes",
        "Response size in bytes (head and body)",
        "histogram",
        "sum",
        (out) =>
          histogramValues("istio_response_bytes", BYTES_BUCKETS, series.values(), (s) => [
            s.responseBytes,
            s.responseBytesSum,
          ], out),
      ),
    ];
    // deno-lint-ignore no-explicit-any
    for (const m of metrics) this.registry.registerMetric(m as any);
    const tcpCounter = (name: string, help: string) =>
      new client.Counter({ name, help, labelNames: TCP_LABELS, registers });
    this.#tcp = {
      opened: tcpCounter("istio_tcp_connections_opened_total", "TCP connections opened"),
      closed: tcpCounter("istio_tcp_connections_closed_total", "TCP connections closed"),
      sent: tcpCounter(
        "istio_tcp_sent_bytes_total",
        "Bytes sent to the downstream during TCP connections",
      ),
      received: tcpCounter(
        "istio_tcp_received_bytes_total",
        "Bytes received from the downstream during TCP connections",
      ),
    };
    this.configReloads = new client.Counter({
      name: "remora_config_reloads_total",
      help: "Config loads by result (accepted or rejected)",
      labelNames: ["result"],
      registers,
    });
    this.configVersion = new client.Gauge({
      name: "remora_config_info",
      help: "The active config: 1 for its version and source",
      labelNames: ["version", "source"],
      registers,
    });
    this.spansExported = new client.Counter({
      name: "remora_spans_exported_total",
      help: "Spans accepted by the collector, by exporter",
      labelNames: ["exporter"],
      registers,
    });
    this.spansDropped = new client.Counter({
      name: "remora_spans_dropped_total",
      help: "Spans dropped instead of exported (queue_full, export_failed, timeout), by exporter",
      labelNames: ["exporter", "reason"],
      registers,
    });
    this.accessLogDropped = new client.Counter({
      name: "remora_access_log_lines_dropped_total",
      help: "Access log lines dropped because stdout did not keep up",
      registers,
    });
    this.#tlsFailures = new client.Counter({
      name: "remora_tls_handshake_failures_total",
      help:
        "mTLS handshakes that failed, by side (inbound: a client refused; outbound: an upstream)",
      labelNames: ["side"],
      registers,
    });
    this.#identityExpiry = new client.Gauge({
      name: "remora_identity_cert_expiry_timestamp_seconds",
      help: "When the served identity certificate expires, in seconds since the epoch",
      registers: [], // registered when first set: no identity, no series
    });
    this.#identityRotations = new client.Counter({
      name: "remora_identity_rotations_total",
      help: "Identity file sets loaded by rotation, by result (accepted or rejected)",
      labelNames: ["result"],
      registers,
    });
    this.downstreamConnections = new client.Gauge({
      name: "remora_downstream_connections_active",
      help: "Open downstream connections by listener",
      labelNames: ["listener"],
      registers,
    });
  }

  recordRequest(r: RequestRecord): void {
    const code = String(r.responseCode);
    // The series is found by its 15 label values. Most requests repeat the
    // last one's, mostly the very same strings: compared one by one, they
    // find its series without building and hashing a key string.
    const k = this.#last;
    let same = this.#lastSeries !== undefined;
    same = put(k, 0, r.reporter) && same;
    same = put(k, 1, r.sourceWorkload) && same;
    same = put(k, 2, r.sourceNamespace) && same;
    same = put(k, 3, r.sourcePrincipal) && same;
    same = put(k, 4, r.destinationWorkload) && same;
    same = put(k, 5, r.destinationNamespace) && same;
    same = put(k, 6, r.destinationPrincipal) && same;
    same = put(k, 7, r.destinationService) && same;
    same = put(k, 8, r.destinationMeta.key) && same;
    same = put(k, 9, r.requestProtocol) && same;
    same = put(k, 10, code) && same;
    same = put(k, 11, r.grpcResponseStatus) && same;
    same = put(k, 12, r.responseFlags) && same;
    same = put(k, 13, r.connectionSecurityPolicy) && same;
    same = put(k, 14, r.sourceMeta.key) && same;
    if (same) {
      this.#count(this.#lastSeries!, r);
      return;
    }
    // Else one flat string from the values (chained "+" made a rope that the
    // map lookup then flattened again).
    const key = k.join("\0");
    let s = this.#series.get(key);
    if (s === undefined) {
      s = {
        labels: {
          reporter: r.reporter,
          source_workload: r.sourceWorkload,
          source_workload_namespace: r.sourceNamespace,
          source_principal: r.sourcePrincipal,
          ...metaLabels("source", r.sourceMeta),
          destination_workload: r.destinationWorkload,
          destination_workload_namespace: r.destinationNamespace,
          destination_principal: r.destinationPrincipal,
          ...metaLabels("destination", r.destinationMeta),
          destination_service: r.destinationService,
          destination_service_name: r.destinationServiceName,
          destination_service_namespace: r.destinationServiceNamespace,
          request_protocol: r.requestProtocol,
          response_code: code,
          grpc_response_status: r.grpcResponseStatus,
          response_flags: r.responseFlags,
          connection_security_policy: r.connectionSecurityPolicy,
        },
        count: 0,
        duration: new Float64Array(DURATION_BUCKETS.length + 1),
        durationSum: 0,
        requestBytes: new Float64Array(BYTES_BUCKETS.length + 1),
        requestBytesSum: 0,
        responseBytes: new Float64Array(BYTES_BUCKETS.length + 1),
        responseBytesSum: 0,
      };
      this.#series.set(key, s);
    }
    this.#lastSeries = s;
    this.#count(s, r);
  }

  #count(s: Series, r: RequestRecord): void {
    s.count++;
    s.duration[bucketOf(DURATION_BUCKETS, r.durationMs)]!++;
    s.durationSum += r.durationMs;
    s.requestBytes[bucketOf(BYTES_BUCKETS, r.requestBytes)]!++;
    s.requestBytesSum += r.requestBytes;
    s.responseBytes[bucketOf(BYTES_BUCKETS, r.responseBytes)]!++;
    s.responseBytesSum += r.responseBytes;
  }

  /** A TCP connection was opened; returns the labels to close it with. */
  tcpOpened(r: TcpRecord): Record<string, string> {
    const labels = tcpLabels(r);
    this.#tcp.opened.inc(labels);
    return labels;
  }

  /** Adds bytes of an open TCP connection (sent = to the downstream). */
  tcpBytes(labels: Record<string, string>, sent: number, received: number): void {
    if (sent > 0) this.#tcp.sent.inc(labels, sent);
    if (received > 0) this.#tcp.received.inc(labels, received);
  }

  tcpClosed(labels: Record<string, string>): void {
    this.#tcp.closed.inc(labels);
  }

  tlsHandshakeFailed(side: "inbound" | "outbound"): void {
    this.#tlsFailures.inc({ side });
  }

  /**
   * The served identity certificate's notAfter (set at start and on every
   * rotation). Absent until set, so a proxy without an identity shows no
   * series rather than an expiry at the epoch.
   */
  setIdentityCertExpiry(cert: Date | { notAfter: Date }): void {
    const notAfter = cert instanceof Date ? cert : cert.notAfter;
    this.#identityExpiry.set(notAfter.getTime() / 1000);
    if (!this.#identityExpiryShown) {
      this.#identityExpiryShown = true;
      this.registry.registerMetric(this.#identityExpiry);
    }
  }

  /** An identity rotation was accepted or refused (the old identity kept). */
  identityRotation(result: "accepted" | "rejected"): void {
    this.#identityRotations.inc({ result });
  }

  #control: ControlMetrics | undefined;

  /** The control stream's metrics (registered on first use: no --control, no series). */
  control(): ControlMetrics {
    return this.#control ??= new ControlMetrics([this.registry]);
  }

  /** The exposition text for a scrape. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * The config stream and certificates of `remora run --control`: the stream's
 * state (1 connected, 0 not), config updates by result (ack: applied, nack:
 * refused, the last good config kept) and certificate renewals by result.
 */
export class ControlMetrics {
  readonly #state: client.Gauge<string>;
  readonly #updates: client.Counter<"result">;
  readonly #renewals: client.Counter<"result">;

  constructor(registers: client.Registry[]) {
    this.#state = new client.Gauge({
      name: "remora_control_stream_state",
      help: "Whether the config stream to the control server is connected (1) or not (0)",
      registers,
    });
    this.#updates = new client.Counter({
      name: "remora_control_updates_total",
      help: "Config updates from the control server, by result (ack: applied, nack: refused)",
      labelNames: ["result"],
      registers,
    });
    this.#renewals = new client.Counter({
      name: "remora_control_cert_renewals_total",
      help: "Certificate requests to the control server's CA, by result (success or failure)",
      labelNames: ["result"],
      registers,
    });
    this.#updates.inc({ result: "ack" }, 0);
    this.#updates.inc({ result: "nack" }, 0);
  }

  streamState(connected: boolean): void {
    this.#state.set(connected ? 1 : 0);
  }
  update(result: "ack" | "nack"): void {
    this.#updates.inc({ result });
  }
  certRenewal(result: "success" | "failure"): void {
    this.#renewals.inc({ result });
  }
}

/**
 * Counters of the resilience features, labelled by cluster (a bounded set:
 * cluster names of the config). Incremented only when something happens (an
 * overflow, a retry, a hedge, an ejection), never per plain request.
 */
export class ResilienceMetrics {
  readonly #overflow: client.Counter<"cluster" | "limit">;
  readonly #retries: client.Counter<"cluster">;
  readonly #retryOverflow: client.Counter<"cluster" | "limit">;
  readonly #hedges: client.Counter<"cluster">;
  readonly #hedgeWins: client.Counter<"cluster">;
  readonly #ejections: client.Counter<"cluster">;

  constructor(registers: client.Registry[]) {
    this.#overflow = new client.Counter({
      name: "remora_upstream_overflow_total",
      help:
        "Attempts refused by a connectionPool limit (503 UO), by cluster and limit (max_requests, max_pending, pending_timeout)",
      labelNames: ["cluster", "limit"],
      registers,
    });
    this.#retries = new client.Counter({
      name: "remora_retries_total",
      help: "Retries sent upstream, by cluster",
      labelNames: ["cluster"],
      registers,
    });
    this.#retryOverflow = new client.Counter({
      name: "remora_retry_overflow_total",
      help:
        "Retries and hedges not sent because of the retry budget or maxRetries, by cluster and limit",
      labelNames: ["cluster", "limit"],
      registers,
    });
    this.#hedges = new client.Counter({
      name: "remora_hedges_total",
      help: "Hedged attempts sent upstream, by cluster",
      labelNames: ["cluster"],
      registers,
    });
    this.#hedgeWins = new client.Counter({
      name: "remora_hedge_wins_total",
      help: "Requests answered by their hedged attempt, by cluster",
      labelNames: ["cluster"],
      registers,
    });
    this.#ejections = new client.Counter({
      name: "remora_outlier_ejections_total",
      help: "Endpoints ejected by outlier detection, by cluster",
      labelNames: ["cluster"],
      registers,
    });
  }

  overflow(cluster: string, limit: string): void {
    this.#overflow.inc({ cluster, limit });
  }
  retry(cluster: string): void {
    this.#retries.inc({ cluster });
  }
  retryOverflow(cluster: string, limit: string): void {
    this.#retryOverflow.inc({ cluster, limit });
  }
  hedge(cluster: string, won: boolean): void {
    this.#hedges.inc({ cluster });
    if (won) this.#hedgeWins.inc({ cluster });
  }
  ejection(cluster: string): void {
    this.#ejections.inc({ cluster });
  }
}

/**
 * Prometheus metrics with Istio's standard names and labels, through
 * prom-client. This is the only module that knows Prometheus.
 *
 * The hot path calls `recordRequest()` once per request. prom-client's own
 * label hashing costs more than the rest of a request's bookkeeping, so the
 * labelled children are cached here by one joined key; every label value comes
 * from a bounded set (config names, status codes, flags), never from raw paths
 * or ids, so the cache is bounded too. It does not serve HTTP (see
 * `admin/stats.ts`).
 */

import client from "prom-client";

export type Reporter = "source" | "destination";

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
  destinationCluster: string;
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
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "destination_version",
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

// Istio's default buckets for request duration (milliseconds) and sizes (bytes).
const DURATION_BUCKETS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000];
const BYTES_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

interface Children {
  requests: ReturnType<client.Counter<string>["labels"]>;
  duration: ReturnType<client.Histogram<string>["labels"]>;
  requestBytes: ReturnType<client.Histogram<string>["labels"]>;
  responseBytes: ReturnType<client.Histogram<string>["labels"]>;
}

/** The metric registry of one remora process. */
export class Metrics {
  readonly registry = new client.Registry();
  readonly #requests: client.Counter<string>;
  readonly #duration: client.Histogram<string>;
  readonly #requestBytes: client.Histogram<string>;
  readonly #responseBytes: client.Histogram<string>;
  readonly #children = new Map<string, Children>();
  readonly configReloads: client.Counter<"result">;
  readonly configVersion: client.Gauge<"version" | "source">;
  readonly downstreamConnections: client.Gauge<"listener">;

  constructor() {
    const registers = [this.registry];
    this.#requests = new client.Counter({
      name: "istio_requests_total",
      help: "Requests handled, by reporter, source, destination and outcome",
      labelNames: REQUEST_LABELS,
      registers,
    });
    this.#duration = new client.Histogram({
      name: "istio_request_duration_milliseconds",
      help: "Request duration in milliseconds",
      labelNames: REQUEST_LABELS,
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#requestBytes = new client.Histogram({
      name: "istio_request_bytes",
      help: "Request size in bytes (head and body)",
      labelNames: REQUEST_LABELS,
      buckets: BYTES_BUCKETS,
      registers,
    });
    this.#responseBytes = new client.Histogram({
      name: "istio_response_bytes",
      help: "Response size in bytes (head and body)",
      labelNames: REQUEST_LABELS,
      buckets: BYTES_BUCKETS,
      registers,
    });
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
    this.downstreamConnections = new client.Gauge({
      name: "remora_downstream_connections_active",
      help: "Open downstream connections by listener",
      labelNames: ["listener"],
      registers,
    });
  }

  recordRequest(r: RequestRecord): void {
    const code = String(r.responseCode);
    const key = r.reporter + "\0" + r.sourceWorkload + "\0" + r.sourceNamespace + "\0" + r.sourcePrincipal +
      "\0" + r.destinationWorkload + "\0" + r.destinationNamespace + "\0" + r.destinationPrincipal + "\0" +
      r.destinationService + "\0" + r.destinationCluster + "\0" + r.requestProtocol + "\0" + code + "\0" +
      r.grpcResponseStatus + "\0" + r.responseFlags + "\0" + r.connectionSecurityPolicy;
    let c = this.#children.get(key);
    if (c === undefined) {
      const labels: Record<(typeof REQUEST_LABELS)[number], string> = {
        reporter: r.reporter,
        source_workload: r.sourceWorkload,
        source_workload_namespace: r.sourceNamespace,
        source_principal: r.sourcePrincipal,
        source_app: r.sourceWorkload,
        source_version: "unknown",
        destination_workload: r.destinationWorkload,
        destination_workload_namespace: r.destinationNamespace,
        destination_principal: r.destinationPrincipal,
        destination_app: r.destinationWorkload,
        destination_version: "unknown",
        destination_service: r.destinationService,
        destination_service_name: r.destinationServiceName,
        destination_service_namespace: r.destinationServiceNamespace,
        destination_cluster: r.destinationCluster,
        request_protocol: r.requestProtocol,
        response_code: code,
        grpc_response_status: r.grpcResponseStatus,
        response_flags: r.responseFlags,
        connection_security_policy: r.connectionSecurityPolicy,
      };
      c = {
        requests: this.#requests.labels(labels),
        duration: this.#duration.labels(labels),
        requestBytes: this.#requestBytes.labels(labels),
        responseBytes: this.#responseBytes.labels(labels),
      };
      this.#children.set(key, c);
    }
    c.requests.inc();
    c.duration.observe(r.durationMs);
    c.requestBytes.observe(r.requestBytes);
    c.responseBytes.observe(r.responseBytes);
  }

  /** The exposition text for a scrape. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

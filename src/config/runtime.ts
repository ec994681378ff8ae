/**
 * The immutable runtime tables that a validated config compiles into.
 *
 * The proxy's hot path reads only these: a host lookup is one Map get, a
 * route match walks precompiled matchers (regexes compiled once, here), and a
 * weighted split is a binary search over a cumulative table. Nothing in here
 * is mutated after `compile()` returns; a new config builds new tables and is
 * swapped in whole. Per-endpoint mutable state (load balancer cursors, active
 * request counts, circuit breakers, outlier ejections, retry budgets) lives in
 * `proxy/balance.ts`, `circuit_breaker.ts`, `outlier.ts` and
 * `retry_budget.ts`, keyed by these objects.
 */

import type { SecurityTables } from "../security/compile_security.ts";
import type { TelemetryPolicy } from "./compile_telemetry.ts";
import type { PortProtocol, Resource, SimpleLB } from "./model.ts";
import type { Re2RegExp } from "./validate_fields.ts";
import type { PeerMeta } from "../telemetry/metrics.ts";

/** A compiled string matcher: exact, prefix or regex, precomputed. */
export type Matcher =
  | { kind: "exact"; value: string }
  | { kind: "prefix"; value: string }
  | { kind: "regex"; re: Re2RegExp; source: string }
  /** Any value: the header or query parameter is present (`{}` in Istio). */
  | { kind: "present" };

/** One `match` block of an HTTP route; all present conditions must hold. */
export interface RouteMatch {
  uri?: Matcher;
  /** Lower-case comparison for uri when ignoreUriCase is set. */
  ignoreUriCase: boolean;
  method?: Matcher;
  authority?: Matcher;
  scheme?: Matcher;
  /** Header names lower-cased. A header matcher requires presence. */
  headers: Array<[name: string, m: Matcher]>;
  withoutHeaders: Array<[name: string, m: Matcher]>;
  queryParams: Array<[name: string, m: Matcher]>;
  port?: number;
}

export interface HeaderOps {
  /** Lower-cased names. */
  set: Array<[string, string]>;
  add: Array<[string, string]>;
  remove: string[];
}

export interface RetryPolicy {
  attempts: number;
  perTryTimeoutMs: number | undefined;
  /** Parsed retryOn conditions. */
  on5xx: boolean;
  onGatewayError: boolean;
  onReset: boolean;
  onConnectFailure: boolean;
  onRetriable4xx: boolean;
  onRefusedStream: boolean;
  /** Explicit status codes listed in retryOn (retriable-status-codes). */
  statusCodes: ReadonlySet<number>;
  /** gRPC status codes retried when a response ends with its headers (cancelled: 1, ...). */
  grpcCodes: ReadonlySet<number>;
}

export interface FaultPolicy {
  delay?: { ms: number; percentage: number };
  abort?: { status: number; percentage: number };
}

/** A weighted backend of a route: a cluster plus per-destination header ops. */
export interface WeightedCluster {
  cluster: Cluster;
  weight: number;
  requestHeaders: HeaderOps | undefined;
  responseHeaders: HeaderOps | undefined;
}

export interface HttpRoute {
  /** Route name for logs and config dump ("" when unnamed). */
  name: string;
  /** Any one match block suffices; an empty list matches everything. */
  matches: RouteMatch[];
  /** Destinations with cumulative weights for one binary search. */
  clusters: WeightedCluster[];
  cumulative: number[];
  totalWeight: number;
  /**
   * `uri` replaces what the matching block matched, as Istio's routes do: the
   * prefix of a uri prefix match, the whole path of an exact or regex match,
   * and the leading "/" when the block has no uri match (see `rewritePath`).
   */
  rewrite: { uri?: string; authority?: string } | undefined;
  timeoutMs: number | undefined;
  retry: RetryPolicy | undefined;
  fault: FaultPolicy | undefined;
  requestHeaders: HeaderOps | undefined;
  responseHeaders: HeaderOps | undefined;
  redirect: { uri?: string; authority?: string; code: number } | undefined;
  directResponse: { status: number; body: string } | undefined;
  /** Request hedging (remora.dev/hedge-delay); absent when off. */
  hedge?: { delayMs: number };
}

export interface TcpRoute {
  clusters: WeightedCluster[];
  cumulative: number[];
  totalWeight: number;
}

/** Where requests for a host (and port) go. */
export interface VirtualHost {
  /** The service this virtual host belongs to, as metrics name it. */
  serviceName: string;
  /** Fully qualified host, e.g. reviews.default.svc.cluster.local. */
  serviceHost: string;
  namespace: string;
  http: HttpRoute[];
  tcp: TcpRoute | undefined;
  /** The VirtualService this came from, or undefined for a default route. */
  virtualService: string | undefined;
}

export interface Endpoint {
  /** IP address or DNS name to connect to. */
  address: string;
  port: number;
  weight: number;
  labels: Readonly<Record<string, string>>;
  serviceAccount: string | undefined;
  /**
   * Whether auto mTLS speaks mTLS to it, as Istio decides: its
   * `security.istio.io/tlsMode` label ("istio") when it has one, else whether
   * it names a serviceAccount; and never when its own PeerAuthentication is
   * DISABLE on its port. A DestinationRule's tls mode overrides this.
   */
  mtls: boolean;
  /** Workload name for metrics (labels.app or the address). */
  workload: string;
  namespace: string;
  /** Its app, version and canonical service labels for metrics (from `labels`). */
  meta: PeerMeta;
}

/**
 * A cluster: one service port, optionally narrowed to a subset. Named as Istio
 * names them: `outbound|9080|v1|reviews.default.svc.cluster.local`.
 */
export interface Cluster {
  name: string;
  serviceHost: string;
  serviceName: string;
  namespace: string;
  /**
   * Service port. 0 only on passthrough clusters of hosts without a registry
   * entry whose route names no port: connect to the request's own port.
   */
  port: number;
  subset: string;
  protocol: PortProtocol;
  lb: SimpleLB;
  /**
   * Endpoints to balance over. Empty for a host with no registry entry
   * (`passthrough` true): then the request goes to serviceHost:port itself.
   */
  endpoints: readonly Endpoint[];
  passthrough: boolean;
  /**
   * DestinationRule tls.mode: ISTIO_MUTUAL (always mTLS), DISABLE (never), or
   * absent: mTLS to endpoints that have a serviceAccount (meshed), plaintext
   * to the others.
   */
  tlsMode?: "ISTIO_MUTUAL" | "DISABLE";
  /**
   * DestinationRule resilience settings, merged and defaulted; absent when the
   * rule sets none (then only the default retry budget applies).
   */
  policy?: ClusterPolicy;
}

/** Consistent-hash key of a cluster (DestinationRule loadBalancer.consistentHash). */
export type HashPolicy =
  | { kind: "header"; name: string }
  | { kind: "cookie"; name: string; path: string | undefined; ttlMs: number | undefined }
  | { kind: "sourceIp" };

/** Envoy-style circuit-breaker thresholds; Infinity when unset. */
export interface ClusterLimits {
  /** tcp.maxConnections: upstream connections in use at once (HTTP/1). */
  maxConnections: number;
  /** http.http1MaxPendingRequests: requests waiting for a connection. */
  maxPending: number;
  /** http.http2MaxRequests: active requests (both protocols). */
  maxRequests: number;
  /** http.maxRetries: retries in flight at once. */
  maxRetries: number;
}

export interface OutlierPolicy {
  /** 0 = off. */
  consecutive5xx: number;
  /** 0 = off. */
  consecutiveGateway: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
  minHealthPercent: number;
}

export interface ClusterPolicy {
  /** Undefined when no limit is set (no bookkeeping then). */
  limits: ClusterLimits | undefined;
  connectTimeoutMs: number | undefined;
  maxRequestsPerConnection: number | undefined;
  idleTimeoutMs: number | undefined;
  outlier: OutlierPolicy | undefined;
  hash: HashPolicy | undefined;
  /** Retries (and hedges) at most `percent` of active requests, or `minConcurrency`. */
  retryBudget: { percent: number; minConcurrency: number };
}

export interface RuntimeConfig {
  /** Content hash of the source documents; changes with every new config. */
  version: string;
  loadedAt: Date;
  /** Where it came from: a file path, "embedded default", ... */
  source: string;
  resources: readonly Resource[];
  outboundTrafficPolicy: "ALLOW_ANY" | "REGISTRY_ONLY";
  /** Tracing and access logging per side, from the Telemetry resource (compile_telemetry.ts). */
  telemetry: TelemetryPolicy;
  /** PeerAuthentication and AuthorizationPolicy for this workload (security/compile_security.ts). */
  security: SecurityTables;
  /**
   * Host lookups. Keys are lower-case "host:port" and "host" (any port), for
   * every name a host answers to: the FQDN and, for cluster-local services,
   * its short forms ("reviews", "reviews.default", "reviews.default.svc").
   * Wildcard hosts ("*.example.com") are in `wildcards`, longest suffix first.
   */
  hosts: ReadonlyMap<string, VirtualHost>;
  wildcards: ReadonlyArray<{ suffix: string; port: number | undefined; vhost: VirtualHost }>;
  /** ServiceEntry VIP addresses, "ip:port" and "ip" → virtual host. */
  addresses: ReadonlyMap<string, VirtualHost>;
  /**
   * STATIC endpoint addresses, "ip:port" at the endpoint's own port → the
   * virtual host of its service. A connection to an endpoint itself goes to
   * that endpoint; this only names its service.
   */
  endpointAddresses: ReadonlyMap<string, VirtualHost>;
  /** All clusters by name, for config dump and metrics. */
  clusters: ReadonlyMap<string, Cluster>;
}

/**
 * Typed shapes of the Istio resources remora accepts, after validation.
 *
 * Field names are Istio's (networking.istio.io/v1). Every optional field that
 * the user did not write is absent, never `undefined`. Durations are already
 * converted to milliseconds (`...Ms` fields) and enums are upper-cased. This
 * module holds types only: validation lives in `validate.ts`, the runtime
 * tables built from these in `runtime.ts` / `compile.ts`.
 */

export type Kind =
  | "ServiceEntry"
  | "VirtualService"
  | "DestinationRule"
  | "Sidecar"
  | "Telemetry"
  | "PeerAuthentication"
  | "AuthorizationPolicy";

export interface Meta {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  /** remora's own `remora.dev/*` annotations, parsed (see validate_remora.ts). */
  remora?: RemoraAnnotations;
  /** An AuthorizationPolicy's `istio.io/dry-run: "true"`: evaluated and logged, not enforced. */
  dryRun?: true;
}

/** remora extensions carried in annotations, so that specs stay Istio's. */
export interface RemoraAnnotations {
  /** `remora.dev/hedge-delay`: per HTTP route name ("" = every route of the VirtualService). */
  hedgeDelayMs?: Record<string, number>;
}

/** Where a document came from, for error messages and config dumps. */
export interface Origin {
  file: string;
  /** 0-based index of the document in its file. */
  index: number;
}

interface ResourceBase<K extends Kind, S> {
  apiVersion: string;
  kind: K;
  metadata: Meta;
  spec: S;
  origin: Origin;
}

// ---------------------------------------------------------------- ServiceEntry

export type PortProtocol =
  | "HTTP"
  | "HTTP2"
  | "GRPC"
  | "HTTPS"
  | "TLS"
  | "TCP"
  | "MONGO"
  | "UNKNOWN";

export interface ServicePort {
  number: number;
  protocol: PortProtocol;
  name: string;
  targetPort?: number;
}

export interface WorkloadEntry {
  address: string;
  ports: Record<string, number>;
  labels: Record<string, string>;
  weight?: number;
  serviceAccount?: string;
  network?: string;
  locality?: string;
}

export interface ServiceEntrySpec {
  hosts: string[];
  addresses: string[];
  ports: ServicePort[];
  location: "MESH_EXTERNAL" | "MESH_INTERNAL";
  resolution: "NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN";
  endpoints: WorkloadEntry[];
  exportTo?: string[];
}

export type ServiceEntry = ResourceBase<"ServiceEntry", ServiceEntrySpec>;

// -------------------------------------------------------------- VirtualService

export type StringMatch =
  | { exact: string }
  | { prefix: string }
  | { regex: string }
  /** `{}` in headers, withoutHeaders and queryParams: the name is present, whatever its value. */
  | { present: true };

export interface HTTPMatchRequest {
  name?: string;
  uri?: StringMatch;
  scheme?: StringMatch;
  method?: StringMatch;
  authority?: StringMatch;
  headers?: Record<string, StringMatch>;
  withoutHeaders?: Record<string, StringMatch>;
  queryParams?: Record<string, StringMatch>;
  port?: number;
  ignoreUriCase?: boolean;
  sourceLabels?: Record<string, string>;
  /** Where the match applies; a sidecar applies it when "mesh" is one (or none are named). */
  gateways?: string[];
}

export interface Destination {
  host: string;
  subset?: string;
  port?: { number: number };
}

export interface HTTPRouteDestination {
  destination: Destination;
  /** Absent when the route has one destination (Istio treats that as 100). */
  weight?: number;
  headers?: Headers_;
}

export interface HeaderOperations {
  set?: Record<string, string>;
  add?: Record<string, string>;
  remove?: string[];
}

export interface Headers_ {
  request?: HeaderOperations;
  response?: HeaderOperations;
}

export interface HTTPRewrite {
  uri?: string;
  authority?: string;
}

export interface HTTPRetry {
  attempts: number;
  perTryTimeoutMs?: number;
  /** Lower-cased retryOn conditions, or HTTP status codes as strings. */
  retryOn?: string[];
  retryRemoteLocalities?: boolean;
}

export interface HTTPFaultInjection {
  delay?: { fixedDelayMs: number; percentage: number };
  abort?: { httpStatus: number; percentage: number };
}

export interface HTTPRedirect {
  uri?: string;
  authority?: string;
  redirectCode: number;
}

export interface HTTPDirectResponse {
  status: number;
  body?: string;
}

export interface HTTPRoute {
  name?: string;
  match: HTTPMatchRequest[];
  route: HTTPRouteDestination[];
  redirect?: HTTPRedirect;
  directResponse?: HTTPDirectResponse;
  rewrite?: HTTPRewrite;
  timeoutMs?: number;
  retries?: HTTPRetry;
  fault?: HTTPFaultInjection;
  headers?: Headers_;
}

export interface L4MatchAttributes {
  destinationSubnets?: string[];
  port?: number;
  sourceLabels?: Record<string, string>;
  gateways?: string[];
}

export interface RouteDestination {
  destination: Destination;
  weight?: number;
}

export interface TCPRoute {
  match: L4MatchAttributes[];
  route: RouteDestination[];
}

export interface VirtualServiceSpec {
  hosts: string[];
  gateways?: string[];
  http: HTTPRoute[];
  tcp: TCPRoute[];
  exportTo?: string[];
}

export type VirtualService = ResourceBase<"VirtualService", VirtualServiceSpec>;

// ------------------------------------------------------------- DestinationRule

export type SimpleLB = "ROUND_ROBIN" | "LEAST_REQUEST" | "RANDOM" | "PASSTHROUGH" | "UNSPECIFIED";

/** consistentHash: exactly one hash key. Durations in ms. */
export type ConsistentHash =
  | { httpHeaderName: string }
  | { httpCookie: { name: string; path?: string; ttlMs?: number } }
  | { useSourceIp: true };

export interface ConnectionPoolSettings {
  tcp?: { maxConnections?: number; connectTimeoutMs?: number };
  http?: {
    http1MaxPendingRequests?: number;
    http2MaxRequests?: number;
    maxRequestsPerConnection?: number;
    maxRetries?: number;
    idleTimeoutMs?: number;
  };
}

export interface OutlierDetection {
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
}

export interface TrafficPolicy {
  /** One of simple or consistentHash (a oneof in Istio). */
  loadBalancer?: { simple?: SimpleLB; consistentHash?: ConsistentHash };
  connectionPool?: ConnectionPoolSettings;
  outlierDetection?: OutlierDetection;
  /** Istio's retryBudget (top level and subsets only): percent of active requests. */
  retryBudget?: { percent?: number; minRetryConcurrency?: number };
  tls?: { mode: "DISABLE" | "ISTIO_MUTUAL" };
  portLevelSettings?: Array<
    { port: { number: number } } & Omit<TrafficPolicy, "portLevelSettings">
  >;
}

export interface Subset {
  name: string;
  labels: Record<string, string>;
  trafficPolicy?: TrafficPolicy;
}

export interface DestinationRuleSpec {
  host: string;
  trafficPolicy?: TrafficPolicy;
  subsets: Subset[];
  exportTo?: string[];
}

export type DestinationRule = ResourceBase<"DestinationRule", DestinationRuleSpec>;

// --------------------------------------------------------------------- Sidecar

export interface SidecarSpec {
  outboundTrafficPolicy?: { mode: "ALLOW_ANY" | "REGISTRY_ONLY" };
}

export type Sidecar = ResourceBase<"Sidecar", SidecarSpec>;

// ------------------------------------------------------------------- Telemetry

/** Which side of traffic a Telemetry rule applies to (Istio's WorkloadMode). */
export type WorkloadMode = "CLIENT_AND_SERVER" | "CLIENT" | "SERVER";

export interface TelemetryTracing {
  mode: WorkloadMode;
  /** Provider names (Istio allows one per rule); absent = the default providers. */
  providers?: string[];
  randomSamplingPercentage?: number;
  disableSpanReporting?: boolean;
}

export interface TelemetryAccessLogging {
  mode: WorkloadMode;
  providers?: string[];
  disabled?: boolean;
}

/** telemetry.istio.io Telemetry (see validate_telemetry.ts for what is supported). */
export interface TelemetrySpec {
  tracing: TelemetryTracing[];
  accessLogging: TelemetryAccessLogging[];
}

export type Telemetry = ResourceBase<"Telemetry", TelemetrySpec>;

// ------------------------------------------- PeerAuthentication (security.istio.io)

export type MtlsMode = "UNSET" | "DISABLE" | "PERMISSIVE" | "STRICT";

export interface WorkloadSelector {
  matchLabels: Record<string, string>;
}

export interface PeerAuthenticationSpec {
  selector?: WorkloadSelector;
  mtls?: { mode: MtlsMode };
  /** Keyed by port number in decimal ("8080"), as Istio writes it. */
  portLevelMtls?: Record<string, { mode: MtlsMode }>;
}

export type PeerAuthentication = ResourceBase<"PeerAuthentication", PeerAuthenticationSpec>;

// ------------------------------------------ AuthorizationPolicy (security.istio.io)

/** Every list is absent or non-empty. */
export interface AuthzSource {
  principals?: string[];
  notPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
}

/** Every list is absent or non-empty. Ports are decimal strings, as in Istio. */
export interface AuthzOperation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface AuthzCondition {
  key: string;
  values?: string[];
  notValues?: string[];
}

export interface AuthzRule {
  from?: Array<{ source: AuthzSource }>;
  to?: Array<{ operation: AuthzOperation }>;
  when?: AuthzCondition[];
}

export interface AuthorizationPolicySpec {
  selector?: WorkloadSelector;
  /** ALLOW when left out, as in Istio. */
  action: "ALLOW" | "DENY" | "AUDIT";
  /** Empty when left out: an ALLOW policy without rules denies everything. */
  rules: AuthzRule[];
}

export type AuthorizationPolicy = ResourceBase<"AuthorizationPolicy", AuthorizationPolicySpec>;

export type Resource =
  | ServiceEntry
  | VirtualService
  | DestinationRule
  | Sidecar
  | Telemetry
  | PeerAuthentication
  | AuthorizationPolicy;

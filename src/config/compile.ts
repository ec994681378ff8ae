/**
 * Compiles validated resources into the immutable runtime tables of
 * `runtime.ts`: virtual hosts keyed by every name and address a service
 * answers to, HTTP routes with precompiled matchers (regexes compiled once,
 * here) and cumulative weight tables, and clusters named as Istio names them
 * (`outbound|<port>|<subset>|<fqdn>`) holding their selected endpoints and
 * load-balancing policy. Pure and synchronous: no I/O, no validation (its
 * input comes from `validateDocuments`, which already refused anything it
 * could not compile).
 *
 * Semantics worth knowing:
 * - Each ServiceEntry host × port is a virtual host that routes everything to
 *   the service's cluster, unless a VirtualService names the host: then its
 *   http and tcp routes are used. A VirtualService host without a
 *   ServiceEntry also gets a virtual host; destinations without a registry
 *   entry are passthrough clusters (no endpoints, connect to the host itself).
 *   Cluster port 0 means "the request's port".
 * - `hosts` keys: "host:port" per service port and "host" alone, which maps to
 *   the first declared port (used when the port is unknown). Cluster-local
 *   FQDNs also answer to "x.ns" and "x.ns.svc", and to the bare "x" when "ns"
 *   is the workload's own namespace; a full name always wins over a short form.
 * - `addresses`: ServiceEntry VIPs as "ip:port" ("[v6]:port") and "ip";
 *   `endpointAddresses`: STATIC endpoints as "ip:port" at the endpoint's own
 *   port (traffic to an endpoint stays with it; this only names its service).
 *   The first declaration wins.
 * - `sourceLabels` matches are decided here against `meta.workloadLabels`
 *   (the workload this proxy serves): match blocks that cannot apply are
 *   dropped, and so is a route left with none. For a virtual host with a known
 *   port, match blocks on another `port` are dropped too.
 * - The TCP route of a virtual host is the first VirtualService tcp route whose
 *   matches apply (no matches, or a match with this port / no port).
 * - `rewrite.uri` is applied by the proxy to what the matching block matched
 *   (outbound_router.ts `rewritePath`).
 * - Load balancer, as Istio merges policies: the rule's loadBalancer, replaced
 *   by the rule's portLevelSettings entry for the port (which does not
 *   inherit), then the subset's loadBalancer, then the subset's
 *   portLevelSettings entry for the port. UNSPECIFIED or none is ROUND_ROBIN.
 * - Retries: none unless the route has `retries` with attempts > 0; retryOn
 *   left out is Istio's default (connect-failure, refused-stream, 503).
 */

import { createHash } from "node:crypto";
import type {
  ConsistentHash,
  DestinationRule,
  HeaderOperations,
  HTTPMatchRequest,
  HTTPRetry,
  HTTPRoute,
  L4MatchAttributes,
  Resource,
  ServiceEntry,
  ServicePort,
  SimpleLB,
  StringMatch,
  TrafficPolicy,
  VirtualService,
} from "./model.ts";
import type {
  Cluster,
  Endpoint,
  HeaderOps,
  HttpRoute,
  Matcher,
  RetryPolicy,
  RouteMatch,
  RuntimeConfig,
  TcpRoute,
  VirtualHost,
  WeightedCluster,
} from "./runtime.ts";
import { clusterPolicy, hedgePolicy } from "./compile_policy.ts";
import { compileTelemetry } from "./compile_telemetry.ts";
import { boundToMesh, compileRegex, isIPv6, LINEAR_REGEX } from "./validate_fields.ts";
import { log } from "../log.ts";
import { peerMeta } from "../telemetry/metrics.ts";
import { compileSecurity, DEFAULT_ROOT_NAMESPACE, inScope } from "../security/compile_security.ts";
import { compilePeerAuth, peerAuthMode } from "../security/peer_auth.ts";

/** The endpoint label by which Istio marks a workload's mTLS ("istio") or its absence. */
const TLS_MODE_LABEL = "security.istio.io/tlsMode";

export interface CompileMeta {
  /** Where the config came from: file paths, "embedded default", ... */
  source: string;
  /** Labels of the workload this proxy serves, for `sourceLabels` matches (default none). */
  workloadLabels?: Readonly<Record<string, string>>;
  /** Namespace of that workload; the bare short name "x" prefers it (default "default"). */
  namespace?: string;
  /** Load time, for tests (default now). */
  loadedAt?: Date;
  /** Istio's root namespace: its security policies are mesh-wide (default "istio-system"). */
  rootNamespace?: string;
}

const _CLUSTER_LOCAL = /^([^.]+)\.([^.]+)\.svc\.cluster\.local$/;

/** Builds the runtime tables for a validated resource set. */
export function compile(resources: readonly Resource[], meta: CompileMeta): RuntimeConfig {
  return new _Compiler(resources, meta).run();
}

/** Short sha-256 (12 hex digits) of the resources' canonical JSON, without their origins. */
export function configVersion(resources: readonly Resource[]): string {
  const canon = _canonical(resources.map(({ origin: _origin, ...rest }) => rest));
  return createHash("sha256").update(canon).digest("hex").slice(0, 12);
}

interface _Svc {
  se: ServiceEntry;
  port: ServicePort;
}

class _Compiler {
  #resources: readonly Resource[];
  /** The PeerAuthentications, found on first use (see #autoMtls). */
  #peerAuths: readonly Resource[] | undefined;
  #meta: CompileMeta;
  #labels: Readonly<Record<string, string>>;
  /** ServiceEntry ports by host, in declaration order. */
  #svc = new Map<string, _Svc[]>();
  #dr = new Map<string, DestinationRule>();
  #vs = new Map<string, VirtualService>();
  #clusters = new Map<string, Cluster>();

  constructor(resources: readonly Resource[], meta: CompileMeta) {
    this.#resources = resources;
    this.#meta = meta;
    this.#labels = meta.workloadLabels ?? {};
    for (const r of resources) {
      if (r.kind === "ServiceEntry") {
        for (const h of r.spec.hosts) {
          const list = this.#svc.get(h) ?? [];
          for (const port of r.spec.ports) {
            if (!list.some((s) => s.port.number === port.number)) list.push({ se: r, port });
          }
          this.#svc.set(h, list);
        }
      } else if (r.kind === "DestinationRule") {
        if (!this.#dr.has(r.spec.host)) this.#dr.set(r.spec.host, r);
      } else if (r.kind === "VirtualService") {
        // Bound to gateways only (ingress routes): not a sidecar's business.
        if (!boundToMesh(r.spec.gateways)) continue;
        for (const h of r.spec.hosts) if (!this.#vs.has(h)) this.#vs.set(h, r);
      }
    }
  }

  run(): RuntimeConfig {
    const keyed: Array<{ key: string; prio: number; vhost: VirtualHost }> = [];
    const wildcards: Array<{ suffix: string; port: number | undefined; vhost: VirtualHost }> = [];
    const firstVhost = new Map<string, VirtualHost>();
    const vhostAt = new Map<string, VirtualHost>();
    const add = (host: string, port: number | undefined, vhost: VirtualHost) => {
      if (port !== undefined) vhostAt.set(`${host}:${port}`, vhost);
      if (host.startsWith("*")) {
        wildcards.push({ suffix: host.slice(1), port, vhost });
        return;
      }
      for (const [name, prio] of this.#names(host)) {
        keyed.push({ key: port === undefined ? name : `${name}:${port}`, prio, vhost });
      }
    };

    // Registry hosts: one virtual host per port; VirtualService routes when one names the host.
    for (const [host, svcs] of this.#svc) {
      const vs = this.#vs.get(host);
      for (const { se, port } of svcs) {
        const vhost = vs === undefined
          ? this.#defaultVhost(host, se, port.number)
          : this.#vsVhost(vs, host, port.number, se);
        add(host, port.number, vhost);
        if (!firstVhost.has(host)) {
          firstVhost.set(host, vhost);
          add(host, undefined, vhost);
        }
      }
      // Subset clusters of every declared port, for config dumps and metrics.
      for (const s of this.#dr.get(host)?.spec.subsets ?? []) {
        for (const { port } of svcs) this.#cluster(host, port.number, s.name);
      }
    }
    // VirtualService hosts without a registry entry: any port, plus ports their matches name.
    for (const [host, vs] of this.#vs) {
      if (this.#svc.has(host)) continue;
      add(host, undefined, this.#vsVhost(vs, host, 0, undefined));
      const ports = new Set<number>();
      for (const r of vs.spec.http) {
        for (const m of r.match) if (m.port !== undefined) ports.add(m.port);
      }
      for (const r of vs.spec.tcp) {
        for (const m of r.match) if (m.port !== undefined) ports.add(m.port);
      }
      for (const p of [...ports].sort((a, b) => a - b)) {
        add(host, p, this.#vsVhost(vs, host, p, undefined));
      }
    }

    const hosts = new Map<string, VirtualHost>();
    keyed.sort((a, b) => a.prio - b.prio); // stable: declaration order within a priority
    for (const { key, vhost } of keyed) if (!hosts.has(key)) hosts.set(key, vhost);
    wildcards.sort((a, b) =>
      b.suffix.length - a.suffix.length ||
      (a.port === undefined ? 1 : 0) - (b.port === undefined ? 1 : 0)
    );

    const addresses = new Map<string, VirtualHost>();
    const endpointAddresses = new Map<string, VirtualHost>();
    const putIn =
      (map: Map<string, VirtualHost>) =>
      (ip: string, port: number | undefined, vhost: VirtualHost | undefined) => {
        if (vhost === undefined) return;
        const key = port === undefined ? ip : isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;
        if (!map.has(key)) map.set(key, vhost);
      };
    const put = putIn(addresses);
    const putEndpoint = putIn(endpointAddresses);
    const ses = this.#resources.filter((r): r is ServiceEntry => r.kind === "ServiceEntry");
    for (const se of ses) {
      const host = se.spec.hosts[0]!;
      for (const ip of se.spec.addresses) {
        for (const p of se.spec.ports) put(ip, p.number, vhostAt.get(`${host}:${p.number}`));
        put(ip, undefined, vhostAt.get(`${host}:${se.spec.ports[0]!.number}`));
      }
    }
    for (const se of ses) {
      if (se.spec.resolution !== "STATIC") continue;
      const host = se.spec.hosts[0]!;
      for (const e of se.spec.endpoints) {
        for (const p of se.spec.ports) {
          putEndpoint(e.address, _endpointPort(e.ports, p), vhostAt.get(`${host}:${p.number}`));
        }
      }
    }

    // A Sidecar or Telemetry applies to the workload from its own namespace or the root one.
    const namespace = this.#meta.namespace ?? "default";
    const rootNamespace = this.#meta.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    const scope = { namespace, rootNamespace };
    const sidecar = this.#resources.find((r) =>
      r.kind === "Sidecar" && inScope(r.metadata.namespace, scope)
    );
    return {
      version: configVersion(this.#resources),
      loadedAt: this.#meta.loadedAt ?? new Date(),
      source: this.#meta.source,
      resources: Object.freeze([...this.#resources]),
      outboundTrafficPolicy: sidecar?.kind === "Sidecar"
        ? sidecar.spec.outboundTrafficPolicy?.mode ?? "ALLOW_ANY"
        : "ALLOW_ANY",
      telemetry: compileTelemetry(this.#resources, scope),
      security: compileSecurity(
        this.#resources,
        { namespace, labels: this.#labels },
        { rootNamespace },
      ),
      hosts,
      wildcards,
      addresses,
      endpointAddresses,
      clusters: this.#clusters,
    };
  }

  /** Every name a host answers to, with priority (lower wins on collisions). */
  #names(host: string): Array<[string, number]> {
    const m = _CLUSTER_LOCAL.exec(host);
    if (m === null) return [[host, 0]];
    const [, name, ns] = m;
    // The bare "x" is only the workload's own namespace's service, as in Kubernetes DNS and Istio.
    const own = ns === (this.#meta.namespace ?? "default");
    const names: Array<[string, number]> = [[host, 0], [`${name}.${ns}.svc`, 1], [
      `${name}.${ns}`,
      1,
    ]];
    if (own) names.push([name!, 2]);
    return names;
  }

  #defaultVhost(host: string, se: ServiceEntry, port: number): VirtualHost {
    const wc = _weighted(this.#cluster(host, port, ""), 100, undefined);
    return {
      serviceName: _serviceName(host),
      serviceHost: host,
      namespace: se.metadata.namespace,
      http: [{
        name: "default",
        matches: [],
        clusters: [wc],
        cumulative: [100],
        totalWeight: 100,
        rewrite: undefined,
        timeoutMs: undefined,
        retry: _DEFAULT_RETRY,
        fault: undefined,
        requestHeaders: undefined,
        responseHeaders: undefined,
        redirect: undefined,
        directResponse: undefined,
      }],
      tcp: { clusters: [wc], cumulative: [100], totalWeight: 100 },
      virtualService: undefined,
    };
  }

  /** A virtual host routed by `vs`, at `port` (0: any port). */
  #vsVhost(
    vs: VirtualService,
    host: string,
    port: number,
    se: ServiceEntry | undefined,
  ): VirtualHost {
    const http: HttpRoute[] = [];
    for (const r of vs.spec.http) {
      const route = this.#httpRoute(r, port);
      if (route === undefined) continue;
      const hedge = hedgePolicy(vs, r);
      if (hedge !== undefined) route.hedge = hedge;
      http.push(route);
    }
    let tcp: TcpRoute | undefined;
    for (const r of vs.spec.tcp) {
      if (r.match.length > 0 && !r.match.some((m) => this.#l4Applies(m, port))) continue;
      const clusters = r.route.map((d) =>
        _weighted(
          this.#cluster(
            d.destination.host,
            this.#destPort(d.destination, port),
            d.destination.subset ?? "",
          ),
          d.weight ?? (r.route.length === 1 ? 100 : 0),
          undefined,
        )
      );
      tcp = { clusters, ..._cumulative(clusters) };
      break;
    }
    const m = _CLUSTER_LOCAL.exec(host);
    return {
      serviceName: _serviceName(host),
      serviceHost: host,
      namespace: se?.metadata.namespace ?? m?.[2] ?? vs.metadata.namespace,
      http,
      tcp,
      virtualService: `${vs.metadata.namespace}/${vs.metadata.name}`,
    };
  }

  #sourceOk(labels: Record<string, string> | undefined): boolean {
    if (labels === undefined) return true;
    return Object.entries(labels).every(([k, v]) => this.#labels[k] === v);
  }

  #l4Applies(m: L4MatchAttributes, port: number): boolean {
    if (!this.#sourceOk(m.sourceLabels) || !boundToMesh(m.gateways)) return false;
    return m.port === undefined || m.port === port;
  }

  #httpRoute(r: HTTPRoute, port: number): HttpRoute | undefined {
    const applicable = r.match.filter((m) =>
      this.#sourceOk(m.sourceLabels) && boundToMesh(m.gateways) &&
      (port === 0 || m.port === undefined || m.port === port)
    );
    if (r.match.length > 0 && applicable.length === 0) return undefined;
    const clusters = r.route.map((d) =>
      _weighted(
        this.#cluster(
          d.destination.host,
          this.#destPort(d.destination, port),
          d.destination.subset ?? "",
        ),
        d.weight ?? (r.route.length === 1 ? 100 : 0),
        d.headers,
      )
    );
    let rewrite: HttpRoute["rewrite"];
    if (r.rewrite !== undefined) {
      rewrite = {};
      if (r.rewrite.uri !== undefined) rewrite.uri = r.rewrite.uri;
      if (r.rewrite.authority !== undefined) rewrite.authority = r.rewrite.authority;
    }
    return {
      name: r.name ?? "",
      matches: applicable.map(_routeMatch),
      clusters,
      ..._cumulative(clusters),
      rewrite,
      timeoutMs: r.timeoutMs,
      retry: _retry(r.retries),
      fault: r.fault === undefined ? undefined : {
        ...(r.fault.delay === undefined
          ? {}
          : { delay: { ms: r.fault.delay.fixedDelayMs, percentage: r.fault.delay.percentage } }),
        ...(r.fault.abort === undefined
          ? {}
          : { abort: { status: r.fault.abort.httpStatus, percentage: r.fault.abort.percentage } }),
      },
      requestHeaders: _headerOps(r.headers?.request),
      responseHeaders: _headerOps(r.headers?.response),
      redirect: r.redirect === undefined ? undefined : {
        ...(r.redirect.uri === undefined ? {} : { uri: r.redirect.uri }),
        ...(r.redirect.authority === undefined ? {} : { authority: r.redirect.authority }),
        code: r.redirect.redirectCode,
      },
      directResponse: r.directResponse === undefined
        ? undefined
        : { status: r.directResponse.status, body: r.directResponse.body ?? "" },
    };
  }

  /** Destination port: explicit; else the service's only port, or this port if it has it; else the request's. */
  #destPort(d: { host: string; port?: { number: number } }, port: number): number {
    if (d.port !== undefined) return d.port.number;
    const svcs = this.#svc.get(d.host);
    if (svcs === undefined) return port;
    if (svcs.length > 1 && svcs.some((s) => s.port.number === port)) return port;
    return svcs[0]!.port.number;
  }

  /**
   * Whether Istio's auto mTLS speaks mTLS to an endpoint (see Endpoint.mtls):
   * the endpoint's workload is found by its namespace and labels, as Istio's
   * endpoint builder finds the PeerAuthentication that applies to it.
   */
  #autoMtls(
    labels: Readonly<Record<string, string>>,
    serviceAccount: string | undefined,
    namespace: string,
    port: number,
  ): boolean {
    const label = labels[TLS_MODE_LABEL];
    if (label !== undefined ? label !== "istio" : serviceAccount === undefined) return false;
    this.#peerAuths ??= this.#resources.filter((r) => r.kind === "PeerAuthentication");
    if (this.#peerAuths.length === 0) return true;
    const rootNamespace = this.#meta.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    const table = compilePeerAuth(this.#peerAuths, { namespace, labels }, rootNamespace);
    return peerAuthMode({ peer: table }, port) !== "DISABLE";
  }

  #cluster(host: string, port: number, subset: string): Cluster {
    const name = `outbound|${port}|${subset}|${host}`;
    const known = this.#clusters.get(name);
    if (known !== undefined) return known;
    const svc = this.#svc.get(host)?.find((s) => s.port.number === port);
    const dr = this.#dr.get(host);
    const m = _CLUSTER_LOCAL.exec(host);
    let endpoints: Endpoint[] = [];
    let passthrough = true;
    if (svc !== undefined && svc.se.spec.resolution !== "NONE") {
      passthrough = false;
      const want = subset === ""
        ? {}
        : dr?.spec.subsets.find((s) => s.name === subset)?.labels ?? {};
      const ns = svc.se.metadata.namespace;
      const declared = svc.se.spec.endpoints;
      if (declared.length === 0) {
        // DNS resolution without endpoints: the host name itself is the endpoint.
        if (Object.keys(want).length === 0) {
          endpoints = [{
            address: host,
            port: svc.port.targetPort ?? svc.port.number,
            weight: 1,
            labels: {},
            serviceAccount: undefined,
            mtls: false,
            workload: host,
            namespace: ns,
            meta: peerMeta({}, host),
          }];
        }
      } else {
        endpoints = declared
          .filter((e) => Object.entries(want).every(([k, v]) => e.labels[k] === v))
          .map((e) => ({
            address: e.address,
            port: _endpointPort(e.ports, svc.port),
            weight: e.weight !== undefined && e.weight > 0 ? e.weight : 1,
            labels: Object.freeze({ ...e.labels }),
            serviceAccount: e.serviceAccount,
            mtls: this.#autoMtls(e.labels, e.serviceAccount, ns, _endpointPort(e.ports, svc.port)),
            workload: e.labels.app ?? e.address,
            namespace: ns,
            meta: peerMeta(e.labels, e.labels.app ?? e.address),
          }));
      }
    }
    const cluster: Cluster = {
      name,
      serviceHost: host,
      serviceName: _serviceName(host),
      namespace: svc?.se.metadata.namespace ?? m?.[2] ?? dr?.metadata.namespace ?? "default",
      port,
      subset,
      protocol: svc?.port.protocol ?? "UNKNOWN",
      lb: _lb(dr, subset, port)?.simple ?? "ROUND_ROBIN",
      endpoints: Object.freeze(endpoints),
      passthrough,
    };
    const tlsMode = _tlsMode(dr, subset, port);
    if (tlsMode !== undefined) cluster.tlsMode = tlsMode;
    const policy = clusterPolicy(dr, subset, port, _lb(dr, subset, port)?.consistentHash);
    if (policy !== undefined) cluster.policy = policy;
    const same = _sameAsBefore(cluster);
    this.#clusters.set(name, same);
    return same;
  }
}

/**
 * The last compiled cluster of each name. Load balancer, outlier detector,
 * circuit breaker and retry budget state is kept per Cluster object, so a
 * config that defines a cluster exactly as before gets the same object back:
 * its ejections, in-flight counts and limits carry across the reload, as
 * Envoy keeps an unchanged cluster across updates. A changed cluster starts
 * afresh.
 */
const _previous = new Map<string, { key: string; cluster: Cluster }>();

function _sameAsBefore(cluster: Cluster): Cluster {
  const key = _canonical(cluster);
  const before = _previous.get(cluster.name);
  if (before !== undefined && before.key === key) return before.cluster;
  // Names of clusters long gone would pile up across many configs: start over past a bound.
  if (_previous.size >= 10_000) _previous.clear();
  _previous.set(cluster.name, { key, cluster });
  return cluster;
}

function _endpointPort(ports: Record<string, number>, sp: ServicePort): number {
  return ports[sp.name] ?? sp.targetPort ?? sp.number;
}

function _serviceName(host: string): string {
  return _CLUSTER_LOCAL.exec(host)?.[1] ?? host;
}

/** Istio's policy merge, reduced to the load balancer (see the module doc). */
function _lb(
  dr: DestinationRule | undefined,
  subset: string,
  port: number,
): { simple?: SimpleLB; consistentHash?: ConsistentHash } | undefined {
  const portLevel = (tp: TrafficPolicy | undefined) =>
    tp?.portLevelSettings?.find((p) => p.port.number === port);
  const top = dr?.spec.trafficPolicy;
  let lb = top?.loadBalancer;
  const topPort = portLevel(top);
  if (topPort !== undefined) lb = topPort.loadBalancer;
  const sub = subset === ""
    ? undefined
    : dr?.spec.subsets.find((s) => s.name === subset)?.trafficPolicy;
  if (sub?.loadBalancer !== undefined) lb = sub.loadBalancer;
  const subPort = portLevel(sub);
  if (subPort !== undefined) lb = subPort.loadBalancer;
  if (lb?.simple === "UNSPECIFIED") return { ...lb, simple: "ROUND_ROBIN" };
  return lb;
}

/**
 * Istio's policy merge for `tls`, as for loadBalancer: the rule's, replaced
 * by its port-level entry for the port (which does not inherit: no tls there
 * is none), then the subset's when set, replaced by the subset's port-level
 * entry. None (undefined) is auto mTLS.
 */
function _tlsMode(
  dr: DestinationRule | undefined,
  subset: string,
  port: number,
): "ISTIO_MUTUAL" | "DISABLE" | undefined {
  const portLevel = (tp: TrafficPolicy | undefined) =>
    tp?.portLevelSettings?.find((p) => p.port.number === port);
  const top = dr?.spec.trafficPolicy;
  let tls = top?.tls;
  const topPort = portLevel(top);
  if (topPort !== undefined) tls = topPort.tls;
  const sub = subset === ""
    ? undefined
    : dr?.spec.subsets.find((s) => s.name === subset)?.trafficPolicy;
  if (sub?.tls !== undefined) tls = sub.tls;
  const subPort = portLevel(sub);
  if (subPort !== undefined) tls = subPort.tls;
  return tls?.mode;
}

function _weighted(
  cluster: Cluster,
  weight: number,
  headers: HTTPRoute["headers"],
): WeightedCluster {
  return {
    cluster,
    weight,
    requestHeaders: _headerOps(headers?.request),
    responseHeaders: _headerOps(headers?.response),
  };
}

function _cumulative(clusters: WeightedCluster[]): { cumulative: number[]; totalWeight: number } {
  const cumulative: number[] = [];
  let sum = 0;
  for (const c of clusters) {
    sum += c.weight;
    cumulative.push(sum);
  }
  return { cumulative, totalWeight: sum };
}

/** Compiles a StringMatch; `lower` lower-cases exact/prefix values (ignoreUriCase). */
export function compileMatcher(m: StringMatch, lower = false): Matcher {
  if ("present" in m) return { kind: "present" };
  if ("exact" in m) return { kind: "exact", value: lower ? m.exact.toLowerCase() : m.exact };
  if ("prefix" in m) return { kind: "prefix", value: lower ? m.prefix.toLowerCase() : m.prefix };
  const re = compileRegex(m.regex);
  if (typeof re === "string") throw new Error(`Cannot compile regex "${m.regex}": ${re}`);
  if (!LINEAR_REGEX && !warnedBacktracking) {
    warnedBacktracking = true;
    log.warn(
      "regex matches run on the backtracking engine: a pathological pattern can stall the proxy; start with --v8-flags=--enable-experimental-regexp-engine (deno task start does)",
    );
  }
  return { kind: "regex", re, source: m.regex };
}

let warnedBacktracking = false;

function _routeMatch(m: HTTPMatchRequest): RouteMatch {
  const pairs = (o: Record<string, StringMatch> | undefined, lowerNames: boolean) =>
    Object.entries(o ?? {}).map((
      [k, v],
    ): [string, Matcher] => [lowerNames ? k.toLowerCase() : k, compileMatcher(v)]);
  const out: RouteMatch = {
    ignoreUriCase: m.ignoreUriCase ?? false,
    headers: pairs(m.headers, true),
    withoutHeaders: pairs(m.withoutHeaders, true),
    queryParams: pairs(m.queryParams, false),
  };
  if (m.uri !== undefined) out.uri = compileMatcher(m.uri, m.ignoreUriCase ?? false);
  if (m.method !== undefined) out.method = compileMatcher(m.method);
  if (m.authority !== undefined) out.authority = compileMatcher(m.authority);
  if (m.scheme !== undefined) out.scheme = compileMatcher(m.scheme);
  if (m.port !== undefined) out.port = m.port;
  return out;
}

function _headerOps(h: HeaderOperations | undefined): HeaderOps | undefined {
  if (h === undefined) return undefined;
  const lower = (o: Record<string, string> | undefined): Array<[string, string]> =>
    Object.entries(o ?? {}).map(([k, v]) => [k.toLowerCase(), v]);
  return {
    set: lower(h.set),
    add: lower(h.add),
    remove: (h.remove ?? []).map((s) => s.toLowerCase()),
  };
}

/** Istio's default retryOn (its DefaultPolicy), also when a route sets retries without it. */
const _DEFAULT_RETRY_ON = [
  "connect-failure",
  "refused-stream",
  "unavailable",
  "cancelled",
  "retriable-status-codes",
  "503",
];

/**
 * A route's retry policy. Without `retries` it is Istio's default: 2 retries
 * on connect failures, refused streams, 503 and gRPC UNAVAILABLE/CANCELLED.
 * `attempts: 0` turns retries off.
 */
function _retry(r: HTTPRetry | undefined): RetryPolicy | undefined {
  if (r === undefined) return _DEFAULT_RETRY;
  if (r.attempts === 0) return undefined;
  const on = new Set(r.retryOn ?? _DEFAULT_RETRY_ON);
  const codes = new Set<number>();
  for (const c of on) if (/^\d+$/.test(c)) codes.add(Number(c));
  return {
    attempts: r.attempts,
    perTryTimeoutMs: r.perTryTimeoutMs,
    on5xx: on.has("5xx"),
    onGatewayError: on.has("gateway-error"),
    onReset: on.has("reset"),
    onConnectFailure: on.has("connect-failure"),
    onRetriable4xx: on.has("retriable-4xx"),
    onRefusedStream: on.has("refused-stream"),
    statusCodes: codes,
    grpcCodes: new Set([...on].flatMap((c) => _GRPC_RETRY_ON[c] ?? [])),
  };
}

/** Istio's gRPC retryOn conditions and the grpc-status each stands for. */
const _GRPC_RETRY_ON: Record<string, number[]> = {
  "cancelled": [1],
  "deadline-exceeded": [4],
  "resource-exhausted": [8],
  "internal": [13],
  "unavailable": [14],
};

const _DEFAULT_RETRY: RetryPolicy = Object.freeze(_retry({ attempts: 2 })!);

/** JSON with object keys sorted at every level, so equal content hashes equal. */
function _canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(_canonical).join(",")}]`;
  if (typeof v === "object" && v !== null) {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${_canonical(x)}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/**
 * Logical routing: from a request's authority and attributes to an HTTP route
 * of the running config, and from a route to one of its weighted clusters.
 *
 * Everything here reads the immutable tables of `config/runtime.ts`: a host
 * lookup is a Map get, matchers were compiled with the config, and the
 * weighted split is a binary search over the route's cumulative table. It
 * does not pick endpoints (see `balance.ts`).
 */

import type { PortProtocol } from "../config/model.ts";
import type {
  HttpRoute,
  Matcher,
  RouteMatch,
  RuntimeConfig,
  VirtualHost,
  WeightedCluster,
} from "../config/runtime.ts";

/** The request attributes routes match on. */
export interface RequestView {
  method: string;
  /** Path with query, as it will be forwarded. */
  path: string;
  /** Host without port, lower-case. */
  host: string;
  /** The authority as the client wrote it (Host header or absolute-form target). */
  authority: string;
  port: number;
  scheme: string;
  /** Header value by lower-case name, or undefined. */
  header(name: string): string | undefined;
  /** The address the request was sent to: the original destination when redirected, else the proxy's own. */
  destinationIp?: string | undefined;
  /** The connection's destination before an iptables REDIRECT, if it was redirected. */
  originalDst: { host: string; port: number } | undefined;
  /** The client's address. */
  sourceIp: string;
  /** The mTLS peer's SPIFFE ID (spiffe://...), when the request came over mesh mTLS. */
  principal: string | undefined;
}

/** Splits "host:port" or "[v6]:port" into a lower-case host and a port. */
export function splitAuthority(
  authority: string,
  defaultPort: number,
): { host: string; port: number } | undefined {
  let host = authority;
  let port = defaultPort;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close === -1) return undefined;
    host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    if (rest.startsWith(":")) port = Number(rest.slice(1));
    else if (rest !== "") return undefined;
  } else {
    const colon = authority.lastIndexOf(":");
    if (colon !== -1) {
      if (authority.indexOf(":") !== colon) return undefined;
      host = authority.slice(0, colon);
      port = Number(authority.slice(colon + 1));
    }
  }
  if (host === "" || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  if (!/^[A-Za-z0-9.\-_:%]+$/.test(host)) return undefined;
  return { host: host.toLowerCase(), port };
}

/** "host:port" as a Host header writes it: IPv6 in brackets, port 80 left out. */
export function formatAuthority(host: string, port: number): string {
  const h = host.includes(":") ? `[${host}]` : host;
  return port === 80 ? h : `${h}:${port}`;
}

/** Finds the virtual host serving host:port, by name, wildcard, then address. */
export function findVirtualHost(
  cfg: RuntimeConfig,
  host: string,
  port: number,
): VirtualHost | undefined {
  // Most requests name the host the one before did: its answer is kept (a
  // config is never changed, only replaced), which saves building and
  // hashing a "host:port" key per request.
  const m = lastFind;
  if (m.cfg === cfg && m.port === port && m.host === host) return m.vhost;
  const vhost = lookupVirtualHost(cfg, host, port);
  lastFind = { cfg, host, port, vhost };
  return vhost;
}

let lastFind: {
  cfg: RuntimeConfig | undefined;
  host: string;
  port: number;
  vhost: VirtualHost | undefined;
} = { cfg: undefined, host: "", port: 0, vhost: undefined };

function lookupVirtualHost(
  cfg: RuntimeConfig,
  host: string,
  port: number,
): VirtualHost | undefined {
  const key = host + ":" + port;
  const byName = cfg.hosts.get(key) ?? cfg.hosts.get(host);
  if (byName !== undefined) return byName;
  for (const w of cfg.wildcards) {
    if ((w.port === undefined || w.port === port) && host.endsWith(w.suffix)) return w.vhost;
  }
  // Addresses match with their port only: an endpoint IP (127.0.0.1, a node's
  // address) also serves other things on other ports, and Istio matches a
  // service address only on the service's ports.
  return cfg.addresses.get(key);
}

/**
 * The virtual host of a redirected connection's original destination: a
 * ServiceEntry VIP at exactly that port, or (`endpoint` true) a STATIC
 * endpoint's own address, whose traffic stays with that endpoint.
 */
export function findByOriginalDst(
  cfg: RuntimeConfig,
  host: string,
  port: number,
): { vhost: VirtualHost; endpoint: boolean } | undefined {
  const key = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const vip = cfg.addresses.get(key);
  if (vip !== undefined) return { vhost: vip, endpoint: false };
  const ep = cfg.endpointAddresses.get(key);
  return ep === undefined ? undefined : { vhost: ep, endpoint: true };
}

/** The protocol a service port declares (ServiceEntry ports[].protocol), or UNKNOWN. */
export function declaredProtocol(vhost: VirtualHost): PortProtocol {
  const first = vhost.tcp?.clusters[0] ?? vhost.http[0]?.clusters[0];
  return first?.cluster.protocol ?? "UNKNOWN";
}

function test(m: Matcher, value: string): boolean {
  switch (m.kind) {
    case "exact":
      return value === m.value;
    case "prefix":
      return value.startsWith(m.value);
    case "regex":
      return m.re.test(value);
    case "present":
      return true;
  }
}

function queryParam(path: string, name: string): string | undefined {
  const q = path.indexOf("?");
  if (q === -1) return undefined;
  for (const pair of path.slice(q + 1).split("&")) {
    const eq = pair.indexOf("=");
    const k = eq === -1 ? pair : pair.slice(0, eq);
    if (k === name) return eq === -1 ? "" : pair.slice(eq + 1);
  }
  return undefined;
}

function matches(m: RouteMatch, req: RequestView): boolean {
  if (m.port !== undefined && m.port !== req.port) return false;
  if (m.uri !== undefined) {
    const q = req.path.indexOf("?");
    let p = q === -1 ? req.path : req.path.slice(0, q);
    // ignoreUriCase applies to exact and prefix matches only; a regex sees the path as sent (as in Istio).
    if (m.ignoreUriCase && m.uri.kind !== "regex") p = p.toLowerCase();
    if (!test(m.uri, p)) return false;
  }
  if (m.method !== undefined && !test(m.method, req.method)) return false;
  if (m.scheme !== undefined && !test(m.scheme, req.scheme)) return false;
  if (
    m.authority !== undefined &&
    !test(m.authority, formatAuthority(req.host, req.port))
  ) {
    return false;
  }
  for (const [name, hm] of m.headers) {
    const v = req.header(name);
    if (v === undefined || !test(hm, v)) return false;
  }
  for (const [name, hm] of m.withoutHeaders) {
    const v = req.header(name);
    if (v !== undefined && test(hm, v)) return false;
  }
  for (const [name, qm] of m.queryParams) {
    const v = queryParam(req.path, name);
    if (v === undefined || !test(qm, v)) return false;
  }
  return true;
}

/** A matched route, and the match block that matched (undefined: the route has none). */
export interface RouteHit {
  route: HttpRoute;
  match: RouteMatch | undefined;
}

/** The first route of the virtual host that matches the request. */
export function matchRoute(vhost: VirtualHost, req: RequestView): RouteHit | undefined {
  for (const route of vhost.http) {
    if (route.matches.length === 0) return { route, match: undefined };
    for (const m of route.matches) if (matches(m, req)) return { route, match: m };
  }
  return undefined;
}

/** Draws one weighted cluster of a route; `r` is uniform in [0, 1). */
export function pickCluster(
  split: { clusters: WeightedCluster[]; cumulative: number[]; totalWeight: number },
  r: number,
): WeightedCluster | undefined {
  const { clusters, cumulative } = split;
  if (clusters.length <= 1) return clusters[0];
  const x = r * split.totalWeight;
  let lo = 0;
  let hi = cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return clusters[lo];
}

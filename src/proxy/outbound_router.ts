/**
 * Outbound routing: the app's request → virtual host → HTTP route → weighted
 * cluster → endpoints, following Istio's VirtualService and DestinationRule
 * semantics over the running config.
 *
 * A request is matched to a virtual host by its Host / :authority, then (for
 * connections redirected by iptables) by the original destination address.
 * A host with no registry entry passes through to its own address — the
 * original destination when there is one — under ALLOW_ANY (labelled PassthroughCluster, as Istio does) or gets a 502 under
 * REGISTRY_ONLY (BlackHoleCluster). remora's own listener ports on loopback
 * are refused, so nothing of the admin API is reachable through the data
 * path. The config is read once per request from `getConfig`, so a request
 * finishes on the config it started with.
 */

import type {
  Cluster,
  HttpRoute,
  RouteMatch,
  RuntimeConfig,
  VirtualHost,
} from "../config/runtime.ts";
import { normalizeBasePath } from "../security/normalize.ts";
import { balancerFor, requestHash } from "./balance.ts";
import { detectorFor } from "./outlier.ts";
import {
  findByOriginalDst,
  findVirtualHost,
  formatAuthority,
  matchRoute,
  pickCluster,
  type RequestView,
  type RouteHit,
} from "./route_match.ts";
import {
  BLACKHOLE,
  clusterLabels,
  type DestinationLabels,
  type Forward,
  type HttpRouter,
  localReply,
  meshedPeer,
  PASSTHROUGH,
  type RouteDecision,
  type Upstream,
  upstreamOf,
} from "./target.ts";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|::ffff:127\.\d+\.\d+\.\d+|0\.0\.0\.0|::)$/;

export interface OutboundRouterOptions {
  getConfig(): RuntimeConfig;
  /** Ports remora itself listens on; loopback requests to them are refused. */
  ownPorts: ReadonlySet<number>;
  random?: () => number;
}

export class OutboundRouter implements HttpRouter {
  readonly #opts: OutboundRouterOptions;
  readonly #random: () => number;

  constructor(opts: OutboundRouterOptions) {
    this.#opts = opts;
    this.#random = opts.random ?? Math.random;
  }

  route(req: RequestView): RouteDecision {
    // Istio's default path normalization (BASE) applies before routing, and the path
    // forwarded is the normalized one (security/normalize.ts).
    if (req.method !== "CONNECT") {
      const n = normalizeBasePath(req.path);
      if (!n.ok) return localReply(400, `remora: bad request path: ${n.reason}`, "");
      if (n.path !== req.path) req = { ...req, path: n.path };
    }
    if (this.#opts.ownPorts.has(req.port) && LOOPBACK.test(req.host)) {
      return localReply(
        403,
        "remora: its own admin and listener ports are not reachable through the proxy",
        "",
      );
    }
    const cfg = this.#opts.getConfig();
    const dst = req.originalDst;
    // By name first (Host / :authority), then by the address the app connected to.
    let vhost = findVirtualHost(cfg, req.host, req.port);
    if (vhost === undefined && dst !== undefined) {
      const found = findByOriginalDst(cfg, dst.host, dst.port);
      // A call to one endpoint's own address stays with that endpoint, named by its service.
      if (found?.endpoint === true) {
        return { ...passthrough(req), labels: vhostLabels(found.vhost) };
      }
      vhost = found?.vhost;
    }
    if (vhost === undefined) {
      if (cfg.outboundTrafficPolicy === "REGISTRY_ONLY") {
        return localReply(
          502,
          `remora: no service entry for ${req.host}:${req.port} and the outbound traffic policy is REGISTRY_ONLY`,
          "NR",
          BLACKHOLE,
        );
      }
      return passthrough(req);
    }
    const labels = vhostLabels(vhost);
    const hit = matchRoute(vhost, req);
    if (hit === undefined) {
      return localReply(
        404,
        `remora: no route matched ${req.method} ${
          req.method === "CONNECT" ? req.authority : pathOnly(req.path)
        } on ${vhost.serviceHost}`,
        "NR",
        labels,
      );
    }
    const route = hit.route;
    if (route.directResponse !== undefined) {
      return {
        ...localReply(route.directResponse.status, route.directResponse.body, "", labels),
        route,
      };
    }
    if (route.redirect !== undefined) {
      const r = route.redirect;
      const authority = r.authority ?? hostHeader(req);
      // The path is replaced; the query stays unless the new uri brings its own (as Envoy's path_redirect).
      const q = req.path.indexOf("?");
      const path = r.uri === undefined
        ? req.path
        : r.uri.includes("?") || q === -1
        ? r.uri
        : r.uri + req.path.slice(q);
      const location = `${req.scheme}://${authority}${path}`;
      return { ...localReply(r.code, "", "", labels, [["location", location]]), route };
    }
    const wc = pickCluster(route, this.#random());
    if (wc === undefined) return localReply(503, "remora: route has no destination", "NR", labels);
    return forwardTo(wc.cluster, hit, req, {
      requestHeaders: wc.requestHeaders,
      responseHeaders: wc.responseHeaders,
    });
  }
}

function pathOnly(path: string): string {
  const q = path.indexOf("?");
  return q === -1 ? path : path.slice(0, q);
}

function hostHeader(req: RequestView): string {
  return formatAuthority(req.host, req.port);
}

function vhostLabels(v: VirtualHost): DestinationLabels {
  return {
    service: v.serviceHost,
    serviceName: v.serviceName,
    serviceNamespace: v.namespace,
    cluster: "unknown",
  };
}

/** The destination's response header operations plus a Set-Cookie (a generated hash cookie). */
function withSetCookie(d: Forward["destination"], cookie: string): Forward["destination"] {
  const ops = d.responseHeaders;
  return {
    requestHeaders: d.requestHeaders,
    responseHeaders: {
      set: ops?.set ?? [],
      add: [...(ops?.add ?? []), ["set-cookie", cookie]],
      remove: ops?.remove ?? [],
    },
  };
}

/**
 * Applies a route's `rewrite.uri` to the path, keeping the query. As Istio
 * configures Envoy (one route per match block, each with a prefix rewrite),
 * the value replaces what `match` matched: the matched prefix of a uri prefix
 * match (whatever its case, with ignoreUriCase), the whole path of an exact or
 * regex match, and the leading "/" of the path when the block has no uri match
 * or the route has no match blocks (so `/v1` on `/items` gives `/v1items`).
 */
export function rewritePath(
  route: HttpRoute | undefined,
  match: RouteMatch | undefined,
  path: string,
): string {
  const uri = route?.rewrite?.uri;
  if (uri === undefined) return path;
  const q = path.indexOf("?");
  const p = q === -1 ? path : path.slice(0, q);
  const query = q === -1 ? "" : path.slice(q);
  const m = match?.uri;
  if (m === undefined) return uri + p.slice(1) + query;
  if (m.kind === "prefix") return uri + p.slice(m.value.length) + query;
  return uri + query;
}

function passthrough(req: RequestView): Forward {
  // A redirected connection goes where the app sent it, whatever its Host header says.
  const dst = req.originalDst;
  const up: Upstream = dst !== undefined
    ? { host: dst.host, port: dst.port, endpoint: undefined }
    : { host: req.host, port: req.port, endpoint: undefined };
  return {
    kind: "forward",
    route: undefined,
    cluster: undefined,
    authority: undefined,
    path: req.path,
    labels: PASSTHROUGH,
    destination: { requestHeaders: undefined, responseHeaders: undefined },
    next: () => up,
    begin() {},
    end() {},
  };
}

function forwardTo(
  cluster: Cluster,
  hit: RouteHit,
  req: RequestView,
  destination: Forward["destination"],
): Forward {
  const route = hit.route;
  const authority = route.rewrite?.authority;
  const path = rewritePath(route, hit.match, req.path);
  const labels = clusterLabels(cluster);
  if (cluster.passthrough) {
    const up: Upstream = {
      host: cluster.serviceHost,
      port: cluster.port || req.port,
      endpoint: undefined,
    };
    // A host outside the registry is meshed only when a DestinationRule says ISTIO_MUTUAL.
    const meshed = meshedPeer(cluster, undefined);
    if (meshed !== undefined) up.meshed = meshed;
    return {
      kind: "forward",
      route,
      cluster,
      authority,
      path,
      labels,
      destination,
      next: () => up,
      begin() {},
      end() {},
    };
  }
  const balancer = balancerFor(cluster);
  // Resilience policy (consistent hash, outlier ejection): nothing to do without one.
  const policy = cluster.policy;
  const outlier = detectorFor(cluster);
  let hash: number | undefined;
  if (policy?.hash !== undefined) {
    const h = requestHash(policy.hash, req.header, req.sourceIp);
    hash = h.hash;
    if (h.setCookie !== undefined) destination = withSetCookie(destination, h.setCookie);
  }
  return {
    kind: "forward",
    route,
    cluster,
    authority,
    path,
    labels,
    destination,
    next(previous) {
      const usable = outlier?.filter();
      const e = usable === undefined && hash === undefined
        ? balancer.pick(previous?.endpoint)
        : balancer.pick(previous?.endpoint, { usable, hash });
      return e === undefined ? undefined : upstreamOf(cluster, e);
    },
    begin(u) {
      if (u.endpoint !== undefined) balancer.begin(u.endpoint);
    },
    end(u) {
      if (u.endpoint !== undefined) balancer.end(u.endpoint);
    },
  };
}

/**
 * What routing decides for one request, shared by the HTTP/1 and HTTP/2
 * engines: either a local reply (no route, registry-only, direct response) or
 * a forward to a cluster whose endpoints are drawn per attempt.
 *
 * Types and small constructors only; the decisions are made by
 * `outbound_router.ts` and `inbound_router.ts`.
 */

import type { Cluster, Endpoint, HttpRoute } from "../config/runtime.ts";
import type { RequestView } from "./route_match.ts";

/** One concrete place to send an attempt to. */
export interface Upstream {
  host: string;
  port: number;
  endpoint: Endpoint | undefined;
  /** Set when the upstream is in the mesh: remora then speaks mTLS to it, never plaintext. */
  meshed?: MeshedPeer;
}

/** A meshed upstream's identity: spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>. */
export interface MeshedPeer {
  /** Undefined when only the trust domain is known (DestinationRule ISTIO_MUTUAL, no serviceAccount). */
  serviceAccount: string | undefined;
  namespace: string;
}

/** The SPIFFE ID a meshed upstream must present; undefined when any ID of the trust domain will do. */
export function expectedPeerId(trustDomain: string, m: MeshedPeer): string | undefined {
  return m.serviceAccount === undefined
    ? undefined
    : `spiffe://${trustDomain}/ns/${m.namespace}/sa/${m.serviceAccount}`;
}

/**
 * Whether an endpoint of a cluster is reached with mTLS: DestinationRule
 * tls.mode DISABLE never, ISTIO_MUTUAL always, otherwise as Istio's auto mTLS
 * decides for the endpoint (`Endpoint.mtls`). The identity expected is the
 * endpoint's serviceAccount, or any of the trust domain without one.
 */
export function meshedPeer(
  cluster: Cluster | undefined,
  e: Endpoint | undefined,
): MeshedPeer | undefined {
  if (cluster?.tlsMode === "DISABLE") return undefined;
  if (e?.mtls !== true && cluster?.tlsMode !== "ISTIO_MUTUAL") return undefined;
  return { serviceAccount: e?.serviceAccount, namespace: e?.namespace ?? cluster!.namespace };
}

/**
 * An upstream for endpoint `e` of `cluster`, with its mesh identity when it
 * has one. Made once per endpoint and cluster (a config is replaced, never
 * changed), so that what is kept per upstream identity (the identity label,
 * the pool key) is found again instead of made anew for every request.
 */
export function upstreamOf(cluster: Cluster, e: Endpoint): Upstream {
  const known = upstreams.get(e);
  if (known !== undefined && known.cluster === cluster) return known.up;
  const meshed = meshedPeer(cluster, e);
  const up: Upstream = meshed === undefined
    ? { host: e.address, port: e.port, endpoint: e }
    : { host: e.address, port: e.port, endpoint: e, meshed };
  upstreams.set(e, { cluster, up });
  return up;
}

const upstreams = new WeakMap<Endpoint, { cluster: Cluster; up: Upstream }>();

/** Destination labels for metrics and logs, all from bounded sets. */
export interface DestinationLabels {
  service: string;
  serviceName: string;
  serviceNamespace: string;
  cluster: string;
}

export interface Forward {
  kind: "forward";
  route: HttpRoute | undefined;
  cluster: Cluster | undefined;
  /** Host header / :authority to send upstream instead of the request's, if any. */
  authority: string | undefined;
  /** Path (with query) to send upstream. */
  path: string;
  labels: DestinationLabels;
  /** Header operations of the chosen weighted destination, applied after the route's. */
  destination: {
    requestHeaders: HttpRoute["requestHeaders"];
    responseHeaders: HttpRoute["responseHeaders"];
  };
  /** The upstream for the next attempt; `previous` is avoided where possible. */
  next(previous: Upstream | undefined): Upstream | undefined;
  /** Marks an attempt to `u` started / finished, for least-request balancing. */
  begin(u: Upstream): void;
  end(u: Upstream): void;
}

export interface LocalReply {
  kind: "local";
  status: number;
  body: string;
  /** Envoy response flags, e.g. "NR". */
  flags: string;
  headers: Array<[string, string]>;
  labels: DestinationLabels;
  route: HttpRoute | undefined;
}

export type RouteDecision = Forward | LocalReply;

/** Decides where requests received by one listener go. */
export interface HttpRouter {
  route(req: RequestView): RouteDecision;
}

/** Istio's names for traffic to hosts outside the registry: let through, or refused. */
export const PASSTHROUGH: DestinationLabels = {
  service: "PassthroughCluster",
  serviceName: "PassthroughCluster",
  serviceNamespace: "unknown",
  cluster: "PassthroughCluster",
};

export const BLACKHOLE: DestinationLabels = {
  service: "BlackHoleCluster",
  serviceName: "BlackHoleCluster",
  serviceNamespace: "unknown",
  cluster: "BlackHoleCluster",
};

/** Destination labels of a cluster. */
export function clusterLabels(c: Cluster): DestinationLabels {
  return {
    service: c.serviceHost,
    serviceName: c.serviceName,
    serviceNamespace: c.namespace,
    cluster: c.name,
  };
}

export const UNKNOWN_DESTINATION: DestinationLabels = {
  service: "unknown",
  serviceName: "unknown",
  serviceNamespace: "unknown",
  cluster: "unknown",
};

const inboundByPort = new Map<number, DestinationLabels>();

/**
 * The labels of inbound traffic to `port` that no service names: cluster
 * `inbound|<port>||`, as Envoy's inbound clusters are named. Made once per port.
 */
export function inboundLabels(port: number): DestinationLabels {
  let l = inboundByPort.get(port);
  if (l === undefined) {
    l = { ...UNKNOWN_DESTINATION, cluster: `inbound|${port}||` };
    if (inboundByPort.size < 65536) inboundByPort.set(port, l);
  }
  return l;
}

export function localReply(
  status: number,
  body: string,
  flags: string,
  labels: DestinationLabels = UNKNOWN_DESTINATION,
  headers: Array<[string, string]> = [],
): LocalReply {
  return { kind: "local", status, body, flags, headers, labels, route: undefined };
}

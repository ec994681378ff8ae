/**
 * Compiles the resilience parts of a DestinationRule (connectionPool,
 * outlierDetection, consistentHash, retryBudget) into a cluster's
 * `ClusterPolicy`, and remora's hedge annotation into a route's hedge policy.
 * Pure; called by `compile.ts` once per cluster / route.
 *
 * Merge, as Istio merges traffic policies, per component (connectionPool,
 * outlierDetection, retryBudget each whole): the rule's top-level component,
 * replaced by its portLevelSettings entry for the port (for connectionPool and
 * outlierDetection even when that entry leaves them out: port-level settings
 * do not inherit), then by the subset's when it sets one, then by the
 * subset's port-level entry, again whole.
 * Defaults are Istio's (outlier: 5 consecutive 5xx, 10s interval, 30s base
 * ejection, 10% max ejected, 0% min health; limits: unlimited) and, for the
 * retry budget, Envoy's retry_budget defaults (20% of active requests, at
 * least 3 concurrent) — on for every cluster, whether or not a rule exists.
 */

import type {
  ConnectionPoolSettings,
  ConsistentHash,
  DestinationRule,
  HTTPRoute,
  OutlierDetection,
  TrafficPolicy,
  VirtualService,
} from "./model.ts";
import type { ClusterLimits, ClusterPolicy, HashPolicy, OutlierPolicy } from "./runtime.ts";

export const DEFAULT_RETRY_BUDGET = Object.freeze({ percent: 20, minConcurrency: 3 });

/** The merged policy of one cluster, or undefined when the rule sets nothing of it. */
export function clusterPolicy(
  dr: DestinationRule | undefined,
  subset: string,
  port: number,
  hash: ConsistentHash | undefined,
): ClusterPolicy | undefined {
  if (dr === undefined) return undefined;
  const layers: Array<TrafficPolicy | undefined> = [];
  const portLevel = (tp: TrafficPolicy | undefined) =>
    tp?.portLevelSettings?.find((p) => p.port.number === port);
  const top = dr.spec.trafficPolicy;
  const sub = subset === ""
    ? undefined
    : dr.spec.subsets.find((s) => s.name === subset)?.trafficPolicy;
  layers.push(top, portLevel(top), sub, portLevel(sub));
  let pool: ConnectionPoolSettings | undefined;
  let outlier: OutlierDetection | undefined;
  let budget: TrafficPolicy["retryBudget"];
  // As Istio merges: a port-level entry replaces connectionPool and
  // outlierDetection whole (what it leaves out is the default, not the
  // rule's); the subset overrides only what it sets.
  layers.forEach((l, i) => {
    const portEntry = i % 2 === 1;
    if (l === undefined) return;
    if (portEntry || l.connectionPool !== undefined) pool = l.connectionPool;
    if (portEntry || l.outlierDetection !== undefined) outlier = l.outlierDetection;
    if (l.retryBudget !== undefined) budget = l.retryBudget;
  });
  if (pool === undefined && outlier === undefined && budget === undefined && hash === undefined) {
    return undefined;
  }
  return {
    limits: _limits(pool),
    connectTimeoutMs: pool?.tcp?.connectTimeoutMs,
    maxRequestsPerConnection: pool?.http?.maxRequestsPerConnection,
    idleTimeoutMs: pool?.http?.idleTimeoutMs,
    outlier: _outlier(outlier),
    hash: _hash(hash),
    retryBudget: {
      percent: budget?.percent ?? DEFAULT_RETRY_BUDGET.percent,
      minConcurrency: budget?.minRetryConcurrency ?? DEFAULT_RETRY_BUDGET.minConcurrency,
    },
  };
}

function _limits(p: ConnectionPoolSettings | undefined): ClusterLimits | undefined {
  const l: ClusterLimits = {
    maxConnections: p?.tcp?.maxConnections ?? Infinity,
    maxPending: p?.http?.http1MaxPendingRequests ?? Infinity,
    maxRequests: p?.http?.http2MaxRequests ?? Infinity,
    maxRetries: p?.http?.maxRetries ?? Infinity,
  };
  return Object.values(l).every((x) => x === Infinity) ? undefined : l;
}

function _outlier(o: OutlierDetection | undefined): OutlierPolicy | undefined {
  if (o === undefined) return undefined;
  const p: OutlierPolicy = {
    consecutive5xx: o.consecutive5xxErrors ?? 5,
    consecutiveGateway: o.consecutiveGatewayErrors ?? 0,
    intervalMs: o.intervalMs ?? 10_000,
    baseEjectionMs: o.baseEjectionTimeMs ?? 30_000,
    maxEjectionPercent: o.maxEjectionPercent ?? 10,
    minHealthPercent: o.minHealthPercent ?? 0,
  };
  return p.consecutive5xx === 0 && p.consecutiveGateway === 0 ? undefined : p;
}

function _hash(h: ConsistentHash | undefined): HashPolicy | undefined {
  if (h === undefined) return undefined;
  if ("httpHeaderName" in h) return { kind: "header", name: h.httpHeaderName };
  if ("httpCookie" in h) {
    return {
      kind: "cookie",
      name: h.httpCookie.name,
      path: h.httpCookie.path,
      ttlMs: h.httpCookie.ttlMs,
    };
  }
  return { kind: "sourceIp" };
}

/** The hedge delay of a route from its VirtualService's remora.dev/hedge-delay annotation. */
export function hedgePolicy(vs: VirtualService, r: HTTPRoute): { delayMs: number } | undefined {
  const delays = vs.metadata.remora?.hedgeDelayMs;
  if (delays === undefined) return undefined;
  const ms = (r.name !== undefined ? delays[r.name] : undefined) ?? delays[""];
  return ms === undefined ? undefined : { delayMs: ms };
}

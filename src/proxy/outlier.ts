/**
 * Outlier detection (passive health checking), from a DestinationRule's
 * outlierDetection, as Envoy does it: each attempt's outcome is recorded
 * against its endpoint; `consecutive5xxErrors` 5xx responses (or
 * `consecutiveGatewayErrors` 502/503/504) in a row eject the endpoint for
 * `baseEjectionTime × times ejected`, so a flapping endpoint stays out longer
 * each time. Local failures (connect failure, reset, timeout) count as both
 * kinds, as they do in Envoy without split_external_local_origin_errors. No
 * more than `maxEjectionPercent` of the endpoints are ejected at once; when
 * fewer than `minHealthPercent` remain healthy, ejections are ignored and all
 * endpoints are used (Envoy's panic mode). Every `interval` the ejection
 * multiplier of an endpoint that stayed healthy decays by one.
 *
 * Ejected endpoints get no traffic: the balancer is handed `usable()`. They
 * return when their time is up (checked when picking, no timers). State is
 * per immutable `Cluster`, in a WeakMap; clusters without outlierDetection
 * have none. Time is injectable for tests.
 */

import type { Cluster, Endpoint, OutlierPolicy } from "../config/runtime.ts";

interface Host {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** performance.now() time at which an ejection ends; 0 when not ejected. */
  ejectedUntil: number;
  /** How many times ejected (the multiplier of baseEjectionTime). */
  ejections: number;
  /** Set when ejected during the current interval (no decay then). */
  ejectedThisInterval: boolean;
}

export class OutlierDetector {
  readonly policy: OutlierPolicy;
  readonly #endpoints: readonly Endpoint[];
  readonly #hosts = new Map<Endpoint, Host>();
  readonly #now: () => number;
  #ejected = 0;
  #nextSweep: number;
  /** Bound once: handed to the balancer while some endpoint is ejected. */
  readonly usable = (e: Endpoint): boolean => !this.isEjected(e);

  constructor(
    policy: OutlierPolicy,
    endpoints: readonly Endpoint[],
    now = () => performance.now(),
  ) {
    this.policy = policy;
    this.#endpoints = endpoints;
    this.#now = now;
    this.#nextSweep = now() + policy.intervalMs;
  }

  /** Endpoints ejected now. */
  get ejectedCount(): number {
    this.#expire();
    return this.#ejected;
  }

  /**
   * The filter for the balancer: undefined (use every endpoint) when nothing
   * is ejected or too few endpoints are healthy (panic).
   */
  filter(): ((e: Endpoint) => boolean) | undefined {
    if (this.#ejected === 0) return undefined;
    this.#expire();
    if (this.#ejected === 0) return undefined;
    const total = this.#endpoints.length;
    const healthyPct = (100 * (total - this.#ejected)) / total;
    if (healthyPct < this.policy.minHealthPercent) return undefined;
    return this.usable;
  }

  isEjected(e: Endpoint): boolean {
    const h = this.#hosts.get(e);
    if (h === undefined || h.ejectedUntil === 0) return false;
    if (h.ejectedUntil > this.#now()) return true;
    h.ejectedUntil = 0;
    this.#ejected--;
    return false;
  }

  /**
   * Records an attempt's outcome: an HTTP status, or 0 for a local failure
   * (connect failure, reset, timeout). Returns true when it ejected `e`.
   */
  record(e: Endpoint, status: number): boolean {
    this.#sweep();
    let h = this.#hosts.get(e);
    const gateway = status === 0 || status === 502 || status === 503 || status === 504;
    const is5xx = status === 0 || status >= 500;
    if (!is5xx) {
      if (h !== undefined) h.consecutive5xx = h.consecutiveGateway = 0;
      return false;
    }
    if (h === undefined) {
      h = {
        consecutive5xx: 0,
        consecutiveGateway: 0,
        ejectedUntil: 0,
        ejections: 0,
        ejectedThisInterval: false,
      };
      this.#hosts.set(e, h);
    }
    h.consecutive5xx++;
    if (gateway) h.consecutiveGateway++;
    const p = this.policy;
    const trip = (p.consecutive5xx > 0 && h.consecutive5xx >= p.consecutive5xx) ||
      (p.consecutiveGateway > 0 && h.consecutiveGateway >= p.consecutiveGateway);
    return trip && !this.isEjected(e) && this.#eject(h);
  }

  #eject(h: Host): boolean {
    const total = this.#endpoints.length;
    // Envoy's rule: eject only while the ejected share stays within the limit.
    if ((100 * (this.#ejected + 1)) / total > this.policy.maxEjectionPercent) return false;
    h.ejections++;
    h.ejectedThisInterval = true;
    h.ejectedUntil = this.#now() + this.policy.baseEjectionMs * h.ejections;
    h.consecutive5xx = h.consecutiveGateway = 0;
    this.#ejected++;
    return true;
  }

  #expire(): void {
    if (this.#ejected === 0) return;
    for (const e of this.#hosts.keys()) this.isEjected(e);
  }

  /** Once per interval: endpoints healthy for a whole interval lose one ejection. */
  #sweep(): void {
    const now = this.#now();
    if (now < this.#nextSweep) return;
    this.#nextSweep = now + this.policy.intervalMs;
    for (const [e, h] of this.#hosts) {
      if (!h.ejectedThisInterval && h.ejections > 0 && !this.isEjected(e)) h.ejections--;
      h.ejectedThisInterval = false;
    }
  }

  describe(): Array<Record<string, unknown>> {
    this.#expire();
    const now = this.#now();
    const out: Array<Record<string, unknown>> = [];
    for (const [e, h] of this.#hosts) {
      out.push({
        address: `${e.address}:${e.port}`,
        ejected: h.ejectedUntil > now,
        ...(h.ejectedUntil > now ? { ejectedForMs: Math.round(h.ejectedUntil - now) } : {}),
        timesEjected: h.ejections,
        consecutive5xx: h.consecutive5xx,
        consecutiveGatewayErrors: h.consecutiveGateway,
      });
    }
    return out;
  }
}

const detectors = new WeakMap<Cluster, OutlierDetector>();

/** The detector of a cluster with outlierDetection; undefined when it has none. */
export function detectorFor(cluster: Cluster | undefined): OutlierDetector | undefined {
  const policy = cluster?.policy?.outlier;
  if (policy === undefined) return undefined;
  let d = detectors.get(cluster!);
  if (d === undefined) {
    d = new OutlierDetector(policy, cluster!.endpoints);
    detectors.set(cluster!, d);
  }
  return d;
}

export function describeOutlier(cluster: Cluster): Array<Record<string, unknown>> | undefined {
  return detectors.get(cluster)?.describe();
}

/**
 * Records an attempt's outcome (HTTP status, 0 for a local failure) for the
 * cluster's outlier detection, counting an ejection in metrics. Nothing to do
 * for clusters without outlierDetection.
 */
export function recordOutcome(
  cluster: Cluster | undefined,
  up: { endpoint: Endpoint | undefined },
  status: number,
  metrics: { ejection(cluster: string): void },
): void {
  if (cluster?.policy?.outlier === undefined || up.endpoint === undefined) return;
  if (detectorFor(cluster)!.record(up.endpoint, status)) metrics.ejection(cluster.name);
}

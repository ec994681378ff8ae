/**
 * Circuit breaking for a cluster, from its DestinationRule connectionPool:
 * `tcp.maxConnections` (HTTP/1 upstream connections in use at once),
 * `http.http1MaxPendingRequests` (requests waiting for one of those),
 * `http.http2MaxRequests` (active requests, both protocols),
 * `http.maxRequestsPerConnection`, `http.idleTimeout` and `tcp.connectTimeout`.
 *
 * An attempt takes a slot before it takes a connection. A full cluster queues
 * it while the pending queue has room (never without bound, and never past the
 * request's deadline); otherwise it is refused at once, which the engines
 * answer with 503 and response flag UO. Limits are per cluster and per remora
 * process, as Envoy's circuit breakers are. State lives in WeakMaps keyed by
 * the immutable `Cluster` (and by connection), so a cluster without limits
 * costs one property read per attempt. It does not open connections.
 */

import type { Cluster, ClusterLimits } from "../config/runtime.ts";
import type { BufConn } from "../net/buf_conn.ts";
import { ConnectError, type ConnPool } from "./pool.ts";
import type { Upstream } from "./target.ts";

/** Which limit refused an attempt, as metrics label it. */
export type Overflow = "max_requests" | "max_pending" | "pending_timeout";

interface Waiter {
  resolve(granted: boolean): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class CircuitBreaker {
  readonly limits: ClusterLimits;
  /** Active requests (attempts), both protocols. */
  active = 0;
  /** HTTP/1 connections in use. */
  connections = 0;
  readonly #pending: Waiter[] = [];

  constructor(limits: ClusterLimits) {
    this.limits = limits;
  }

  get pending(): number {
    return this.#pending.length;
  }

  /**
   * Takes a slot for an HTTP/1 attempt (a request and the connection it
   * needs), waiting in the bounded queue until `deadline` (performance.now()
   * time) if needed. Returns the overflow that refused it, or undefined.
   */
  acquire(deadline: number): Overflow | undefined | Promise<Overflow | undefined> {
    if (this.active >= this.limits.maxRequests) return "max_requests";
    if (this.connections < this.limits.maxConnections && this.#pending.length === 0) {
      this.active++;
      this.connections++;
      return undefined;
    }
    if (this.#pending.length >= this.limits.maxPending) return "max_pending";
    return new Promise<Overflow | undefined>((resolve) => {
      const w: Waiter = {
        resolve: (granted) => resolve(granted ? undefined : "pending_timeout"),
        timer: undefined,
      };
      if (Number.isFinite(deadline)) {
        w.timer = setTimeout(() => {
          const i = this.#pending.indexOf(w);
          if (i !== -1) this.#pending.splice(i, 1);
          w.resolve(false);
        }, Math.max(1, deadline - performance.now()));
      }
      this.#pending.push(w);
    });
  }

  /** Gives back an HTTP/1 slot; the next waiter, if any, takes it over. */
  release(): void {
    const next = this.#pending.shift();
    if (next !== undefined && this.active - 1 < this.limits.maxRequests) {
      clearTimeout(next.timer);
      next.resolve(true); // the slot passes on: counts unchanged
      return;
    }
    if (next !== undefined) this.#pending.unshift(next);
    this.active--;
    this.connections--;
  }

  /** Takes a slot for an HTTP/2 stream (streams share a connection: no queue). */
  acquireStream(): Overflow | undefined {
    if (this.active >= this.limits.maxRequests) return "max_requests";
    this.active++;
    return undefined;
  }

  releaseStream(): void {
    this.active--;
  }

  describe(): Record<string, number> {
    return {
      activeRequests: this.active,
      connectionsInUse: this.connections,
      pending: this.pending,
    };
  }
}

const breakers = new WeakMap<Cluster, CircuitBreaker>();

/** The breaker of a cluster with connectionPool limits; undefined when it has none. */
export function breakerFor(cluster: Cluster | undefined): CircuitBreaker | undefined {
  const limits = cluster?.policy?.limits;
  if (limits === undefined) return undefined;
  let b = breakers.get(cluster!);
  if (b === undefined) {
    b = new CircuitBreaker(limits);
    breakers.set(cluster!, b);
  }
  return b;
}

export function describeBreaker(cluster: Cluster): Record<string, number> | undefined {
  return breakers.get(cluster)?.describe();
}

/**
 * Acquires a pooled connection with the cluster's tcp.connectTimeout when it
 * has one (else the pool's own). A connection that completes after the
 * timeout is closed, never leaked.
 */
export function acquireConn(
  pool: ConnPool,
  cluster: Cluster | undefined,
  up: Upstream,
): Promise<{ conn: BufConn; reused: boolean }> {
  const policy = cluster?.policy;
  if (policy === undefined) return pool.acquire(up);
  const ms = policy.connectTimeoutMs;
  const p = policy.idleTimeoutMs === undefined ? pool.acquire(up) : pool.acquire(up).then((r) => {
    taken(r.conn);
    return r;
  });
  if (ms === undefined) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        p.then(({ conn }) => conn.close(), () => {});
        reject(new ConnectError(`Connect to ${up.host}:${up.port} timed out after ${ms}ms`, true));
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const uses = new WeakMap<BufConn, number>();
const idleSince = new WeakMap<BufConn, number>();
let idleGeneration = 0;

/**
 * After a clean exchange on `conn`: whether the cluster lets it go back to the
 * pool (maxRequestsPerConnection), arming its idle timeout (http.idleTimeout)
 * when it does. Free for clusters without either setting.
 */
export function reusable(cluster: Cluster | undefined, conn: BufConn): boolean {
  const p = cluster?.policy;
  if (p === undefined) return true;
  const max = p.maxRequestsPerConnection;
  if (max !== undefined) {
    const n = (uses.get(conn) ?? 0) + 1;
    if (n >= max) return false;
    uses.set(conn, n);
  }
  const idle = p.idleTimeoutMs;
  if (idle !== undefined) {
    const gen = ++idleGeneration;
    idleSince.set(conn, gen);
    const t = setTimeout(() => {
      // Still the same idle period: nobody has used the connection since.
      if (idleSince.get(conn) === gen) conn.close();
    }, idle);
    Deno.unrefTimer(t);
  }
  return true;
}

/** Marks a pooled connection taken (its idle timeout no longer applies). */
export function taken(conn: BufConn): void {
  idleSince.delete(conn);
}

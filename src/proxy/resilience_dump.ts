/**
 * The resilience part of a cluster in /config_dump: its compiled policy
 * (connectionPool limits, outlier detection, consistent hash, retry budget)
 * and the live state of each feature that has been used (requests and
 * retries in flight, pending queue, ejected endpoints). Read-only.
 */

import { DEFAULT_RETRY_BUDGET } from "../config/compile_policy.ts";
import type { Cluster } from "../config/runtime.ts";
import { describeBreaker } from "./circuit_breaker.ts";
import { describeOutlier } from "./outlier.ts";
import { describeBudget } from "./retry_budget.ts";

const finite = (n: number) => (Number.isFinite(n) ? n : "unlimited");

export function describeResilience(c: Cluster): Record<string, unknown> {
  const p = c.policy;
  const policy = p === undefined ? { retryBudget: DEFAULT_RETRY_BUDGET } : {
    ...(p.limits === undefined ? {} : {
      limits: {
        maxConnections: finite(p.limits.maxConnections),
        maxPendingRequests: finite(p.limits.maxPending),
        maxRequests: finite(p.limits.maxRequests),
        maxRetries: finite(p.limits.maxRetries),
      },
    }),
    ...(p.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: p.connectTimeoutMs }),
    ...(p.maxRequestsPerConnection === undefined
      ? {}
      : { maxRequestsPerConnection: p.maxRequestsPerConnection }),
    ...(p.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: p.idleTimeoutMs }),
    ...(p.outlier === undefined ? {} : { outlierDetection: p.outlier }),
    ...(p.hash === undefined ? {} : { consistentHash: p.hash }),
    retryBudget: p.retryBudget,
  };
  const state: Record<string, unknown> = {};
  const breaker = describeBreaker(c);
  if (breaker !== undefined) state.circuitBreaker = breaker;
  const budget = describeBudget(c);
  if (budget !== undefined) state.retryBudget = budget;
  const outlier = describeOutlier(c);
  if (outlier !== undefined) state.outlier = outlier;
  return { policy, state };
}

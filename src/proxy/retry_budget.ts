/**
 * Retry budgets: a cluster's retries (and hedges) in flight are held to a
 * share of its active requests, as Envoy's `retry_budget` does: at most
 * `max(minConcurrency, percent% of active requests)` retries at once, and
 * never more than connectionPool.http.maxRetries. A failing upstream is then
 * never hit with a retry storm: when every request fails, the budget, not
 * the route's `attempts`, bounds how much extra load retries add.
 *
 * Only requests of routes that can retry or hedge are counted (the others
 * cannot spend the budget), so a route without retries does no bookkeeping.
 * State is kept per immutable `Cluster` in a WeakMap (a config swap starts
 * fresh). It decides; it does not sleep or send (the engines do).
 */

import { DEFAULT_RETRY_BUDGET } from "../config/compile_policy.ts";
import type { Cluster } from "../config/runtime.ts";

/** Why a retry was refused: the budget, or the maxRetries circuit breaker. */
export type RetryRefusal = "budget" | "max_retries";

export class RetryBudget {
  /** Requests in flight that could retry. */
  active = 0;
  /** Retries and hedges in flight. */
  retries = 0;
  readonly #percent: number;
  readonly #min: number;
  readonly #maxRetries: number;

  constructor(percent: number, minConcurrency: number, maxRetries = Infinity) {
    this.#percent = percent;
    this.#min = minConcurrency;
    this.#maxRetries = maxRetries;
  }

  requestStarted(): void {
    this.active++;
  }

  requestEnded(): void {
    this.active--;
  }

  /** Takes a retry slot, or says why none is free. Pair with `retryEnded()`. */
  tryRetry(): RetryRefusal | undefined {
    if (this.retries >= this.#maxRetries) return "max_retries";
    const allowed = Math.max(this.#min, (this.active * this.#percent) / 100);
    if (this.retries >= allowed) return "budget";
    this.retries++;
    return undefined;
  }

  retryEnded(): void {
    this.retries--;
  }

  /** For /config_dump. */
  describe(): Record<string, number> {
    return {
      activeRequests: this.active,
      activeRetries: this.retries,
      percent: this.#percent,
      minRetryConcurrency: this.#min,
    };
  }
}

const budgets = new WeakMap<Cluster, RetryBudget>();
/** Requests without a cluster (pass-through, inbound) share one default budget. */
const unclustered = new RetryBudget(
  DEFAULT_RETRY_BUDGET.percent,
  DEFAULT_RETRY_BUDGET.minConcurrency,
);

/** The retry budget of a cluster of the running config, made on first use. */
export function budgetFor(cluster: Cluster | undefined): RetryBudget {
  if (cluster === undefined) return unclustered;
  let b = budgets.get(cluster);
  if (b === undefined) {
    const p = cluster.policy;
    b = new RetryBudget(
      p?.retryBudget.percent ?? DEFAULT_RETRY_BUDGET.percent,
      p?.retryBudget.minConcurrency ?? DEFAULT_RETRY_BUDGET.minConcurrency,
      p?.limits?.maxRetries ?? Infinity,
    );
    budgets.set(cluster, b);
  }
  return b;
}

/** The budget's live state for /config_dump, when it has been used. */
export function describeBudget(cluster: Cluster): Record<string, number> | undefined {
  return budgets.get(cluster)?.describe();
}

/**
 * Retry budgets: a cluster's retries (and hedges) are held to a share of its
 * recent requests, with a floor of concurrent retries, in the spirit of
 * Envoy's `retry_budget` (budget_percent 20%, min_retry_concurrency 3): a
 * retry is allowed while fewer than `minConcurrency` retries are in flight
 * (backoff included), or while the retries of the last second or so stay
 * under `percent`% of its requests; never past connectionPool.http.maxRetries
 * in flight. A failing upstream is then never hit with a retry storm: when
 * every request fails, the budget, not the route's `attempts`, bounds the
 * extra load (about percent% plus the floor), while sparse failures are all
 * retried.
 *
 * Envoy's budget compares retries in flight with requests in flight; against
 * an upstream that fails at once that lets nearly every retry through (each
 * is in flight only briefly), so remora counts retries against recent
 * requests instead, over a sliding window of two one-second buckets.
 *
 * Only requests of routes that can retry or hedge are counted (the others
 * cannot spend the budget), so a route without retries does no bookkeeping.
 * State is kept per immutable `Cluster` in a WeakMap (a config swap starts
 * fresh). It decides; it does not sleep or send (the engines do). Time is
 * injectable for tests.
 */

import { DEFAULT_RETRY_BUDGET } from "../config/compile_policy.ts";
import type { Cluster } from "../config/runtime.ts";

/** Why a retry was refused: the budget, or the maxRetries circuit breaker. */
export type RetryRefusal = "budget" | "max_retries";

const WINDOW_MS = 1000;

export class RetryBudget {
  /** Requests in flight that could retry. */
  active = 0;
  /** Retries and hedges in flight (from the decision to retry to the end of the attempt). */
  retries = 0;
  readonly #percent: number;
  readonly #min: number;
  readonly #maxRetries: number;
  readonly #now: () => number;
  /** Requests and retries in the current and the previous window. */
  #bucketStart = 0;
  #requests = 0;
  #granted = 0;
  #prevRequests = 0;
  #prevGranted = 0;

  constructor(
    percent: number,
    minConcurrency: number,
    maxRetries = Infinity,
    now: () => number = () => performance.now(),
  ) {
    this.#percent = percent;
    this.#min = minConcurrency;
    this.#maxRetries = maxRetries;
    this.#now = now;
    this.#bucketStart = now();
  }

  requestStarted(): void {
    this.active++;
    this.#roll();
    this.#requests++;
  }

  requestEnded(): void {
    this.active--;
  }

  /** Takes a retry slot, or says why none is free. Pair with `retryEnded()`. */
  tryRetry(): RetryRefusal | undefined {
    if (this.retries >= this.#maxRetries) return "max_retries";
    if (this.retries >= this.#min) {
      const w = this.#roll();
      // The previous window counts in proportion to how much of it is still "recent".
      const requests = this.#requests + this.#prevRequests * (1 - w);
      const granted = this.#granted + this.#prevGranted * (1 - w);
      if (granted + 1 > (requests * this.#percent) / 100) return "budget";
    }
    this.#roll();
    this.#granted++;
    this.retries++;
    return undefined;
  }

  retryEnded(): void {
    this.retries--;
  }

  /** Moves to a new window when the current one is over; returns how far into it we are (0..1). */
  #roll(): number {
    const now = this.#now();
    let elapsed = now - this.#bucketStart;
    if (elapsed >= WINDOW_MS) {
      const skipped = Math.floor(elapsed / WINDOW_MS);
      this.#prevRequests = skipped === 1 ? this.#requests : 0;
      this.#prevGranted = skipped === 1 ? this.#granted : 0;
      this.#requests = this.#granted = 0;
      this.#bucketStart += skipped * WINDOW_MS;
      elapsed = now - this.#bucketStart;
    }
    return elapsed / WINDOW_MS;
  }

  /** For /config_dump. */
  describe(): Record<string, number> {
    return {
      activeRequests: this.active,
      activeRetries: this.retries,
      recentRequests: this.#requests + this.#prevRequests,
      recentRetries: this.#granted + this.#prevGranted,
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

/** Retry budget: a share of active requests, a minimum concurrency, maxRetries. */
import assert from "node:assert/strict";
import { RetryBudget } from "./retry_budget.ts";

Deno.test("retries in flight stay within max(min, percent × active)", () => {
  const b = new RetryBudget(20, 3);
  for (let i = 0; i < 50; i++) b.requestStarted();
  let granted = 0;
  while (b.tryRetry() === undefined) granted++;
  assert.equal(granted, 10, "20% of 50");
  assert.equal(b.tryRetry(), "budget");
  b.retryEnded();
  assert.equal(b.tryRetry(), undefined, "a finished retry frees its place");
});

Deno.test("the minimum concurrency applies with few requests", () => {
  const b = new RetryBudget(20, 3);
  b.requestStarted();
  assert.equal(b.tryRetry(), undefined);
  assert.equal(b.tryRetry(), undefined);
  assert.equal(b.tryRetry(), undefined);
  assert.equal(b.tryRetry(), "budget");
});

Deno.test("connectionPool.http.maxRetries caps retries below the budget", () => {
  const b = new RetryBudget(100, 10, 1);
  b.requestStarted();
  assert.equal(b.tryRetry(), undefined);
  assert.equal(b.tryRetry(), "max_retries");
});

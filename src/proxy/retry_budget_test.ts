/** Retry budget with an injected clock: a share of recent requests, a concurrency floor, maxRetries. */
import assert from "node:assert/strict";
import { RetryBudget } from "./retry_budget.ts";

Deno.test("beyond the floor, retries stay within percent of recent requests", () => {
  let now = 0;
  const b = new RetryBudget(20, 3, Infinity, () => now);
  for (let i = 0; i < 50; i++) b.requestStarted();
  let granted = 0;
  while (b.tryRetry() === undefined) granted++;
  assert.equal(granted, 10, "20% of 50 (the floor's 3 included)");
  assert.equal(b.tryRetry(), "budget");
  for (let i = 0; i < 10; i++) b.retryEnded();
  assert.equal(b.tryRetry(), undefined, "below the floor again");
  b.retryEnded();
  now = 2500;
  for (let i = 0; i < 5; i++) b.requestStarted();
  for (let i = 0; i < 3; i++) assert.equal(b.tryRetry(), undefined, "the floor");
  assert.equal(b.tryRetry(), "budget", "old requests have left the window; 4 > 20% of 5");
});

Deno.test("sparse failures are all retried", () => {
  let now = 0;
  const b = new RetryBudget(20, 0, Infinity, () => now);
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    now += 1;
    b.requestStarted();
    if (i % 10 === 9) {
      if (b.tryRetry() === undefined) b.retryEnded();
      else refused++;
    }
    b.requestEnded();
  }
  assert.equal(refused, 0, "10% failing is within a 20% budget");
});

Deno.test("connectionPool.http.maxRetries caps retries in flight", () => {
  const b = new RetryBudget(100, 10, 1);
  b.requestStarted();
  assert.equal(b.tryRetry(), undefined);
  assert.equal(b.tryRetry(), "max_retries");
});

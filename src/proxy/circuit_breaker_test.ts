/** Circuit breaker: connections, a bounded pending queue, overflow, deadlines. */
import assert from "node:assert/strict";
import { CircuitBreaker } from "./circuit_breaker.ts";

const limits = { maxConnections: 1, maxPending: 1, maxRequests: Infinity, maxRetries: Infinity };

Deno.test("one connection, one pending, the third overflows at once", async () => {
  const cb = new CircuitBreaker(limits);
  assert.equal(await cb.acquire(Infinity), undefined);
  const waiting = cb.acquire(Infinity);
  assert.ok(waiting instanceof Promise, "the second waits");
  assert.equal(cb.acquire(Infinity), "max_pending", "the third is refused synchronously");
  cb.release();
  assert.equal(await waiting, undefined, "the slot passed to the waiter");
  assert.deepEqual(cb.describe(), { activeRequests: 1, connectionsInUse: 1, pending: 0 });
  cb.release();
  assert.deepEqual(cb.describe(), { activeRequests: 0, connectionsInUse: 0, pending: 0 });
});

Deno.test("a pending request gives up at its deadline", async () => {
  const cb = new CircuitBreaker(limits);
  await cb.acquire(Infinity);
  assert.equal(await cb.acquire(performance.now() + 20), "pending_timeout");
  assert.equal(cb.pending, 0);
  cb.release();
});

Deno.test("maxRequests bounds HTTP/1 attempts and HTTP/2 streams alike", () => {
  const cb = new CircuitBreaker({ ...limits, maxConnections: 10, maxRequests: 2 });
  assert.equal(cb.acquireStream(), undefined);
  assert.equal(cb.acquire(Infinity), undefined);
  assert.equal(cb.acquireStream(), "max_requests");
  assert.equal(cb.acquire(Infinity), "max_requests");
  cb.releaseStream();
  cb.release();
  assert.equal(cb.active, 0);
});

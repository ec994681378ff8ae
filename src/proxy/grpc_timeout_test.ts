import assert from "node:assert/strict";
import { formatGrpcTimeout, grpcRequestTimeoutMs, parseGrpcTimeout } from "./grpc_timeout.ts";

Deno.test("grpc-timeout: every unit of the wire format, and malformed values ignored", () => {
  assert.equal(parseGrpcTimeout("2H"), 7_200_000);
  assert.equal(parseGrpcTimeout("3M"), 180_000);
  assert.equal(parseGrpcTimeout("5S"), 5_000);
  assert.equal(parseGrpcTimeout("299m"), 299);
  assert.equal(parseGrpcTimeout("1500u"), 2);
  assert.equal(parseGrpcTimeout("99999999n"), 100);
  // Below a millisecond is one millisecond, never "no timeout".
  assert.equal(parseGrpcTimeout("1n"), 1);
  assert.equal(parseGrpcTimeout("0m"), 1);
  for (const bad of ["", "5", "S", "5s", "5 S", "-5S", "123456789m", "1.5S", "5SS"]) {
    assert.equal(parseGrpcTimeout(bad), undefined, bad);
  }
  assert.equal(parseGrpcTimeout(undefined), undefined);
});

Deno.test("grpc-timeout: the client's deadline within the route's timeout, as Istio's max_grpc_timeout", () => {
  // No route timeout: the client's deadline, or none.
  assert.equal(grpcRequestTimeoutMs(undefined, "250m"), 250);
  assert.equal(grpcRequestTimeoutMs(0, "3S"), 3000);
  assert.equal(grpcRequestTimeoutMs(undefined, undefined), 0);
  assert.equal(grpcRequestTimeoutMs(undefined, "soon"), 0);
  // A route timeout caps a longer deadline and applies without one.
  assert.equal(grpcRequestTimeoutMs(1000, "250m"), 250);
  assert.equal(grpcRequestTimeoutMs(1000, "5S"), 1000);
  assert.equal(grpcRequestTimeoutMs(1000, undefined), 1000);
  assert.equal(grpcRequestTimeoutMs(1000, "bad"), 1000);
});

Deno.test("grpc-timeout: written back in milliseconds, in a larger unit when it does not fit 8 digits", () => {
  assert.equal(formatGrpcTimeout(250), "250m");
  assert.equal(formatGrpcTimeout(0.4), "1m");
  assert.equal(formatGrpcTimeout(99_999_999), "99999999m");
  assert.equal(formatGrpcTimeout(100_000_000), "100000S");
  for (const ms of [1, 299, 5000, 7_200_000, 3e11]) {
    const back = parseGrpcTimeout(formatGrpcTimeout(ms));
    assert.ok(back !== undefined && back >= ms, `${ms}`);
  }
});

/** Outlier detection with an injected clock: ejection, growing ejection time, limits, panic. */
import { UNKNOWN_PEER } from "../telemetry/metrics.ts";
import assert from "node:assert/strict";
import type { Endpoint, OutlierPolicy } from "../config/runtime.ts";
import { OutlierDetector } from "./outlier.ts";

const ep = (address: string): Endpoint => ({
  address,
  port: 80,
  weight: 1,
  labels: {},
  serviceAccount: undefined,
  mtls: false,
  workload: address,
  namespace: "default",
  meta: UNKNOWN_PEER,
});

const POLICY: OutlierPolicy = {
  consecutive5xx: 3,
  consecutiveGateway: 0,
  intervalMs: 1000,
  baseEjectionMs: 10_000,
  maxEjectionPercent: 100,
  minHealthPercent: 0,
};

function setup(policy: Partial<OutlierPolicy> = {}, n = 3) {
  let now = 0;
  const eps = Array.from({ length: n }, (_, i) => ep(`e${i}`));
  const d = new OutlierDetector({ ...POLICY, ...policy }, eps, () => now);
  return { d, eps, at: (t: number) => (now = t) };
}

Deno.test("consecutive 5xx eject; a success in between resets the count", () => {
  const { d, eps: [a] } = setup();
  d.record(a!, 503);
  d.record(a!, 500);
  d.record(a!, 200);
  d.record(a!, 503);
  d.record(a!, 503);
  assert.equal(d.isEjected(a!), false);
  assert.equal(d.record(a!, 0), true, "a local failure counts as a 5xx");
  assert.equal(d.isEjected(a!), true);
  assert.equal(d.filter()!(a!), false, "the balancer is told to skip it");
});

Deno.test("ejected endpoints return after baseEjectionTime × times ejected", () => {
  const { d, eps: [a], at } = setup();
  for (let i = 0; i < 3; i++) d.record(a!, 503);
  at(9_999);
  assert.equal(d.isEjected(a!), true);
  at(10_000);
  assert.equal(d.isEjected(a!), false, "back after 10s");
  assert.equal(d.filter(), undefined);
  for (let i = 0; i < 3; i++) d.record(a!, 503);
  at(29_999);
  assert.equal(d.isEjected(a!), true, "second ejection lasts 20s");
  at(30_000);
  assert.equal(d.isEjected(a!), false);
});

Deno.test("consecutiveGatewayErrors counts only 502/503/504 and local failures", () => {
  const { d, eps: [a] } = setup({ consecutive5xx: 0, consecutiveGateway: 2 });
  d.record(a!, 500);
  d.record(a!, 500);
  assert.equal(d.isEjected(a!), false);
  d.record(a!, 502);
  d.record(a!, 0);
  assert.equal(d.isEjected(a!), true);
});

Deno.test("maxEjectionPercent bounds ejections; minHealthPercent turns them off (panic)", () => {
  const { d, eps } = setup({ maxEjectionPercent: 50 }, 4);
  for (const e of eps) for (let i = 0; i < 3; i++) d.record(e, 503);
  assert.equal(d.ejectedCount, 2, "at most half of 4");
  const p = setup({ minHealthPercent: 60 }, 3);
  for (let i = 0; i < 3; i++) p.d.record(p.eps[0]!, 503);
  assert.notEqual(p.d.filter(), undefined, "2 of 3 healthy (67%) >= 60%");
  for (let i = 0; i < 3; i++) p.d.record(p.eps[1]!, 503);
  assert.equal(p.d.filter(), undefined, "1 of 3 healthy (33%) < 60%: all endpoints used");
});

/**
 * One conformance suite run against every load balancer: each must spread by
 * weight, avoid an excluded endpoint when another exists, and handle a single
 * or empty endpoint list. Policy-specific behaviour follows.
 */
import assert from "node:assert/strict";
import type { Cluster, Endpoint } from "../config/runtime.ts";
import { createBalancer } from "./balance.ts";

function ep(address: string, weight = 1): Endpoint {
  return {
    address,
    port: 80,
    weight,
    labels: {},
    serviceAccount: undefined,
    workload: address,
    namespace: "default",
  };
}

function cluster(lb: Cluster["lb"], endpoints: Endpoint[]): Cluster {
  return {
    name: "outbound|80||svc",
    serviceHost: "svc",
    serviceName: "svc",
    namespace: "default",
    port: 80,
    subset: "",
    protocol: "HTTP",
    lb,
    endpoints,
    passthrough: false,
  };
}

// A seeded generator so that the suite is repeatable.
function seeded(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
}

for (const lb of ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] as const) {
  Deno.test(`${lb}: spreads by weight`, () => {
    const a = ep("a", 3);
    const b = ep("b", 1);
    const bal = createBalancer(cluster(lb, [a, b]), seeded(7));
    const n = 4000;
    let hitsA = 0;
    for (let i = 0; i < n; i++) if (bal.pick() === a) hitsA++;
    assert.ok(Math.abs(hitsA / n - 0.75) < 0.04, `${lb}: share of a was ${hitsA / n}`);
  });

  Deno.test(`${lb}: avoids the excluded endpoint when another exists`, () => {
    const a = ep("a");
    const b = ep("b");
    const bal = createBalancer(cluster(lb, [a, b]), seeded(3));
    for (let i = 0; i < 200; i++) assert.equal(bal.pick(a), b);
    const single = createBalancer(cluster(lb, [a]), seeded(3));
    assert.equal(single.pick(a), a, "a single endpoint is still used");
  });

  Deno.test(`${lb}: no endpoints gives undefined`, () => {
    assert.equal(createBalancer(cluster(lb, []), seeded(1)).pick(), undefined);
  });
}

Deno.test("ROUND_ROBIN interleaves weighted endpoints", () => {
  const a = ep("a", 2);
  const b = ep("b", 1);
  const bal = createBalancer(cluster("ROUND_ROBIN", [a, b]), () => 0);
  const seq = Array.from({ length: 6 }, () => bal.pick()!.address).join("");
  assert.equal(seq, "abaaba");
});

Deno.test("LEAST_REQUEST prefers the endpoint with fewer active requests", () => {
  const a = ep("a");
  const b = ep("b");
  const bal = createBalancer(cluster("LEAST_REQUEST", [a, b]), seeded(11));
  for (let i = 0; i < 5; i++) bal.begin(a);
  let hitsB = 0;
  for (let i = 0; i < 1000; i++) if (bal.pick() === b) hitsB++;
  // With two random choices, b wins whenever it is drawn at least once: about 75%.
  assert.ok(hitsB > 650, `b picked ${hitsB} of 1000`);
  for (let i = 0; i < 5; i++) bal.end(a);
});

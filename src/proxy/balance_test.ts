/**
 * One conformance suite run against every load balancer (ROUND_ROBIN, RANDOM,
 * LEAST_REQUEST, CONSISTENT_HASH): each must spread by weight, avoid an
 * excluded endpoint when another exists, pick only usable endpoints (outlier
 * ejection) and none when none is, and handle a single or empty endpoint
 * list. Policy-specific behaviour follows.
 */
import { UNKNOWN_PEER } from "../telemetry/metrics.ts";
import assert from "node:assert/strict";
import type { Cluster, Endpoint } from "../config/runtime.ts";
import { createBalancer, hashString, type PickOptions, requestHash } from "./balance.ts";

function ep(address: string, weight = 1): Endpoint {
  return {
    address,
    port: 80,
    weight,
    labels: {},
    serviceAccount: undefined,
    mtls: false,
    workload: address,
    namespace: "default",
    meta: UNKNOWN_PEER,
  };
}

type Policy = Cluster["lb"] | "CONSISTENT_HASH";

function cluster(lb: Policy, endpoints: Endpoint[]): Cluster {
  if (lb === "CONSISTENT_HASH") {
    return {
      ...cluster("ROUND_ROBIN", endpoints),
      policy: {
        limits: undefined,
        connectTimeoutMs: undefined,
        maxRequestsPerConnection: undefined,
        idleTimeoutMs: undefined,
        outlier: undefined,
        hash: { kind: "header", name: "x-user" },
        retryBudget: { percent: 20, minConcurrency: 3 },
      },
    };
  }
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

/** Per-pick options: consistent hash gets a different request key each time. */
function keyed(lb: Policy, i: number, extra: PickOptions = {}): PickOptions | undefined {
  if (lb !== "CONSISTENT_HASH") return Object.keys(extra).length === 0 ? undefined : extra;
  return { ...extra, hash: hashString(`user-${i}`) };
}

for (const lb of ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "CONSISTENT_HASH"] as const) {
  Deno.test(`${lb}: spreads by weight`, () => {
    const a = ep("a", 3);
    const b = ep("b", 1);
    const bal = createBalancer(cluster(lb, [a, b]), seeded(7));
    const n = 4000;
    let hitsA = 0;
    for (let i = 0; i < n; i++) if (bal.pick(undefined, keyed(lb, i)) === a) hitsA++;
    assert.ok(Math.abs(hitsA / n - 0.75) < 0.04, `${lb}: share of a was ${hitsA / n}`);
  });

  Deno.test(`${lb}: avoids the excluded endpoint when another exists`, () => {
    const a = ep("a");
    const b = ep("b");
    const bal = createBalancer(cluster(lb, [a, b]), seeded(3));
    for (let i = 0; i < 200; i++) assert.equal(bal.pick(a, keyed(lb, i)), b);
    const single = createBalancer(cluster(lb, [a]), seeded(3));
    assert.equal(single.pick(a, keyed(lb, 0)), a, "a single endpoint is still used");
  });

  Deno.test(`${lb}: picks only usable endpoints, none when none is`, () => {
    const a = ep("a", 5);
    const b = ep("b");
    const c = ep("c");
    const bal = createBalancer(cluster(lb, [a, b, c]), seeded(5));
    const notA = (e: Endpoint) => e !== a;
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const e = bal.pick(undefined, keyed(lb, i, { usable: notA }));
      assert.ok(e !== undefined && e !== a, "an ejected endpoint gets no traffic");
      seen.add(e.address);
    }
    assert.deepEqual([...seen].sort(), ["b", "c"], "traffic shifts to the others");
    // Usable and not excluded wins over excluded; excluded is the last resort.
    for (let i = 0; i < 50; i++) {
      assert.equal(bal.pick(b, keyed(lb, i, { usable: notA })), c);
      assert.equal(bal.pick(b, keyed(lb, i, { usable: (e) => e === b })), b);
    }
    assert.equal(bal.pick(undefined, keyed(lb, 1, { usable: () => false })), undefined);
  });

  Deno.test(`${lb}: no endpoints gives undefined`, () => {
    assert.equal(
      createBalancer(cluster(lb, []), seeded(1)).pick(undefined, keyed(lb, 0)),
      undefined,
    );
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

Deno.test("CONSISTENT_HASH: one key sticks to one endpoint; removing one endpoint moves only its keys", () => {
  const eps = ["a", "b", "c", "d"].map((x) => ep(x));
  const bal = createBalancer(cluster("CONSISTENT_HASH", eps), seeded(2));
  const before = new Map<number, Endpoint>();
  for (let i = 0; i < 500; i++) {
    const h = hashString(`k${i}`);
    const e = bal.pick(undefined, { hash: h })!;
    assert.equal(bal.pick(undefined, { hash: h }), e, "same key, same endpoint");
    before.set(h, e);
  }
  const d = eps[3]!;
  let moved = 0;
  for (const [h, e] of before) {
    const now = bal.pick(undefined, { hash: h, usable: (x) => x !== d })!;
    if (e !== d) assert.equal(now, e, "keys of the remaining endpoints stay");
    else moved++;
  }
  assert.ok(moved > 50 && moved < 200, `about a quarter of the keys moved: ${moved}`);
});

Deno.test("requestHash: header, source address, cookie (generated with its ttl when absent)", () => {
  const headers = (h: Record<string, string>) => (n: string) => h[n];
  assert.equal(
    requestHash({ kind: "header", name: "x-user" }, headers({ "x-user": "u1" }), undefined).hash,
    hashString("u1"),
  );
  assert.equal(
    requestHash({ kind: "sourceIp" }, headers({}), "::ffff:10.0.0.1").hash,
    hashString("10.0.0.1"),
  );
  const cookie = { kind: "cookie", name: "sid", path: "/", ttlMs: 60_000 } as const;
  const had = requestHash(cookie, headers({ cookie: "a=1; sid=xyz" }), undefined);
  assert.deepEqual(had, { hash: hashString("xyz"), setCookie: undefined });
  const made = requestHash(cookie, headers({}), undefined);
  assert.match(made.setCookie!, /^sid=[0-9a-f]{32}; Path=\/; Max-Age=60; HttpOnly$/);
  assert.equal(made.hash, hashString(made.setCookie!.slice(4, 36)));
  assert.equal(
    requestHash({ ...cookie, ttlMs: undefined }, headers({}), undefined).hash,
    undefined,
  );
});

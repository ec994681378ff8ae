/**
 * Tests of SPIFFE ID parsing: Istio's form is accepted and split into its
 * parts; every other shape is refused with a reason.
 */

import assert from "node:assert/strict";
import { parseSpiffeId, spiffeId, trustDomainProblem } from "./spiffe.ts";

Deno.test("parseSpiffeId splits Istio's form", () => {
  assert.deepEqual(parseSpiffeId("spiffe://cluster.local/ns/default/sa/orders"), {
    id: "spiffe://cluster.local/ns/default/sa/orders",
    trustDomain: "cluster.local",
    namespace: "default",
    serviceAccount: "orders",
  });
  assert.equal(spiffeId("td", "a", "b"), "spiffe://td/ns/a/sa/b");
});

Deno.test("parseSpiffeId refuses other shapes with a reason", () => {
  const cases: Array<[string, RegExp]> = [
    ["https://cluster.local/ns/a/sa/b", /must start with spiffe:\/\//],
    ["spiffe:///ns/a/sa/b", /trust domain is empty/],
    ["spiffe://Cluster.local/ns/a/sa/b", /lowercase/],
    ["spiffe://td:8080/ns/a/sa/b", /lowercase/],
    ["spiffe://td", /path must be/],
    ["spiffe://td/ns/a", /path must be/],
    ["spiffe://td/ns/a/sa/b/extra", /path must be/],
    ["spiffe://td/sa/b/ns/a", /path must be/],
    ["spiffe://td/ns//sa/b", /namespace ""/],
    ["spiffe://td/ns/../sa/b", /namespace "\.\."/],
    ["spiffe://td/ns/a/sa/b?x=1", /service account "b\?x=1"/],
    ["spiffe://td/ns/a/sa/b%2f", /service account/],
  ];
  for (const [raw, why] of cases) {
    assert.throws(() => parseSpiffeId(raw), why, raw);
  }
  assert.equal(trustDomainProblem("cluster.local"), undefined);
  assert.match(trustDomainProblem("a".repeat(256))!, /longer than 255/);
});

import { UNKNOWN_PEER } from "../telemetry/metrics.ts";
import assert from "node:assert/strict";
import type { Cluster, Endpoint } from "../config/runtime.ts";
import { upstreamOf } from "./target.ts";

const endpoint = (sa?: string): Endpoint => ({
  address: "10.0.0.1",
  port: 8080,
  weight: 1,
  labels: {},
  serviceAccount: sa,
  mtls: sa !== undefined,
  workload: "b",
  namespace: "default",
  meta: UNKNOWN_PEER,
});
const cluster = (tlsMode?: Cluster["tlsMode"]) => ({ namespace: "default", tlsMode }) as Cluster;

Deno.test("upstreamOf: one upstream per endpoint and cluster, with the cluster's mesh identity", () => {
  const e = endpoint("b");
  const auto = cluster();
  const first = upstreamOf(auto, e);
  assert.equal(upstreamOf(auto, e), first, "the same endpoint of the same cluster");
  assert.deepEqual(first.meshed, { serviceAccount: "b", namespace: "default" });
  // Another cluster of the same endpoint (a subset with tls DISABLE) has its own answer.
  const plain = upstreamOf(cluster("DISABLE"), e);
  assert.equal(plain.meshed, undefined);
  assert.deepEqual(upstreamOf(auto, e).meshed, first.meshed);
  const noSa = upstreamOf(cluster("ISTIO_MUTUAL"), endpoint());
  assert.deepEqual(noSa.meshed, { serviceAccount: undefined, namespace: "default" });
  assert.equal(upstreamOf(auto, endpoint()).meshed, undefined);
});

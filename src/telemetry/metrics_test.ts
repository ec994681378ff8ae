import assert from "node:assert/strict";
import { Metrics, peerMeta, type RequestRecord, UNKNOWN_PEER } from "./metrics.ts";

function rec(over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    reporter: "source",
    sourceWorkload: "a",
    sourceNamespace: "default",
    sourcePrincipal: "spiffe://cluster.local/ns/default/sa/a",
    destinationWorkload: "b",
    destinationNamespace: "default",
    destinationPrincipal: "spiffe://cluster.local/ns/default/sa/b",
    destinationService: "b.default.svc.cluster.local",
    destinationServiceName: "b",
    destinationServiceNamespace: "default",
    sourceMeta: peerMeta({ app: "a", version: "v1" }, "a"),
    destinationMeta: UNKNOWN_PEER,
    responseCode: 200,
    requestProtocol: "http",
    grpcResponseStatus: "",
    responseFlags: "-",
    connectionSecurityPolicy: "unknown",
    durationMs: 1,
    requestBytes: 100,
    responseBytes: 1000,
    ...over,
  };
}

/** istio_requests_total by (destination_workload, response_code, response_flags). */
async function totals(m: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await m.render()).split("\n")) {
    if (!line.startsWith("istio_requests_total{")) continue;
    const w = /destination_workload="([^"]*)"/.exec(line)![1];
    const c = /response_code="([^"]*)"/.exec(line)![1];
    const f = /response_flags="([^"]*)"/.exec(line)![1];
    out[`${w} ${c} ${f}`] = Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return out;
}

Deno.test("requests with other labels than the one before count in their own series", async () => {
  const m = new Metrics();
  const c = rec({ destinationWorkload: "c", destinationService: "c.default.svc.cluster.local" });
  // Equal values in new strings are the same labels.
  const b503 = rec({ responseCode: 503, responseFlags: ["U", "F"].join("") });
  for (const r of [rec(), rec(), c, rec(), b503, b503, rec(), c, rec({ responseFlags: "UF" })]) {
    m.recordRequest(r);
  }
  assert.deepEqual(await totals(m), { "b 200 -": 4, "c 200 -": 2, "b 503 UF": 2, "b 200 UF": 1 });
});

Deno.test("workload labels follow Istio: app, version, canonical service and revision, cluster", () => {
  const m = new Metrics();
  const self = peerMeta({ app: "orders", version: "v7" }, "orders-v7");
  const named = peerMeta({
    "app.kubernetes.io/name": "shop",
    "app.kubernetes.io/version": "2.1",
    "service.istio.io/canonical-name": "shop-canonical",
  }, "shop-1");
  assert.deepEqual(
    [named.app, named.version, named.canonicalService, named.canonicalRevision, named.cluster],
    ["shop", "2.1", "shop-canonical", "2.1", "unknown"],
  );
  const bare = peerMeta({}, "w");
  assert.deepEqual([bare.app, bare.version, bare.canonicalService, bare.canonicalRevision], [
    "unknown",
    "unknown",
    "w",
    "latest",
  ]);
  m.recordRequest(rec({ sourceMeta: self, destinationMeta: named }));
  // Another destination version is another series, even with the same workload name.
  m.recordRequest(
    rec({ sourceMeta: self, destinationMeta: peerMeta({ app: "shop", version: "3" }, "shop-1") }),
  );
  return m.registry.getSingleMetricAsString("istio_requests_total").then((text) => {
    const lines = text.split("\n").filter((l) => l.startsWith("istio_requests_total{"));
    assert.equal(lines.length, 2, text);
    for (
      const label of [
        'source_app="orders"',
        'source_version="v7"',
        'source_canonical_service="orders"',
        'source_canonical_revision="v7"',
        'source_cluster="unknown"',
        'destination_app="shop"',
        'destination_canonical_service="shop-canonical"',
        'destination_version="2.1"',
        'destination_cluster="unknown"',
      ]
    ) assert.ok(lines[0]!.includes(label), `${label} in ${lines[0]}`);
    assert.ok(lines[1]!.includes('destination_version="3"'), lines[1]!);
  });
});

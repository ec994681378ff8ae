import assert from "node:assert/strict";
import { Metrics, type RequestRecord } from "./metrics.ts";

function rec(over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    reporter: "source",
    sourceWorkload: "a",
    sourceNamespace: "default",
    sourcePrincipal: "cluster.local/ns/default/sa/a",
    destinationWorkload: "b",
    destinationNamespace: "default",
    destinationPrincipal: "cluster.local/ns/default/sa/b",
    destinationService: "b.default.svc.cluster.local",
    destinationServiceName: "b",
    destinationServiceNamespace: "default",
    destinationCluster: "outbound|80||b.default.svc.cluster.local",
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

import assert from "node:assert/strict";
import { loadConfigTexts } from "../config/source.ts";
import type { ConnInfo } from "./http1.ts";
import { OutboundTcpRouter } from "./tcp_proxy.ts";

const CONFIG = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db }
spec:
  hosts: [db.mesh.internal]
  addresses: [240.0.0.20]
  ports: [{ number: 5432, name: tcp, protocol: TCP }]
  resolution: STATIC
  endpoints: [{ address: 10.250.0.11, serviceAccount: db }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: legacy }
spec:
  hosts: [legacy.example]
  tcp: [{ route: [{ destination: { host: legacy.example, port: { number: 9000 } } }] }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: legacy }
spec:
  host: legacy.example
  trafficPolicy: { tls: { mode: ISTIO_MUTUAL } }
`;

function info(host: string, port: number): ConnInfo {
  return {
    remoteAddr: "10.250.0.10",
    remotePort: 40000,
    localPort: 15001,
    originalDst: { host, port },
  };
}

Deno.test("outbound TCP: a VIP goes to meshed endpoints, SNI names a host, others pass through", () => {
  const r = loadConfigTexts([{ file: "t.yaml", text: CONFIG }], "test");
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const router = new OutboundTcpRouter(() => r.config);
  const vip = router.route(info("240.0.0.20", 5432), undefined);
  assert.ok(!("refuse" in vip));
  if ("refuse" in vip) return;
  assert.equal(vip.labels.service, "db.mesh.internal");
  const up = vip.next(undefined)!;
  assert.equal(up.host, "10.250.0.11");
  assert.deepEqual(up.meshed, { serviceAccount: "db", namespace: "default" });
  // A host outside the registry that a DestinationRule puts in the mesh is dialled with mTLS too.
  const legacy = router.route(info("10.250.0.99", 9000), "legacy.example");
  if ("refuse" in legacy) throw new Error(legacy.refuse);
  const lu = legacy.next(undefined)!;
  assert.equal(lu.host, "legacy.example");
  assert.equal(lu.port, 9000);
  assert.equal(lu.meshed?.serviceAccount, undefined);
  assert.ok(lu.meshed !== undefined, "ISTIO_MUTUAL applies to a passthrough cluster");
  const other = router.route(info("10.250.0.50", 7000), undefined);
  if ("refuse" in other) throw new Error(other.refuse);
  assert.equal(other.labels.service, "PassthroughCluster");
  assert.deepEqual(other.next(undefined), { host: "10.250.0.50", port: 7000, endpoint: undefined });
});

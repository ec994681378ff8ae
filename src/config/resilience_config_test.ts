/**
 * Resilience config: DestinationRule connectionPool, outlierDetection,
 * consistentHash and retryBudget, and the remora.dev/hedge-delay annotation,
 * from YAML through validation (errors with field paths) to the compiled
 * cluster policy and route hedge (defaults and Istio's merge order).
 */
import assert from "node:assert/strict";
import { compile } from "./compile.ts";
import { validateDocuments } from "./validate.ts";
import { parseYamlDocuments } from "./yaml.ts";

function validate(text: string) {
  const parsed = parseYamlDocuments(text, "t.yaml");
  assert.deepEqual(parsed.errors, []);
  return validateDocuments(parsed.docs);
}

const SE = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc.example.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 8001}, labels: {v: a}}
  - {address: 127.0.0.1, ports: {http: 8002}, labels: {v: b}}
`;

function dr(trafficPolicy: string, subsetPolicy = ""): string {
  return `${SE}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc.example.internal
  trafficPolicy: ${trafficPolicy}
  subsets:
  - {name: a, labels: {v: a}${subsetPolicy === "" ? "" : `, trafficPolicy: ${subsetPolicy}`}}
`;
}

function errorsOf(text: string): string[] {
  const r = validate(text);
  assert.equal(r.ok, false, "config must be refused");
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
}

function clusters(text: string) {
  const r = validate(text);
  assert.ok(r.ok, r.ok ? "" : JSON.stringify(r.errors));
  return compile(r.resources, { source: "test" }).clusters;
}

Deno.test("connectionPool, outlierDetection and retryBudget compile with Istio's defaults", () => {
  const c = clusters(dr(`
    connectionPool:
      tcp: {maxConnections: 2, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 10, maxRequestsPerConnection: 5, maxRetries: 3, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 1s}
    retryBudget: {percent: 50, minRetryConcurrency: 1}`));
  const p = c.get("outbound|80||svc.example.internal")!.policy!;
  assert.deepEqual(p.limits, { maxConnections: 2, maxPending: 1, maxRequests: 10, maxRetries: 3 });
  assert.equal(p.connectTimeoutMs, 250);
  assert.equal(p.maxRequestsPerConnection, 5);
  assert.equal(p.idleTimeoutMs, 30_000);
  assert.deepEqual(p.outlier, {
    consecutive5xx: 2,
    consecutiveGateway: 0,
    intervalMs: 10_000,
    baseEjectionMs: 1000,
    maxEjectionPercent: 10,
    minHealthPercent: 0,
  });
  assert.deepEqual(p.retryBudget, { percent: 50, minConcurrency: 1 });
});

Deno.test("a cluster without a rule has no policy (the default budget applies)", () => {
  const c = clusters(SE);
  assert.equal(c.get("outbound|80||svc.example.internal")!.policy, undefined);
});

Deno.test("a subset's component replaces the rule's whole component", () => {
  const c = clusters(dr(
    `{connectionPool: {tcp: {maxConnections: 5}}, outlierDetection: {consecutive5xxErrors: 3}}`,
    `{connectionPool: {http: {http2MaxRequests: 7}}}`,
  ));
  const sub = c.get("outbound|80|a|svc.example.internal")!.policy!;
  assert.equal(sub.limits!.maxConnections, Infinity, "not inherited");
  assert.equal(sub.limits!.maxRequests, 7);
  assert.equal(sub.outlier!.consecutive5xx, 3, "outlierDetection inherited");
});

Deno.test("a port-level entry replaces connectionPool, outlierDetection and tls whole, as in Istio", () => {
  const top = `{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}},
    outlierDetection: {consecutive5xxErrors: 1}, tls: {mode: DISABLE},
    portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]}`;
  const c = clusters(dr(top, `{outlierDetection: {consecutive5xxErrors: 4}}`));
  const all = c.get("outbound|80||svc.example.internal")!;
  // The port's entry sets only loadBalancer: the rest is Istio's default, not the rule's.
  assert.equal(all.policy?.limits, undefined, "no connection limits");
  assert.equal(all.policy?.outlier, undefined, "no outlier detection");
  assert.equal(all.tlsMode, undefined, "tls not inherited: auto mTLS");
  // A subset without port-level entries overrides only what it sets.
  const a = c.get("outbound|80|a|svc.example.internal")!;
  assert.equal(a.policy?.outlier?.consecutive5xx, 4);
  assert.equal(a.policy?.limits, undefined);
  // A subset's own port-level entry replaces the subset's components too.
  const c2 = clusters(dr(
    `{connectionPool: {tcp: {maxConnections: 2}}}`,
    `{outlierDetection: {consecutive5xxErrors: 4}, tls: {mode: DISABLE},
      portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {maxConnections: 9}}}]}`,
  ));
  const a2 = c2.get("outbound|80|a|svc.example.internal")!;
  assert.equal(a2.policy?.limits?.maxConnections, 9);
  assert.equal(a2.policy?.outlier, undefined);
  assert.equal(a2.tlsMode, undefined);
});

Deno.test("consistentHash keys compile; simple and consistentHash together are refused", () => {
  const c = clusters(dr(`{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}}`));
  assert.deepEqual(c.get("outbound|80||svc.example.internal")!.policy!.hash, {
    kind: "cookie",
    name: "user",
    path: undefined,
    ttlMs: 0,
  });
  const h = clusters(dr(`{loadBalancer: {consistentHash: {httpHeaderName: X-User}}}`));
  assert.deepEqual(h.get("outbound|80||svc.example.internal")!.policy!.hash, {
    kind: "header",
    name: "x-user",
  });
  assert.deepEqual(
    errorsOf(dr(`{loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}`)),
    ["spec.trafficPolicy.loadBalancer.consistentHash: cannot be used together with simple"],
  );
});

Deno.test("unsupported resilience fields are errors naming their path", () => {
  const errs = errorsOf(dr(`
    connectionPool: {tcp: {maxConnections: 0}, http: {h2UpgradePolicy: UPGRADE, maxRetrys: 1}}
    outlierDetection: {consecutiveErrors: 5, interval: fast, maxEjectionPercent: 150}
    loadBalancer: {consistentHash: {httpQueryParameterName: u}}`));
  assert.deepEqual(errs.sort(), [
    "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: not supported",
    "spec.trafficPolicy.connectionPool.http.maxRetrys: unknown field, did you mean maxRetries?",
    "spec.trafficPolicy.connectionPool.tcp.maxConnections: expected an integer 1..2147483647, got 0",
    "spec.trafficPolicy.loadBalancer.consistentHash.httpQueryParameterName: not supported",
    "spec.trafficPolicy.outlierDetection.consecutiveErrors: not supported",
    'spec.trafficPolicy.outlierDetection.interval: expected a duration such as 250ms, 10s or 1m, got "fast"',
    "spec.trafficPolicy.outlierDetection.maxEjectionPercent: expected a percentage 0..100, got 150",
  ]);
});

const VS = (annotation: string) =>
  `${SE}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
  annotations: {${annotation}}
spec:
  hosts: [svc.example.internal]
  http:
  - name: slow
    route: [{destination: {host: svc.example.internal}}]
  - route: [{destination: {host: svc.example.internal}}]
`;

Deno.test("remora.dev/hedge-delay: one delay, or per named route", () => {
  const routes = (text: string) => {
    const r = validate(text);
    assert.ok(r.ok, r.ok ? "" : JSON.stringify(r.errors));
    return compile(r.resources, { source: "t" }).hosts.get("svc.example.internal:80")!.http;
  };
  assert.deepEqual(routes(VS(`remora.dev/hedge-delay: 50ms`)).map((r) => r.hedge), [
    { delayMs: 50 },
    { delayMs: 50 },
  ]);
  assert.deepEqual(routes(VS(`remora.dev/hedge-delay: "slow=20ms"`)).map((r) => r.hedge), [
    { delayMs: 20 },
    undefined,
  ]);
  assert.deepEqual(
    routes(VS(`kubectl.kubernetes.io/last-applied-configuration: "{}"`)).map((r) => r.hedge),
    [
      undefined,
      undefined,
    ],
  );
});

Deno.test("remora.dev annotations: unknown keys, bad values and unknown routes are errors", () => {
  const p = 'metadata.annotations["remora.dev/hedge-delay"]';
  assert.deepEqual(errorsOf(VS(`remora.dev/hedge: 50ms`)), [
    'metadata.annotations["remora.dev/hedge"]: unknown remora annotation, the known one is remora.dev/hedge-delay',
  ]);
  assert.deepEqual(errorsOf(VS(`remora.dev/hedge-delay: soon`)), [
    `${p}: expected a duration such as 250ms, 10s or 1m, got "soon"`,
  ]);
  assert.deepEqual(errorsOf(VS(`remora.dev/hedge-delay: "fast=5ms"`)), [
    `${p}: no HTTP route named "fast" in this VirtualService`,
  ]);
  assert.deepEqual(
    errorsOf(
      dr("{}").replace(
        "metadata: {name: svc}\nspec:\n  host",
        "metadata: {name: svc, annotations: {remora.dev/hedge-delay: 5ms}}\nspec:\n  host",
      ),
    ),
    [`${p}: only applies to a VirtualService`],
  );
});

Deno.test("a reload keeps an unchanged cluster's object (and its state); a changed one is new", () => {
  const text = dr(`{outlierDetection: {consecutive5xxErrors: 2}}`);
  const first = clusters(text);
  const other = `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other}
spec:
  hosts: [other.example.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.2}]
`;
  // An unrelated resource added: the same cluster object, so outlier and breaker state carry over.
  const second = clusters(text + other);
  const name = "outbound|80||svc.example.internal";
  assert.equal(second.get(name), first.get(name));
  assert.equal(
    second.get("outbound|80|a|svc.example.internal"),
    first.get("outbound|80|a|svc.example.internal"),
  );
  // The rule changed: a new cluster with the new policy.
  const third = clusters(dr(`{outlierDetection: {consecutive5xxErrors: 3}}`) + other);
  assert.notEqual(third.get(name), first.get(name));
  assert.equal(third.get(name)!.policy!.outlier!.consecutive5xx, 3);
});

import assert from "node:assert/strict";
import { loadConfigTexts } from "../config/source.ts";
import type { RuntimeConfig } from "../config/runtime.ts";
import { OutboundRouter, rewritePath } from "./outbound_router.ts";
import type { RequestView } from "./route_match.ts";

function config(text: string): RuntimeConfig {
  const r = loadConfigTexts([{ file: "t.yaml", text }], "test");
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

function req(host: string, port: number, extra: Partial<RequestView> = {}): RequestView {
  return {
    method: "GET",
    path: "/",
    host,
    authority: `${host}:${port}`,
    port,
    scheme: "http",
    header: () => undefined,
    originalDst: undefined,
    sourceIp: "127.0.0.1",
    principal: undefined,
    ...extra,
  };
}

const MESH = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db }
spec:
  hosts: [db.example.internal]
  addresses: [240.0.0.10]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 10.250.0.11 }, { address: 10.250.0.12 }]
`;

Deno.test("a known host routes to its endpoints; an unknown one passes through to its own address", () => {
  const r = new OutboundRouter({ getConfig: () => config(MESH), ownPorts: new Set([15000]) });
  const d = r.route(req("db.example.internal", 8080));
  assert.equal(d.kind, "forward");
  if (d.kind !== "forward") return;
  assert.equal(d.labels.service, "db.example.internal");
  const first = d.next(undefined)!;
  assert.ok(["10.250.0.11", "10.250.0.12"].includes(first.host));
  assert.notEqual(d.next(first)!.host, first.host, "a retry avoids the previous endpoint");
  const p = r.route(req("other.example", 80));
  assert.equal(p.kind, "forward");
  if (p.kind === "forward") {
    assert.equal(p.labels.service, "PassthroughCluster");
    assert.deepEqual(p.next(undefined), { host: "other.example", port: 80, endpoint: undefined });
  }
});

Deno.test("a redirected connection is routed by its original destination and passes through to it", () => {
  const r = new OutboundRouter({ getConfig: () => config(MESH), ownPorts: new Set() });
  // The Host header names nothing known, but the app connected to the VIP.
  const byVip = r.route(req("whatever", 80, { originalDst: { host: "240.0.0.10", port: 8080 } }));
  assert.equal(byVip.kind === "forward" && byVip.labels.service, "db.example.internal");
  // Unknown everywhere: go where the app sent it, not where the Host header points.
  const p = r.route(req("example.com", 80, { originalDst: { host: "10.250.0.99", port: 9000 } }));
  assert.equal(p.kind, "forward");
  if (p.kind === "forward") {
    assert.deepEqual(p.next(undefined), { host: "10.250.0.99", port: 9000, endpoint: undefined });
  }
});

Deno.test("REGISTRY_ONLY refuses unknown hosts with 502; own ports on loopback get 403", () => {
  const cfg = config(`${MESH}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default }
spec: { outboundTrafficPolicy: { mode: REGISTRY_ONLY } }
`);
  const r = new OutboundRouter({ getConfig: () => cfg, ownPorts: new Set([15000]) });
  const d = r.route(req("other.example", 80));
  assert.equal(d.kind, "local");
  if (d.kind === "local") {
    assert.equal(d.status, 502);
    assert.match(d.body, /other\.example:80.*REGISTRY_ONLY/);
  }
  const admin = r.route(req("127.0.0.1", 15000));
  assert.equal(admin.kind === "local" && admin.status, 403);
});

Deno.test("rewrite replaces what the match block matched, keeping the query", () => {
  // deno-lint-ignore no-explicit-any
  const route = { rewrite: { uri: "/v2" } } as any;
  const block = (uri: unknown) =>
    ({ uri, ignoreUriCase: false, headers: [], withoutHeaders: [], queryParams: [] }) as never;
  assert.equal(rewritePath(undefined, undefined, "/a?x=1"), "/a?x=1");
  assert.equal(
    rewritePath(route, block({ kind: "prefix", value: "/v1" }), "/v1/items?x=1"),
    "/v2/items?x=1",
  );
  assert.equal(rewritePath(route, block({ kind: "exact", value: "/v1" }), "/v1?x=1"), "/v2?x=1");
  assert.equal(rewritePath(route, block({ kind: "regex", re: /^\/v1/ }), "/v1/a?x=1"), "/v2?x=1");
  // No uri match: Envoy's route prefix is "/", and that is what is replaced.
  assert.equal(rewritePath(route, undefined, "/items?x=1"), "/v2items?x=1");
  assert.equal(rewritePath(route, block(undefined), "/items"), "/v2items");
});

const REWRITES = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: svc }
spec:
  hosts: [svc.example.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 10.250.0.21 }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc }
spec:
  hosts: [svc.example.internal]
  http:
  - name: two-prefixes
    match: [{ uri: { prefix: /one/ } }, { uri: { prefix: /two/ } }]
    rewrite: { uri: /new/ }
    route: [{ destination: { host: svc.example.internal } }]
  - name: icase-prefix
    match: [{ uri: { prefix: /CASE/ }, ignoreUriCase: true }]
    rewrite: { uri: /lower/ }
    route: [{ destination: { host: svc.example.internal } }]
  - name: icase-regex
    match: [{ uri: { regex: "/RX/[a-z]+" }, ignoreUriCase: true }]
    rewrite: { uri: /regex }
    route: [{ destination: { host: svc.example.internal } }]
  - name: redirect
    match: [{ uri: { prefix: /redir } }]
    redirect: { uri: /elsewhere, redirectCode: 302 }
  - name: redirect-query
    match: [{ uri: { prefix: /rq } }]
    redirect: { uri: "/fixed?a=b" }
  - name: default
    rewrite: { uri: /def }
    route: [{ destination: { host: svc.example.internal } }]
`;

Deno.test("VirtualService rewrites and redirects as Istio's: per match block, case, query", () => {
  const cfg = config(REWRITES);
  const r = new OutboundRouter({ getConfig: () => cfg, ownPorts: new Set() });
  const pathOf = (path: string) => {
    const d = r.route(req("svc.example.internal", 80, { path }));
    return d.kind === "forward" ? `${d.route?.name} ${d.path}` : `local ${d.status}`;
  };
  // Each match block's own prefix is replaced.
  assert.equal(pathOf("/one/x?q=1"), "two-prefixes /new/x?q=1");
  assert.equal(pathOf("/two/x?q=1"), "two-prefixes /new/x?q=1");
  // ignoreUriCase: the prefix matches in any case and is replaced by its length.
  assert.equal(pathOf("/case/x"), "icase-prefix /lower/x");
  assert.equal(pathOf("/CaSe/y/z"), "icase-prefix /lower/y/z");
  // ignoreUriCase does not apply to regex matches: the path is matched as sent.
  assert.equal(pathOf("/RX/abc"), "icase-regex /regex");
  assert.equal(pathOf("/rx/abc"), "default /defrx/abc");
  // A route without match blocks replaces the leading "/".
  assert.equal(pathOf("/foo/bar?z=1"), "default /deffoo/bar?z=1");
  const location = (path: string) => {
    const d = r.route(req("svc.example.internal", 80, { path }));
    return d.kind === "local"
      ? `${d.status} ${d.headers.find(([n]) => n === "location")?.[1]}`
      : "";
  };
  assert.equal(location("/redir/a?q=1"), "302 http://svc.example.internal/elsewhere?q=1");
  assert.equal(location("/redir/a"), "302 http://svc.example.internal/elsewhere");
  // A redirect uri with its own query replaces the request's.
  assert.equal(location("/rq?q=1"), "301 http://svc.example.internal/fixed?a=b");
});

Deno.test("the same host, another port, another host and a new config are each looked up again", () => {
  const one = config(MESH);
  const two = config(MESH.replace("db.example.internal", "db2.example.internal"));
  let cfg = one;
  const r = new OutboundRouter({ getConfig: () => cfg, ownPorts: new Set() });
  const service = (host: string, port: number) => {
    const d = r.route(req(host, port));
    return d.kind === "forward" ? d.labels.service : d.kind;
  };
  // A host string equal to the last one but made anew is the same host.
  const made = ["db", "example", "internal"].join(".");
  assert.deepEqual(
    [
      service("db.example.internal", 8080),
      service(made, 8080),
      // A service address matches at the service's ports only.
      service("240.0.0.10", 8080),
      service("240.0.0.10", 9999),
      service("other.example", 8080),
      service("db.example.internal", 8080),
    ],
    [
      "db.example.internal",
      "db.example.internal",
      "db.example.internal",
      "PassthroughCluster",
      "PassthroughCluster",
      "db.example.internal",
    ],
  );
  cfg = two;
  assert.equal(service("db.example.internal", 8080), "PassthroughCluster");
  assert.equal(service("db2.example.internal", 8080), "db2.example.internal");
  cfg = one;
  assert.equal(service("db.example.internal", 8080), "db.example.internal");
});

Deno.test("{} in headers, withoutHeaders and queryParams matches presence, as in Istio", () => {
  const cfg = config(`${REWRITES.split("---")[0]}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc }
spec:
  hosts: [svc.example.internal]
  http:
  - name: has-debug
    match: [{ headers: { x-debug: {} } }]
    route: [{ destination: { host: svc.example.internal } }]
  - name: no-user
    match: [{ withoutHeaders: { end-user: {} } }]
    route: [{ destination: { host: svc.example.internal } }]
  - name: query
    match: [{ queryParams: { trace: } }]
    route: [{ destination: { host: svc.example.internal } }]
  - name: rest
    route: [{ destination: { host: svc.example.internal } }]
`);
  const r = new OutboundRouter({ getConfig: () => cfg, ownPorts: new Set() });
  const routeOf = (headers: Record<string, string>, path = "/") => {
    const d = r.route(req("svc.example.internal", 80, { path, header: (n) => headers[n] }));
    return d.kind === "forward" ? d.route?.name : `local ${d.status}`;
  };
  assert.equal(routeOf({ "x-debug": "" }), "has-debug", "an empty value is present");
  assert.equal(routeOf({ "x-debug": "1", "end-user": "jason" }), "has-debug");
  assert.equal(routeOf({}), "no-user");
  assert.equal(routeOf({ "end-user": "jason" }, "/?trace"), "query");
  assert.equal(routeOf({ "end-user": "jason" }, "/?trace=1&x=2"), "query");
  assert.equal(routeOf({ "end-user": "jason" }, "/?tracer=1"), "rest");
});

Deno.test("gateways: a sidecar applies what is bound to mesh and skips gateway-only routes", () => {
  const cfg = config(`${REWRITES.split("---")[0]}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ingress-only }
spec:
  hosts: [svc.example.internal]
  gateways: [istio-system/public-gw]
  http:
  - name: ingress
    route: [{ destination: { host: svc.example.internal } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: both }
spec:
  hosts: [svc.example.internal]
  gateways: [mesh, istio-system/public-gw]
  http:
  - name: gw-match
    match: [{ uri: { prefix: /a }, gateways: [istio-system/public-gw] }]
    route: [{ destination: { host: svc.example.internal } }]
  - name: mesh-match
    match: [{ uri: { prefix: /a }, gateways: [mesh] }]
    route: [{ destination: { host: svc.example.internal } }]
  - name: rest
    route: [{ destination: { host: svc.example.internal } }]
`);
  const r = new OutboundRouter({ getConfig: () => cfg, ownPorts: new Set() });
  const routeOf = (path: string) => {
    const d = r.route(req("svc.example.internal", 80, { path }));
    return d.kind === "forward" ? d.route?.name : `local ${d.status}`;
  };
  // The gateway-only VirtualService is not the sidecar's: the one bound to mesh is used.
  assert.equal(routeOf("/a/x"), "mesh-match");
  assert.equal(routeOf("/b"), "rest");
});

/**
 * Tests of `compile`: the host and address keys a service answers to, cluster
 * names and endpoint selection, cumulative weights, load-balancer override
 * order, precompiled matchers, rewrite prefixes, retry parsing, sourceLabels
 * and the content version. Configs are YAML validated the real way first.
 */

import assert from "node:assert/strict";
import { compile, type CompileMeta } from "./compile.ts";
import type { RuntimeConfig } from "./runtime.ts";
import { formatConfigError, validateDocuments } from "./validate.ts";
import { Re2RegExp } from "./validate_fields.ts";
import { parseYamlDocuments } from "./yaml.ts";

function build(yaml: string, meta: Partial<CompileMeta> = {}, file = "t.yaml"): RuntimeConfig {
  const parsed = parseYamlDocuments(yaml, file);
  assert.deepEqual(parsed.errors, []);
  const result = validateDocuments(parsed.docs);
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  return compile(result.resources, { source: file, ...meta });
}

const SE = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  addresses: [240.0.0.1]
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9443, name: grpc, protocol: GRPC, targetPort: 8443}
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {app: reviews, version: v1}}
  - {address: 10.0.0.2, labels: {app: reviews, version: v2}, ports: {http: 8080}, weight: 5}
  - {address: 10.0.0.3, labels: {version: v2, zone: b}, serviceAccount: reviews-sa}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v2b, labels: {version: v2, zone: b}}
  - {name: none, labels: {version: v9}}
`;

Deno.test("compile: a ServiceEntry answers to its FQDN, short names and VIPs; endpoint IPs name it", () => {
  const c = build(SE);
  const at9080 = c.hosts.get("reviews.default.svc.cluster.local:9080");
  const at9443 = c.hosts.get("reviews.default.svc.cluster.local:9443");
  assert.ok(at9080 !== undefined && at9443 !== undefined && at9080 !== at9443);
  const table: Array<[key: string, want: typeof at9080 | undefined]> = [
    ["reviews.default.svc.cluster.local", at9080], // host alone: first declared port
    ["reviews", at9080],
    ["reviews:9080", at9080],
    ["reviews:9443", at9443],
    ["reviews.default", at9080],
    ["reviews.default:9443", at9443],
    ["reviews.default.svc", at9080],
    ["reviews.default.svc:9080", at9080],
    ["reviews:1234", undefined],
    ["ratings", undefined],
  ];
  for (const [key, want] of table) assert.equal(c.hosts.get(key), want, key);
  const addrs: Array<[key: string, want: typeof at9080 | undefined]> = [
    ["240.0.0.1:9080", at9080],
    ["240.0.0.1:9443", at9443],
    ["240.0.0.1", at9080],
    ["10.0.0.1:9080", undefined], // endpoints are not VIPs
    ["10.0.0.9", undefined],
  ];
  for (const [key, want] of addrs) assert.equal(c.addresses.get(key), want, key);
  // Endpoint addresses, at the endpoint's own port, name their service.
  const endpoints: Array<[key: string, want: typeof at9080 | undefined]> = [
    ["10.0.0.1:9080", at9080],
    ["10.0.0.1:8443", at9443], // endpoint IP at its target port
    ["10.0.0.2:8080", at9080], // endpoint IP at its named port
    ["10.0.0.3", undefined], // never without a port
    ["10.0.0.9:9080", undefined],
  ];
  for (const [key, want] of endpoints) assert.equal(c.endpointAddresses.get(key), want, key);
  assert.equal(at9080.serviceName, "reviews");
  assert.equal(at9080.serviceHost, "reviews.default.svc.cluster.local");
  assert.equal(at9080.virtualService, undefined);
  assert.equal(
    at9080.http[0]!.clusters[0]!.cluster.name,
    "outbound|9080||reviews.default.svc.cluster.local",
  );
  assert.equal(at9080.tcp!.clusters[0]!.cluster, at9080.http[0]!.clusters[0]!.cluster);
  assert.equal(c.outboundTrafficPolicy, "ALLOW_ANY");
});

Deno.test("compile: a bare short name is the workload's namespace's service; full names win", () => {
  const two = SE.split("---")[0]! + "---" +
    SE.split("---")[0]!.replace(
      "metadata: {name: reviews}",
      "metadata: {name: reviews, namespace: prod}",
    )
      .replace("240.0.0.1", "240.0.0.2");
  const inProd = build(two, { namespace: "prod" });
  assert.equal(inProd.hosts.get("reviews")?.namespace, "prod");
  assert.equal(inProd.hosts.get("reviews.default")?.namespace, "default");
  const inDefault = build(two);
  assert.equal(inDefault.hosts.get("reviews")?.namespace, "default");
  // From a third namespace the bare name is nobody's (Kubernetes DNS would not find it either).
  const inOther = build(two, { namespace: "other" });
  assert.equal(inOther.hosts.get("reviews"), undefined);
  assert.equal(inOther.hosts.get("reviews.prod")?.namespace, "prod");
});

Deno.test("compile: subset clusters select endpoints whose labels contain the subset's", () => {
  const c = build(SE);
  const table: Array<[cluster: string, addresses: string[]]> = [
    ["outbound|9080||reviews.default.svc.cluster.local", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]],
    ["outbound|9080|v1|reviews.default.svc.cluster.local", ["10.0.0.1"]],
    ["outbound|9080|v2|reviews.default.svc.cluster.local", ["10.0.0.2", "10.0.0.3"]],
    ["outbound|9443|v2b|reviews.default.svc.cluster.local", ["10.0.0.3"]],
    ["outbound|9080|none|reviews.default.svc.cluster.local", []],
  ];
  for (const [name, addresses] of table) {
    const cl = c.clusters.get(name);
    assert.ok(cl !== undefined, name);
    assert.deepEqual(cl.endpoints.map((e) => e.address), addresses, name);
    assert.equal(cl.passthrough, false);
  }
  const all = c.clusters.get("outbound|9080||reviews.default.svc.cluster.local")!;
  assert.deepEqual(
    all.endpoints.map((e) => [e.port, e.weight, e.workload, e.serviceAccount, e.namespace]),
    [
      [9080, 1, "reviews", undefined, "default"],
      [8080, 5, "reviews", undefined, "default"],
      [9080, 1, "10.0.0.3", "reviews-sa", "default"],
    ],
  );
  const grpc = c.clusters.get("outbound|9443||reviews.default.svc.cluster.local")!;
  assert.deepEqual(grpc.endpoints.map((e) => e.port), [8443, 8443, 8443]);
  assert.equal(grpc.protocol, "GRPC");
});

Deno.test("compile: DNS resolution without endpoints uses the host itself; NONE is passthrough", () => {
  const c = build(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: google}
spec:
  hosts: [www.googleapis.com]
  ports: [{number: 443, name: https, protocol: http}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http}]
`);
  const g = c.clusters.get("outbound|443||www.googleapis.com")!;
  assert.deepEqual(g.endpoints.map((e) => [e.address, e.port]), [["www.googleapis.com", 443]]);
  assert.equal(g.protocol, "HTTP");
  assert.equal(c.hosts.get("www.googleapis.com:443")?.serviceName, "www.googleapis.com");
  const w = c.clusters.get("outbound|80||*.example.com")!;
  assert.equal(w.passthrough, true);
  assert.deepEqual(w.endpoints, []);
  assert.deepEqual(c.wildcards.map((x) => [x.suffix, x.port]), [[".example.com", 80], [
    ".example.com",
    undefined,
  ]]);
});

const VS_SPLIT = (weights: number[]) => `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
${
  weights.map((w, i) =>
    `    - {destination: {host: reviews, subset: ${["v1", "v2", "v2b"][i]}}, weight: ${w}}`
  ).join("\n")
}
`;

Deno.test("compile: cumulative weight tables", () => {
  const table: Array<[weights: number[], cumulative: number[]]> = [
    [[90, 10], [90, 100]],
    [[50, 25, 25], [50, 75, 100]],
    [[100, 0], [100, 100]],
    [[0, 100], [0, 100]],
  ];
  for (const [weights, cumulative] of table) {
    const c = build(SE + "---" + VS_SPLIT(weights));
    const route = c.hosts.get("reviews:9080")!.http[0]!;
    assert.deepEqual(route.cumulative, cumulative, weights.join(","));
    assert.equal(route.totalWeight, 100);
    assert.deepEqual(route.clusters.map((w) => w.weight), weights);
    assert.deepEqual(
      route.clusters.map((w) => w.cluster.subset),
      ["v1", "v2", "v2b"].slice(0, weights.length),
    );
  }
  const single = build(SE).hosts.get("reviews:9443")!.http[0]!;
  assert.deepEqual([single.cumulative, single.totalWeight], [[100], 100]);
});

Deno.test("compile: a VirtualService on a registry host routes each port to that port's clusters", () => {
  const c = build(SE + "---" + VS_SPLIT([90, 10]));
  const v = c.hosts.get("reviews:9443")!;
  assert.equal(v.virtualService, "default/reviews");
  assert.deepEqual(v.http[0]!.clusters.map((w) => w.cluster.name), [
    "outbound|9443|v1|reviews.default.svc.cluster.local",
    "outbound|9443|v2|reviews.default.svc.cluster.local",
  ]);
  assert.equal(v.tcp, undefined, "no tcp routes in the VirtualService");
  assert.equal(c.hosts.get("reviews"), c.hosts.get("reviews:9080"));
});

Deno.test("compile: a VirtualService host without a registry entry gets passthrough clusters", () => {
  const c = build(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  http:
  - match: [{port: 8080}]
    route: [{destination: {host: backend.example.com, port: {number: 9000}}}]
  - route: [{destination: {host: api.example.com}}]
  tcp:
  - route: [{destination: {host: db.example.com, port: {number: 5432}}}]
`);
  const any = c.hosts.get("api.example.com")!;
  assert.equal(any.virtualService, "default/api");
  assert.deepEqual(any.http.map((r) => r.clusters[0]!.cluster.name), [
    "outbound|9000||backend.example.com",
    "outbound|0||api.example.com", // port 0: the request's port
  ]);
  assert.equal(any.http[0]!.matches[0]!.port, 8080, "the proxy checks the port");
  const at8080 = c.hosts.get("api.example.com:8080")!;
  assert.deepEqual(at8080.http.map((r) => r.clusters[0]!.cluster.name), [
    "outbound|9000||backend.example.com",
    "outbound|8080||api.example.com",
  ]);
  const pass = c.clusters.get("outbound|0||api.example.com")!;
  assert.deepEqual([pass.passthrough, pass.endpoints.length, pass.protocol], [true, 0, "UNKNOWN"]);
  assert.equal(any.tcp!.clusters[0]!.cluster.name, "outbound|5432||db.example.com");
});

const LB_CASES: Array<
  { name: string; policy: string; subsetPolicy: string; subset: string; port: number; want: string }
> = [
  { name: "default", policy: "", subsetPolicy: "", subset: "", port: 9080, want: "ROUND_ROBIN" },
  {
    name: "UNSPECIFIED",
    policy: "{loadBalancer: {simple: UNSPECIFIED}}",
    subsetPolicy: "",
    subset: "",
    port: 9080,
    want: "ROUND_ROBIN",
  },
  {
    name: "rule",
    policy: "{loadBalancer: {simple: RANDOM}}",
    subsetPolicy: "",
    subset: "v1",
    port: 9080,
    want: "RANDOM",
  },
  {
    name: "rule port level beats rule",
    policy:
      "{loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 9443}, loadBalancer: {simple: LEAST_REQUEST}}]}",
    subsetPolicy: "",
    subset: "",
    port: 9443,
    want: "LEAST_REQUEST",
  },
  {
    name: "rule port level applies to its port only",
    policy:
      "{loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 9443}, loadBalancer: {simple: LEAST_REQUEST}}]}",
    subsetPolicy: "",
    subset: "",
    port: 9080,
    want: "RANDOM",
  },
  {
    name: "rule port level without loadBalancer does not inherit",
    policy: "{loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 9080}}]}",
    subsetPolicy: "",
    subset: "",
    port: 9080,
    want: "ROUND_ROBIN",
  },
  {
    name: "subset beats rule and rule port level",
    policy:
      "{loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]}",
    subsetPolicy: "{loadBalancer: {simple: PASSTHROUGH}}",
    subset: "v1",
    port: 9080,
    want: "PASSTHROUGH",
  },
  {
    name: "subset port level beats subset",
    policy: "{loadBalancer: {simple: RANDOM}}",
    subsetPolicy:
      "{loadBalancer: {simple: PASSTHROUGH}, portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]}",
    subset: "v1",
    port: 9080,
    want: "LEAST_REQUEST",
  },
  {
    name: "subset policy without loadBalancer keeps the rule's",
    policy: "{loadBalancer: {simple: RANDOM}}",
    subsetPolicy:
      "{portLevelSettings: [{port: {number: 9443}, loadBalancer: {simple: LEAST_REQUEST}}]}",
    subset: "v1",
    port: 9080,
    want: "RANDOM",
  },
  {
    name: "subset policy applies to its subset only",
    policy: "{loadBalancer: {simple: RANDOM}}",
    subsetPolicy: "{loadBalancer: {simple: PASSTHROUGH}}",
    subset: "v2",
    port: 9080,
    want: "RANDOM",
  },
];

for (const c of LB_CASES) {
  Deno.test(`compile: load balancer override order: ${c.name}`, () => {
    const dr = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
${c.policy === "" ? "" : `  trafficPolicy: ${c.policy}\n`}  subsets:
  - {name: v1, labels: {version: v1}${
      c.subsetPolicy === "" ? "" : `, trafficPolicy: ${c.subsetPolicy}`
    }}
  - {name: v2, labels: {version: v2}}
`;
    const config = build(SE.split("---")[0] + "---" + dr);
    const cl = config.clusters.get(
      `outbound|${c.port}|${c.subset}|reviews.default.svc.cluster.local`,
    );
    assert.equal(cl?.lb, c.want);
  });
}

const ROUTES = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - uri: {regex: "/api/v[0-9]+"}
      headers: {End-User: {exact: jason}, X-Trace: {prefix: t}}
      queryParams: {Debug: {regex: "1|true"}}
      method: {exact: GET}
    - uri: {prefix: /API}
      ignoreUriCase: true
    route: [{destination: {host: reviews, subset: v2}, headers: {request: {set: {X-Canary: "yes"}}}}]
    rewrite: {uri: /v2}
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset,retriable-status-codes,503,409"}
    fault: {delay: {fixedDelay: 100ms, percentage: {value: 10}}}
    headers: {request: {set: {X-A: "1"}, add: {X-B: "2"}, remove: [X-C]}, response: {remove: [Server]}}
  - name: prefix
    match: [{uri: {prefix: /old}}, {uri: {prefix: /old}, method: {exact: POST}}]
    route: [{destination: {host: reviews, subset: v1}}]
    rewrite: {uri: /new}
    retries: {attempts: 2}
  - name: mixed
    match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
    route: [{destination: {host: reviews, subset: v1}}]
    rewrite: {uri: /c}
  - name: exact
    match: [{uri: {exact: /x}}]
    route: [{destination: {host: reviews, subset: v1}}]
    rewrite: {uri: /y, authority: other}
    retries: {attempts: 0}
  - name: redirect
    match: [{uri: {exact: /moved}}]
    redirect: {uri: /here}
  - name: canary-source
    match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: port-9443-only
    match: [{port: 9443}]
    route: [{destination: {host: reviews, subset: v2}}]
  - directResponse: {status: 418}
`;

Deno.test("compile: matchers are precompiled; header names lower-cased", () => {
  const c = build(SE + "---" + ROUTES);
  const route = c.hosts.get("reviews:9080")!.http[0]!;
  const [m0, m1] = route.matches;
  assert.ok(m0?.uri?.kind === "regex");
  assert.ok(m0.uri.re instanceof Re2RegExp);
  assert.equal(m0.uri.source, "/api/v[0-9]+");
  const full: Array<[string, boolean]> = [["/api/v2", true], ["/api/v2/x", false], [
    "x/api/v2",
    false,
  ]];
  for (const [path, want] of full) {
    assert.equal(m0.uri.re.test(path), want, `RE2 full match of ${path}`);
  }
  assert.deepEqual(m0.headers.map(([n, m]) => [n, m.kind]), [["end-user", "exact"], [
    "x-trace",
    "prefix",
  ]]);
  assert.deepEqual(
    m0.queryParams.map(([n]) => n),
    ["Debug"],
    "query parameter names keep their case",
  );
  assert.deepEqual(m0.method, { kind: "exact", value: "GET" });
  assert.deepEqual([m1?.uri, m1?.ignoreUriCase], [{ kind: "prefix", value: "/api" }, true]);
  // The same compiled objects are reused by every lookup.
  assert.equal(c.hosts.get("reviews")!.http[0]!.matches[0], m0);
  assert.deepEqual(route.requestHeaders, {
    set: [["x-a", "1"]],
    add: [["x-b", "2"]],
    remove: ["x-c"],
  });
  assert.deepEqual(route.responseHeaders, { set: [], add: [], remove: ["server"] });
  assert.deepEqual(route.clusters[0]!.requestHeaders, {
    set: [["x-canary", "yes"]],
    add: [],
    remove: [],
  });
  assert.equal(route.timeoutMs, 2000);
  assert.deepEqual(route.fault, { delay: { ms: 100, percentage: 10 } });
});

Deno.test("compile: rewrites keep their uri and authority", () => {
  const c = build(SE + "---" + ROUTES);
  const http = c.hosts.get("reviews:9080")!.http;
  const table: Array<[name: string, rewrite: unknown]> = [
    ["jason", { uri: "/v2" }],
    ["prefix", { uri: "/new" }],
    ["mixed", { uri: "/c" }],
    ["exact", { uri: "/y", authority: "other" }],
    ["redirect", undefined],
  ];
  for (const [name, rewrite] of table) {
    assert.deepEqual(http.find((r) => r.name === name)?.rewrite, rewrite, name);
  }
});

Deno.test("compile: retry policies parse retryOn into flags and codes", () => {
  const c = build(SE + "---" + ROUTES);
  const http = c.hosts.get("reviews:9080")!.http;
  const jason = http.find((r) => r.name === "jason")!.retry!;
  assert.deepEqual(
    { ...jason, statusCodes: [...jason.statusCodes] },
    {
      attempts: 3,
      perTryTimeoutMs: 500,
      on5xx: true,
      onGatewayError: false,
      onReset: true,
      onConnectFailure: false,
      onRetriable4xx: false,
      onRefusedStream: false,
      statusCodes: [503, 409],
      grpcCodes: new Set(),
    },
  );
  const dflt = http.find((r) => r.name === "prefix")!.retry!;
  assert.deepEqual(
    [dflt.attempts, dflt.onConnectFailure, dflt.onRefusedStream, dflt.on5xx, [...dflt.statusCodes]],
    [2, true, true, false, [503]],
    "Istio's default retryOn",
  );
  assert.equal(
    http.find((r) => r.name === "exact")!.retry,
    undefined,
    "attempts 0 disables retries",
  );
  assert.deepEqual(http.find((r) => r.name === "redirect")!.redirect, { uri: "/here", code: 301 });
  const last = http[http.length - 1]!;
  assert.deepEqual([last.directResponse, last.clusters, last.cumulative, last.totalWeight], [
    { status: 418, body: "" },
    [],
    [],
    0,
  ]);
});

Deno.test("compile: sourceLabels and ports are decided per workload and virtual host", () => {
  const names = (c: RuntimeConfig, key: string) => c.hosts.get(key)!.http.map((r) => r.name);
  const plain = build(SE + "---" + ROUTES);
  assert.deepEqual(names(plain, "reviews:9080"), [
    "jason",
    "prefix",
    "mixed",
    "exact",
    "redirect",
    "",
  ]);
  assert.deepEqual(names(plain, "reviews:9443"), [
    "jason",
    "prefix",
    "mixed",
    "exact",
    "redirect",
    "port-9443-only",
    "",
  ]);
  const fromProductpage = build(SE + "---" + ROUTES, {
    workloadLabels: { app: "productpage", version: "v1" },
  });
  assert.deepEqual(names(fromProductpage, "reviews:9080"), [
    "jason",
    "prefix",
    "mixed",
    "exact",
    "redirect",
    "canary-source",
    "",
  ]);
});

Deno.test("compile: tcp routes pick the first route whose matches apply", () => {
  const c = build(
    SE + "---" + `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  tcp:
  - match: [{port: 9443}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceLabels: {app: nobody}}]
    route: [{destination: {host: reviews, subset: v2b}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 70}
    - {destination: {host: reviews, subset: v2}, weight: 30}
`,
  );
  const at9443 = c.hosts.get("reviews:9443")!.tcp!;
  assert.deepEqual(at9443.clusters.map((w) => w.cluster.name), [
    "outbound|9443|v2|reviews.default.svc.cluster.local",
  ]);
  const at9080 = c.hosts.get("reviews:9080")!;
  assert.deepEqual(at9080.tcp!.cumulative, [70, 100]);
  assert.deepEqual(at9080.http, []);
});

Deno.test("compile: version is a content hash, independent of file names", () => {
  const a = build(SE, {}, "a.yaml");
  const b = build(SE, {}, "b.yaml");
  const changed = build(SE.replace("weight: 5", "weight: 6"), {}, "a.yaml");
  assert.match(a.version, /^[0-9a-f]{12}$/);
  assert.equal(a.version, b.version);
  assert.notEqual(a.version, changed.version);
  assert.equal(a.source, "a.yaml");
});

Deno.test("compile: outboundTrafficPolicy comes from the Sidecar", () => {
  const c = build(`
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
`);
  assert.equal(c.outboundTrafficPolicy, "REGISTRY_ONLY");
  assert.equal(c.hosts.size, 0);
});

Deno.test("compile: gRPC retryOn conditions become grpc-status codes; retries without attempts are off", () => {
  const c = build(
    SE + "---" + ROUTES.replace(
      'retryOn: "5xx,reset,retriable-status-codes,503,409"',
      'retryOn: "unavailable,cancelled,deadline-exceeded,resource-exhausted,internal,gateway-error"',
    ),
  );
  const jason = c.hosts.get("reviews:9080")!.http.find((r) => r.name === "jason")!.retry!;
  assert.deepEqual([...jason.grpcCodes].sort((a, b) => a - b), [1, 4, 8, 13, 14]);
  assert.equal(jason.onGatewayError, true);
  const off = build(
    SE + "---" + ROUTES.replace(
      'retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset,retriable-status-codes,503,409"}',
      'retries: {retryOn: "5xx"}',
    ),
  );
  assert.equal(
    off.hosts.get("reviews:9080")!.http.find((r) => r.name === "jason")!.retry,
    undefined,
  );
});

Deno.test("compile: a Sidecar or Telemetry applies from the workload's namespace or the root one only", () => {
  const sidecar = (ns: string) =>
    `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: s, namespace: ${ns} }
spec: { outboundTrafficPolicy: { mode: REGISTRY_ONLY } }
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: t, namespace: ${ns} }
spec:
  tracing: [{ providers: [], randomSamplingPercentage: 100 }]
`;
  for (
    const [ns, applies] of [["default", true], ["istio-system", true], ["other", false]] as const
  ) {
    const c = build(sidecar(ns));
    assert.equal(c.outboundTrafficPolicy, applies ? "REGISTRY_ONLY" : "ALLOW_ANY", ns);
    const tracing = c.telemetry.source.tracing;
    assert.equal(tracing?.randomSamplingPercentage, applies ? 100 : undefined, ns);
    // providers: [] is the field left out (proto3): the default providers, not none.
    if (applies) assert.equal(tracing?.providers, undefined);
  }
});

Deno.test("compile: auto mTLS per endpoint: the tlsMode label first, then serviceAccount; never to a workload whose PeerAuthentication is DISABLE", () => {
  const c = build(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, serviceAccount: a}
  - {address: 10.0.0.2}
  - {address: 10.0.0.3, serviceAccount: a, labels: {security.istio.io/tlsMode: disabled}}
  - {address: 10.0.0.4, labels: {security.istio.io/tlsMode: istio}}
  - {address: 10.0.0.5, serviceAccount: a, labels: {app: legacy}}
  - {address: 10.0.0.6, serviceAccount: a, labels: {app: metrics}, ports: {http: 9090}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy, namespace: shop}
spec:
  selector: {matchLabels: {app: legacy}}
  mtls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: metrics, namespace: shop}
spec:
  selector: {matchLabels: {app: metrics}}
  mtls: {mode: STRICT}
  portLevelMtls: {"9090": {mode: DISABLE}}
---
# Another namespace's policy says nothing about shop's workloads.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: all-off, namespace: other}
spec: {mtls: {mode: DISABLE}}
`);
  const cl = c.clusters.get("outbound|80||shop.example")!;
  assert.deepEqual(
    cl.endpoints.map((e) => [e.address, e.mtls]),
    [
      ["10.0.0.1", true],
      ["10.0.0.2", false],
      ["10.0.0.3", false],
      ["10.0.0.4", true],
      ["10.0.0.5", false],
      ["10.0.0.6", false],
    ],
  );
});

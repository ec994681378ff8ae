/**
 * The authorization matrix: AuthorizationPolicy sets, each with requests and
 * the expected decision. Covers DENY before ALLOW, ALLOW-any-match, AUDIT,
 * empty spec and `rules: [{}]`, selectors and the root namespace, every
 * source/operation field and its `not` form with exact, prefix*, *suffix and
 * "*" values, `when` keys, and Istio's rules for HTTP-only fields on opaque
 * TCP. Policies go through YAML validation as in real loading; paths are
 * normalized first, as the inbound path does, for the bypass spellings.
 */

import assert from "node:assert/strict";
import { authorize, type AuthzRequest } from "./compile_security.ts";
import { normalizePath } from "./normalize.ts";
import { tables } from "./testutil_test.ts";

const SLEEP = "cluster.local/ns/default/sa/sleep";
const ADMIN = "cluster.local/ns/ops/sa/admin";

interface Req {
  principal?: string;
  ip?: string;
  dstIp?: string;
  port?: number;
  /** Omit all three (and headers) for opaque TCP. */
  method?: string;
  path?: string;
  host?: string;
  headers?: Record<string, string>;
}

function req(r: Req): AuthzRequest {
  const out: AuthzRequest = {
    principal: r.principal,
    sourceIp: r.ip ?? "10.0.0.9",
    destinationPort: r.port ?? 8080,
  };
  if (r.dstIp !== undefined) out.destinationIp = r.dstIp;
  if (r.method !== undefined || r.path !== undefined || r.host !== undefined || r.headers) {
    const headers = Object.fromEntries(
      Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
    );
    out.http = {
      method: r.method ?? "GET",
      path: r.path ?? "/",
      host: r.host ?? "b.default.svc.cluster.local:8080",
      header: (name) => headers[name],
    };
  }
  return out;
}

const HTTP: Req = { method: "GET", path: "/" };

function policy(name: string, spec: string, ns = "default"): string {
  return `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ${name}, namespace: ${ns}}
spec:
${spec.trim().split("\n").map((l) => "  " + l).join("\n")}
---`;
}

/** One ALLOW policy with one rule (YAML of the rule's fields, indented under `- `). */
function allow(rule: string, name = "allow"): string {
  return policy(name, `action: ALLOW\nrules:\n- ${rule.trim().split("\n").join("\n  ")}`);
}

function deny(rule: string, name = "deny"): string {
  return policy(name, `action: DENY\nrules:\n- ${rule.trim().split("\n").join("\n  ")}`);
}

interface Case {
  name: string;
  yaml: string;
  labels?: Record<string, string>;
  namespace?: string;
  /** [request, allowed] pairs. */
  expect: Array<[Req, boolean]>;
}

const CASES: Case[] = [
  {
    name: "no policy: everything allowed",
    yaml: "",
    expect: [[HTTP, true], [{}, true]],
  },
  {
    name: "empty spec denies everything",
    yaml: policy("deny-all", "{}"),
    expect: [[HTTP, false], [{}, false], [{ principal: SLEEP }, false]],
  },
  {
    name: "spec left out entirely denies everything",
    yaml: `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: nothing}
---`,
    expect: [[HTTP, false]],
  },
  {
    name: "rules: [{}] allows everything",
    yaml: policy("allow-all", "rules:\n- {}"),
    expect: [[HTTP, true], [{}, true]],
  },
  {
    name: "DENY with rules [{}] denies everything, even when an ALLOW matches",
    yaml: policy("deny-all", "action: DENY\nrules:\n- {}") + policy("allow-all", "rules:\n- {}"),
    expect: [[HTTP, false], [{}, false]],
  },
  {
    name: "DENY without rules matches nothing",
    yaml: policy("deny-none", "action: DENY"),
    expect: [[HTTP, true]],
  },
  {
    name: "DENY before ALLOW",
    yaml: allow(`from: [{source: {principals: ["*"]}}]`) +
      deny(`to: [{operation: {paths: ["/admin", "/admin/*"]}}]`),
    expect: [
      [{ principal: SLEEP, path: "/" }, true],
      [{ principal: SLEEP, path: "/admin" }, false],
      [{ principal: SLEEP, path: "/admin/users" }, false],
      [{ path: "/" }, false],
    ],
  },
  {
    name: "ALLOW: any rule of any ALLOW policy suffices",
    yaml: allow(`to: [{operation: {methods: [GET]}}]`, "a1") +
      allow(`to: [{operation: {methods: [POST]}}]`, "a2"),
    expect: [
      [{ method: "GET" }, true],
      [{ method: "POST" }, true],
      [{ method: "DELETE" }, false],
      [{ method: "get" }, false],
    ],
  },
  {
    name: "AUDIT alone changes nothing",
    yaml: policy("audit", "action: AUDIT\nrules:\n- {}"),
    expect: [[HTTP, true], [{}, true]],
  },
  {
    name: "AUDIT with an ALLOW policy: the ALLOW decides",
    yaml: policy("audit", "action: AUDIT\nrules:\n- {}") +
      allow(`to: [{operation: {paths: ["/ok"]}}]`),
    expect: [[{ path: "/ok" }, true], [{ path: "/no" }, false]],
  },
  {
    name: "selector: policy for another workload does not apply",
    yaml: policy("deny-c", "selector: {matchLabels: {app: c}}\naction: DENY\nrules:\n- {}") +
      policy(
        "allow-b-get",
        "selector: {matchLabels: {app: b}}\nrules:\n- to: [{operation: {methods: [GET]}}]",
      ),
    expect: [[{ method: "GET" }, true], [{ method: "PUT" }, false]],
  },
  {
    name: "other namespace does not apply, root namespace does (with selector too)",
    yaml: policy("deny-all-other", "action: DENY\nrules:\n- {}", "other") +
      policy(
        "mesh-deny-put",
        "action: DENY\nrules:\n- to: [{operation: {methods: [PUT]}}]",
        "istio-system",
      ) +
      policy(
        "mesh-deny-b-delete",
        "selector: {matchLabels: {app: b}}\naction: DENY\nrules:\n- to: [{operation: {methods: [DELETE]}}]",
        "istio-system",
      ) +
      policy(
        "mesh-deny-c-get",
        "selector: {matchLabels: {app: c}}\naction: DENY\nrules:\n- to: [{operation: {methods: [GET]}}]",
        "istio-system",
      ),
    expect: [
      [{ method: "GET" }, true],
      [{ method: "PUT" }, false],
      [{ method: "DELETE" }, false],
    ],
  },
  {
    name: "principals: exact, prefix*, *suffix, * (authenticated only)",
    yaml: allow(`from: [{source: {principals: ["${SLEEP}"]}}]`, "exact") +
      allow(`from: [{source: {principals: ["cluster.local/ns/ops/*"]}}]`, "prefix") +
      allow(`from: [{source: {principals: ["*/sa/reader"]}}]`, "suffix"),
    expect: [
      [{ principal: SLEEP }, true],
      [{ principal: "cluster.local/ns/default/sa/sleep2" }, false],
      [{ principal: ADMIN }, true],
      [{ principal: "other.domain/ns/x/sa/reader" }, true],
      [{ principal: "cluster.local/ns/x/sa/readers" }, false],
      [{}, false],
    ],
  },
  {
    name: "principals * is any authenticated peer",
    yaml: allow(`from: [{source: {principals: ["*"]}}]`),
    expect: [[{ principal: SLEEP }, true], [{}, false], [{ principal: "" }, false]],
  },
  {
    name: "notPrincipals: plaintext (no principal) matches the not form",
    yaml: deny(`from: [{source: {notPrincipals: ["cluster.local/ns/default/*"]}}]`),
    expect: [
      [{ principal: SLEEP }, true],
      [{ principal: ADMIN }, false],
      [{}, false],
    ],
  },
  {
    name: "namespaces and notNamespaces from the SPIFFE ID",
    yaml: allow(`from: [{source: {namespaces: [default, "op*"], notNamespaces: [opsec]}}]`),
    expect: [
      [{ principal: SLEEP }, true],
      [{ principal: ADMIN }, true],
      [{ principal: "cluster.local/ns/opsec/sa/x" }, false],
      [{ principal: "cluster.local/ns/prod/sa/x" }, false],
      [{ principal: "spiffe-without-ns" }, false],
      [{}, false],
    ],
  },
  {
    name: "ipBlocks IPv4 and IPv6, notIpBlocks, IPv4-mapped peers",
    yaml: allow(
      `from: [{source: {ipBlocks: ["10.0.0.0/8", "192.168.1.7", "fd00::/8"], notIpBlocks: ["10.9.0.0/16"]}}]`,
    ),
    expect: [
      [{ ip: "10.1.2.3" }, true],
      [{ ip: "::ffff:10.1.2.3" }, true],
      [{ ip: "10.9.1.1" }, false],
      [{ ip: "192.168.1.7" }, true],
      [{ ip: "192.168.1.8" }, false],
      [{ ip: "fd12:3456::1" }, true],
      [{ ip: "fe80::1" }, false],
      [{ ip: "11.0.0.1" }, false],
      [{ ip: "not-an-ip" }, false],
    ],
  },
  {
    name: "from: any element; within a source: all fields",
    yaml: allow(`from:
- source: {principals: ["${SLEEP}"], ipBlocks: ["10.0.0.0/8"]}
- source: {namespaces: [ops]}`),
    expect: [
      [{ principal: SLEEP, ip: "10.0.0.1" }, true],
      [{ principal: SLEEP, ip: "172.16.0.1" }, false],
      [{ principal: ADMIN, ip: "172.16.0.1" }, true],
    ],
  },
  {
    name: "methods, paths (exact, prefix*, *suffix), ports, hosts and their nots",
    yaml: allow(`to:
- operation:
    methods: [GET, HEAD]
    paths: ["/api/*", "*.png", "/health"]
    notPaths: ["/api/private*"]
    ports: ["8080", "9080"]
    hosts: ["b.default.svc.cluster.local:8080", "*.example.com", "B.local"]
    notHosts: ["evil.example.com"]`),
    expect: [
      [{ method: "GET", path: "/api/x" }, true],
      [{ method: "HEAD", path: "/img/a.png" }, true],
      [{ method: "GET", path: "/health" }, true],
      [{ method: "GET", path: "/health?verbose=1" }, true],
      [{ method: "GET", path: "/healthz" }, false],
      [{ method: "GET", path: "/api/private/x" }, false],
      [{ method: "POST", path: "/api/x" }, false],
      [{ method: "GET", path: "/api/x", port: 9080 }, true],
      [{ method: "GET", path: "/api/x", port: 9090 }, false],
      [{ method: "GET", path: "/api/x", host: "www.EXAMPLE.com" }, true],
      [{ method: "GET", path: "/api/x", host: "b.local" }, true],
      [{ method: "GET", path: "/api/x", host: "evil.example.com" }, false],
      [{ method: "GET", path: "/api/x", host: "b.default.svc.cluster.local" }, false],
    ],
  },
  {
    name: "notMethods and notPorts",
    yaml: allow(`to: [{operation: {notMethods: [DELETE], notPorts: ["9000"]}}]`),
    expect: [
      [{ method: "GET" }, true],
      [{ method: "DELETE" }, false],
      [{ method: "GET", port: 9000 }, false],
    ],
  },
  {
    name: "from, to and when must all match",
    yaml: allow(`from: [{source: {principals: ["${SLEEP}"]}}]
to: [{operation: {methods: [GET]}}]
when: [{key: "request.headers[X-Version]", values: [v1, "v2*"]}]`),
    expect: [
      [{ principal: SLEEP, method: "GET", headers: { "x-version": "v1" } }, true],
      [{ principal: SLEEP, method: "GET", headers: { "x-version": "v2-beta" } }, true],
      [{ principal: SLEEP, method: "GET", headers: { "x-version": "v3" } }, false],
      [{ principal: SLEEP, method: "GET" }, false],
      [{ principal: SLEEP, method: "POST", headers: { "x-version": "v1" } }, false],
      [{ principal: ADMIN, method: "GET", headers: { "x-version": "v1" } }, false],
    ],
  },
  {
    name: "when: every condition; values and notValues",
    yaml: allow(`when:
- {key: source.principal, values: ["*"], notValues: ["${ADMIN}"]}
- {key: source.namespace, values: [default, ops]}
- {key: source.ip, values: ["10.0.0.0/8"]}
- {key: destination.port, notValues: ["9999"]}
- {key: destination.ip, values: ["10.1.0.0/16", "fd00::/8"]}`),
    expect: [
      [{ principal: SLEEP, dstIp: "10.1.0.5" }, true],
      [{ principal: SLEEP, dstIp: "fd00::5" }, true],
      [{ principal: SLEEP, dstIp: "10.2.0.5" }, false],
      [{ principal: SLEEP }, false],
      [{ principal: ADMIN, dstIp: "10.1.0.5" }, false],
      [{ principal: SLEEP, dstIp: "10.1.0.5", port: 9999 }, false],
      [{ principal: SLEEP, dstIp: "10.1.0.5", ip: "192.168.0.1" }, false],
      [{ principal: "cluster.local/ns/prod/sa/x", dstIp: "10.1.0.5" }, false],
    ],
  },
  {
    name: "when request.headers: name case-insensitive, * is presence, notValues",
    yaml: deny(`when: [{key: "request.headers[X-Debug]", values: ["*"]}]`, "d1") +
      deny(`when: [{key: "request.headers[user-agent]", notValues: ["curl/*"]}]`, "d2"),
    expect: [
      [{ headers: { "User-Agent": "curl/8.0" } }, true],
      [{ headers: { "User-Agent": "curl/8.0", "x-debug": "1" } }, false],
      // Present but empty is present (Envoy's present_match): still denied.
      [{ headers: { "User-Agent": "curl/8.0", "x-debug": "" } }, false],
      [{ headers: { "User-Agent": "wget" } }, false],
      [{ headers: {} }, false],
    ],
  },
  {
    name: "when request.headers notValues [*]: only a request without the header",
    yaml: allow(`when: [{key: "request.headers[x-internal]", notValues: ["*"]}]`),
    expect: [
      [{ headers: {} }, true],
      [{ headers: { "x-internal": "" } }, false],
      [{ headers: { "x-internal": "yes" } }, false],
    ],
  },
  {
    name: "TCP: an ALLOW rule with HTTP-only fields never matches TCP; other rules still do",
    yaml: allow(`to: [{operation: {ports: ["5432"]}}, {operation: {methods: [GET]}}]`, "mixed") +
      allow(`from: [{source: {principals: ["${ADMIN}"]}}]`, "admin"),
    expect: [
      [{ principal: SLEEP, port: 5432 }, false],
      [{ principal: SLEEP, port: 5432, method: "POST" }, true],
      [{ principal: ADMIN, port: 5432 }, true],
    ],
  },
  {
    name: "TCP: ALLOW with only HTTP-only rules denies all TCP",
    yaml: allow(`to: [{operation: {paths: ["/*"]}}]`),
    expect: [[{}, false], [{ path: "/x" }, true]],
  },
  {
    name: "TCP: ALLOW rule with a request.headers condition never matches TCP",
    yaml: allow(`when: [{key: "request.headers[x]", notValues: ["y"]}]`),
    expect: [[{}, false], [HTTP, true]],
  },
  {
    name: "TCP: a DENY rule ignores its HTTP-only fields (the rest decides, so it widens)",
    yaml: deny(`from: [{source: {principals: ["${SLEEP}"]}}]
to: [{operation: {methods: [POST], ports: ["8080"]}}]`),
    expect: [
      [{ principal: SLEEP }, false],
      [{ principal: SLEEP, port: 9000 }, true],
      [{ principal: ADMIN }, true],
      [{ principal: SLEEP, method: "GET" }, true],
      [{ principal: SLEEP, method: "POST" }, false],
    ],
  },
  {
    name: "TCP: a DENY of only HTTP-only fields denies all TCP",
    yaml: deny(`to: [{operation: {notPaths: ["/public/*"]}}]
when: [{key: "request.headers[x-internal]", values: ["1"]}]`),
    expect: [
      [{}, false],
      [{ path: "/public/a", headers: { "x-internal": "1" } }, true],
      [{ path: "/private", headers: { "x-internal": "1" } }, false],
      [{ path: "/private" }, true],
    ],
  },
  {
    name: "bypass spellings of /admin after normalization (DENY /admin, /admin/*)",
    yaml: deny(`to: [{operation: {paths: ["/admin", "/admin/*"]}}]`),
    expect: [
      [{ path: "/admin" }, false],
      [{ path: "/admin/" }, false],
      [{ path: "//admin" }, false],
      [{ path: "/./admin" }, false],
      [{ path: "/foo/../admin" }, false],
      [{ path: "/%61dmin" }, false],
      [{ path: "/admin%2F" }, false],
      [{ path: "/%2Fadmin" }, false],
      [{ path: "/%2e/admin" }, false],
      [{ path: "/foo%2F..%2Fadmin" }, false],
      [{ path: "/\\admin" }, false],
      [{ path: "/%5Cadmin" }, false],
      [{ path: "/admin?x=1" }, false],
      [{ path: "/admin/../admin/x" }, false],
      // Not the same path to Istio either (documented): case and ";" parameters.
      [{ path: "/ADMIN" }, true],
      [{ path: "/admin;x" }, true],
      [{ path: "/administrator" }, true],
    ],
  },
  {
    name: "a prefix DENY also catches ;parameters (the documented remedy)",
    yaml: deny(`to: [{operation: {paths: ["/admin*"]}}]`),
    expect: [[{ path: "/admin;x" }, false], [{ path: "/%61dmin;x=1/" }, false], [
      { path: "/a" },
      true,
    ]],
  },
  {
    name: "ALLOW-list on paths fails closed for odd spellings",
    yaml: allow(`to: [{operation: {paths: ["/public/*"]}}]`),
    expect: [
      [{ path: "/public/a" }, true],
      [{ path: "/public/../admin" }, false],
      [{ path: "/public%2F..%2Fadmin" }, false],
      [{ path: "/PUBLIC/a" }, false],
    ],
  },
];

for (const c of CASES) {
  Deno.test(`authorize: ${c.name}`, () => {
    const t = tables(c.yaml, {
      labels: c.labels ?? { app: "b" },
      namespace: c.namespace ?? "default",
    });
    for (const [r, allowed] of c.expect) {
      const request = req(r);
      if (request.http !== undefined) {
        const n = normalizePath(request.http.path);
        assert.ok(n.ok, `path ${request.http.path} must normalize`);
        request.http.path = n.path;
      }
      const d = authorize(t, request);
      assert.equal(d.allowed, allowed, `${JSON.stringify(r)}: ${d.reason}`);
    }
  });
}

Deno.test("authorize: decision names the policy and rule, AUDIT names are listed", () => {
  const t = tables(
    policy("audit-get", "action: AUDIT\nrules:\n- to: [{operation: {methods: [GET]}}]") +
      policy("audit-all", "action: AUDIT\nrules:\n- {}") +
      deny(`to: [{operation: {paths: ["/admin"]}}]`, "no-admin") +
      allow(`to: [{operation: {methods: [GET]}}]`, "get-only"),
  );
  assert.deepEqual(authorize(t, req({ method: "GET", path: "/admin" })), {
    allowed: false,
    reason: "denied by DENY policy default/no-admin rule 0",
    policy: "default/no-admin",
    audit: ["default/audit-get", "default/audit-all"],
  });
  assert.deepEqual(authorize(t, req({ method: "POST", path: "/" })), {
    allowed: false,
    reason: "no ALLOW policy rule matched",
    audit: ["default/audit-all"],
  });
  const ok = authorize(t, req({ method: "GET", path: "/" }));
  assert.equal(ok.allowed, true);
  assert.equal(ok.policy, "default/get-only");
  assert.equal(ok.reason, "allowed by ALLOW policy default/get-only rule 0");
});

Deno.test("authorize: istio.io/dry-run policies decide nothing and report what they would decide", () => {
  const dry = (name: string, spec: string) =>
    policy(name, spec).replace(
      `metadata: {name: ${name}, namespace: default}`,
      `metadata: {name: ${name}, namespace: default, annotations: {"istio.io/dry-run": "True"}}`,
    );
  const t = tables(
    dry("try-no-admin", `action: DENY\nrules:\n- to: [{operation: {paths: ["/admin*"]}}]`) +
      dry("try-public-only", `action: ALLOW\nrules:\n- to: [{operation: {paths: ["/public*"]}}]`) +
      deny(`to: [{operation: {paths: ["/secret"]}}]`, "no-secret"),
  );
  // Enforced: only no-secret. The dry-run ALLOW does not turn on deny-by-default.
  assert.deepEqual(authorize(t, req({ path: "/admin/x" })), {
    allowed: true,
    reason: "no ALLOW policy applies",
    audit: [],
    dryRun: [
      { action: "DENY", allowed: false, policy: "default/try-no-admin" },
      { action: "ALLOW", allowed: false },
    ],
  });
  assert.deepEqual(authorize(t, req({ path: "/public/a" })).dryRun, [
    { action: "DENY", allowed: true },
    { action: "ALLOW", allowed: true, policy: "default/try-public-only" },
  ]);
  const secret = authorize(t, req({ path: "/secret" }));
  assert.equal(secret.allowed, false);
  assert.equal(secret.policy, "default/no-secret");
  assert.equal(secret.dryRun?.length, 2);
  // "false" is an ordinary, enforced policy; without dry-run policies there is no verdict.
  const enforced = tables(
    policy("p", `action: DENY\nrules:\n- {}`).replace(
      "metadata: {name: p, namespace: default}",
      `metadata: {name: p, namespace: default, annotations: {"istio.io/dry-run": "false"}}`,
    ),
  );
  const d = authorize(enforced, req(HTTP));
  assert.equal(d.allowed, false);
  assert.equal(d.dryRun, undefined);
});

Deno.test("authorize: no audit policies → shared decisions, no allocation per request", () => {
  const t = tables(allow(`to: [{operation: {methods: [GET]}}]`));
  const a = authorize(t, req({ method: "GET" }));
  const b = authorize(t, req({ method: "GET" }));
  assert.equal(a, b);
  assert.deepEqual(a.audit, []);
  assert.equal(authorize(t, req({ method: "PUT" })), authorize(t, req({ method: "PUT" })));
});

Deno.test("authorize: a policy in a custom root namespace is mesh-wide", () => {
  const yaml = policy("deny-all", "action: DENY\nrules:\n- {}", "mesh-root");
  assert.equal(authorize(tables(yaml), req(HTTP)).allowed, true);
  const t = tables(yaml, {}, { rootNamespace: "mesh-root" });
  assert.equal(authorize(t, req(HTTP)).allowed, false);
});

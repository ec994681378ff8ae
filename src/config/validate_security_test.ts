/**
 * Validation of PeerAuthentication and AuthorizationPolicy: a table of bad
 * documents, each with the exact field paths of its errors and a fragment of
 * each message, then good documents and their typed output.
 */

import assert from "node:assert/strict";
import type { AuthorizationPolicy, PeerAuthentication } from "./model.ts";
import { validateDocuments, type ValidationResult } from "./validate.ts";
import { parseYamlDocuments } from "./yaml.ts";

function validate(text: string): ValidationResult {
  const parsed = parseYamlDocuments(text, "f.yaml");
  assert.deepEqual(parsed.errors, [], "test YAML must parse");
  return validateDocuments(parsed.docs);
}

function ap(spec: string, apiVersion = "security.istio.io/v1"): string {
  return `
apiVersion: ${apiVersion}
kind: AuthorizationPolicy
metadata: {name: p, namespace: default}
spec:
${spec.trim().split("\n").map((l) => "  " + l).join("\n")}
`;
}

function pa(spec: string): string {
  return `
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: p, namespace: default}
spec:
${spec.trim().split("\n").map((l) => "  " + l).join("\n")}
`;
}

const BAD: Array<{ name: string; yaml: string; errors: Array<[path: string, message: string]> }> = [
  {
    name: "istio.io/dry-run that is not true or false",
    yaml: ap("{}").replace(
      "metadata: {name: p, namespace: default}",
      `metadata: {name: p, namespace: default, annotations: {"istio.io/dry-run": "yes"}}`,
    ),
    errors: [['metadata.annotations["istio.io/dry-run"]', 'expected "true" or "false", got "yes"']],
  },
  {
    name: "wrong apiVersion group",
    yaml: ap("{}", "networking.istio.io/v1"),
    errors: [["apiVersion", "expected security.istio.io/v1 or v1beta1"]],
  },
  {
    name: "CUSTOM action and provider",
    yaml: ap("action: CUSTOM\nprovider: {name: ext}"),
    errors: [
      ["spec.provider", "not supported"],
      ["spec.action", "CUSTOM is not supported"],
    ],
  },
  {
    name: "unknown action and targetRef",
    yaml: ap("action: PERMIT\ntargetRef: {kind: Gateway, name: g}"),
    errors: [
      ["spec.targetRef", "not supported"],
      ["spec.action", "expected one of ALLOW, DENY, AUDIT"],
    ],
  },
  {
    name: "unknown fields everywhere, with their paths",
    yaml: ap(`rules:
- from: [{source: {principal: [x]}}]
  to: [{operation: {method: [GET]}}]
  wehn: []`),
    errors: [
      ["spec.rules[0].wehn", "unknown field, did you mean when?"],
      ["spec.rules[0].from[0].source.principal", "unknown field, did you mean principals?"],
      ["spec.rules[0].to[0].operation.method", "unknown field, did you mean methods?"],
    ],
  },
  {
    name: "requestPrincipals, remoteIpBlocks, serviceAccounts",
    yaml: ap(`rules:
- from:
  - source: {requestPrincipals: ["*"], remoteIpBlocks: [1.2.3.4], serviceAccounts: [a]}`),
    errors: [
      ["spec.rules[0].from[0].source.requestPrincipals", "no request (JWT) authentication"],
      ["spec.rules[0].from[0].source.remoteIpBlocks", "X-Forwarded-For"],
      ["spec.rules[0].from[0].source.serviceAccounts", "not supported"],
    ],
  },
  {
    name: "bad CIDRs",
    yaml: ap(`rules:
- from: [{source: {ipBlocks: [10.0.0.0/33, "1.2.3"], notIpBlocks: ["fd00::/200"]}}]
  when: [{key: destination.ip, values: [nope]}]`),
    errors: [
      ["spec.rules[0].from[0].source.ipBlocks[0]", "invalid prefix length"],
      ["spec.rules[0].from[0].source.ipBlocks[1]", "expected an IP address or CIDR"],
      ["spec.rules[0].from[0].source.notIpBlocks[0]", "expected 0..128"],
      ["spec.rules[0].when[0].values[0]", "expected an IP address or CIDR"],
    ],
  },
  {
    name: "bad ports",
    yaml: ap(`rules:
- to: [{operation: {ports: ["http", "70000"], notPorts: ["-1"]}}]
  when: [{key: destination.port, values: ["8o80"]}]`),
    errors: [
      ["spec.rules[0].to[0].operation.ports[0]", 'expected a port number 0..65535 such as "8080"'],
      ["spec.rules[0].to[0].operation.ports[1]", "expected a port number"],
      ["spec.rules[0].to[0].operation.notPorts[0]", "expected a port number"],
      ["spec.rules[0].when[0].values[0]", "expected a port number"],
    ],
  },
  {
    name: "wildcards in the middle, spiffe:// principals, path templates, relative paths",
    yaml: ap(`rules:
- from: [{source: {principals: ["spiffe://cluster.local/ns/a/sa/b", "cluster.local/*/sa/b"], namespaces: ["**"]}}]
  to: [{operation: {paths: ["/api/{*}/x", "admin"], hosts: ["*a*"]}}]`),
    errors: [
      ["spec.rules[0].from[0].source.principals[0]", 'without "spiffe://"'],
      ["spec.rules[0].from[0].source.principals[1]", '"*" is allowed only alone'],
      ["spec.rules[0].from[0].source.namespaces[0]", '"*" is allowed only alone'],
      ["spec.rules[0].to[0].operation.hosts[0]", '"*" is allowed only alone'],
      ["spec.rules[0].to[0].operation.paths[0]", "path templates ({*}, {**}) are not supported"],
      ["spec.rules[0].to[0].operation.paths[1]", 'starting with "/"'],
    ],
  },
  {
    name: "when keys",
    yaml: ap(`rules:
- when:
  - {key: "request.auth.claims[iss]", values: [x]}
  - {key: remote.ip, values: [1.2.3.4]}
  - {key: source.user, values: [x]}
  - {key: "request.headers[]", values: [x]}
  - {key: source.ip}
  - {values: [x]}
  - {key: connection.sni, values: [x]}`),
    errors: [
      ["spec.rules[0].when[0].key", "no request (JWT) authentication"],
      ["spec.rules[0].when[1].key", "X-Forwarded-For"],
      ["spec.rules[0].when[2].key", 'unknown key "source.user", expected one of source.principal'],
      ["spec.rules[0].when[3].key", "expected request.headers[<name>]"],
      ["spec.rules[0].when[4]", "one of values or notValues is required"],
      ["spec.rules[0].when[5].key", "required"],
      ["spec.rules[0].when[6].key", "not supported"],
    ],
  },
  {
    name: "empty sources, operations and lists",
    yaml: ap(`rules:
- from: [{source: {}}, {}]
  to: []
  when: []
- to: [{operation: {methods: []}}]`),
    errors: [
      ["spec.rules[0].from[0].source", "must not be empty"],
      ["spec.rules[0].from[1].source", "required"],
      ["spec.rules[0].to", "must not be empty"],
      ["spec.rules[0].when", "must not be empty"],
      ["spec.rules[1].to[0].operation", "must not be empty"],
    ],
  },
  {
    name: "rules is not a list, selector labels invalid",
    yaml: ap(`selector: {matchLabels: {"bad key!": x}, matchExpressions: []}
rules: {from: []}`),
    errors: [
      ["spec.selector.matchExpressions", "unknown field"],
      ['spec.selector.matchLabels["bad key!"]', "invalid label key"],
      ["spec.rules", "expected a list"],
    ],
  },
  {
    name: "PeerAuthentication: bad mode, port-level without selector, bad port key",
    yaml: pa(`mtls: {mode: STRICTER, foo: 1}
portLevelMtls:
  http: {mode: STRICT}
  "70000": {mode: DISABLE}
  8080: {mode: OFF}`),
    errors: [
      ["spec.mtls.foo", "unknown field"],
      ["spec.mtls.mode", "expected one of UNSET, DISABLE, PERMISSIVE, STRICT"],
      ["spec.portLevelMtls", "needs a selector with matchLabels"],
      ["spec.portLevelMtls.http", "expected a port number 1..65535"],
      ["spec.portLevelMtls.70000", "expected a port number 1..65535"],
      ["spec.portLevelMtls.8080.mode", "expected one of"],
    ],
  },
  {
    name: "PeerAuthentication: unknown spec field, empty portLevelMtls",
    yaml: pa(`selector: {matchLabels: {app: b}}
portLevelMtls: {}
mTLS: {mode: STRICT}`),
    errors: [
      ["spec.mTLS", "unknown field, did you mean mtls?"],
      ["spec.portLevelMtls", "must not be empty"],
    ],
  },
];

for (const c of BAD) {
  Deno.test(`validate security: ${c.name}`, () => {
    const r = validate(c.yaml);
    assert.equal(r.ok, false);
    if (r.ok) return;
    const errors = r.errors;
    const got = errors.map((e) => [e.path, e.message]);
    assert.deepEqual(
      got.map(([p]) => p).sort(),
      c.errors.map(([p]) => p).sort(),
      JSON.stringify(got, null, 1),
    );
    for (const [path, msg] of c.errors) {
      const e = errors.find((x) => x.path === path && x.message.includes(msg));
      assert.ok(e, `${path}: expected "${msg}" in ${JSON.stringify(got)}`);
      assert.equal(
        e.kind,
        c.yaml.includes("PeerAuthentication") ? "PeerAuthentication" : "AuthorizationPolicy",
      );
    }
  });
}

Deno.test("validate security: a full AuthorizationPolicy, typed", () => {
  const r = validate(ap(`selector: {matchLabels: {app: b}}
action: deny
rules:
- from:
  - source: {principals: ["cluster.local/ns/a/sa/*"], notNamespaces: [x], ipBlocks: ["10.0.0.0/8", "fd00::1"]}
  to:
  - operation: {methods: [GET], notPaths: ["/public*"], ports: ["8080", 9090], hosts: ["*.example.com"]}
  when:
  - {key: "request.headers[X-A]", values: ["1"], notValues: []}
  - {key: source.namespace, notValues: [kube-system]}
- {}`));
  assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
  const p = r.resources[0] as AuthorizationPolicy;
  assert.deepEqual(p.spec, {
    selector: { matchLabels: { app: "b" } },
    action: "DENY",
    rules: [
      {
        from: [{
          source: {
            principals: ["cluster.local/ns/a/sa/*"],
            notNamespaces: ["x"],
            ipBlocks: ["10.0.0.0/8", "fd00::1"],
          },
        }],
        to: [{
          operation: {
            methods: ["GET"],
            notPaths: ["/public*"],
            ports: ["8080", "9090"],
            hosts: ["*.example.com"],
          },
        }],
        when: [
          { key: "request.headers[X-A]", values: ["1"] },
          { key: "source.namespace", notValues: ["kube-system"] },
        ],
      },
      {},
    ],
  });
});

Deno.test("validate security: empty and missing specs, v1beta1, default action", () => {
  const r = validate(`
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-spec}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: wl, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  mtls: {mode: strict}
  portLevelMtls:
    8080: {mode: DISABLE}
    "9090": {}
`);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
  assert.deepEqual(r.resources.map((x) => x.spec), [
    { action: "ALLOW", rules: [] },
    { action: "ALLOW", rules: [] },
    { mtls: { mode: "UNSET" } },
    {
      selector: { matchLabels: { app: "b" } },
      mtls: { mode: "STRICT" },
      portLevelMtls: { "8080": { mode: "DISABLE" }, "9090": { mode: "UNSET" } },
    },
  ]);
  assert.equal((r.resources[3] as PeerAuthentication).metadata.namespace, "default");
});

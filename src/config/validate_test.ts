/**
 * Tests of config validation: a table of bad configs, each asserting the exact
 * field paths of every error and a fragment of each message, then good
 * configs whose typed output is checked field by field, and the error line
 * format. YAML text goes through `parseYamlDocuments` as in real loading.
 */

import assert from "node:assert/strict";
import type { DestinationRule, ServiceEntry, Sidecar, VirtualService } from "./model.ts";
import {
  type ConfigError,
  formatConfigError,
  fqdn,
  validateDocuments,
  type ValidationResult,
} from "./validate.ts";
import {
  compileRegex,
  hasNestedRepetition,
  LINEAR_REGEX,
  MAX_DURATION_MS,
  Re2RegExp,
} from "./validate_fields.ts";
import { parseYamlDocuments } from "./yaml.ts";

function validate(...files: string[]): ValidationResult {
  const docs = files.flatMap((text, i) => {
    const parsed = parseYamlDocuments(text, `f${i}.yaml`);
    assert.deepEqual(parsed.errors, [], "test YAML must parse");
    return parsed.docs;
  });
  return validateDocuments(docs);
}

const DR_REVIEWS = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`;

const SE_REVIEWS = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {app: reviews, version: v1}}
`;

/** A VirtualService for reviews whose first http route is `route0` (YAML, indented 2). */
function vs(route0: string, extra = ""): string {
  return `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
${extra}  http:
  - ${route0.trim().split("\n").join("\n    ")}
`;
}

const ROUTE = "route: [{destination: {host: reviews, subset: v1}}]";

interface BadCase {
  name: string;
  files: string[];
  /** Every expected error: exact path, message fragment. */
  errors: Array<[path: string, fragment: string]>;
}

const BAD: BadCase[] = [
  {
    name: "apiVersion of another API group",
    files: [vs(ROUTE).replace("networking.istio.io/v1", "security.istio.io/v1"), DR_REVIEWS],
    errors: [[
      "apiVersion",
      'expected networking.istio.io/v1, v1beta1 or v1alpha3, got "security.istio.io/v1"',
    ]],
  },
  {
    name: "unknown kind",
    files: ["apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n"],
    errors: [["kind", 'kind "Gateway" is not supported']],
  },
  {
    name: "missing metadata.name",
    files: [DR_REVIEWS.replace("metadata: {name: reviews}", "metadata: {labels: {a: b}}")],
    errors: [["metadata.name", "required"]],
  },
  {
    name: "name not DNS-1123",
    files: [DR_REVIEWS.replace("name: reviews}", "name: Reviews_1}")],
    errors: [["metadata.name", 'DNS-1123 name, got "Reviews_1"']],
  },
  {
    name: "misspelt metadata field",
    files: [
      DR_REVIEWS.replace("metadata: {name: reviews}", "metadata: {name: reviews, namepsace: prod}"),
    ],
    errors: [["metadata.namepsace", "unknown field, did you mean namespace?"]],
  },
  {
    name: "label value that is not a string",
    files: [
      DR_REVIEWS.replace(
        "metadata: {name: reviews}",
        "metadata: {name: reviews, labels: {rev: 2}}",
      ),
    ],
    errors: [["metadata.labels.rev", "expected a string label value, got the number 2"]],
  },
  {
    name: "mirror is not supported",
    files: [vs(`${ROUTE}\nmirror: {host: reviews}`), DR_REVIEWS],
    errors: [["spec.http[0].mirror", "not supported"]],
  },
  {
    name: "weights that do not sum to 100",
    files: [
      vs(`route:
- {destination: {host: reviews, subset: v1}, weight: 80}
- {destination: {host: reviews, subset: v2}, weight: 10}`),
      DR_REVIEWS,
    ],
    errors: [["spec.http[0].route[1].weight", "weights must sum to 100, got 90"]],
  },
  {
    name: "weight out of range",
    files: [vs("route: [{destination: {host: reviews}, weight: 120}]")],
    errors: [["spec.http[0].route[0].weight", "expected a weight 0..100, got 120"]],
  },
  {
    name: "single destination with a weight below 100",
    files: [vs("route: [{destination: {host: reviews}, weight: 50}]")],
    errors: [["spec.http[0].route[0].weight", "weights must sum to 100, got 50"]],
  },
  {
    name: "bad timeout",
    files: [vs(`${ROUTE}\ntimeout: 10 seconds`), DR_REVIEWS],
    errors: [[
      "spec.http[0].timeout",
      'expected a duration such as 250ms, 10s or 1m, got "10 seconds"',
    ]],
  },
  {
    name: "regex that does not compile",
    files: [vs(`match: [{uri: {regex: "/api/[a-"}}]\n${ROUTE}`), DR_REVIEWS],
    errors: [["spec.http[0].match[0].uri.regex", 'invalid regex "/api/[a-"']],
  },
  {
    name: "regex with lookahead, which RE2 lacks",
    files: [vs(`match: [{headers: {x-user: {regex: "(?!bot).*"}}}]\n${ROUTE}`), DR_REVIEWS],
    errors: [["spec.http[0].match[0].headers.x-user.regex", "lookaround is not supported by RE2"]],
  },
  {
    name: "regexes in RE2 syntax that RE2 rejects, or that remora cannot match (\\C)",
    files: [
      vs(
        `match: [{uri: {regex: "/a\\\\Z"}, headers: {x-raw: {regex: "a\\\\C"}}, queryParams: {q: {regex: "\\\\p{Grek}"}}}]\n${ROUTE}`,
      ),
      DR_REVIEWS,
    ],
    errors: [
      ["spec.http[0].match[0].uri.regex", 'invalid regex "/a\\Z": invalid escape sequence: \\Z'],
      [
        "spec.http[0].match[0].headers.x-raw.regex",
        'invalid regex "a\\C": \\C (any single byte) is not supported',
      ],
      [
        "spec.http[0].match[0].queryParams.q.regex",
        'invalid regex "\\p{Grek}": unknown Unicode class: \\p{Grek}',
      ],
    ],
  },
  {
    name: "StringMatch with two kinds",
    files: [vs(`match: [{headers: {end-user: {exact: jason, prefix: j}}}]\n${ROUTE}`), DR_REVIEWS],
    errors: [[
      "spec.http[0].match[0].headers.end-user",
      "exactly one of exact, prefix or regex is allowed",
    ]],
  },
  {
    name: "empty StringMatch",
    files: [vs(`match: [{method: {}}]\n${ROUTE}`), DR_REVIEWS],
    errors: [["spec.http[0].match[0].method", "exactly one of exact, prefix or regex is required"]],
  },
  {
    name: "queryParams prefix match",
    files: [vs(`match: [{queryParams: {q: {prefix: a}}}]\n${ROUTE}`), DR_REVIEWS],
    errors: [["spec.http[0].match[0].queryParams.q.prefix", "prefix match is not supported here"]],
  },
  {
    name: "unknown retryOn condition",
    files: [vs(`${ROUTE}\nretries: {attempts: 3, retryOn: "5xx,oops,503"}`), DR_REVIEWS],
    errors: [["spec.http[0].retries.retryOn", 'unknown retry condition "oops"']],
  },
  {
    name: "abort status out of range",
    files: [vs(`${ROUTE}\nfault: {abort: {httpStatus: 700}}`), DR_REVIEWS],
    errors: [["spec.http[0].fault.abort.httpStatus", "expected an HTTP status 200..599, got 700"]],
  },
  {
    name: "delay percentage above 100",
    files: [vs(`${ROUTE}\nfault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}`), DR_REVIEWS],
    errors: [["spec.http[0].fault.delay.percentage.value", "expected a number 0..100, got 150"]],
  },
  {
    name: "percent together with percentage",
    files: [
      vs(`${ROUTE}\nfault: {delay: {fixedDelay: 1s, percent: 5, percentage: {value: 5}}}`),
      DR_REVIEWS,
    ],
    errors: [["spec.http[0].fault.delay.percent", "cannot be used together with percentage"]],
  },
  {
    name: "empty gateway name",
    files: [vs(ROUTE, '  gateways: [mesh, ""]\n'), DR_REVIEWS],
    errors: [["spec.gateways[1]", "must not be empty"]],
  },
  {
    name: "subset the DestinationRule does not define",
    files: [vs("route: [{destination: {host: reviews, subset: v9}}]"), DR_REVIEWS],
    errors: [[
      "spec.http[0].route[0].destination.subset",
      'unknown subset "v9": DestinationRule default/reviews',
    ]],
  },
  {
    name: "subset without any DestinationRule for the host",
    files: [vs(ROUTE)],
    errors: [[
      "spec.http[0].route[0].destination.subset",
      'unknown subset "v1": no DestinationRule for host reviews.default.svc.cluster.local',
    ]],
  },
  {
    name: "duplicate subset names",
    files: [DR_REVIEWS.replace("name: v2,", "name: v1,")],
    errors: [["spec.subsets[1].name", 'duplicate subset "v1"']],
  },
  {
    name: "trafficPolicy.tls SIMPLE, and tls fields beyond mode, not supported yet",
    files: [
      DR_REVIEWS.replace(
        "host: reviews",
        "host: reviews\n  trafficPolicy: {tls: {mode: SIMPLE, sni: reviews.example}}",
      ),
    ],
    errors: [
      ["spec.trafficPolicy.tls.sni", "not supported yet"],
      ["spec.trafficPolicy.tls.mode", "not supported yet"],
    ],
  },
  {
    name: "trafficPolicy.tls without a mode (Istio's DISABLE) must say which",
    files: [DR_REVIEWS.replace("host: reviews", "host: reviews\n  trafficPolicy: {tls: {}}")],
    errors: [["spec.trafficPolicy.tls.mode", "required: ISTIO_MUTUAL or DISABLE"]],
  },
  {
    name: "connectionPool field remora does not implement, in a subset",
    files: [DR_REVIEWS.replace(
      "{name: v1, labels: {version: v1}}",
      "{name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 1s}}}}}",
    )],
    errors: [["spec.subsets[0].trafficPolicy.connectionPool.tcp.tcpKeepalive", "not supported"]],
  },
  {
    name: "unknown load balancer",
    files: [
      DR_REVIEWS.replace(
        "host: reviews",
        "host: reviews\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}",
      ),
    ],
    errors: [[
      "spec.trafficPolicy.loadBalancer.simple",
      "expected one of UNSPECIFIED, ROUND_ROBIN",
    ]],
  },
  {
    name: "port number out of range",
    files: [SE_REVIEWS.replace("number: 9080", "number: 70000")],
    errors: [["spec.ports[0].number", "expected a port 1..65535, got 70000"]],
  },
  {
    name: "unknown port protocol",
    files: [SE_REVIEWS.replace("protocol: HTTP", "protocol: SMTP")],
    errors: [[
      "spec.ports[0].protocol",
      'expected one of HTTP, HTTP2, GRPC, HTTPS, TLS, TCP, MONGO, UNKNOWN, got a string "SMTP"',
    ]],
  },
  {
    name: "STATIC endpoint that is not an IP",
    files: [SE_REVIEWS.replace("address: 10.0.0.1", "address: reviews-1.local")],
    errors: [[
      "spec.endpoints[0].address",
      'expected an IP address with resolution STATIC, got "reviews-1.local"',
    ]],
  },
  {
    name: "endpoints with resolution NONE",
    files: [SE_REVIEWS.replace("resolution: STATIC", "resolution: NONE")],
    errors: [["spec.endpoints", "endpoints are not allowed with resolution NONE"]],
  },
  {
    name: "endpoint port name that no service port has",
    files: [SE_REVIEWS.replace("{address: 10.0.0.1,", "{address: 10.0.0.1, ports: {grpc: 9090},")],
    errors: [["spec.endpoints[0].ports.grpc", 'no service port is named "grpc"']],
  },
  {
    name: "destination port the ServiceEntry does not declare",
    files: [vs("route: [{destination: {host: reviews, port: {number: 9999}}}]"), SE_REVIEWS],
    errors: [[
      "spec.http[0].route[0].destination.port.number",
      "has no port 9999, its ServiceEntry ports are 9080",
    ]],
  },
  {
    name: "wildcard destination host",
    files: [vs("route: [{destination: {host: '*.example.com'}}]")],
    errors: [["spec.http[0].route[0].destination.host", "wildcard host not allowed here"]],
  },
  {
    name: "duplicate resource names",
    files: [vs(ROUTE), DR_REVIEWS, vs(ROUTE)],
    errors: [
      [
        "metadata.name",
        'duplicate VirtualService "reviews" in namespace default, first defined in f0.yaml document 1',
      ],
    ],
  },
  {
    name: "two VirtualServices for one host",
    files: [vs(ROUTE), DR_REVIEWS, vs(ROUTE).replace("name: reviews}", "name: reviews-2}")],
    errors: [[
      "spec.hosts[0]",
      "host reviews.default.svc.cluster.local is already routed by VirtualService default/reviews",
    ]],
  },
  {
    name: "route together with redirect",
    files: [vs(`${ROUTE}\nredirect: {uri: /v2}`), DR_REVIEWS],
    errors: [["spec.http[0].redirect", "cannot be used together with route"]],
  },
  {
    name: "http route without a destination",
    files: [vs("name: nothing")],
    errors: [["spec.http[0]", "one of route, redirect or directResponse is required"]],
  },
  {
    name: "misspelt route field",
    files: [vs("rout: [{destination: {host: reviews}}]")],
    errors: [
      ["spec.http[0].rout", "unknown field, did you mean route?"],
      ["spec.http[0]", "one of route, redirect or directResponse is required"],
    ],
  },
  {
    name: "invalid header name in a set operation",
    files: [vs(`${ROUTE}\nheaders: {request: {set: {"bad header": x}}}`), DR_REVIEWS],
    errors: [[
      'spec.http[0].headers.request.set["bad header"]',
      'invalid header name "bad header"',
    ]],
  },
  {
    name: "directResponse status out of range",
    files: [vs("directResponse: {status: 99}")],
    errors: [["spec.http[0].directResponse.status", "expected an HTTP status 200..599, got 99"]],
  },
  {
    name: "tcp destinationSubnets, not supported yet",
    files: [
      vs(ROUTE).replace(
        "  http:\n",
        "  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: reviews}}]\n  http:\n",
      ),
      DR_REVIEWS,
    ],
    errors: [["spec.tcp[0].match[0].destinationSubnets", "not supported yet"]],
  },
  {
    name: "Sidecar egress listeners",
    files: [
      "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {egress: [{hosts: ['./*']}]}\n",
    ],
    errors: [["spec.egress", "not supported"]],
  },
  {
    name: "two Sidecars",
    files: [
      "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\nspec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}\n",
      "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: b}\nspec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n",
    ],
    errors: [[
      "",
      "only one Sidecar is allowed, another is Sidecar default/a (f0.yaml document 1)",
    ]],
  },
  {
    name: "a document that is a list",
    files: ["- a\n- b\n"],
    errors: [["", "expected a resource with apiVersion, kind, metadata and spec, got a list"]],
  },
  {
    name: "every error of one document is collected",
    files: [
      vs(`route:
- {destination: {host: reviews}, weight: 60}
- {destination: {host: ratings}, weight: 30}
timeout: soon
mirror: {host: reviews}
retries: {attempts: -1}`),
    ],
    errors: [
      ["spec.http[0].mirror", "not supported"],
      ["spec.http[0].route[1].weight", "weights must sum to 100, got 90"],
      ["spec.http[0].timeout", "expected a duration"],
      ["spec.http[0].retries.attempts", "expected an integer 0..2147483647, got -1"],
    ],
  },
  {
    name: "errors in several documents and files are all reported",
    files: [
      vs("route: [{destination: {host: reviews, subset: v7}}]"),
      DR_REVIEWS.replace("name: v2,", "name: V2,") + "---\n" +
      SE_REVIEWS.replace("number: 9080", "number: 0"),
    ],
    errors: [
      ["spec.subsets[1].name", 'subset name must be a DNS label, got "V2"'],
      ["spec.ports[0].number", "expected a port 1..65535, got 0"],
    ],
  },
];

for (const c of BAD) {
  Deno.test(`validate refuses: ${c.name}`, () => {
    const result = validate(...c.files);
    assert.equal(result.ok, false, "config must be refused");
    const errors = (result as { errors: ConfigError[] }).errors;
    assert.deepEqual(
      errors.map((e) => e.path),
      c.errors.map(([p]) => p),
      `paths of: ${errors.map(formatConfigError).join(" | ")}`,
    );
    c.errors.forEach(([, fragment], i) => {
      assert.ok(
        errors[i]!.message.includes(fragment),
        `"${errors[i]!.message}" should contain "${fragment}"`,
      );
      assert.doesNotMatch(errors[i]!.message, /\.$/, "no final period");
    });
  });
}

Deno.test("validate accepts a config using every supported field", () => {
  const result = validate(`
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: shop
  labels: {team: books}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
  resourceVersion: "42"
spec:
  hosts: [reviews, Reviews.Example.COM]
  addresses: [240.0.0.10]
  ports:
  - {number: 9080, name: http, protocol: http, targetPort: 8080}
  - {number: 9090, name: grpc-api}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    ports: {http: 8081}
    labels: {app: reviews, version: v1}
    weight: 3
    serviceAccount: reviews
    network: n1
    locality: eu/west/a
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
  - name: canary
    match:
    - name: jason
      uri: {prefix: /api}
      scheme: {exact: http}
      method: {exact: GET}
      authority: {regex: "reviews(:\\\\d+)?"}
      headers: {End-User: {exact: jason}}
      withoutHeaders: {x-debug: {exact: "1"}}
      queryParams: {v: {regex: "\\\\d+"}}
      port: 9080
      ignoreUriCase: true
      sourceLabels: {app: productpage}
    - {}
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 90
      headers: {request: {set: {x-canary: "no"}}}
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
      weight: 10
    rewrite: {uri: /v2/api, authority: reviews-v2}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: "5xx,Gateway-Error,503", retryRemoteLocalities: true}
    fault:
      delay: {fixedDelay: 1m30s, percent: 5}
      abort: {httpStatus: 503, percentage: {value: 0.5}}
    headers:
      request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
      response: {remove: [server]}
  - redirect: {uri: /new, authority: other, redirectCode: 308}
    match: [{uri: {exact: /old}}]
  - directResponse: {status: 404, body: {string: gone}}
  tcp:
  - match: [{port: 9090, sourceLabels: {app: x}}]
    route: [{destination: {host: reviews, port: {number: 9090}}}]
  exportTo: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: least_conn}
    portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: RANDOM}}]
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec: {outboundTrafficPolicy: {mode: registry_only}}
---
`);
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  const [se, vs, dr, sc] = result.resources as [
    ServiceEntry,
    VirtualService,
    DestinationRule,
    Sidecar,
  ];
  assert.deepEqual(se.metadata, { name: "reviews", namespace: "shop", labels: { team: "books" } });
  assert.deepEqual(se.origin, { file: "f0.yaml", index: 0 });
  assert.deepEqual(se.spec.hosts, ["reviews.shop.svc.cluster.local", "reviews.example.com"]);
  assert.deepEqual(se.spec.ports, [
    { number: 9080, name: "http", protocol: "HTTP", targetPort: 8080 },
    { number: 9090, name: "grpc-api", protocol: "GRPC" },
  ]);
  assert.deepEqual(se.spec.endpoints[0], {
    address: "10.0.0.1",
    ports: { http: 8081 },
    labels: { app: "reviews", version: "v1" },
    weight: 3,
    serviceAccount: "reviews",
    network: "n1",
    locality: "eu/west/a",
  });
  assert.equal(se.spec.location, "MESH_INTERNAL");

  const r0 = vs.spec.http[0]!;
  assert.deepEqual(vs.spec.hosts, ["reviews.shop.svc.cluster.local"]);
  assert.equal(r0.timeoutMs, 1500);
  assert.deepEqual(r0.retries, {
    attempts: 3,
    perTryTimeoutMs: 250,
    retryOn: ["5xx", "gateway-error", "503"],
    retryRemoteLocalities: true,
  });
  assert.deepEqual(r0.fault, {
    delay: { fixedDelayMs: 90_000, percentage: 5 },
    abort: { httpStatus: 503, percentage: 0.5 },
  });
  assert.deepEqual(r0.match[1], {});
  assert.deepEqual(r0.match[0]!.uri, { prefix: "/api" });
  assert.equal(r0.route[1]!.destination.host, "reviews.shop.svc.cluster.local");
  assert.deepEqual(r0.route[0]!.destination.port, { number: 9080 });
  assert.deepEqual(vs.spec.http[1]!.redirect, {
    uri: "/new",
    authority: "other",
    redirectCode: 308,
  });
  assert.deepEqual(vs.spec.http[2]!.directResponse, { status: 404, body: "gone" });
  assert.equal("weight" in vs.spec.tcp[0]!.route[0]!, false, "absent fields stay absent");

  assert.deepEqual(dr.spec.trafficPolicy?.loadBalancer, { simple: "LEAST_REQUEST" });
  assert.deepEqual(dr.spec.subsets[0]!.trafficPolicy, { loadBalancer: { simple: "UNSPECIFIED" } });
  assert.deepEqual(sc.spec, { outboundTrafficPolicy: { mode: "REGISTRY_ONLY" } });
});

Deno.test("validate accepts Istio's older fault percent and defaults an absent percentage to 100", () => {
  const result = validate(
    vs(`${ROUTE}\nfault: {abort: {percent: 25, httpStatus: 500}, delay: {fixedDelay: 7s}}`),
    DR_REVIEWS,
  );
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  const v = result.resources[0] as VirtualService;
  assert.deepEqual(v.spec.http[0]!.fault, {
    abort: { httpStatus: 500, percentage: 25 },
    delay: { fixedDelayMs: 7000, percentage: 100 },
  });
});

Deno.test("validate uses defaultNamespace for resources without one", () => {
  const docs = parseYamlDocuments(vs(ROUTE) + "---\n" + DR_REVIEWS, "a.yaml").docs;
  const result = validateDocuments(docs, { defaultNamespace: "prod" });
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  const v = result.resources[0] as VirtualService;
  assert.equal(v.metadata.namespace, "prod");
  assert.deepEqual(v.spec.hosts, ["reviews.prod.svc.cluster.local"]);
});

Deno.test("validate resolves subsets across namespaces by FQDN", () => {
  const result = validate(
    vs("route: [{destination: {host: reviews.prod.svc.cluster.local, subset: v1}}]"),
    DR_REVIEWS.replace("metadata: {name: reviews}", "metadata: {name: reviews, namespace: prod}"),
  );
  assert.equal(result.ok, true);
  // The short name in namespace default is another host: no DestinationRule there.
  const short = validate(
    vs(ROUTE),
    DR_REVIEWS.replace("metadata: {name: reviews}", "metadata: {name: reviews, namespace: prod}"),
  );
  assert.equal(short.ok, false);
});

Deno.test("validate accepts a single destination with weight 100 and a zero-weight split", () => {
  const one = validate(vs("route: [{destination: {host: reviews}, weight: 100}]"));
  assert.equal(one.ok, true);
  const split = validate(
    vs(`route:
- {destination: {host: reviews, subset: v1}, weight: 100}
- {destination: {host: reviews, subset: v2}, weight: 0}`),
    DR_REVIEWS,
  );
  assert.equal(split.ok, true);
});

Deno.test("formatConfigError gives one line with file, 1-based document, kind, name, path", () => {
  const result = validate(
    DR_REVIEWS + "---\n" +
      vs(`route:
- {destination: {host: reviews, subset: v1}, weight: 80}
- {destination: {host: reviews, subset: v2}, weight: 10}`),
  );
  assert.equal(result.ok, false);
  const lines = (result as { errors: ConfigError[] }).errors.map((e) =>
    formatConfigError({ ...e, file: "bookinfo.yaml" })
  );
  assert.deepEqual(lines, [
    "bookinfo.yaml: document 2 (VirtualService reviews): spec.http[0].route[1].weight: weights must sum to 100, got 90",
  ]);
  assert.equal(
    formatConfigError({
      file: "a.yaml",
      index: 0,
      line: 3,
      path: "",
      message: "map keys must be unique",
    }),
    "a.yaml:3: document 1: map keys must be unique",
  );
  assert.equal(
    formatConfigError({
      file: "gone.yaml",
      index: -1,
      path: "",
      message: "cannot read file: no such file",
    }),
    "gone.yaml: cannot read file: no such file",
  );
});

const FQDN: Array<[host: string, ns: string, want: string]> = [
  ["reviews", "default", "reviews.default.svc.cluster.local"],
  ["Reviews", "prod", "reviews.prod.svc.cluster.local"],
  ["reviews.prod", "default", "reviews.prod"],
  ["reviews.prod.svc.cluster.local", "default", "reviews.prod.svc.cluster.local"],
  ["*.Example.com", "default", "*.example.com"],
  ["*", "default", "*"],
  ["10.0.0.1", "default", "10.0.0.1"],
  ["www.googleapis.com", "default", "www.googleapis.com"],
];

Deno.test("fqdn resolves short names in the namespace and keeps the rest", () => {
  for (const [host, ns, want] of FQDN) assert.equal(fqdn(host, ns), want, `${host} in ${ns}`);
});

Deno.test("durations longer than a timer can wait count as the longest, not as an instant timeout", () => {
  const result = validate(
    vs(`${ROUTE}\ntimeout: 600h\nretries: {attempts: 2, perTryTimeout: 99999999h}`),
    DR_REVIEWS,
  );
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  const v = result.resources.find((r) => r.kind === "VirtualService") as VirtualService;
  assert.equal(v.spec.http[0]!.timeoutMs, MAX_DURATION_MS);
  assert.equal(v.spec.http[0]!.retries?.perTryTimeoutMs, MAX_DURATION_MS);
  // Within the limit, a duration is kept as written.
  const ok = validate(vs(`${ROUTE}\ntimeout: 596h`), DR_REVIEWS);
  if (!ok.ok) assert.fail(ok.errors.map(formatConfigError).join("\n"));
  const w = ok.resources.find((r) => r.kind === "VirtualService") as VirtualService;
  assert.equal(w.spec.http[0]!.timeoutMs, 596 * 3_600_000);
});

Deno.test("regexes in RE2 syntax validate, and match a value's bytes read as UTF-8", () => {
  const result = validate(
    vs(
      `match: [{uri: {regex: "(?i)/api/[[:alpha:]]+\\\\z"}, headers: {x-name: {regex: "\\\\p{Greek}+"}}}]\n${ROUTE}`,
    ),
    DR_REVIEWS,
  );
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  const uri = compileRegex("(?i)/api/[[:alpha:]]+\\z");
  assert.ok(uri instanceof Re2RegExp && uri.linear);
  assert.equal(uri.test("/API/Users"), true);
  assert.equal(uri.test("/api/users1"), false);
  const greek = compileRegex("\\p{Greek}+");
  assert.ok(greek instanceof Re2RegExp && greek.linear);
  // Header values arrive as bytes, one character each.
  const bytes = (s: string) => String.fromCharCode(...new TextEncoder().encode(s));
  assert.equal(greek.test(bytes("αβγ")), true);
  assert.equal(greek.test(bytes("abc")), false);
  assert.equal((compileRegex("caf.") as Re2RegExp).test(bytes("café")), true);
});

Deno.test("regexes run in linear time, large counts and multi-line anchors included", () => {
  // The test task starts V8 with the linear engine, as `deno task start` does.
  assert.equal(LINEAR_REGEX, true);
  const nested = compileRegex("/(a+)+");
  assert.ok(nested instanceof Re2RegExp && nested.linear);
  assert.equal(nested.test(`/${"a".repeat(100_000)}!`), false);
  assert.equal(nested.test("/aaa"), true);
  // Large counts are written out for the linear engine: alone, inside a repeated group, with
  // alternatives (the shapes whose backtracking explodes), all in linear time.
  for (const src of ["[a-z]{1,1000}", "(x{2,900})*", "((ab){3,})+", "([a-z]|[a-z0-9]){1,64}"]) {
    const re = compileRegex(src);
    assert.ok(re instanceof Re2RegExp && re.linear, src);
  }
  assert.equal((compileRegex("[a-z]{1,1000}") as Re2RegExp).test("abc"), true);
  const alt = compileRegex("([a-z]|[a-z0-9]){1,64}") as Re2RegExp;
  assert.equal(alt.test(`${"a".repeat(60)}!`), false);
  assert.equal(alt.test("a".repeat(64)), true);
  assert.ok(compileRegex("(?:a|b){2,900}") instanceof Re2RegExp);
  // A multi-line $ is the text's end (no value holds a line break): linear too.
  assert.ok((compileRegex("(?m)(a+)+$") as Re2RegExp).linear);
  assert.match(String(compileRegex("(a)\\1")), /backreferences/);
  assert.match(String(compileRegex("(?=a)a")), /lookaround/);
  for (
    const [src, want] of [
      ["(a+)+", true],
      ["((ab)+c)*", true],
      ["(?:a|b){2,900}", false],
      ["(a+)?", false],
      ["(?:ab)+", false],
      ["[(a+)]+", false],
      ["\\(a+\\)+", false],
      ["a+b*", false],
    ] as const
  ) {
    assert.equal(hasNestedRepetition(src), want, src);
  }
});

/**
 * Routing through a real `remora run` on Istio YAML written to a temp dir:
 * ServiceEntry hosts with STATIC endpoints on 127.0.0.1 (one echo upstream
 * per endpoint, labelled version v1/v2/...), DestinationRule subsets and load
 * balancers, VirtualService matches, weighted splits, rewrites, header
 * operations, timeouts, retries and faults, and the REGISTRY_ONLY policy.
 * Clients are curl (`-x` explicit proxy) and raw sockets; every assertion is
 * about what the client or the upstream saw.
 */

import assert from "node:assert/strict";
import {
  curl,
  curlLines,
  type Echo,
  type Remora,
  scrape,
  startRemora,
  startUpstream,
  type Upstream,
} from "./harness.ts";

const HOST = "svc.example.internal";
const URL = `http://${HOST}`;

interface Mesh {
  r: Remora;
  /** Upstreams by version: v1, v2, ... (endpoint i has version v(i+1)). */
  up: Upstream[];
  /** curl through remora's outbound listener. */
  get(path: string, args?: string[]): ReturnType<typeof curl>;
  /** Which upstream answered (its name), from the x-upstream response header. */
  who(path: string, args?: string[]): Promise<string>;
}

interface MeshOptions {
  /** VirtualService `http` routes for HOST; none: no VirtualService. */
  http?: unknown[];
  endpoints?: number;
  trafficPolicy?: unknown;
  extra?: unknown[];
}

/** The config as JSON documents (JSON is YAML). */
function meshConfig(up: Upstream[], o: MeshOptions): string {
  const docs: unknown[] = [
    {
      apiVersion: "networking.istio.io/v1",
      kind: "ServiceEntry",
      metadata: { name: "svc", namespace: "shop" },
      spec: {
        hosts: [HOST],
        location: "MESH_EXTERNAL",
        resolution: "STATIC",
        ports: [{ number: 80, name: "http", protocol: "HTTP" }],
        endpoints: up.map((u, i) => ({
          address: "127.0.0.1",
          ports: { http: u.port },
          labels: { app: "svc", version: `v${i + 1}` },
        })),
      },
    },
    {
      apiVersion: "networking.istio.io/v1",
      kind: "DestinationRule",
      metadata: { name: "svc", namespace: "shop" },
      spec: {
        host: HOST,
        ...(o.trafficPolicy === undefined ? {} : { trafficPolicy: o.trafficPolicy }),
        subsets: up.map((_, i) => ({ name: `v${i + 1}`, labels: { version: `v${i + 1}` } })),
      },
    },
  ];
  if (o.http !== undefined) {
    docs.push({
      apiVersion: "networking.istio.io/v1",
      kind: "VirtualService",
      metadata: { name: "svc", namespace: "shop" },
      spec: { hosts: [HOST], http: o.http },
    });
  }
  docs.push(...(o.extra ?? []));
  return docs.map((d) => JSON.stringify(d, null, 2)).join("\n---\n") + "\n";
}

function dest(subset: string, weight?: number): unknown {
  return { destination: { host: HOST, subset }, ...(weight === undefined ? {} : { weight }) };
}

/** Starts upstreams and remora on a config built by `meshConfig`; stops all of it after `fn`. */
async function withMesh(o: MeshOptions, fn: (m: Mesh) => Promise<void>): Promise<void> {
  const up: Upstream[] = [];
  const dir = await Deno.makeTempDir({ prefix: "remora-routing-" });
  let r: Remora | undefined;
  try {
    for (let i = 0; i < (o.endpoints ?? 2); i++) up.push(await startUpstream(`v${i + 1}`));
    const path = `${dir}/mesh.yaml`;
    await Deno.writeTextFile(path, meshConfig(up, o));
    r = await startRemora(["--config", path]);
    const rr = r;
    const get = (path: string, args: string[] = []) =>
      curl(["-x", `http://127.0.0.1:${rr.outbound}`, ...args, `${URL}${path}`]);
    const who = async (path: string, args: string[] = []) => {
      const res = await get(path, args);
      assert.equal(res.status, 200, `${path}: ${res.status} ${res.body}`);
      return /^x-upstream: (\S+)\r$/m.exec(res.headers)?.[1] ?? "none";
    };
    await fn({ r, up, get, who });
  } finally {
    await r?.stop();
    for (const u of up) await u.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("requests for a ServiceEntry host go to its endpoints, Host kept", async () => {
  const other = await startUpstream("other");
  const extra = [{
    apiVersion: "networking.istio.io/v1",
    kind: "ServiceEntry",
    metadata: { name: "other", namespace: "shop" },
    spec: {
      hosts: ["other.example.internal"],
      resolution: "STATIC",
      ports: [{ number: 8080, name: "http", protocol: "HTTP" }],
      endpoints: [{ address: "127.0.0.1", ports: { http: other.port } }],
    },
  }];
  try {
    await withMesh({ extra, endpoints: 1 }, async (m) => {
      const res = await m.get("/where");
      assert.equal(res.status, 200, res.body);
      const echo = JSON.parse(res.body) as Echo;
      assert.equal(echo.server, "v1");
      assert.equal(echo.headers["host"], HOST);
      const o = await curl([
        "-x",
        `http://127.0.0.1:${m.r.outbound}`,
        "http://other.example.internal:8080/where",
      ]);
      assert.equal(o.status, 200, o.body);
      const e2 = JSON.parse(o.body) as Echo;
      assert.equal(e2.server, "other");
      assert.equal(e2.headers["host"], "other.example.internal:8080");
    });
  } finally {
    await other.close();
  }
});

Deno.test("a 90/10 weighted split holds within 3 points over 2000 requests", async () => {
  await withMesh({ http: [{ route: [dest("v1", 90), dest("v2", 10)] }] }, async (m) => {
    const n = 2000;
    const urls = Array.from({ length: n }, (_, i) => `${URL}/split/${i}`);
    const codes = await curlLines(
      ["-x", `http://127.0.0.1:${m.r.outbound}`, "--parallel", "--parallel-max", "8"],
      urls,
      { timeoutS: 60 },
    );
    assert.equal(codes.length, n);
    assert.ok(codes.every((c) => c === "200"), `non-200: ${codes.filter((c) => c !== "200")}`);
    const [v1, v2] = m.up;
    assert.equal(v1!.requests + v2!.requests, n);
    const share = (v2!.requests / n) * 100;
    assert.ok(Math.abs(share - 10) <= 3, `v2 got ${share.toFixed(1)}% (v1 ${v1!.requests})`);
  });
});

Deno.test("header matches: exact, prefix and regex", async () => {
  const http = [
    { match: [{ headers: { "x-ver": { exact: "v2" } } }], route: [dest("v2")] },
    { match: [{ headers: { "x-track": { prefix: "beta-" } } }], route: [dest("v2")] },
    { match: [{ headers: { "x-user": { regex: "can(ary|dy)[0-9]+" } } }], route: [dest("v2")] },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    const cases: Array<[string[], string]> = [
      [[], "v1"],
      [["-H", "x-ver: v2"], "v2"],
      [["-H", "x-ver: v2x"], "v1"],
      [["-H", "X-Ver: v2"], "v2"],
      [["-H", "x-track: beta-7"], "v2"],
      [["-H", "x-track: alpha-beta-7"], "v1"],
      [["-H", "x-user: canary42"], "v2"],
      [["-H", "x-user: candy7"], "v2"],
      // Istio regexes are full matches (RE2 over the whole value).
      [["-H", "x-user: mycanary42"], "v1"],
      [["-H", "x-user: canary"], "v1"],
    ];
    for (const [args, want] of cases) {
      assert.equal(await m.who("/h", args), want, `headers ${args.join(" ")}`);
    }
  });
});

Deno.test("uri matches: exact, prefix and regex; method and query parameter matches", async () => {
  const http = [
    { match: [{ uri: { exact: "/exact" } }], route: [dest("v2")] },
    { match: [{ uri: { prefix: "/api/v2/" } }], route: [dest("v2")] },
    { match: [{ uri: { regex: "/items/[0-9]+" } }], route: [dest("v2")] },
    { match: [{ method: { exact: "DELETE" } }], route: [dest("v2")] },
    { match: [{ queryParams: { ver: { exact: "2" } } }], route: [dest("v2")] },
    { match: [{ queryParams: { tag: { regex: "b[a-z]+" } } }], route: [dest("v2")] },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    const cases: Array<[string, string[], string]> = [
      ["/exact", [], "v2"],
      ["/exact?x=1", [], "v2"],
      ["/exact/more", [], "v1"],
      ["/exactly", [], "v1"],
      ["/api/v2/users", [], "v2"],
      ["/api/v1/users", [], "v1"],
      ["/items/123", [], "v2"],
      ["/items/12a", [], "v1"],
      ["/x/items/1", [], "v1"],
      ["/anything", ["-X", "DELETE"], "v2"],
      ["/anything", ["-X", "PUT"], "v1"],
      ["/q?ver=2", [], "v2"],
      ["/q?a=1&ver=2", [], "v2"],
      ["/q?ver=3", [], "v1"],
      ["/q?version=2", [], "v1"],
      ["/q?tag=beta", [], "v2"],
      ["/q?tag=alpha", [], "v1"],
    ];
    for (const [path, args, want] of cases) {
      assert.equal(await m.who(path, args), want, `${args.join(" ")} ${path}`);
    }
    // Istio's default path normalization (BASE) applies before routing, and the upstream gets
    // the normalized path; an encoded slash is left as it is.
    for (const [path, want] of [["/x/../exact", "v2"], ["/api/./v2/users", "v2"]] as const) {
      assert.equal(await m.who(path, ["--path-as-is"]), want, path);
    }
    const seen = JSON.parse((await m.get("/x/../a%2fb", ["--path-as-is"])).body) as Echo;
    assert.equal(seen.url, "/a%2Fb");
  });
});

Deno.test("regexes are RE2's: (?i), \\z, POSIX and Unicode classes route as in Istio", async () => {
  const http = [
    // JavaScript alone refuses (?i), reads \z as the letter z and [[:alpha:]] as one of
    // "[:alph" then "]", and would see the header's UTF-8 bytes as Latin-1 characters.
    { match: [{ uri: { regex: "(?i)/api/v[0-9]+/.*" } }], route: [dest("v2")] },
    { match: [{ uri: { regex: "/z/a\\z" } }], route: [dest("v2")] },
    {
      match: [{ headers: { "x-team": { regex: "[[:alpha:]]+-[[:digit:]]+" } } }],
      route: [dest("v2")],
    },
    { match: [{ headers: { "x-name": { regex: "\\p{Greek}+" } } }], route: [dest("v2")] },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    const cases: Array<[string, string[], string]> = [
      ["/API/V1/users", [], "v2"],
      ["/api/v2/", [], "v2"],
      ["/api/vx/users", [], "v1"],
      ["/z/a", [], "v2"],
      ["/z/az", [], "v1"],
      ["/h", ["-H", "x-team: ops-7"], "v2"],
      ["/h", ["-H", "x-team: ops-x"], "v1"],
      ["/h", ["-H", "x-team: o:s-7"], "v1"],
      ["/h", ["-H", "x-name: αβγ"], "v2"],
      ["/h", ["-H", "x-name: abc"], "v1"],
    ];
    for (const [path, args, want] of cases) {
      assert.equal(await m.who(path, args), want, `${args.join(" ")} ${path}`);
    }
  });
});

Deno.test("a regex that backtracks exponentially matches in linear time (the proxy never stalls)", async () => {
  const http = [
    { match: [{ uri: { regex: "/(a+)+" } }], route: [dest("v2")] },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    assert.equal(await m.who("/aaaa"), "v2");
    // 5000 a's then "!": a backtracking engine would take longer than the universe.
    const long = `/${"a".repeat(5000)}!`;
    assert.equal(await m.who(long, ["--max-time", "10"]), "v1");
    assert.doesNotMatch(m.r.stderr(), /backtracking engine/);
  });
});

Deno.test("rewrite replaces the matched uri prefix and the authority", async () => {
  const http = [
    {
      match: [{ uri: { prefix: "/old/" } }],
      rewrite: { uri: "/new/" },
      route: [dest("v1")],
    },
    {
      match: [{ uri: { prefix: "/auth" } }],
      rewrite: { authority: "rewritten.example.internal" },
      route: [dest("v1")],
    },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    const a = JSON.parse((await m.get("/old/thing?q=1")).body) as Echo;
    assert.equal(a.url, "/new/thing?q=1");
    assert.equal(a.headers["host"], HOST);
    const b = JSON.parse((await m.get("/auth/x")).body) as Echo;
    assert.equal(b.url, "/auth/x");
    assert.equal(b.headers["host"], "rewritten.example.internal");
    const c = JSON.parse((await m.get("/older")).body) as Echo;
    assert.equal(c.url, "/older", "no rewrite on other routes");
  });
});

Deno.test("request and response header operations: set, add, remove", async () => {
  const http = [{
    headers: {
      request: {
        set: { "x-set": "by-route" },
        add: { "x-added": "one" },
        remove: ["x-secret"],
      },
      response: {
        set: { "x-resp-set": "yes" },
        add: { "x-resp-added": "two" },
        remove: ["x-upstream"],
      },
    },
    route: [{
      ...dest("v1") as object,
      headers: { request: { set: { "x-dest": "v1" } }, response: { add: { "x-from": "v1" } } },
    }],
  }];
  await withMesh({ http }, async (m) => {
    const res = await m.get("/ops", [
      "-H",
      "x-set: from-client",
      "-H",
      "x-secret: hush",
      "-H",
      "x-keep: kept",
    ]);
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.headers["x-set"], "by-route");
    assert.equal(echo.headers["x-added"], "one");
    assert.equal(echo.headers["x-secret"], undefined);
    assert.equal(echo.headers["x-keep"], "kept");
    assert.equal(echo.headers["x-dest"], "v1");
    assert.match(res.headers, /^x-resp-set: yes\r$/m);
    assert.match(res.headers, /^x-resp-added: two\r$/m);
    assert.match(res.headers, /^x-from: v1\r$/m);
    assert.doesNotMatch(res.headers, /^x-upstream:/m);
  });
});

Deno.test("a route timeout answers 504 when the upstream is slower", async () => {
  const http = [{ timeout: "500ms", route: [dest("v1")] }];
  await withMesh({ http }, async (m) => {
    const t0 = performance.now();
    const res = await m.get("/delay/3000");
    const took = performance.now() - t0;
    assert.equal(res.status, 504, res.body);
    assert.match(res.body, /upstream request timeout/);
    assert.ok(took >= 450 && took < 2000, `answered after ${took.toFixed(0)}ms`);
    const fast = await m.get("/delay/50");
    assert.equal(fast.status, 200);
    // The route's timeout is not a per-try timeout: nothing was retried (flag UT, not URX).
    const metrics = await scrape(m.r);
    assert.match(metrics, /response_code="504"[^}]*response_flags="UT"/);
    assert.doesNotMatch(metrics, /URX/);
    assert.doesNotMatch(metrics, /^remora_retries_total\{[^}]*\} [1-9]/m);
  });
});

Deno.test("retries on 5xx turn failures into a 200; Istio's default retries 503 twice; attempts 0 passes it through", async () => {
  const http = [
    {
      match: [{ headers: { "x-retry": { exact: "yes" } } }],
      retries: { attempts: 3, retryOn: "5xx" },
      route: [dest("v1")],
    },
    {
      match: [{ headers: { "x-retry": { exact: "off" } } }],
      retries: { attempts: 0 },
      route: [dest("v1")],
    },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    const v1 = m.up[0]!;
    const ok = await m.get("/fail-first/2/retried", ["-H", "x-retry: yes"]);
    assert.equal(ok.status, 200, ok.body);
    assert.match(ok.body, /ok after 2 failures from v1/);
    assert.equal(v1.requests, 3);

    const fail = await m.get("/fail-first/2/plain", ["-H", "x-retry: off"]);
    assert.equal(fail.status, 503);
    assert.match(fail.body, /failure 1 from v1/, "the upstream's own 503 is passed through");
    assert.equal(v1.requests, 4);

    // Retries exhausted: the last upstream answer is returned.
    const spent = await m.get("/fail-first/9/spent", ["-H", "x-retry: yes"]);
    assert.equal(spent.status, 503);
    assert.match(spent.body, /failure 4 from v1/);
    assert.equal(v1.requests, 8);

    // A route without retries gets Istio's default: 2 retries on 503 (and connect failures).
    const dflt = await m.get("/fail-first/2/default");
    assert.equal(dflt.status, 200, dflt.body);
    assert.equal(v1.requests, 11);
    const over = await m.get("/fail-first/5/over");
    assert.equal(over.status, 503);
    assert.match(over.body, /failure 3 from v1/);
    assert.equal(v1.requests, 14);
  });
});

Deno.test("a request whose body was streamed (over 64 KiB) is not retried", async () => {
  const http = [{ retries: { attempts: 3, retryOn: "5xx" }, route: [dest("v1")] }];
  await withMesh({ http }, async (m) => {
    const v1 = m.up[0]!;
    const small = new Uint8Array(1024).fill(97);
    const a = await curl(
      ["-x", `http://127.0.0.1:${m.r.outbound}`, "--data-binary", "@-", `${URL}/fail-first/1/s`],
      { stdin: small },
    );
    assert.equal(a.status, 200, "a small body is replayed");
    assert.equal(v1.requests, 2);

    const big = new Uint8Array(100 * 1024).fill(98);
    const b = await curl(
      ["-x", `http://127.0.0.1:${m.r.outbound}`, "--data-binary", "@-", `${URL}/fail-first/1/b`],
      { stdin: big },
    );
    assert.equal(b.status, 503, b.body);
    assert.match(b.body, /failure 1 from v1/);
    assert.equal(v1.requests, 3, "the streamed request was sent once");

    const chunked = await curl(
      ["-x", `http://127.0.0.1:${m.r.outbound}`, "-T", "-", `${URL}/fail-first/1/c`],
      { stdin: small },
    );
    assert.equal(chunked.status, 503, "a chunked body is streamed, so not retried");
    assert.equal(v1.requests, 4);
  });
});

Deno.test("REGISTRY_ONLY refuses hosts without a ServiceEntry with 502 naming the host", async () => {
  const outsider = await startUpstream("outsider");
  const extra = [{
    apiVersion: "networking.istio.io/v1",
    kind: "Sidecar",
    // In the root namespace: mesh-wide (one in another namespace is not this workload's).
    metadata: { name: "default", namespace: "istio-system" },
    spec: { outboundTrafficPolicy: { mode: "REGISTRY_ONLY" } },
  }];
  try {
    await withMesh({ extra }, async (m) => {
      const proxy = ["-x", `http://127.0.0.1:${m.r.outbound}`];
      const res = await curl([...proxy, "http://unknown.example.org/x"]);
      assert.equal(res.status, 502, res.body);
      assert.match(res.body, /unknown\.example\.org/);
      assert.match(res.body, /REGISTRY_ONLY/);
      const byIp = await curl([...proxy, `http://127.0.0.1:${outsider.port}/x`]);
      assert.equal(byIp.status, 502, byIp.body);
      assert.match(byIp.body, new RegExp(`127\\.0\\.0\\.1:${outsider.port}`));
      assert.equal(outsider.requests, 0);
      const tunnel = await curl(["-p", ...proxy, `http://127.0.0.1:${outsider.port}/x`]);
      assert.notEqual(tunnel.code, 0);
      assert.match(tunnel.headers, /^HTTP\/1\.1 502/m, "no CONNECT around the policy");
      assert.equal(outsider.connections, 0);
      const known = await m.get("/fine");
      assert.equal(known.status, 200);
    });
  } finally {
    await outsider.close();
  }
});

Deno.test("ROUND_ROBIN spreads requests evenly over the endpoints", async () => {
  const trafficPolicy = { loadBalancer: { simple: "ROUND_ROBIN" } };
  await withMesh({ endpoints: 3, trafficPolicy }, async (m) => {
    const urls = Array.from({ length: 300 }, (_, i) => `${URL}/rr/${i}`);
    const codes = await curlLines(["-x", `http://127.0.0.1:${m.r.outbound}`], urls);
    assert.equal(codes.length, 300);
    assert.ok(codes.every((c) => c === "200"));
    assert.deepEqual(m.up.map((u) => u.requests), [100, 100, 100]);
  });
});

Deno.test("fault injection from a VirtualService: abort and delay", async () => {
  const http = [
    {
      match: [{ uri: { prefix: "/abort" } }],
      fault: { abort: { httpStatus: 418, percentage: { value: 100 } } },
      route: [dest("v1")],
    },
    {
      match: [{ uri: { prefix: "/half" } }],
      fault: { abort: { httpStatus: 503, percentage: { value: 50 } } },
      route: [dest("v1")],
    },
    {
      match: [{ uri: { prefix: "/delay" } }],
      fault: { delay: { fixedDelay: "700ms", percentage: { value: 100 } } },
      // The timeout counts after the injected delay (as Envoy's router timeout does).
      timeout: "500ms",
      route: [dest("v1")],
    },
    { route: [dest("v1")] },
  ];
  await withMesh({ http }, async (m) => {
    const v1 = m.up[0]!;
    const abort = await m.get("/abort");
    assert.equal(abort.status, 418);
    assert.match(abort.body, /fault filter abort/);
    assert.equal(v1.requests, 0, "an aborted request never reaches the upstream");

    const t0 = performance.now();
    // 700ms injected, then an upstream taking 300ms: within the 500ms route timeout.
    const slow = await m.get("/delay/300");
    const took = performance.now() - t0;
    assert.equal(slow.status, 200, slow.body);
    assert.ok(took >= 950, `delayed only ${took.toFixed(0)}ms`);

    const urls = Array.from({ length: 400 }, (_, i) => `${URL}/half/${i}`);
    const codes = await curlLines(["-x", `http://127.0.0.1:${m.r.outbound}`], urls);
    const aborted = codes.filter((c) => c === "503").length;
    assert.equal(codes.filter((c) => c === "200").length + aborted, 400);
    // 50% of 400: mean 200, sd 10; ±60 is six sd.
    assert.ok(aborted > 140 && aborted < 260, `${aborted} of 400 aborted`);
  });
});

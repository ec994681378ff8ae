/**
 * HTTP/1.1 behaviour of the outbound (explicit proxy) and inbound listeners,
 * seen from real clients: curl and raw sockets through a real `remora run`
 * on the embedded default config (ALLOW_ANY pass-through) to a real
 * node:http upstream. Covers forwarding headers, hop-by-hop removal,
 * keep-alive and pooling, streamed bodies both ways (1 GiB with bounded
 * memory), Expect, HEAD/204/304, failures, malformed requests, CONNECT and
 * the refusal of remora's own ports through the data path.
 */

import assert from "node:assert/strict";
import {
  closedPort,
  curl,
  curlLines,
  type Echo,
  eventually,
  peakRssKb,
  RawConn,
  rawRequest,
  type Remora,
  runCommand,
  scrape,
  startGreeter,
  startRawServer,
  startRemora,
  startUpstream,
  type Upstream,
} from "./harness.ts";

/** Runs `fn` with a remora on the default config and one echo upstream, both stopped after. */
async function withProxy(
  fn: (r: Remora, u: Upstream) => Promise<void>,
  args: string[] = [],
): Promise<void> {
  const u = await startUpstream("u1");
  let r: Remora | undefined;
  try {
    r = await startRemora(args);
    await fn(r, u);
  } finally {
    await r?.stop();
    await u.close();
  }
}

/** A port that nothing listens on (bound, then released). */

/**
 * Like withProxy, with remora started on a config made for the upstream: a
 * ServiceEntry svc.example.internal:80 for it, then `extra` (its routes).
 */
async function withSvc(
  extra: string,
  fn: (r: Remora, u: Upstream) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-svc-" });
  const u = await startUpstream("u1");
  let r: Remora | undefined;
  try {
    await Deno.writeTextFile(
      `${dir}/mesh.yaml`,
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: svc }
spec:
  hosts: [svc.example.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: ${u.port} } }]
---
${extra}`,
    );
    r = await startRemora(["--config", `${dir}/mesh.yaml`]);
    await fn(r, u);
  } finally {
    await r?.stop();
    await u.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function proxy(r: Remora): string[] {
  return ["-x", `http://127.0.0.1:${r.outbound}`];
}

Deno.test("explicit proxy passes a request through with x-request-id, x-forwarded-* and Host", async () => {
  await withProxy(async (r, u) => {
    const res = await curl([...proxy(r), `http://127.0.0.1:${u.port}/hello?x=1`]);
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.server, "u1");
    assert.equal(echo.method, "GET");
    assert.equal(echo.url, "/hello?x=1", "origin-form path with query upstream");
    assert.equal(echo.headers["host"], `127.0.0.1:${u.port}`);
    assert.match(String(echo.headers["x-request-id"]), /^[0-9a-f-]{36}$/);
    // A sidecar leaves x-forwarded-for alone (Envoy's use_remote_address is off in Istio's sidecars).
    assert.equal(echo.headers["x-forwarded-for"], undefined);
    assert.equal(echo.headers["x-forwarded-proto"], "http");
    assert.match(res.headers, /^x-upstream: u1\r$/m);

    // A client's own request id and x-forwarded-for are kept as they are.
    const own = await curl([
      ...proxy(r),
      "-H",
      "X-Request-Id: my-id-123",
      "-H",
      "X-Forwarded-For: 10.1.2.3",
      "-H",
      "Host: custom.example:8080",
      `http://127.0.0.1:${u.port}/again`,
    ]);
    assert.equal(own.status, 200, own.body);
    const e2 = JSON.parse(own.body) as Echo;
    assert.equal(e2.headers["x-request-id"], "my-id-123");
    assert.equal(e2.headers["x-forwarded-for"], "10.1.2.3");
    // Each request gets a fresh id when it has none.
    const third = JSON.parse((await curl([...proxy(r), `http://127.0.0.1:${u.port}/3`])).body);
    assert.notEqual(third.headers["x-request-id"], echo.headers["x-request-id"]);
  });
});

Deno.test("Connection naming Content-Length cannot smuggle the body as a second request", async () => {
  const u = await startUpstream("u1");
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(u.port)]);
    const hidden = "GET /admin/secret HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const port of [r.outbound, r.inbound]) {
      const before = u.requests;
      const target = port === r.outbound ? `http://127.0.0.1:${u.port}/public` : "/public";
      const res = await rawRequest(
        port,
        `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n` +
          `Content-Length: ${hidden.length}\r\nConnection: close, content-length\r\n\r\n` +
          hidden,
      );
      assert.equal(res.status, 200, res.text);
      const echo = JSON.parse(res.text) as Echo;
      assert.equal(echo.url, "/public");
      assert.equal(echo.headers["content-length"], String(hidden.length));
      assert.equal(echo.bodyBytes, hidden.length);
      // Give a smuggled request time to arrive: none may.
      await new Promise((done) => setTimeout(done, 200));
      assert.equal(u.requests - before, 1, `port ${port}: the app saw a second request`);
    }
  } finally {
    await r?.stop();
    await u.close();
  }
});

Deno.test("a chunked request body with broken framing gets a 400 naming it, not a 503", async () => {
  const u = await startUpstream("u1");
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(u.port)]);
    for (const port of [r.outbound, r.inbound]) {
      for (
        const chunks of ["zz\r\nabc\r\n0\r\n\r\n", "2\r\nabcdef\r\n0\r\n\r\n", "-3\r\nabc\r\n"]
      ) {
        const target = port === r.outbound ? `http://127.0.0.1:${u.port}/up` : "/up";
        const res = await rawRequest(
          port,
          `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n` +
            "Transfer-Encoding: chunked\r\n\r\n" + chunks,
        );
        assert.equal(res.status, 400, `${JSON.stringify(chunks)}: ${res.text}`);
        assert.match(res.text, /bad request body: (Malformed chunk size|Chunk data longer)/);
        assert.equal(res.header("connection"), "close");
      }
    }
    const metrics = await scrape(r);
    assert.match(metrics, /response_code="400"[^}]*response_flags="DPE"/);
  } finally {
    await r?.stop();
    await u.close();
  }
});

Deno.test("a 101 the client did not ask for is a 502, and what follows is not read as HTTP", async () => {
  // An upstream that switches protocols on any request, then talks garbage.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const serving = (async () => {
    for await (const c of l) {
      const buf = new Uint8Array(4096);
      await c.read(buf).catch(() => null);
      await c.write(new TextEncoder().encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n" +
          "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmugg",
      )).catch(() => 0);
      c.close();
    }
  })().catch(() => {});
  let r: Remora | undefined;
  try {
    r = await startRemora();
    const res = await rawRequest(
      r.outbound,
      `GET http://127.0.0.1:${port}/x HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`,
    );
    assert.equal(res.status, 502, res.text);
    assert.match(res.text, /switched protocols \(101\) without an Upgrade request/);
  } finally {
    await r?.stop();
    l.close();
    await serving;
  }
});

Deno.test("an upstream that greets with something not HTTP gets a 502 at once, not a hang", async () => {
  // A server-first protocol on the port (SMTP-like): it speaks first and keeps the connection open.
  const greeter = startGreeter();
  const port = greeter.port;
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(port)]);
    const viaProxy = await curl(["--max-time", "5", ...proxy(r), `http://127.0.0.1:${port}/x`]);
    const inbound = await curl(["--max-time", "5", `http://127.0.0.1:${r.inbound}/x`]);
    for (const res of [viaProxy, inbound]) {
      assert.equal(res.status, 502, res.body);
      assert.match(res.body, /not an HTTP response/);
    }
    const metrics = await scrape(r);
    assert.match(metrics, /response_code="502"[^}]*response_flags="UPE"/);
  } finally {
    await r?.stop();
    await greeter.close();
  }
});

Deno.test("hop-by-hop headers are not forwarded, end-to-end headers are", async () => {
  await withProxy(async (r, u) => {
    const res = await rawRequest(
      r.outbound,
      `GET http://127.0.0.1:${u.port}/hop HTTP/1.1\r\n` +
        `Host: 127.0.0.1:${u.port}\r\n` +
        "Connection: keep-alive, X-Private, X-Other\r\n" +
        "X-Private: secret\r\n" +
        "X-Other: other\r\n" +
        "Keep-Alive: timeout=5\r\n" +
        "Proxy-Connection: keep-alive\r\n" +
        "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
        "TE: trailers\r\n" +
        "X-End-To-End: kept\r\n" +
        "\r\n",
    );
    assert.equal(res.status, 200, res.text);
    const echo = JSON.parse(res.text) as Echo;
    for (
      const h of [
        "x-private",
        "x-other",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
      ]
    ) {
      assert.equal(echo.headers[h], undefined, `${h} must not reach the upstream`);
    }
    assert.equal(echo.headers["x-end-to-end"], "kept");
    // node:http adds "connection: keep-alive" on its own side only if sent: remora's own value.
    assert.doesNotMatch(String(echo.headers["connection"] ?? ""), /x-private/i);
  });
});

Deno.test("an h2c upgrade request goes on as plain HTTP/1.1, without its upgrade headers", async () => {
  await withProxy(async (r, u) => {
    const res = await rawRequest(
      r.outbound,
      `GET http://127.0.0.1:${u.port}/h2c HTTP/1.1\r\n` +
        `Host: 127.0.0.1:${u.port}\r\n` +
        "Connection: Upgrade, HTTP2-Settings\r\n" +
        "Upgrade: h2c\r\n" +
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n" +
        "\r\n",
    );
    assert.equal(res.status, 200, res.text);
    const echo = JSON.parse(res.text) as Echo;
    assert.equal(echo.headers["upgrade"], undefined);
    assert.equal(echo.headers["http2-settings"], undefined);
    assert.doesNotMatch(String(echo.headers["connection"] ?? ""), /upgrade/i);
  });
});

Deno.test("keep-alive: many requests on one client connection reuse pooled upstream connections", async () => {
  await withProxy(async (r, u) => {
    const c = await RawConn.open(r.outbound);
    try {
      for (let i = 0; i < 100; i++) {
        await c.write(
          `GET http://127.0.0.1:${u.port}/ka/${i} HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n\r\n`,
        );
        const res = await c.readResponse();
        assert.equal(res.status, 200);
        assert.equal((JSON.parse(res.text) as Echo).url, `/ka/${i}`);
      }
    } finally {
      c.close();
    }
    assert.equal(u.requests, 100);
    assert.ok(u.connections <= 2, `upstream saw ${u.connections} connections for 100 requests`);

    // curl with many URLs in one invocation: one client connection, pooled upstream.
    const urls = Array.from({ length: 50 }, (_, i) => `http://127.0.0.1:${u.port}/curl/${i}`);
    const lines = await curlLines(proxy(r), urls, { format: "%{http_code} %{num_connects}" });
    assert.equal(lines.length, 50);
    assert.ok(lines.every((l) => l.startsWith("200 ")), lines.join(","));
    const connects = lines.reduce((a, l) => a + Number(l.split(" ")[1]), 0);
    assert.equal(connects, 1, "curl reused its one connection to remora");
    assert.ok(u.connections <= 3, `upstream saw ${u.connections} connections for 150 requests`);
  });
});

Deno.test("an app that closes its connection after each response (HTTP/1.0 style) does not cost the client its keep-alive", async () => {
  // Answers one request per connection, with a length, then closes; or without a length.
  const app = startRawServer(async (c) => {
    const buf = new Uint8Array(4096);
    const n = await c.read(buf);
    const line = new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0] ?? "";
    const body = `one-shot ${line}`;
    const head = line.includes("/until-close")
      ? "HTTP/1.0 200 OK\r\n\r\n"
      : `HTTP/1.0 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`;
    await c.write(new TextEncoder().encode(head + body));
    c.close();
  });
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(app.port)]);
    const urls = [1, 2, 3].map((i) => `http://127.0.0.1:${r!.inbound}/n/${i}`);
    const lines = await curlLines([], urls, { format: "%{http_code} %{num_connects}" });
    assert.deepEqual(
      lines,
      ["200 1", "200 0", "200 0"],
      "one client connection for three requests",
    );
    // A body that ends only with the connection still ends the client's connection.
    const last = await curlLines([], [
      `http://127.0.0.1:${r.inbound}/until-close`,
      `http://127.0.0.1:${r.inbound}/after`,
    ], { format: "%{http_code} %{num_connects}" });
    assert.deepEqual(last, ["200 1", "200 1"]);
  } finally {
    await r?.stop();
    await app.close();
  }
});

Deno.test("chunked request bodies arrive whole and the connection stays usable", async () => {
  await withProxy(async (r, u) => {
    // curl -T - streams stdin with Transfer-Encoding: chunked.
    const data = new Uint8Array(300_000).fill(97);
    const res = await curl(
      [...proxy(r), "-T", "-", "-X", "POST", `http://127.0.0.1:${u.port}/upload`],
      { stdin: data },
    );
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.headers["transfer-encoding"], "chunked");
    assert.equal(echo.bodyBytes, 300_000);

    // Hand-made chunks with an extension and a trailer, then a second request.
    const c = await RawConn.open(r.outbound);
    try {
      await c.write(
        `POST http://127.0.0.1:${u.port}/chunks HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n` +
          "Transfer-Encoding: chunked\r\n\r\n" +
          "5;ext=1\r\nhello\r\n" + "6\r\n world\r\n" + "0\r\nX-Trailer: t\r\n\r\n",
      );
      const first = await c.readResponse();
      assert.equal(first.status, 200, first.text);
      assert.equal((JSON.parse(first.text) as Echo).bodyBytes, 11);
      await c.write(
        `GET http://127.0.0.1:${u.port}/after HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n\r\n`,
      );
      const second = await c.readResponse();
      assert.equal(second.status, 200);
      assert.equal((JSON.parse(second.text) as Echo).url, "/after");
    } finally {
      c.close();
    }
  });
});

Deno.test("a 1 GiB upload streams through with bounded memory", async () => {
  await withProxy(async (r, u) => {
    const before = await peakRssKb(r.pid);
    const size = 1024 * 1024 * 1024;
    const out = await runCommand("bash", [
      "-c",
      `head -c ${size} /dev/zero | curl -sS --max-time 90 -x http://127.0.0.1:${r.outbound} ` +
      `-T - -X PUT -o - -w '\\n%{http_code}' http://127.0.0.1:${u.port}/big`,
    ], { timeoutMs: 100_000 });
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, out.stderr);
    const nl = text.lastIndexOf("\n");
    assert.equal(text.slice(nl + 1), "200", text);
    const echo = JSON.parse(text.slice(0, nl)) as Echo;
    assert.equal(echo.bodyBytes, size, "every byte reached the upstream");
    const peak = await peakRssKb(r.pid);
    assert.ok(
      peak < 250 * 1024,
      `remora peak RSS ${Math.round(peak / 1024)} MB (was ${Math.round(before / 1024)} MB)`,
    );
  });
});

Deno.test("a large download arrives whole", async () => {
  await withProxy(async (r, u) => {
    const out = await runCommand("curl", [
      "-sS",
      "--max-time",
      "60",
      ...proxy(r),
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      `http://127.0.0.1:${u.port}/bytes/50000000`,
    ]);
    assert.equal(new TextDecoder().decode(out.stdout), "200 50000000", out.stderr);
  });
});

Deno.test("Expect: 100-continue gets a 100 before the body is sent", async () => {
  await withProxy(async (r, u) => {
    // A client that waits for the 100 before sending (no curl-style 1s fallback).
    const c = await RawConn.open(r.outbound, 5000);
    try {
      await c.write(
        `POST http://127.0.0.1:${u.port}/expect HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n` +
          "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
      );
      const interim = await c.readResponse({ interim: true });
      assert.equal(interim.status, 100);
      await c.write("hello");
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.text);
      assert.equal((JSON.parse(res.text) as Echo).bodyBytes, 5);
    } finally {
      c.close();
    }
    // A body too large to be kept for retries: streamed, the 100 still comes.
    const big = new Uint8Array(200_000).fill(98);
    const res = await curl([
      ...proxy(r),
      "-H",
      "Expect: 100-continue",
      "--expect100-timeout",
      "10",
      "--data-binary",
      "@-",
      `http://127.0.0.1:${u.port}/expect-big`,
    ], { stdin: big, timeoutS: 8 });
    assert.equal(res.status, 200, res.body);
    assert.equal((JSON.parse(res.body) as Echo).bodyBytes, 200_000);
    assert.match(res.headers, /^HTTP\/1\.1 100 Continue/);
  });
});

Deno.test("HEAD, 204 and 304 responses carry no body and keep the connection usable", async () => {
  await withProxy(async (r, u) => {
    const c = await RawConn.open(r.outbound);
    try {
      const base = `http://127.0.0.1:${u.port}`;
      const host = `Host: 127.0.0.1:${u.port}\r\n`;
      await c.write(`HEAD ${base}/bytes/1000 HTTP/1.1\r\n${host}\r\n`);
      const head = await c.readResponse({ bodiless: true });
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      for (const code of [204, 304]) {
        await c.write(`GET ${base}/status/${code} HTTP/1.1\r\n${host}\r\n`);
        const res = await c.readResponse();
        assert.equal(res.status, code);
        assert.equal(res.body.length, 0);
        assert.equal(res.header("transfer-encoding"), undefined, `${code} is not chunked`);
      }
      // The stream is still in sync: no stray body bytes before this response.
      await c.write(`GET ${base}/bytes/10 HTTP/1.1\r\n${host}\r\n`);
      const after = await c.readResponse();
      assert.equal(after.status, 200);
      assert.equal(after.text, "xxxxxxxxxx");
    } finally {
      c.close();
    }
    const res = await curl([...proxy(r), "-I", `http://127.0.0.1:${u.port}/bytes/1000`]);
    assert.equal(res.status, 200);
  });
});

Deno.test("an unreachable upstream gets 503 with a body naming the failure", async () => {
  await withProxy(async (r) => {
    const port = closedPort();
    const res = await curl([...proxy(r), `http://127.0.0.1:${port}/nothing`]);
    assert.equal(res.status, 503, res.body);
    assert.match(res.body, /connection failure/);
    assert.match(res.body, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.match(res.body, /refused/i);
    // The proxy keeps serving.
    const again = await curl([...proxy(r), `http://127.0.0.1:${port}/nothing`]);
    assert.equal(again.status, 503);
  });
});

Deno.test("malformed requests get 400 and remora keeps serving", async () => {
  await withProxy(async (r, u) => {
    const target = `http://127.0.0.1:${u.port}/bad`;
    const host = `Host: 127.0.0.1:${u.port}\r\n`;
    const bad = [
      `POST ${target} HTTP/1.1\r\n${host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`,
      `GET ${target} HTTP/1.1\r\n${host}Bad Header: x\r\n\r\n`,
      `GET ${target} HTTP/1.1\r\n${host}NoColonHere\r\n\r\n`,
      `GET ${target} HTTP/1.1\r\n${host}X-Folded: a\r\n b\r\n\r\n`,
      `POST ${target} HTTP/1.1\r\n${host}Content-Length: 5\r\nContent-Length: 6\r\n\r\n`,
      `POST ${target} HTTP/1.1\r\n${host}Content-Length: -1\r\n\r\n`,
      `GET  HTTP/1.1\r\n${host}\r\n`,
    ];
    for (const req of bad) {
      const c = await RawConn.open(r.outbound, 5000);
      try {
        await c.write(req);
        const res = await c.readResponse();
        assert.equal(res.status, 400, `${JSON.stringify(req)} → ${res.status} ${res.text}`);
        assert.match(res.text, /bad request|malformed/i);
        assert.ok(await c.closedByPeer(), "the connection is closed after a 400");
      } finally {
        c.close();
      }
    }
    assert.equal(u.requests, 0, "no malformed request reached the upstream");
    const ok = await curl([...proxy(r), `http://127.0.0.1:${u.port}/fine`]);
    assert.equal(ok.status, 200);
  });
});

Deno.test("CONNECT tunnels bytes to the upstream", async () => {
  await withProxy(async (r, u) => {
    const res = await curl(["-p", ...proxy(r), `http://127.0.0.1:${u.port}/tunneled`]);
    assert.equal(res.status, 200, res.body);
    assert.match(res.headers, /^HTTP\/1\.1 200 Connection Established/);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.url, "/tunneled");
    // Through a tunnel remora does not touch the HTTP inside.
    assert.equal(echo.headers["x-request-id"], undefined);

    const closed = closedPort();
    const fail = await curl(["-p", ...proxy(r), `http://127.0.0.1:${closed}/`]);
    assert.notEqual(fail.code, 0, "curl reports the failed tunnel");
    assert.match(fail.headers, /^HTTP\/1\.1 503/m);
  });
});

Deno.test("CONNECT to a service of the mesh is refused: a tunnel would skip its routes", async () => {
  const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc }
spec:
  hosts: [svc.example.internal]
  http:
  - match: [{ uri: { prefix: /direct } }]
    directResponse: { status: 418 }
  - route: [{ destination: { host: svc.example.internal } }]
`;
  await withSvc(vs, async (r, u) => {
    const tunnel = await curl(["-p", ...proxy(r), "http://svc.example.internal/direct"]);
    assert.match(tunnel.headers, /^HTTP\/1\.1 404/m);
    assert.equal(u.requests + u.connections, 0, "nothing reached the service");
    // Its requests through the proxy get the routes.
    const routed = await curl([...proxy(r), "http://svc.example.internal/direct"]);
    assert.equal(routed.status, 418);
    // A host outside the registry is still tunnelled (ALLOW_ANY).
    const outside = await curl(["-p", ...proxy(r), `http://127.0.0.1:${u.port}/t`]);
    assert.equal(outside.status, 200, outside.body);
  });
});

Deno.test("remora's own admin, stats and health ports are not reachable through the proxy", async () => {
  await withProxy(async (r) => {
    for (const port of [r.admin, r.stats, r.health, r.outbound, r.inbound]) {
      for (const host of ["127.0.0.1", "localhost"]) {
        const res = await curl([...proxy(r), `http://${host}:${port}/config_dump`]);
        assert.equal(res.status, 403, `${host}:${port} → ${res.status} ${res.body}`);
        assert.doesNotMatch(res.body, /"version"/);
      }
    }
    const tunnel = await curl(["-p", ...proxy(r), `http://127.0.0.1:${r.admin}/config_dump`]);
    assert.match(tunnel.headers, /^HTTP\/1\.1 403/m, "no CONNECT tunnel to the admin port");
    assert.doesNotMatch(tunnel.body, /"version"/);
    // The admin port itself answers on loopback.
    const direct = await curl([`http://127.0.0.1:${r.admin}/ready`]);
    assert.equal(direct.status, 200);
  });
});

Deno.test("the inbound listener forwards to the app port", async () => {
  const u = await startUpstream("app");
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(u.port)]);
    const res = await curl([`http://127.0.0.1:${r.inbound}/inbound?q=1`]);
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.server, "app");
    assert.equal(echo.url, "/inbound?q=1");
    assert.equal(echo.headers["x-forwarded-for"], undefined);
    const upload = await curl(
      ["-T", "-", `http://127.0.0.1:${r.inbound}/up`],
      { stdin: new Uint8Array(100_000) },
    );
    assert.equal(upload.status, 200, upload.body);
    assert.equal((JSON.parse(upload.body) as Echo).bodyBytes, 100_000);
  } finally {
    await r?.stop();
    await u.close();
  }
});

Deno.test("an HTTP/1.0 client gets a body without chunked framing, ended by close", async () => {
  await withProxy(async (r, u) => {
    const c = await RawConn.open(r.outbound);
    try {
      // The upstream answers chunked (node:http streams JSON to an HTTP/1.1 request).
      await c.write(`GET http://127.0.0.1:${u.port}/ten HTTP/1.0\r\n\r\n`);
      const res = await c.readResponse();
      assert.equal(res.status, 200);
      assert.equal(res.header("transfer-encoding"), undefined);
      assert.equal((JSON.parse(res.text) as Echo).url, "/ten");
      assert.ok(await c.closedByPeer());
    } finally {
      c.close();
    }
    // A 1.0 request with keep-alive still gets a whole, parsable response.
    const d = await RawConn.open(r.outbound);
    try {
      await d.write(
        `GET http://127.0.0.1:${u.port}/bytes/100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`,
      );
      const res = await d.readResponse();
      assert.equal(res.status, 200);
      assert.equal(res.body.length, 100_000);
    } finally {
      d.close();
    }
  });
});

Deno.test("pipelined requests are answered in order", async () => {
  await withProxy(async (r, u) => {
    const c = await RawConn.open(r.outbound);
    try {
      const get = (p: string) => `GET http://127.0.0.1:${u.port}${p} HTTP/1.1\r\nHost: x\r\n\r\n`;
      await c.write(
        get("/a") +
          `POST http://127.0.0.1:${u.port}/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc` +
          get("/delay/100") + get("/c"),
      );
      const urls = [];
      for (let i = 0; i < 4; i++) {
        const res = await c.readResponse();
        assert.equal(res.status, 200);
        urls.push(res.text.startsWith("{") ? (JSON.parse(res.text) as Echo).url : res.text.trim());
      }
      assert.deepEqual(urls, ["/a", "/b", "delayed 100 from u1", "/c"]);
    } finally {
      c.close();
    }
  });
});

Deno.test("a request head of 64 KiB or more gets 431 from remora", async () => {
  await withProxy(async (r, u) => {
    const c = await RawConn.open(r.outbound, 5000);
    try {
      // Exactly 64 KiB with no end of head: everything sent is read, so no reset races the reply.
      const start = `GET http://127.0.0.1:${u.port}/big HTTP/1.1\r\nHost: x\r\nX-Big: `;
      await c.write(start + "a".repeat(64 * 1024 - start.length));
      const res = await c.readResponse();
      assert.equal(res.status, 431);
      assert.match(res.text, /request head larger than 64 KiB/);
    } finally {
      c.close();
    }
    assert.equal(u.requests, 0);
  });
});

Deno.test("a directResponse whose route sets content-type sends that one type only", async () => {
  const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc }
spec:
  hosts: [svc.example.internal]
  http:
  - directResponse: { status: 200, body: { string: '{"ok":true}' } }
    headers: { response: { set: { content-type: application/json, x-direct: "1" } } }
`;
  await withSvc(vs, async (r) => {
    const res = await curl([...proxy(r), "http://svc.example.internal/"]);
    assert.equal(res.status, 200);
    assert.deepEqual(res.headers.match(/^content-type:.*$/gim)?.map((l) => l.trim()), [
      "content-type: application/json",
    ]);
    assert.match(res.headers, /^x-direct: 1/m);
    assert.equal(JSON.parse(res.body).ok, true);
  });
});
Deno.test("a client that leaves before its response is recorded as DC and its upstream request is dropped", async () => {
  const u = await startUpstream("u1");
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(u.port), "--access-log", "json"]);
    for (
      const [port, target] of [[r.outbound, `http://127.0.0.1:${u.port}/delay/3000`], [
        r.inbound,
        "/delay/3000",
      ]] as const
    ) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await c.write(
        new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${u.port}\r\n\r\n`),
      );
      await new Promise((res) => setTimeout(res, 200));
      c.close();
    }
    // Recorded within a second or so (not after the upstream's 3 s), with code 0 and flag DC.
    let text = "";
    const deadline = Date.now() + 2500;
    const both = () =>
      ["source", "destination"].every((rep) =>
        new RegExp(`reporter="${rep}"[^}]*response_code="0"[^}]*response_flags="DC"`).test(text)
      );
    while (Date.now() < deadline) {
      text = await scrape(r);
      if (both()) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.match(text, /reporter="source"[^}]*response_code="0"[^}]*response_flags="DC"/);
    assert.match(text, /reporter="destination"[^}]*response_code="0"[^}]*response_flags="DC"/);
    assert.doesNotMatch(text, /response_code="200"/, "nothing counted as served");
    // The proxy goes on serving.
    const ok = await curl([...proxy(r), `http://127.0.0.1:${u.port}/fine`]);
    assert.equal(ok.status, 200);
  } finally {
    await r?.stop();
    await u.close();
  }
});

Deno.test("on SIGTERM: not ready, inbound requests in flight finish, and the app can still call out until then", async () => {
  const app = await startUpstream("app");
  const other = await startUpstream("other");
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(app.port), "--drain-time", "5s"]);
    const rr = r;
    // A slow inbound request is in flight when the signal comes.
    const slow = curl([`http://127.0.0.1:${rr.inbound}/delay/1500`]);
    assert.ok(await eventually(() => app.requests === 1), "the slow request reached the app");
    Deno.kill(rr.pid, "SIGTERM");
    const notReady = () =>
      curl([`http://127.0.0.1:${rr.health}/healthz/ready`]).then((c) => c.status === 503);
    assert.ok(await eventually(notReady), "draining: not ready");
    // The app, finishing its work, calls out through the sidecar: still served.
    const out = await curl([...proxy(rr), `http://127.0.0.1:${other.port}/during-drain`]);
    assert.equal(out.status, 200, out.body);
    // A new inbound connection is not taken any more.
    const late = await curl(["--max-time", "3", `http://127.0.0.1:${rr.inbound}/late`]);
    assert.equal(late.status, 0, "the inbound listener is closed");
    const done = await slow;
    assert.equal(done.status, 200, "the request in flight finished");
  } finally {
    await r?.stop();
    await app.close();
    await other.close();
  }
});

Deno.test("on SIGTERM with only outbound traffic: outbound keeps serving while the app has connections; a second signal does not cut the drain", async () => {
  const up = await startUpstream("up");
  let r: Remora | undefined;
  try {
    r = await startRemora(["--drain-time", "5s"]);
    const rr = r;
    const slow = curl([...proxy(rr), `http://127.0.0.1:${up.port}/delay/1500`]);
    assert.ok(await eventually(() => up.requests === 1), "the slow request reached the upstream");
    Deno.kill(rr.pid, "SIGTERM");
    assert.ok(
      await eventually(() => /shutting down/.test(rr.stderr() + rr.stdout())),
      "the signal was taken",
    );
    // The app is still running and calls out: served, although nothing came in.
    const more = await curl([...proxy(rr), `http://127.0.0.1:${up.port}/more`]);
    assert.equal(more.status, 200, more.body);
    // A second signal is noted, not obeyed at once: the request in flight still finishes.
    Deno.kill(rr.pid, "SIGTERM");
    const done = await slow;
    assert.equal(done.status, 200, "the outbound request in flight finished");
    assert.match(rr.stderr() + rr.stdout(), /already shutting down/);
  } finally {
    await r?.stop();
    await up.close();
  }
});

Deno.test("a gRPC call over HTTP/1.1 gets remora's own answers as gRPC: HTTP 200 and a grpc-status", async () => {
  const dead = closedPort();
  await withProxy(async (r) => {
    const res = await curl([
      ...proxy(r),
      "-H",
      "content-type: application/grpc",
      "-H",
      "te: trailers",
      "--data-binary",
      "@-",
      `http://127.0.0.1:${dead}/pkg.Svc/Call`,
    ], { stdin: new Uint8Array(5) });
    assert.equal(res.status, 200, res.headers);
    assert.match(res.headers, /^content-type: application\/grpc\r$/m);
    assert.match(res.headers, /^grpc-status: 14\r$/m, "UNAVAILABLE for a 503");
    assert.match(res.headers, /^grpc-message: upstream connect error/m);
    assert.equal(res.body, "");
    const metrics = await scrape(r);
    assert.match(
      metrics,
      /grpc_response_status="14"[^}]*response_code="200"|response_code="200"[^}]*grpc_response_status="14"/,
    );
  });
});

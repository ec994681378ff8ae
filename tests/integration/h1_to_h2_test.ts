/**
 * HTTP/1.1 clients to services whose port is declared HTTP2 or GRPC (or
 * named http2-* / grpc-*), through a real `remora run` process: curl sends
 * HTTP/1.1 to the outbound listener and remora speaks HTTP/2 upstream, as
 * Envoy's clusters for such ports do. Upstreams are h2c-only servers (a
 * node:http2 echo server, python3-grpcio), so any request that reaches them
 * went as HTTP/2. Covers bodies both ways (content-length, chunked, 1 MB),
 * HEAD, a 404, response trailers (passed on only with `TE: trailers`), a
 * gRPC unary call with its grpc-status in the trailers and in metrics,
 * retries, reset, timeout, circuit breaking and a client that leaves, mTLS
 * (ALPN istio-h2) between two remoras, and ports declared HTTP, which still
 * get HTTP/1.1.
 */

import assert from "node:assert/strict";
import http2 from "node:http2";
import { initCa, issueCert, writeIssued } from "../../src/identity/ca.ts";
import {
  closedPort,
  curl,
  curlLines,
  type Echo,
  eventually,
  exec,
  type H2Echo,
  type H2Upstream,
  listenH2,
  parseMetrics,
  PYTHON,
  RawConn,
  type Remora,
  scrape,
  type ServerProcess,
  startH2Upstream,
  startRemora,
  startServerProcess,
  startUpstream,
  TESTDATA,
  writeConfig,
} from "./harness.ts";

/** A ServiceEntry `host` on port 80, its port `port` (name and protocol) on `endpoints`. */
function serviceEntry(host: string, port: string, endpoints: string[]): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${host.split(".")[0]} }
spec:
  hosts: [${host}]
  ports: [${port}]
  resolution: STATIC
  endpoints:
${endpoints.map((e) => `  - ${e}`).join("\n")}
`;
}

/** The value of istio_requests_total series whose labels include all of `labels`, summed. */
function requestsTotal(text: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("istio_requests_total{")) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

Deno.test("HTTP/1.1 to a port declared HTTP2 goes upstream as HTTP/2: GET, POST by length and chunked, 1 MB, HEAD, 404", async () => {
  let up: H2Upstream | undefined;
  let r: Remora | undefined;
  try {
    up = await startH2Upstream("h2app");
    const config = await writeConfig(
      serviceEntry("h2.svc.test", "{ number: 80, name: web, protocol: HTTP2 }", [
        `{ address: 127.0.0.1, ports: { web: ${up.port} } }`,
      ]),
    );
    r = await startRemora(["--config", config]);
    const proxy = ["-x", `http://127.0.0.1:${r.outbound}`];
    const url = "http://h2.svc.test";

    const get = await curl([...proxy, `${url}/hello?x=1`]);
    assert.equal(get.status, 200, get.body);
    assert.match(get.headers, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(get.headers, /\r\nx-upstream: h2app\r\n/);
    // The upstream gave no content-length: the HTTP/1.1 client gets the body chunked.
    assert.match(get.headers, /\r\ntransfer-encoding: chunked\r\n/);
    const echo = JSON.parse(get.body) as H2Echo;
    assert.equal(echo.method, "GET");
    assert.equal(echo.path, "/hello?x=1");
    assert.equal(echo.authority, "h2.svc.test");
    assert.equal(typeof echo.headers["x-request-id"], "string");
    for (const hop of ["host", "connection", "proxy-connection", "transfer-encoding", "te"]) {
      assert.equal(echo.headers[hop], undefined, `${hop} is not sent over HTTP/2`);
    }

    // A body with a content-length, small (kept for retries) and large (streamed).
    const small = await curl([...proxy, "--data-binary", "0123456789", `${url}/post`]);
    assert.equal(small.status, 200, small.body);
    const smallEcho = JSON.parse(small.body) as H2Echo;
    assert.deepEqual([smallEcho.method, smallEcho.bodyBytes], ["POST", 10]);
    assert.equal(smallEcho.headers["content-length"], "10");
    const large = await curl([...proxy, "--data-binary", "@-", `${url}/post`], {
      stdin: new Uint8Array(200_000).fill(3),
    });
    assert.equal((JSON.parse(large.body) as H2Echo).bodyBytes, 200_000);
    // Chunked bodies go out as DATA without their framing, small and large.
    const chunked = await curl([
      ...proxy,
      "-H",
      "Transfer-Encoding: chunked",
      "--data-binary",
      "abcdef",
      `${url}/chunked`,
    ]);
    const chunkedEcho = JSON.parse(chunked.body) as H2Echo;
    assert.equal(chunkedEcho.bodyBytes, 6);
    assert.equal(chunkedEcho.headers["content-length"], undefined);
    const upload = await curl([...proxy, "-T", "-", `${url}/upload`], {
      stdin: new Uint8Array(300_000).fill(7),
    });
    assert.equal(upload.status, 200, upload.body);
    assert.deepEqual(
      [(JSON.parse(upload.body) as H2Echo).method, (JSON.parse(upload.body) as H2Echo).bodyBytes],
      ["PUT", 300_000],
    );

    // On one keep-alive connection: a 1 MB download, a 404, and a GET after them.
    const lines = await curlLines(proxy, [
      `${url}/bytes/1000000`,
      `${url}/status/404`,
      `${url}/after`,
    ], { format: "%{http_code} %{size_download} %{num_connects}" });
    assert.equal(lines.length, 3, lines.join("\n"));
    assert.equal(lines[0], "200 1000000 1");
    assert.equal(lines[1], `404 ${"status 404 from h2app\n".length} 0`);
    assert.match(lines[2]!, /^200 \d+ 0$/);
    const missing = await curl([...proxy, `${url}/status/404`]);
    assert.equal(missing.status, 404);
    assert.equal(missing.body, "status 404 from h2app\n");
    // HEAD: a head without a body, and the connection goes on with the next response.
    const raw = await RawConn.open(r.outbound);
    try {
      await raw.write(
        "HEAD /hello HTTP/1.1\r\nHost: h2.svc.test\r\n\r\nGET /next HTTP/1.1\r\nHost: h2.svc.test\r\n\r\n",
      );
      const head = await raw.readResponse({ bodiless: true });
      assert.equal(head.status, 200);
      assert.equal(head.header("x-upstream"), "h2app");
      assert.equal(head.header("transfer-encoding"), undefined);
      const next = await raw.readResponse();
      assert.equal(next.status, 200);
      assert.equal((JSON.parse(next.text) as H2Echo).path, "/next");
    } finally {
      raw.close();
    }

    // Trailers reach an HTTP/1.1 client that accepts them (TE: trailers), in the last chunk.
    const withTe = await curl([...proxy, "--raw", "-H", "TE: trailers", `${url}/trailers`]);
    assert.equal(withTe.status, 200, withTe.body);
    assert.match(
      withTe.body,
      /body before trailers from h2app\n\r\n0\r\nx-checksum: abc123\r\nx-trailer: from h2app\r\n\r\n$/,
    );
    const withoutTe = await curl([...proxy, "--raw", `${url}/trailers`]);
    assert.match(withoutTe.body, /body before trailers from h2app\n\r\n0\r\n\r\n$/);
    // Every request went over the one pooled upstream session.
    assert.equal(up.sessions, 1);
  } finally {
    await r?.stop();
    await up?.close();
  }
});

/** A gRPC message frame: not compressed, 4-byte big-endian length, the bytes. */
function grpcFrame(text: string): Uint8Array {
  const msg = new TextEncoder().encode(text);
  const out = new Uint8Array(5 + msg.length);
  new DataView(out.buffer).setUint32(1, msg.length);
  out.set(msg, 5);
  return out;
}

Deno.test("HTTP/1.1 gRPC call to a port named grpc-*: sent as HTTP/2, grpc-status comes back in the trailers", async () => {
  let server: ServerProcess | undefined;
  let r: Remora | undefined;
  try {
    server = await startServerProcess(PYTHON, [`${TESTDATA}grpc_echo_server.py`]);
    // No protocol field: the port's name says GRPC, as Istio reads it.
    const config = await writeConfig(
      serviceEntry("echo.grpc.internal", "{ number: 50051, name: grpc-echo }", [
        `{ address: 127.0.0.1, ports: { grpc-echo: ${server.port} } }`,
      ]),
    );
    r = await startRemora(["--config", config]);
    const call = (method: string, message: string) =>
      curl([
        "-x",
        `http://127.0.0.1:${r!.outbound}`,
        "--raw",
        "-H",
        "content-type: application/grpc",
        "-H",
        "TE: trailers",
        "--data-binary",
        "@-",
        `http://echo.grpc.internal:50051/remora.test.Echo/${method}`,
      ], { stdin: grpcFrame(message) });

    const ok = await call("Unary", "hello over HTTP/1.1");
    assert.equal(ok.status, 200, ok.body + r.stderr());
    assert.match(ok.headers, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(ok.headers, /\r\ncontent-type: application\/grpc\r\n/);
    assert.match(ok.headers, /\r\ntransfer-encoding: chunked\r\n/);
    // The echoed message in a chunk, then the last chunk with gRPC's trailers.
    const frame = String.fromCharCode(...grpcFrame("hello over HTTP/1.1"));
    assert.ok(ok.body.includes(frame), JSON.stringify(ok.body));
    const trailers = ok.body.slice(ok.body.lastIndexOf("\r\n0\r\n") + 5);
    assert.match(trailers, /(^|\r\n)grpc-status: 0\r\n/, JSON.stringify(ok.body));
    assert.match(trailers, /(^|\r\n)x-echo-trailer: unary-done\r\n/);
    assert.match(trailers, /\r\n\r\n$/);

    // A trailers-only error: its status is in the response head, with a length of 0.
    const fail = await call("Fail", "widget-7");
    assert.equal(fail.status, 200);
    assert.match(fail.headers, /\r\ngrpc-status: 5\r\n/);
    assert.match(fail.headers, /\r\ngrpc-message: no such thing: widget-7\r\n/);
    assert.match(fail.headers, /\r\ncontent-length: 0\r\n/);
    assert.equal(fail.body, "");

    const text = await scrape(r);
    const source = { reporter: "source", request_protocol: "grpc", response_code: "200" };
    assert.equal(requestsTotal(text, { ...source, grpc_response_status: "0" }), 1, text);
    assert.equal(requestsTotal(text, { ...source, grpc_response_status: "5" }), 1, text);
  } finally {
    await r?.stop();
    await server?.stop();
  }
});

/**
 * An h2c upstream for failure cases: /reset resets the stream before answering,
 * /goaway says GOAWAY without answering and closes the connection (Deno's
 * node:http2 names the last stream it received, whatever id is passed for 0),
 * /refuse-once/KEY says GOAWAY refusing that stream the first time (and keeps
 * the connection open), /hang never answers, /delay/MS answers after MS;
 * anything else answers "ok". Counts streams and the ones the client cancelled.
 */
function startFaultyH2(): Promise<
  { port: number; streams: number; cancelled: number; close(): Promise<void> }
> {
  const state = { streams: 0, cancelled: 0 };
  const refusedOnce = new Set<string>();
  const server = http2.createServer();
  server.on("stream", (raw, headers) => {
    const stream = raw as http2.ServerHttp2Stream;
    state.streams++;
    stream.on("error", () => {});
    stream.on("close", () => {
      if (stream.rstCode === http2.constants.NGHTTP2_CANCEL) state.cancelled++;
    });
    const path = String(headers[":path"]);
    stream.resume();
    if (path === "/reset") return stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    if (path === "/goaway") {
      // GOAWAY, then the connection closed with this stream unanswered.
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
      setTimeout(() => stream.session?.destroy(), 50);
      return;
    }
    if (path.startsWith("/refuse-once/") && !refusedOnce.has(path)) {
      refusedOnce.add(path);
      // The last stream id it will process is the one before this stream's.
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, Math.max(0, stream.id! - 2));
      return;
    }
    if (path.startsWith("/hang")) return;
    const ms = path.startsWith("/delay/") ? Number(path.slice(7)) : 0;
    const t = setTimeout(() => {
      if (stream.destroyed) return;
      stream.respond({ ":status": 200 });
      stream.end("ok\n");
    }, ms);
    stream.on("close", () => clearTimeout(t));
  });
  const listening = listenH2(server);
  return Promise.resolve({
    port: listening.port,
    get streams() {
      return state.streams;
    },
    get cancelled() {
      return state.cancelled;
    },
    close: () => listening.close(),
  });
}

Deno.test("HTTP/1.1 to a port declared HTTP2: retries, reset, timeouts, circuit breaking and a client that leaves", async () => {
  const up = await startFaultyH2();
  let r: Remora | undefined;
  try {
    const config = await writeConfig(
      serviceEntry("flaky.svc.test", "{ number: 80, name: web, protocol: HTTP2 }", [
        `{ address: 127.0.0.1, ports: { web: ${up.port} } }`,
        `{ address: 127.0.0.1, ports: { web: ${closedPort()} } }`,
      ]) + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: flaky }
spec:
  hosts: [flaky.svc.test]
  http:
  - match: [{ uri: { prefix: /hang-timeout } }]
    timeout: 300ms
    route: [{ destination: { host: flaky.svc.test } }]
  - route: [{ destination: { host: flaky.svc.test } }]
    retries: { attempts: 2, retryOn: connect-failure }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: flaky }
spec:
  host: flaky.svc.test
  trafficPolicy: { connectionPool: { http: { http2MaxRequests: 1 } } }
`,
    );
    r = await startRemora(["--config", config, "--access-log", "json"]);
    const proxy = ["-x", `http://127.0.0.1:${r.outbound}`];
    const url = "http://flaky.svc.test";

    // Half the first attempts go to the dead endpoint: each is retried on the live one.
    for (let i = 0; i < 6; i++) {
      const get = await curl([...proxy, `${url}/ok`]);
      assert.equal(get.status, 200, `GET ${i}: ${get.body}`);
      const post = await curl([...proxy, "--data-binary", "a=1", `${url}/ok`]);
      assert.equal(post.status, 200, `POST ${i}: ${post.body}`);
    }
    assert.equal(up.streams, 12);

    // A stream the upstream resets before its response: 503 UR (Envoy's remote reset).
    const reset = await curl([...proxy, `${url}/reset`]);
    assert.equal(reset.status, 503, reset.body);
    assert.match(reset.body, /reset reason: remote reset/);
    // GOAWAY (naming this stream as processed) and the connection closed before the response:
    // 503 UC, and the next request gets a new session.
    const goaway = await curl([...proxy, `${url}/goaway`]);
    assert.equal(goaway.status, 503, goaway.body);
    assert.match(goaway.body, /reset reason: connection termination/);
    assert.equal((await curl([...proxy, `${url}/ok`])).status, 200);

    // The route's timeout answers 504 and cancels the upstream stream.
    const cancelled = up.cancelled;
    const slow = await curl([...proxy, `${url}/hang-timeout`]);
    assert.equal(slow.status, 504, slow.body);
    assert.match(slow.body, /upstream request timeout/);
    assert.ok(await eventually(() => up.cancelled === cancelled + 1), "the stream was cancelled");
    // A gRPC call's own grpc-timeout is its timeout (none on this route): remora's answer at
    // 200 ms is gRPC's UNAVAILABLE, and the upstream stream is cancelled.
    const deadline = await curl([
      ...proxy,
      "-H",
      "content-type: application/grpc",
      "-H",
      "grpc-timeout: 200m",
      "--data-binary",
      "x",
      `${url}/hang`,
    ]);
    assert.equal(deadline.status, 200, deadline.body);
    assert.match(deadline.headers, /\r\ngrpc-status: 14\r\n/);
    assert.match(deadline.headers, /\r\ngrpc-message: upstream request timeout\r\n/);
    assert.ok(await eventually(() => up.cancelled === cancelled + 2), "the stream was cancelled");

    // http2MaxRequests: 1 — a second request while one is in flight is refused with 503 UO.
    const streams = up.streams;
    const busy = curl([...proxy, `${url}/delay/1500`]);
    assert.ok(await eventually(() => up.streams === streams + 1), "the first request is in flight");
    const refused = await curl([...proxy, `${url}/ok`]);
    assert.equal(refused.status, 503, refused.body);
    assert.match(refused.headers, /\r\nx-envoy-overloaded: true\r\n/);
    assert.equal((await busy).status, 200);

    // A client that leaves while waiting: the upstream stream is cancelled, and the request
    // is recorded with code 0 and DC.
    const gone = await exec("curl", ["-sS", ...proxy, "--max-time", "1", `${url}/hang`]);
    assert.equal(gone.code, 28, gone.stderr);
    assert.ok(
      await eventually(() => up.cancelled === cancelled + 3, 5000),
      `cancelled: ${up.cancelled - cancelled}`,
    );
    const text = await scrape(r);
    assert.equal(requestsTotal(text, { response_code: "0", response_flags: "DC" }), 1, text);
    assert.equal(requestsTotal(text, { response_code: "503", response_flags: "UO" }), 1, text);
    // The reset is UR, the GOAWAY UC (with URX when a dead endpoint was tried first).
    const failed = (flag: string) =>
      parseMetrics(text).filter((m) =>
        m.name === "istio_requests_total" && m.labels.response_code === "503" &&
        m.labels.response_flags?.replace(/^URX,/, "") === flag
      ).reduce((n, m) => n + m.value, 0);
    assert.equal(failed("UR"), 1, text);
    assert.equal(failed("UC"), 1, text);
  } finally {
    await r?.stop();
    await up.close();
  }
});

Deno.test("a stream the upstream refuses with GOAWAY is retried on a new session (Istio's default refused-stream), from HTTP/1.1 and h2c", async () => {
  const up = await startFaultyH2();
  let r: Remora | undefined;
  try {
    // No VirtualService for refuse.svc.test: Istio's default retries apply. no-retry.svc.test
    // (the same upstream) turns them off.
    const config = await writeConfig(
      serviceEntry("refuse.svc.test", "{ number: 80, name: web, protocol: HTTP2 }", [
        `{ address: 127.0.0.1, ports: { web: ${up.port} } }`,
      ]) + "---\n" +
        serviceEntry("no-retry.svc.test", "{ number: 80, name: web, protocol: HTTP2 }", [
          `{ address: 127.0.0.1, ports: { web: ${up.port} } }`,
        ]) + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: no-retry }
spec:
  hosts: [no-retry.svc.test]
  http: [{ route: [{ destination: { host: no-retry.svc.test } }], retries: { attempts: 0 } }]
`,
    );
    r = await startRemora(["--config", config]);
    const proxy = ["-x", `http://127.0.0.1:${r.outbound}`];
    // Warm sessions first, so that the refused stream is not its session's first.
    assert.equal((await curl([...proxy, "http://refuse.svc.test/ok"])).status, 200);
    const h1 = await curl([...proxy, "http://refuse.svc.test/refuse-once/h1"]);
    assert.equal(h1.status, 200, h1.body);
    assert.equal(h1.body, "ok\n");
    const h2c = await curl([
      "--http2-prior-knowledge",
      "-H",
      "Host: refuse.svc.test",
      `http://127.0.0.1:${r.outbound}/refuse-once/h2c`,
    ]);
    assert.equal(h2c.status, 200, h2c.body);
    // ok, the refused stream and its retry, twice.
    assert.equal(up.streams, 5);
    // Without retries the refusal is the answer: 503, at once rather than at a timeout.
    const once = await curl([...proxy, "http://no-retry.svc.test/refuse-once/none"], {
      timeoutS: 5,
    });
    assert.equal(once.status, 503, once.body);
    assert.match(once.body, /reset reason: remote refused stream reset/);
    const text = await scrape(r);
    assert.equal(requestsTotal(text, { response_code: "200", response_flags: "-" }), 3, text);
  } finally {
    await r?.stop();
    await up.close();
  }
});

Deno.test("HTTP/1.1 to a port declared HTTP still goes upstream as HTTP/1.1, beside one declared HTTP2", async () => {
  const app = await startUpstream("h1app");
  const h2app = await startH2Upstream("h2app");
  // A bare TCP server on a port declared HTTP, to see the very bytes remora sends.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const rawPort = (l.addr as Deno.NetAddr).port;
  const seen: string[] = [];
  const serving = (async () => {
    for await (const c of l) {
      (async () => {
        const buf = new Uint8Array(4096);
        const n = await c.read(buf);
        seen.push(new TextDecoder().decode(buf.subarray(0, n ?? 0)));
        await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nraw"));
        c.close();
      })().catch(() => {});
    }
  })().catch(() => {});
  let r: Remora | undefined;
  try {
    const config = await writeConfig(
      [
        serviceEntry("h1.svc.test", "{ number: 80, name: http, protocol: HTTP }", [
          `{ address: 127.0.0.1, ports: { http: ${app.port} } }`,
        ]),
        serviceEntry("raw.svc.test", "{ number: 80, name: http-raw }", [
          `{ address: 127.0.0.1, ports: { http-raw: ${rawPort} } }`,
        ]),
        serviceEntry("h2.svc.test", "{ number: 80, name: http2-web }", [
          `{ address: 127.0.0.1, ports: { http2-web: ${h2app.port} } }`,
        ]),
      ].join("---\n"),
    );
    r = await startRemora(["--config", config]);
    const proxy = ["-x", `http://127.0.0.1:${r.outbound}`];
    const h1 = await curl([...proxy, "--data-binary", "abc", "http://h1.svc.test/echo"]);
    assert.equal(h1.status, 200, h1.body);
    const echo = JSON.parse(h1.body) as Echo;
    assert.equal(echo.server, "h1app");
    assert.equal(echo.headers["host"], "h1.svc.test");
    assert.equal(echo.bodyBytes, 3);
    const raw = await curl([...proxy, "http://raw.svc.test/raw?q=1"]);
    assert.equal(raw.body, "raw");
    assert.match(seen[0] ?? "", /^GET \/raw\?q=1 HTTP\/1\.1\r\n/);
    assert.match(seen[0] ?? "", /\r\nhost: raw\.svc\.test\r\n/i);
    // Both kinds on one client connection: each request goes as its cluster's port says.
    const lines = await curlLines(proxy, [
      "http://h2.svc.test/a",
      "http://h1.svc.test/b",
      "http://h2.svc.test/c",
    ], { format: "%{http_code} %{num_connects}" });
    assert.deepEqual(lines, ["200 1", "200 0", "200 0"]);
    assert.equal(h2app.requests, 2);
    assert.equal(app.requests, 2);
  } finally {
    await r?.stop();
    await app.close();
    await h2app.close();
    l.close();
    await serving;
  }
});

Deno.test("HTTP/1.1 to a meshed endpoint of a port declared HTTP2 goes as HTTP/2 over mTLS (ALPN istio-h2)", async () => {
  const td = "cluster.local";
  const ca = await initCa({ trustDomain: td, ttlMs: 24 * 3_600_000 });
  const dirs: string[] = [];
  const identity = async (sa: string) => {
    const dir = await Deno.makeTempDir({ prefix: `remora-id-${sa}-` });
    dirs.push(dir);
    await writeIssued(
      dir,
      await issueCert(ca, { id: `spiffe://${td}/ns/default/sa/${sa}`, ttlMs: 3_600_000 }),
    );
    return dir;
  };
  let app: H2Upstream | undefined;
  let a: Remora | undefined;
  let b: Remora | undefined;
  try {
    app = await startH2Upstream("app-b");
    b = await startRemora([
      "--identity-dir",
      await identity("b"),
      "--app-port",
      String(app.port),
      "--access-log",
      "json",
    ]);
    const endpoint = (sa: string) =>
      `{ address: 127.0.0.1, ports: { http2: ${b!.inbound} }, serviceAccount: ${sa} }`;
    const config = await writeConfig(
      serviceEntry("b.mesh.internal", "{ number: 80, name: http2, protocol: HTTP2 }", [
        endpoint("b"),
      ]) + "---\n" +
        serviceEntry("wrong.mesh.internal", "{ number: 80, name: http2, protocol: HTTP2 }", [
          endpoint("payments"),
        ]),
    );
    a = await startRemora(["--identity-dir", await identity("a"), "--config", config]);
    const proxy = ["-x", `http://127.0.0.1:${a.outbound}`];
    const res = await curl([...proxy, "--data-binary", "hello", "http://b.mesh.internal/echo"]);
    assert.equal(res.status, 200, res.body + a.stderr());
    const echo = JSON.parse(res.body) as H2Echo;
    assert.equal(echo.bodyBytes, 5);
    // B learned A's identity from the mTLS handshake.
    assert.match(
      String(echo.headers["x-forwarded-client-cert"]),
      /;URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/a$/,
    );
    // B received HTTP/2 from A.
    const line = await (async () => {
      for (let i = 0; i < 50; i++) {
        const found = b!.stdout().split("\n").find((x) => x.includes('"/echo"'));
        if (found !== undefined) return JSON.parse(found);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      throw new Error(`no access log line at B: ${b!.stdout()}`);
    })();
    assert.equal(line.protocol, "HTTP/2");
    // An endpoint that presents another identity fails: 503, never plaintext.
    const wrong = await curl([...proxy, "http://wrong.mesh.internal/echo"]);
    assert.equal(wrong.status, 503, wrong.body);
    assert.match(wrong.body, /connection failure/);
    assert.equal(app.requests, 1);
  } finally {
    await a?.stop();
    await b?.stop();
    await app?.close();
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});

/**
 * HTTP/2 (h2c with prior knowledge) through a real `remora run` process:
 * curl, nghttp and h2load send h2c to the outbound listener (the upstream
 * named by :authority) and to the inbound listener (--app-port), and a
 * node:http2 upstream in this process reports what it received. Covers proxy
 * headers, many streams on one connection, a 5 MB upload, trailers, route
 * timeout (504), an unreachable upstream (503) and a weighted split.
 *
 * One request per curl invocation: curl 7.88.1 (Debian 12) fails the second
 * request it sends on a reused h2c prior-knowledge connection with "Error in
 * the HTTP2 framing layer" against any server (node's own http2 too); that is
 * curl/curl#10634, fixed in curl 8.0. Several requests on one connection are
 * driven with nghttp and h2load instead.
 */

import assert from "node:assert/strict";
import {
  closedPort,
  curl,
  type Echo,
  exec,
  type H2Echo,
  type H2Upstream,
  PYTHON,
  type Remora,
  scrape,
  serviceEntryYaml,
  startGreeter,
  startH2Upstream,
  startRawServer,
  startRemora,
  startUpstream,
  writeConfig,
} from "./harness.ts";

const H2 = ["--http2-prior-knowledge"];

async function withSetup(
  opts: { upstreams?: string[]; config?: (ups: H2Upstream[]) => string; appPort?: boolean },
  body: (r: Remora, ups: H2Upstream[]) => Promise<void>,
): Promise<void> {
  const ups: H2Upstream[] = [];
  let r: Remora | undefined;
  try {
    for (const name of opts.upstreams ?? ["up"]) ups.push(await startH2Upstream(name));
    const args: string[] = [];
    if (opts.config !== undefined) args.push("--config", await writeConfig(opts.config(ups)));
    if (opts.appPort !== false) args.push("--app-port", String(ups[0]!.port));
    r = await startRemora(args);
    await body(r, ups);
  } finally {
    await r?.stop();
    for (const u of ups) await u.close();
  }
}

function assertProxyHeaders(echo: H2Echo): void {
  const id = echo.headers["x-request-id"];
  assert.equal(typeof id, "string", "x-request-id is added");
  assert.match(id as string, /^[0-9a-f-]{16,}$/);
  // A sidecar leaves x-forwarded-for alone (Envoy's use_remote_address is off in Istio's sidecars).
  assert.equal(echo.headers["x-forwarded-for"], undefined);
  assert.equal(echo.headers["x-forwarded-proto"], "http");
}

Deno.test("h2c on the outbound listener reaches the upstream named by :authority", async () => {
  await withSetup({ appPort: false }, async (r, [up]) => {
    const authority = `127.0.0.1:${up!.port}`;
    const res = await curl([
      ...H2,
      "-H",
      `Host: ${authority}`,
      `http://127.0.0.1:${r.outbound}/hello?x=1`,
    ]);
    assert.equal(res.code, 0, res.body);
    assert.equal(res.status, 200, res.body);
    assert.match(res.headers, /^HTTP\/2 200/);
    assert.match(res.headers, /x-upstream: up/);
    const echo = JSON.parse(res.body) as H2Echo;
    assert.equal(echo.method, "GET");
    assert.equal(echo.path, "/hello?x=1");
    assert.equal(echo.authority, authority);
    assertProxyHeaders(echo);

    // A request id and forwarded-for the client sent are kept (and extended).
    const res2 = await curl([
      ...H2,
      "-H",
      `Host: ${authority}`,
      "-H",
      "x-request-id: abc-123",
      "-H",
      "x-forwarded-for: 10.1.2.3",
      `http://127.0.0.1:${r.outbound}/again`,
    ]);
    assert.equal(res2.status, 200, res2.body);
    const echo2 = JSON.parse(res2.body) as H2Echo;
    assert.equal(echo2.headers["x-request-id"], "abc-123");
    assert.equal(echo2.headers["x-forwarded-for"], "10.1.2.3", "passed on unchanged");
  });
});

Deno.test("h2c on the inbound listener is forwarded to the app port", async () => {
  await withSetup({}, async (r, [up]) => {
    const res = await curl([...H2, `http://127.0.0.1:${r.inbound}/inbound/path`]);
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as H2Echo;
    assert.equal(echo.server, "up");
    assert.equal(echo.path, "/inbound/path");
    assert.equal(echo.authority, `127.0.0.1:${r.inbound}`);
    assertProxyHeaders(echo);
    assert.equal(up!.requests, 1);
  });
});

Deno.test("h2c: many concurrent streams on one connection all succeed", async () => {
  await withSetup({}, async (r, [up]) => {
    const authority = `127.0.0.1:${up!.port}`;
    // nghttp: 20 concurrent streams on one connection, through the outbound listener.
    const n = await exec("nghttp", [
      "-n",
      "-s",
      "-m",
      "20",
      "-H",
      `:authority: ${authority}`,
      `http://127.0.0.1:${r.outbound}/multi`,
    ], { timeoutMs: 20_000 });
    assert.equal(n.code, 0, n.stderr + n.stdout);
    const rows = n.stdout.split("\n").filter((l) => /\s200\s/.test(l) && l.includes("/multi"));
    assert.equal(rows.length, 20, n.stdout);

    // h2load: 160 requests over 2 connections, 10 streams each at a time, per listener
    // (fewer than 100 streams per connection: see the Deno crash test below).
    for (const port of [r.outbound, r.inbound]) {
      const h = await exec("h2load", [
        "-n",
        "160",
        "-c",
        "2",
        "-m",
        "10",
        "-H",
        `:authority: ${authority}`,
        `http://127.0.0.1:${port}/load`,
      ], { timeoutMs: 30_000 });
      assert.equal(h.code, 0, h.stderr + h.stdout);
      assert.match(h.stdout, /requests: 160 total, 160 started, 160 done, 160 succeeded, 0 failed/);
      assert.match(h.stdout, /status codes: 160 2xx, 0 3xx, 0 4xx, 0 5xx/);
    }
    assert.equal(up!.requests, 340);
    // Upstream HTTP/2 sessions are pooled: one per listener, not one per request.
    assert.ok(up!.sessions <= 2, `upstream sessions: ${up!.sessions}`);
  });
});

Deno.test("h2c: a 5 MB upload arrives whole and a 5 MB download returns whole", async () => {
  await withSetup({}, async (r, [up]) => {
    const size = 5 * 1024 * 1024;
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeFile(file, new Uint8Array(size).fill(97));
      for (const [port, host] of [[r.outbound, `127.0.0.1:${up!.port}`], [r.inbound, undefined]]) {
        const res = await curl([
          ...H2,
          ...(host === undefined ? [] : ["-H", `Host: ${host}`]),
          "--data-binary",
          `@${file}`,
          "-H",
          "content-type: application/octet-stream",
          `http://127.0.0.1:${port}/upload`,
        ], { timeoutS: 30 });
        assert.equal(res.status, 200, res.body);
        const echo = JSON.parse(res.body) as H2Echo;
        assert.equal(echo.method, "POST");
        assert.equal(echo.bodyBytes, size);
      }
      const down = await exec("curl", [
        "-sS",
        ...H2,
        "--max-time",
        "30",
        "-H",
        `Host: 127.0.0.1:${up!.port}`,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        `http://127.0.0.1:${r.outbound}/bytes/${size}`,
      ]);
      assert.equal(down.stdout, `200 ${size}`, down.stderr);
    } finally {
      await Deno.remove(file).catch(() => {});
    }
  });
});

Deno.test("h2c: response trailers pass through", async () => {
  await withSetup({}, async (r, [up]) => {
    for (const port of [r.outbound, r.inbound]) {
      const n = await exec("nghttp", [
        "-v",
        "-H",
        `:authority: 127.0.0.1:${up!.port}`,
        `http://127.0.0.1:${port}/trailers`,
      ], { timeoutMs: 15_000 });
      assert.equal(n.code, 0, n.stderr + n.stdout);
      assert.match(n.stdout, /body before trailers from up/);
      // The trailers come in a HEADERS frame after the DATA frames, ending the stream.
      const data = n.stdout.indexOf("recv DATA frame");
      const trailer = n.stdout.indexOf("x-checksum: abc123");
      assert.ok(data !== -1 && trailer > data, n.stdout);
      assert.match(n.stdout.slice(trailer), /^.*\n.*x-trailer: from up/);
      assert.match(n.stdout.slice(trailer), /recv HEADERS frame <[^>]*flags=0x05/);
    }
  });
});

const SERVICE = (host: string, endpoints: string, extra = "") => `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h2svc}
spec:
  hosts: [${host}]
  ports: [{number: 80, name: http2, protocol: HTTP2}]
  resolution: STATIC
  endpoints:
${endpoints}
${extra}`;

Deno.test("h2c: a route timeout answers 504", async () => {
  await withSetup({
    appPort: false,
    config: ([up]) =>
      SERVICE(
        "slow.h2.test",
        `  - {address: 127.0.0.1, ports: {http2: ${up!.port}}}`,
        `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow.h2.test]
  http:
  - route: [{destination: {host: slow.h2.test}}]
    timeout: 300ms
`,
      ),
  }, async (r) => {
    const url = `http://127.0.0.1:${r.outbound}`;
    const ok = await curl([...H2, "-H", "Host: slow.h2.test", `${url}/delay/10`]);
    assert.equal(ok.status, 200, ok.body);
    const t0 = performance.now();
    const res = await curl([...H2, "-H", "Host: slow.h2.test", `${url}/delay/5000`]);
    const took = performance.now() - t0;
    assert.equal(res.status, 504, res.body);
    assert.match(res.body, /upstream request timeout/);
    assert.ok(took < 4000, `took ${took} ms`);
  });
});

Deno.test("h2c: an unreachable upstream answers 503", async () => {
  await withSetup({ appPort: false }, async (r) => {
    const port = closedPort();
    const res = await curl([
      ...H2,
      "-H",
      `Host: 127.0.0.1:${port}`,
      `http://127.0.0.1:${r.outbound}/x`,
    ]);
    assert.equal(res.code, 0, res.body);
    assert.equal(res.status, 503, res.body);
    assert.match(res.body, /connection failure/);
  });
  // The inbound listener with an app port that nothing listens on.
  let r: Remora | undefined;
  try {
    r = await startRemora(["--app-port", String(closedPort())]);
    const res = await curl([...H2, `http://127.0.0.1:${r.inbound}/x`]);
    assert.equal(res.status, 503, res.body);
    assert.match(res.body, /connection failure/);
  } finally {
    await r?.stop();
  }
});

Deno.test("h2c: a weighted split across subsets follows the weights", async () => {
  await withSetup({
    upstreams: ["v1", "v2"],
    appPort: false,
    config: ([v1, v2]) =>
      SERVICE(
        "split.h2.test",
        `  - {address: 127.0.0.1, ports: {http2: ${v1!.port}}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http2: ${v2!.port}}, labels: {version: v2}}`,
        `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split}
spec:
  host: split.h2.test
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split}
spec:
  hosts: [split.h2.test]
  http:
  - route:
    - {destination: {host: split.h2.test, subset: v1}, weight: 75}
    - {destination: {host: split.h2.test, subset: v2}, weight: 25}
`,
      ),
  }, async (r, [v1, v2]) => {
    const total = 400;
    const h = await exec("h2load", [
      "-n",
      String(total),
      "-c",
      "8",
      "-m",
      "10",
      "-H",
      ":authority: split.h2.test",
      `http://127.0.0.1:${r.outbound}/split`,
    ], { timeoutMs: 30_000 });
    assert.equal(h.code, 0, h.stderr + h.stdout);
    assert.match(h.stdout, /requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed/);
    assert.equal(v1!.requests + v2!.requests, total);
    // 75/25 over 400 requests: one standard deviation is about 2.2 points.
    const share = (100 * v1!.requests) / total;
    assert.ok(share >= 68 && share <= 82, `v1 got ${share}%`);
  });
});

Deno.test("h2c: remora survives clients that send 300 requests on one connection and say GOAWAY", async () => {
  // Deno 2.9.6's node:http2 aborts the whole process ("free(): invalid
  // pointer" or nghttp2's assertion `stream->closed_next == NULL` in
  // find_stream_on_goaway_func) when a GOAWAY arrives on a session that
  // carried many streams, as h2load's does when it is done. A bare
  // node:http2 server in Deno shows it too; Node 20 does not. remora keeps
  // received GOAWAY frames away from node:http2 (h2_goaway_filter.ts).
  await withSetup({}, async (r) => {
    const h = await exec("h2load", [
      "-n",
      "300",
      "-c",
      "1",
      "-m",
      "1",
      `http://127.0.0.1:${r.inbound}/`,
    ], {
      timeoutMs: 30_000,
    });
    assert.match(h.stdout, /requests: 300 total, 300 started, 300 done, 300 succeeded, 0 failed/);
    await new Promise((res) => setTimeout(res, 300));
    const after = await curl([...H2, `http://127.0.0.1:${r.inbound}/after`]);
    assert.equal(after.status, 200, `remora died:\n${r.stderr()}`);
  });
});

Deno.test("h2 clients that vanish with streams in flight break only their own connections", async () => {
  await withSetup({}, async (r) => {
    for (const port of [r.inbound, r.inbound]) {
      // Killed mid-run: 4 connections, 50 streams each, cut without GOAWAY.
      await exec("timeout", [
        "-s",
        "KILL",
        "1",
        "h2load",
        "-n",
        "1000000",
        "-c",
        "4",
        "-m",
        "50",
        `http://127.0.0.1:${port}/delay/5`,
      ], { timeoutMs: 10_000 });
    }
    const res = await curl([...H2, `http://127.0.0.1:${r.inbound}/after`]);
    assert.equal(res.status, 200, res.body);
    assert.doesNotMatch(r.stderr(), /fatal/);
    // Still the same process, still serving.
    assert.equal((await exec("kill", ["-0", String(r.pid)])).code, 0);
  });
});

Deno.test("h2c to a port declared HTTP goes upstream as HTTP/1.1, bodies both ways", async () => {
  const app = await startUpstream("h1app");
  let r: Remora | undefined;
  try {
    const config = await writeConfig(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: h1svc }
spec:
  hosts: [h1.svc.test]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: ${app.port} } }]
`);
    r = await startRemora(["--config", config]);
    const url = `http://127.0.0.1:${r.outbound}`;
    const get = await curl([...H2, "-H", "Host: h1.svc.test", `${url}/hello?x=1`]);
    assert.equal(get.status, 200, get.body);
    assert.match(get.headers, /^HTTP\/2 200/);
    const echo = JSON.parse(get.body) as Echo;
    assert.equal(echo.server, "h1app");
    assert.equal(echo.url, "/hello?x=1");
    assert.equal(echo.headers["host"], "h1.svc.test");
    assert.equal(typeof echo.headers["x-request-id"], "string");
    // A body with a length, and one without (sent chunked to the HTTP/1 app).
    const post = await curl([
      ...H2,
      "-H",
      "Host: h1.svc.test",
      "--data-binary",
      "0123456789",
      `${url}/p`,
    ]);
    assert.equal((JSON.parse(post.body) as Echo).bodyBytes, 10);
    const upload = await curl(
      [...H2, "-H", "Host: h1.svc.test", "-T", "-", `${url}/up`],
      { stdin: new Uint8Array(300_000).fill(7) },
    );
    assert.equal(upload.status, 200, upload.body);
    assert.equal((JSON.parse(upload.body) as Echo).bodyBytes, 300_000);
    const big = await curl([...H2, "-H", "Host: h1.svc.test", `${url}/bytes/1000000`]);
    assert.equal(big.status, 200);
    assert.equal(big.body.length, 1_000_000);
    const missing = await curl([...H2, "-H", "Host: h1.svc.test", `${url}/status/404`]);
    assert.equal(missing.status, 404);
    // Several streams on one connection (nghttp), each answered.
    const many = await exec("nghttp", [
      "-n",
      "-s",
      "-H",
      ":authority: h1.svc.test",
      ...Array.from({ length: 10 }, (_, i) => `${url}/n${i}`),
    ], { timeoutMs: 20_000 });
    assert.equal(many.code, 0, many.stderr);
    assert.equal(app.requests, 15, "five single requests and ten streams");
    // Istio's default retries apply as on HTTP/1: two 503s, then the answer.
    const retried = await curl([...H2, "-H", "Host: h1.svc.test", `${url}/fail-first/2/k`]);
    assert.equal(retried.status, 200, retried.body);
    assert.equal(app.requests, 18);
  } finally {
    await r?.stop();
    await app.close();
  }
});

Deno.test("h2c to a port declared HTTP whose server greets with something not HTTP gets a 502 at once", async () => {
  // A server-first protocol on the port (SMTP-like): it speaks first and keeps the connection open.
  const greeter = startGreeter();
  let r: Remora | undefined;
  try {
    r = await startRemora([
      "--config",
      await writeConfig(serviceEntryYaml("smtpish", "mail.svc.test", [greeter.port])),
    ]);
    const started = Date.now();
    const res = await curl([
      ...H2,
      "--max-time",
      "8",
      "-H",
      "Host: mail.svc.test",
      `http://127.0.0.1:${r.outbound}/x`,
    ]);
    assert.equal(res.status, 502, res.body);
    assert.match(res.body, /not an HTTP response/);
    assert.ok(Date.now() - started < 5000, "answered without waiting for a timeout");
  } finally {
    await r?.stop();
    await greeter.close();
  }
});

Deno.test("h2c to a port declared HTTP: an upstream that closes mid-body resets the client's stream at once", async () => {
  // Promises 100 bytes, sends 5 and closes.
  const cut = startRawServer(async (c) => {
    await c.read(new Uint8Array(4096));
    await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"));
    c.close();
  });
  let r: Remora | undefined;
  try {
    r = await startRemora([
      "--config",
      await writeConfig(serviceEntryYaml("cut", "cut.svc.test", [cut.port])),
      "--access-log",
      "json",
    ]);
    const started = Date.now();
    const res = await curl([
      ...H2,
      "--max-time",
      "8",
      "-H",
      "Host: cut.svc.test",
      `http://127.0.0.1:${r.outbound}/u`,
    ]);
    assert.notEqual(res.code, 0, "the client sees the response fail");
    assert.notEqual(res.code, 28, "not left waiting for its own timeout");
    assert.ok(Date.now() - started < 5000);
    const line = await (async () => {
      for (let i = 0; i < 50; i++) {
        const l = r!.stdout().split("\n").find((x) => x.includes('"/u"'));
        if (l !== undefined) return JSON.parse(l);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      throw new Error(`no access log line: ${r!.stdout()}`);
    })();
    assert.equal(line.response_code, 200, "the status the client was sent");
    assert.match(line.response_flags, /UC/);
  } finally {
    await r?.stop();
    await cut.close();
  }
});

Deno.test("h2c with a request body is retried on a connect failure, to an HTTP/1.1 and an HTTP/2 upstream", async () => {
  const h1app = await startUpstream("h1app");
  const h2app = await startH2Upstream("h2app");
  const dead = closedPort();
  let r: Remora | undefined;
  try {
    // Each service has a live endpoint and a dead one; Istio's default retry policy applies.
    const config = await writeConfig(
      serviceEntryYaml("h1svc", "h1.svc.test", [h1app.port, dead]) + "---\n" +
        serviceEntryYaml("h2svc", "h2.svc.test", [h2app.port, dead], "HTTP2"),
    );
    r = await startRemora(["--config", config]);
    const url = `http://127.0.0.1:${r.outbound}`;
    for (const host of ["h1.svc.test", "h2.svc.test"]) {
      for (let i = 0; i < 6; i++) {
        const res = await curl([...H2, "-H", `Host: ${host}`, "--data-binary", "a=1", `${url}/p`]);
        assert.equal(res.status, 200, `${host} POST ${i}: ${res.body}`);
      }
    }
  } finally {
    await r?.stop();
    await h1app.close();
    await h2app.close();
  }
});

Deno.test("gRPC over h2c: the client's grpc-timeout is the call's timeout, within the route's, and the upstream is told it", async () => {
  const config = (ups: H2Upstream[]) =>
    `${serviceEntryYaml("greet", "grpc.svc.test", [ups[0]!.port], "GRPC")}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: greet }
spec:
  hosts: [grpc.svc.test]
  http:
  - match: [{ headers: { x-case: { exact: capped } } }]
    timeout: 1s
    route: [{ destination: { host: grpc.svc.test } }]
  - route: [{ destination: { host: grpc.svc.test } }]
`;
  await withSetup({ appPort: false, config }, async (r) => {
    const call = (path: string, ...headers: string[]) =>
      curl([
        ...H2,
        "-H",
        "Host: grpc.svc.test",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        ...headers.flatMap((h) => ["-H", h]),
        `http://127.0.0.1:${r.outbound}${path}`,
      ]);
    // No route timeout: the upstream (which ignores deadlines) is given up on at 200 ms,
    // with a gRPC status as Envoy's timeout reply to a gRPC call.
    const late = await call("/delay/3000", "grpc-timeout: 200m");
    assert.equal(late.status, 200, late.headers);
    assert.match(late.headers, /^grpc-status: 14\r$/m);
    assert.match(late.headers, /^grpc-message: upstream request timeout\r$/m);
    // The upstream sees the timeout it has: the client's, or the route's when that is shorter.
    const told = async (...headers: string[]) => {
      const res = await call("/echo", ...headers);
      assert.equal(res.status, 200, res.body);
      return (JSON.parse(res.body) as H2Echo).headers["grpc-timeout"];
    };
    assert.equal(await told("grpc-timeout: 250m"), "250m");
    assert.equal(await told("grpc-timeout: 2S"), "2000m");
    assert.equal(await told("grpc-timeout: 30S", "x-case: capped"), "1000m");
    assert.equal(await told("grpc-timeout: 700m", "x-case: capped"), "700m");
    assert.equal(await told("x-case: capped"), "1000m");
    // Without one, or with one that is not a grpc-timeout, there is no timeout.
    assert.equal(await told(), undefined);
    assert.equal(await told("grpc-timeout: soon"), "soon");
    const slow = await call("/delay/700", "grpc-timeout: soon");
    assert.equal(slow.status, 200);
    assert.match(slow.body, /delayed 700/);
    // A request that is not gRPC keeps its route's timeout (none here): the header is only data.
    const plain = await curl([
      ...H2,
      "-H",
      "Host: grpc.svc.test",
      "-H",
      "grpc-timeout: 100m",
      `http://127.0.0.1:${r.outbound}/delay/700`,
    ]);
    assert.equal(plain.status, 200, plain.headers);
    assert.match(plain.body, /delayed 700/);
    const text = await scrape(r);
    assert.match(
      text,
      /istio_requests_total\{[^}]*grpc_response_status="14",response_flags="UT"[^}]*\} 1$/m,
    );
  });
});

Deno.test("h2c: a client that floods PINGs and reads none of the acknowledgements is cut off, and the proxy serves on", async () => {
  await withSetup({}, async (r, [up]) => {
    // A small receive buffer, so that the acknowledgements back up in remora soon.
    const code = `
import socket, struct, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + struct.pack(">I", 0)[1:] + bytes([4, 0]) + struct.pack(">I", 0))
ping = struct.pack(">I", 8)[1:] + bytes([6, 0]) + struct.pack(">I", 0) + b"12345678"
deadline = time.time() + 20
sent = 0
try:
    while sent < 2_000_000 and time.time() < deadline:
        s.sendall(ping * 1000)
        sent += 1000
    print("not cut off after", sent)
except OSError as e:
    print("cut off after", sent, type(e).__name__)
`;
    const out = await exec(PYTHON, ["-c", code, String(r.inbound)], { timeoutMs: 40_000 });
    assert.match(out.stdout, /^cut off after \d+/, out.stdout + out.stderr);
    // The proxy is still there for others.
    const res = await curl([...H2, `http://127.0.0.1:${r.inbound}/after`]);
    assert.equal(res.status, 200, res.body);
    assert.equal(up!.requests >= 1, true);
  });
});

import assert from "node:assert/strict";
import http2 from "node:http2";
import type { ResponseHead } from "../http/h1_head.ts";
import { type H2Exchange, type H2Failure, type H2Request, openStream } from "./h1_to_h2.ts";
import { H2Sessions } from "./h2_sessions.ts";
import { ConnPool } from "./pool.ts";
import { listenH2 } from "../../tests/integration/harness.ts";

/**
 * An h2c server answering by path, with what it received of each request;
 * `fn` gets a request opener against it.
 */
async function withServer(
  fn: (
    open: (req: Partial<H2Request>) => H2Exchange,
    seen: http2.IncomingHttpHeaders[],
  ) => Promise<void>,
): Promise<void> {
  const seen: http2.IncomingHttpHeaders[] = [];
  const server = http2.createServer();
  server.on("stream", (raw, headers) => {
    const stream = raw as http2.ServerHttp2Stream;
    seen.push(headers);
    stream.on("error", () => {});
    stream.resume();
    switch (headers[":path"]) {
      case "/trailers":
        stream.respond({ ":status": 200 }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "x-t": "1" }));
        stream.end("hello");
        return;
      case "/length":
        stream.respond({ ":status": 200, "content-length": "5" });
        stream.end("hello");
        return;
      case "/empty":
        stream.respond({ ":status": 200, "grpc-status": "5" }, { endStream: true });
        return;
      case "/bad-length":
        stream.respond({ ":status": 200, "content-length": "5x" });
        stream.end("hello");
        return;
    }
  });
  // h2.close() says GOAWAY to this server: it is kept from node:http2, as remora keeps it.
  const listening = listenH2(server);
  const port = listening.port;
  const h2 = new H2Sessions(new ConnPool({ connectTimeoutMs: 2000 }));
  try {
    await fn((req) =>
      openStream(h2, { host: "127.0.0.1", port, endpoint: undefined }, {
        method: "GET",
        path: "/",
        scheme: "http",
        headers: [["host", "svc.test"]],
        trailers: false,
        endStream: true,
        ...req,
      }), seen);
  } finally {
    h2.close();
    await listening.close();
  }
}

/** Everything the exchange's connection gives until its end, as text. */
async function readAll(x: H2Exchange): Promise<string> {
  let out = "";
  const c = x.conn;
  while (await c.fill()) {
    out += new TextDecoder().decode(c.buf.subarray(c.start, c.end));
    c.consume(c.buffered);
  }
  return out;
}

function head(r: ResponseHead | H2Failure): ResponseHead {
  if ("failure" in r) throw new Error(`no response: ${r.detail}`);
  return r;
}

Deno.test("h1_to_h2: a body without a length is chunked, trailers last only when accepted", async () => {
  await withServer(async (open) => {
    for (const trailers of [true, false]) {
      const x = open({ path: "/trailers", trailers });
      const h = head(await x.response);
      assert.deepEqual([h.status, h.framing], [200, { kind: "chunked" }]);
      assert.equal(
        await readAll(x),
        trailers
          ? "5\r\nhello\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n"
          : "5\r\nhello\r\n0\r\n\r\n",
      );
      // The status is known either way, for metrics.
      assert.equal(x.grpcStatus, "0");
    }
  });
});

Deno.test("h1_to_h2: a body with a length is passed as it is; a response that ended with its head gets length 0", async () => {
  await withServer(async (open) => {
    const x = open({ path: "/length" });
    const h = head(await x.response);
    assert.deepEqual(h.framing, { kind: "length", length: 5 });
    assert.equal(await readAll(x), "hello");
    const e = open({ path: "/empty" });
    const eh = head(await e.response);
    assert.deepEqual(eh.framing, { kind: "none" });
    assert.ok(eh.headers.some(([k, v]) => k === "content-length" && v === "0"));
    assert.equal(e.grpcStatus, "5");
    // HEAD has no body whatever its headers say.
    assert.deepEqual(head(await open({ path: "/length", method: "HEAD" }).response).framing, {
      kind: "none",
    });
  });
});

Deno.test("h1_to_h2: an invalid content-length fails the attempt, never becomes a body", async () => {
  await withServer(async (open) => {
    // nghttp2 resets such a stream itself; remora's own check is behind it.
    const r = await open({ path: "/bad-length" }).response;
    assert.ok("failure" in r);
  });
});

Deno.test("h1_to_h2: Host becomes :authority, hop-by-hop fields stay behind, TE: trailers goes on", async () => {
  await withServer(async (open, seen) => {
    const x = open({
      path: "/length",
      trailers: true,
      headers: [
        ["host", "svc.test:8080"],
        ["connection", "keep-alive"],
        ["keep-alive", "timeout=5"],
        ["transfer-encoding", "chunked"],
        ["upgrade", "websocket"],
        ["cookie", "a=1"],
        ["cookie", "b=2"],
        ["x-request-id", "r1"],
      ],
    });
    await x.response;
    const h = seen[0]!;
    assert.equal(h[":authority"], "svc.test:8080");
    assert.equal(h["te"], "trailers");
    assert.equal(h["x-request-id"], "r1");
    assert.match(String(h["cookie"]), /a=1.*b=2/);
    for (const k of ["host", "connection", "keep-alive", "transfer-encoding", "upgrade"]) {
      assert.equal(h[k], undefined, k);
    }
  });
});

import assert from "node:assert/strict";
import {
  decodeLatin1,
  encodeLatin1,
  endToEndHeaders,
  findHeadEnd,
  HttpParseError,
  parseRequestHead,
  parseResponseHead,
} from "./h1_head.ts";

const enc = (s: string) => new TextEncoder().encode(s);

function req(s: string) {
  const b = enc(s);
  const end = findHeadEnd(b, 0, b.length);
  assert.notEqual(end, -1, "head should be complete");
  return parseRequestHead(b, 0, end);
}

Deno.test("findHeadEnd finds CRLF CRLF and bare LF LF, and waits for more", () => {
  const a = enc("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY");
  assert.equal(findHeadEnd(a, 0, a.length), a.length - 4);
  const b = enc("GET / HTTP/1.1\nHost: a\n\nX");
  assert.equal(findHeadEnd(b, 0, b.length), b.length - 1);
  const c = enc("GET / HTTP/1.1\r\nHost: a\r\n");
  assert.equal(findHeadEnd(c, 0, c.length), -1);
  const d = enc("GET / HTTP/1.1\r\nHost: a\r\n\r");
  assert.equal(findHeadEnd(d, 0, d.length), -1);
});

Deno.test("request head: method, target, headers, keep-alive and framing", () => {
  const h = req("POST /a?b=1 HTTP/1.1\r\nHost: x:8\r\nContent-Length: 5\r\nX-A:  v  \r\n\r\n");
  assert.equal(h.method, "POST");
  assert.equal(h.target, "/a?b=1");
  assert.equal(h.minor, 1);
  assert.deepEqual(h.headers, [["host", "x:8"], ["content-length", "5"], ["x-a", "v"]]);
  assert.deepEqual(h.framing, { kind: "length", length: 5 });
  assert.equal(h.keepAlive, true);
  assert.equal(req("GET / HTTP/1.0\r\n\r\n").keepAlive, false);
  assert.equal(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keepAlive, true);
  assert.equal(req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keepAlive, false);
  assert.deepEqual(req("GET / HTTP/1.1\r\n\r\n").framing, { kind: "none" });
  assert.deepEqual(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").framing, {
    kind: "chunked",
  });
  assert.equal(
    req("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n").upgrade,
    "websocket",
  );
  assert.equal(req("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade, undefined);
});

Deno.test("request head: ambiguous framing and malformed heads are refused", () => {
  const cases: Array<[string, number, RegExp]> = [
    [
      "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
      /Both Content-Length/,
    ],
    ["POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, /Conflicting/],
    ["POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, /Invalid Content-Length/],
    ["POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, /Unsupported Transfer-Encoding/],
    // Another coding before chunked would be lost when the body is re-framed (Envoy: 501).
    [
      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      501,
      /Unsupported Transfer-Encoding: "gzip, chunked"/,
    ],
    ["GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n", 400, /folding/],
    ["GET / HTTP/1.1\r\nX-A : 1\r\n\r\n", 400, /Invalid header name/],
    ["GET / HTTP/2.0\r\n\r\n", 505, /Unsupported HTTP version/],
    ["GET\r\n\r\n", 400, /Malformed request line/],
    ["G(T / HTTP/1.1\r\n\r\n", 400, /Invalid method/],
    ["GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, /Malformed header line/],
    ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, /Several Host headers/],
    [
      `GET / HTTP/1.1\r\n${"X-A: 1\r\n".repeat(101)}\r\n`,
      431,
      /Too many header fields: 101 \(at most 100\)/,
    ],
    [
      "GET /admin\x00.png HTTP/1.1\r\nHost: a\r\n\r\n",
      400,
      /Invalid character in request target \(byte 0x00\)/,
    ],
    ["GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, /request target \(byte 0xc3\)/],
    ["GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400, /request target \(byte 0x09\)/],
    ["GET /del\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, /request target \(byte 0x7f\)/],
  ];
  for (const [text, status, re] of cases) {
    assert.throws(() => req(text), (e: unknown) => {
      assert.ok(e instanceof HttpParseError, text);
      assert.equal(e.status, status, text);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("same Content-Length repeated is accepted, and forwarded once", () => {
  const list = req("POST / HTTP/1.1\r\nX-A: 1\r\nContent-Length: 3, 3\r\nX-B: 2\r\n\r\n");
  assert.deepEqual(list.framing, { kind: "length", length: 3 });
  assert.deepEqual(list.headers, [["x-a", "1"], ["content-length", "3"], ["x-b", "2"]]);
  const fields = req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
  assert.deepEqual(fields.headers, [["content-length", "3"]]);
  // A response to HEAD keeps its Content-Length value though it has no body.
  const b = enc("HTTP/1.1 200 OK\r\nContent-Length: 1024, 1024\r\n\r\n");
  const head = parseResponseHead(b, 0, findHeadEnd(b, 0, b.length), "HEAD");
  assert.deepEqual(head.headers, [["content-length", "1024"]]);
  assert.deepEqual(head.framing, { kind: "none" });
});

Deno.test("response head: bodiless statuses and methods, close-delimited bodies", () => {
  const parse = (s: string, m = "GET") => {
    const b = enc(s);
    return parseResponseHead(b, 0, findHeadEnd(b, 0, b.length), m);
  };
  const ok = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
  assert.equal(ok.status, 200);
  assert.equal(ok.reason, "OK");
  assert.deepEqual(ok.framing, { kind: "length", length: 3 });
  assert.deepEqual(parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD").framing, {
    kind: "none",
  });
  assert.deepEqual(parse("HTTP/1.1 204 No Content\r\n\r\n").framing, { kind: "none" });
  assert.deepEqual(parse("HTTP/1.1 304 Not Modified\r\n\r\n").framing, { kind: "none" });
  const close = parse("HTTP/1.1 200 OK\r\n\r\n");
  assert.deepEqual(close.framing, { kind: "close" });
  assert.equal(close.keepAlive, false);
  assert.equal(parse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").reason, "");
  assert.throws(() => parse("HTTP/9 200 OK\r\n\r\n"), HttpParseError);
});

Deno.test("Connection cannot drop Content-Length or Host (the body would become a second request)", () => {
  const out = endToEndHeaders([
    ["host", "app"],
    ["content-length", "53"],
    ["connection", "close, Content-Length, host, x-gone"],
    ["x-gone", "1"],
  ]);
  assert.deepEqual(out, [["host", "app"], ["content-length", "53"]]);
});

Deno.test("hop-by-hop headers and those named by Connection are dropped", () => {
  const out = endToEndHeaders([
    ["connection", "keep-alive, x-secret"],
    ["keep-alive", "timeout=5"],
    ["x-secret", "1"],
    ["te", "trailers"],
    ["transfer-encoding", "chunked"],
    ["proxy-connection", "keep-alive"],
    ["upgrade", "websocket"],
    ["x-kept", "yes"],
  ]);
  assert.deepEqual(out, [["x-kept", "yes"]]);
  assert.deepEqual(
    endToEndHeaders([["upgrade", "websocket"], ["connection", "upgrade"]], "upgrade"),
    [["upgrade", "websocket"]],
  );
  // Every hop-by-hop name goes; names of the same lengths stay.
  const hop = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
  ];
  const kept = ["tk", "referer", "user-agent", "x-forwarded-host", "if-modified-since"];
  const all = [...hop, ...kept].map((n): [string, string] => [n, "v"]);
  assert.deepEqual(endToEndHeaders(all).map(([n]) => n), kept);
});

Deno.test("latin1 round trip keeps every byte", () => {
  const bytes = new Uint8Array(256).map((_, i) => i);
  assert.deepEqual(encodeLatin1(decodeLatin1(bytes, 0, 256)), bytes);
});

Deno.test("status lines: HTTP/1.0 or 1.1, three digits, then nothing or a space and a reason; anything else is a 502", () => {
  const head = (line: string) => new TextEncoder().encode(`${line}\r\ncontent-length: 0\r\n\r\n`);
  const good: Array<[string, number, number, string]> = [
    ["HTTP/1.1 200 OK", 1, 200, "OK"],
    ["HTTP/1.0 404 Not Found", 0, 404, "Not Found"],
    ["HTTP/1.1 204", 1, 204, ""],
    ["HTTP/1.1 200 ", 1, 200, ""],
    ["HTTP/1.1 599 odd: reason, with  spaces", 1, 599, "odd: reason, with  spaces"],
    ["HTTP/1.1 100 Continue", 1, 100, "Continue"],
  ];
  for (const [line, minor, status, reason] of good) {
    const b = head(line);
    const h = parseResponseHead(b, 0, b.length, "GET");
    assert.deepEqual([h.minor, h.status, h.reason], [minor, status, reason], line);
  }
  const bad = [
    "HTTP/1.2 200 OK",
    "HTTP/2 200 OK",
    "HTTP/1.1 20 OK",
    "HTTP/1.1 2000 OK",
    "HTTP/1.1  200 OK",
    "http/1.1 200 OK",
    "HTTP/1.1 200OK",
    "HTTP/1.1 2x0 OK",
    "HTTP/1.1 200 O\rK",
    "HTTP/1.1",
    "",
    "SSH-2.0-OpenSSH_9.2",
  ];
  for (const line of bad) {
    const b = head(line);
    assert.throws(
      () => parseResponseHead(b, 0, b.length, "GET"),
      (e: unknown) => e instanceof HttpParseError && e.status === 502,
      JSON.stringify(line),
    );
  }
});

Deno.test("header names come out lower-case whatever their case, common and uncommon ones", () => {
  const h = req(
    "GET / HTTP/1.1\r\nHOST: a\r\nCoNtEnT-TyPe: t\r\nX-Forwarded-For: 1.2.3.4\r\nHosT1: b\r\n" +
      "X-Custom-Thing: c\r\nuser-agent: u\r\nTE: trailers\r\nContent-Lengtx: 1\r\n\r\n",
  );
  assert.deepEqual(h.headers.map(([n]) => n), [
    "host",
    "content-type",
    "x-forwarded-for",
    "host1",
    "x-custom-thing",
    "user-agent",
    "te",
    "content-lengtx",
  ]);
});

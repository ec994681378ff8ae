import assert from "node:assert/strict";
import { classify } from "./detect.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const c = (b: Uint8Array) => classify(b, 0, b.length);

Deno.test("detection by first bytes: HTTP/1, HTTP/2 preface, TLS, opaque", () => {
  assert.equal(c(enc("GET / HTTP/1.1\r\n")), "http1");
  assert.equal(c(enc("OPTIONS * HTTP/1.1\r\n")), "http1");
  assert.equal(c(enc("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), "h2");
  assert.equal(c(new Uint8Array([0x16, 0x03, 0x01, 0x00, 0xc8])), "tls");
  assert.equal(c(new Uint8Array([0x00, 0x01, 0x02])), "opaque");
  assert.equal(c(enc("SSH-2.0-OpenSSH\r\n")), "opaque");
  assert.equal(c(enc(" GET")), "opaque");
});

Deno.test("detection asks for more bytes while undecided", () => {
  assert.equal(c(enc("")), "more");
  assert.equal(c(enc("GE")), "more");
  assert.equal(c(enc("PRI * HTTP/2")), "more");
  assert.equal(c(new Uint8Array([0x16])), "more");
  // "PRI " could also be an HTTP/1 method, but the full preface decides.
  assert.equal(c(enc("PRI * HTTP/2.0\r\n")), "more");
});

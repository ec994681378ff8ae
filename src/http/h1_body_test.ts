import assert from "node:assert/strict";
import { ChunkedScanner } from "./h1_body.ts";
import { HttpParseError } from "./h1_head.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("chunked scanner stops exactly at the end of the body, across any split", () => {
  const body = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
  const all = enc(body + "NEXT");
  for (let split = 1; split < body.length; split++) {
    const s = new ChunkedScanner();
    const a = s.scan(all, 0, split);
    assert.equal(a, split, `split ${split}`);
    const b = s.scan(all, split, all.length);
    assert.equal(a + b, body.length, `split ${split}`);
    assert.ok(s.done);
  }
});

Deno.test("chunked scanner: a body without trailers and bare LF lines", () => {
  const s = new ChunkedScanner();
  const b = enc("3\nabc\n0\n\nREST");
  assert.equal(s.scan(b, 0, b.length), b.length - 4);
  assert.ok(s.done);
});

Deno.test("chunked scanner refuses bad sizes and overlong chunks", () => {
  for (const bad of ["zz\r\n", "\r\n", "3\r\nabcd\r\n", "1234567890abcdef0\r\n"]) {
    const s = new ChunkedScanner();
    assert.throws(() => s.scan(enc(bad), 0, bad.length), HttpParseError, bad);
  }
});

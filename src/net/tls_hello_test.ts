import assert from "node:assert/strict";
import { parseSni } from "./tls_hello.ts";

const fixture = Deno.readFileSync(
  new URL("../../tests/testdata/client_hello_sni.bin", import.meta.url),
);

Deno.test("SNI is read from a real ClientHello (openssl s_client -servername api.example.com)", () => {
  assert.equal(parseSni(fixture, 0, fixture.length), "api.example.com");
});

Deno.test("an incomplete ClientHello asks for more; other bytes give no name", () => {
  assert.equal(parseSni(fixture, 0, 3), "more");
  assert.equal(parseSni(fixture, 0, 100), "more");
  assert.equal(parseSni(new TextEncoder().encode("GET / HTTP/1.1\r\n"), 0, 16), undefined);
  const noSni = fixture.slice();
  noSni[5] = 0x02; // not a ClientHello
  assert.equal(parseSni(noSni, 0, noSni.length), undefined);
});

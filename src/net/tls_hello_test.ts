import assert from "node:assert/strict";
import { parseClientHello, parseSni } from "./tls_hello.ts";

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

Deno.test("ALPN protocols are read from a real ClientHello (openssl s_client -alpn istio-h2,h2)", () => {
  const hello = Deno.readFileSync(
    new URL("../../tests/testdata/client_hello_alpn.bin", import.meta.url),
  );
  assert.deepEqual(parseClientHello(hello, 0, hello.length), {
    sni: "b.mesh.internal",
    alpn: ["istio-h2", "h2"],
  });
  assert.deepEqual(parseClientHello(fixture, 0, fixture.length), {
    sni: "api.example.com",
    alpn: [],
  });
});

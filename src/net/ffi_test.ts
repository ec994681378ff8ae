import assert from "node:assert/strict";
import { decodeSockaddr, dropCleanMappings, originalDst, trimMalloc } from "./ffi.ts";

Deno.test("sockaddr_in and sockaddr_in6 decode, IPv4-mapped becomes IPv4", () => {
  const v4 = new Uint8Array(16);
  v4.set([2, 0, 0x1f, 0x90, 10, 250, 0, 11]);
  assert.deepEqual(decodeSockaddr(v4), { hostname: "10.250.0.11", port: 8080, family: 4 });
  const v6 = new Uint8Array(28);
  v6.set([10, 0, 0x00, 0x50]);
  v6.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
  assert.deepEqual(decodeSockaddr(v6), { hostname: "fd00::1", port: 80, family: 6 });
  const mapped = new Uint8Array(28);
  mapped.set([10, 0, 0x01, 0xbb]);
  mapped.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1], 8);
  assert.deepEqual(decodeSockaddr(mapped), { hostname: "127.0.0.1", port: 443, family: 4 });
  assert.equal(decodeSockaddr(new Uint8Array(16)), undefined);
});

Deno.test("a connection that was not redirected has no original destination", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
    assert.equal(originalDst(server), undefined);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);

Deno.test("clean executable pages leave the resident set and what runs maps back in", () => {
  const exe = Deno.realPathSync(Deno.execPath());
  const before = rssKb();
  const dropped = dropCleanMappings(exe);
  const after = rssKb();
  assert.ok(dropped > 1024 * 1024, `dropped only ${dropped} bytes`);
  assert.ok(after < before, `RSS ${before} kB -> ${after} kB`);
  // The runtime keeps working: code and read-only data fault back in.
  assert.equal(JSON.parse(JSON.stringify({ a: [1, "x"] })).a[1], "x");
  assert.equal(new TextDecoder().decode(new TextEncoder().encode("héllo")), "héllo");
  assert.ok(trimMalloc());
});

Deno.test("only read-only or executable mappings of the named file are touched", () => {
  assert.equal(dropCleanMappings("/nonexistent/remora-binary"), 0);
});

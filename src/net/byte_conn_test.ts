import assert from "node:assert/strict";
import { BufConn } from "./buf_conn.ts";
import { tcpByteConn } from "./byte_conn.ts";

/** Runs `fn` with both ends of a fresh loopback connection, closed afterwards. */
async function withPair(fn: (a: Deno.TcpConn, b: Deno.TcpConn) => Promise<void> | void) {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [a, b] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
    l.accept(),
  ]);
  l.close();
  try {
    await fn(a, b);
  } finally {
    for (const c of [a, b]) {
      try {
        c.close();
      } catch {
        // Closed by the test.
      }
    }
  }
}

Deno.test("tcpByteConn uses the runtime's read and write calls on this Deno", () =>
  withPair((a) => {
    // If a Deno upgrade hides them, the adapter falls back to the connection itself.
    assert.notStrictEqual(tcpByteConn(a) as unknown, a);
  }));

Deno.test("tcpByteConn reads and writes bytes, reports end of stream, half-closes", () =>
  withPair(async (a, b) => {
    const ca = tcpByteConn(a);
    const cb = tcpByteConn(b);
    const msg = new TextEncoder().encode("hello over tcp");
    let sent = 0;
    while (sent < msg.length) sent += await ca.write(msg.subarray(sent));
    const buf = new Uint8Array(64);
    let got = 0;
    while (got < msg.length) {
      const n = await cb.read(buf.subarray(got));
      assert(n !== null && n > 0);
      got += n;
    }
    assert.equal(new TextDecoder().decode(buf.subarray(0, got)), "hello over tcp");
    assert.equal(await cb.read(new Uint8Array(0)), 0);
    ca.closeWrite();
    assert.equal(await cb.read(buf), null);
    // The other direction still works after the half-close.
    await cb.write(new TextEncoder().encode("back"));
    const n = await ca.read(buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n ?? 0)), "back");
  }));

Deno.test("tcpByteConn: a pending read fails or ends when the connection is closed", () =>
  withPair(async (a) => {
    const ca = tcpByteConn(a);
    const pending = ca.read(new Uint8Array(16)).then((n) => n, () => "error");
    ca.close();
    const r = await pending;
    assert(r === null || r === "error", `pending read gave ${r}`);
  }));

Deno.test("closeWrite on a connection that is already closed does nothing (no unhandled rejection)", () =>
  withPair(async (a, b) => {
    const ca = tcpByteConn(a);
    ca.close();
    ca.closeWrite();
    const cb = new BufConn(tcpByteConn(b));
    cb.close();
    cb.closeWrite();
    // Let a rejected shutdown surface, if one were left unhandled.
    await new Promise((r) => setTimeout(r, 20));
  }));

Deno.test("BufConn.writeAll: 8 MiB to a reader that starts late arrive whole; on a closed connection it rejects", () =>
  withPair(async (a, b) => {
    const out = new BufConn(tcpByteConn(a));
    const size = 8 * 1024 * 1024;
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i * 7) % 251;
    // Far more than the socket buffers hold: the write has to wait for the reader.
    const writing = out.writeAll(data);
    await new Promise((r) => setTimeout(r, 100));
    const got = new Uint8Array(size);
    let n = 0;
    while (n < size) {
      const k = await b.read(got.subarray(n));
      assert(k !== null && k > 0);
      n += k;
    }
    await writing;
    assert.equal(got.findIndex((v, i) => v !== (i * 7) % 251), -1);
    out.close();
    // Rejects (never throws where it is called), so `.catch` handlers see it.
    let rejected = false;
    await out.writeAll(data.subarray(0, 10)).catch(() => rejected = true);
    assert.equal(rejected, true);
  }));

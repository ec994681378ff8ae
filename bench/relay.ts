/**
 * The smallest sidecar pair Deno can run, for `bench/floor.sh`: no HTTP, no
 * policy, no metrics, only bytes. Role `a` accepts plain TCP and relays each
 * connection over TLS (Deno's native TLS, verifying the peer's certificate
 * for 127.0.0.1) to role `b`, which terminates TLS and relays to the
 * upstream. With PLAIN=1 both hops are plain TCP. Each direction is a
 * read/write loop on one 64 KiB buffer.
 *
 *   deno run -A bench/relay.ts a|b   (env CERTS: directory with ca.crt, b.crt, b.key)
 * Ports: a listens on 29140, b on 29141, the upstream is 127.0.0.1:19100.
 */
const role = Deno.args[0];
const certs = Deno.env.get("CERTS") ?? "/tmp/remora-pair/peers";
const plain = Deno.env.get("PLAIN") === "1";
if (role !== "a" && role !== "b") {
  console.error("usage: deno run -A bench/relay.ts a|b");
  Deno.exit(2);
}

async function pump(src: Deno.Conn, dst: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await dst.write(buf.subarray(off, n));
    }
  } catch {
    // The other side went away: close both.
  }
  for (const c of [dst, src]) {
    try {
      c.close();
    } catch {
      // Already closed.
    }
  }
}

function pair(down: Deno.Conn, up: Deno.Conn): void {
  pump(down, up);
  pump(up, down);
}

if (role === "a") {
  const caCerts = [Deno.readTextFileSync(`${certs}/ca.crt`)];
  for await (const down of Deno.listen({ hostname: "127.0.0.1", port: 29140 })) {
    down.setNoDelay(true);
    const dial = plain
      ? Deno.connect({ hostname: "127.0.0.1", port: 29141 })
      : Deno.connectTls({ hostname: "127.0.0.1", port: 29141, caCerts });
    dial.then((up) => pair(down, up), () => down.close());
  }
} else {
  const listener = plain ? Deno.listen({ hostname: "127.0.0.1", port: 29141 }) : Deno.listenTls({
    hostname: "127.0.0.1",
    port: 29141,
    cert: Deno.readTextFileSync(`${certs}/b.crt`),
    key: Deno.readTextFileSync(`${certs}/b.key`),
  });
  for await (const down of listener) {
    Deno.connect({ hostname: "127.0.0.1", port: 19100 }).then((up) => {
      up.setNoDelay(true);
      pair(down, up);
    }, () => down.close());
  }
}

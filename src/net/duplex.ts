/**
 * A node `Duplex` over a `BufConn` (or one still connecting), for node
 * libraries that want a socket: node:http2 sessions and node:tls. Bytes
 * already buffered (read for detection) come first, so nothing is lost;
 * `filter` may rewrite what is read (h2 uses it to take out GOAWAY frames).
 * Reads are pulled only while node wants more (backpressure).
 *
 * `detach()` takes the connection back for another reader: the duplex stops
 * reading from it. A read of its own still pending is shared with the next
 * reader (`BufConn.fill`), and the bytes it brings stay in the `BufConn`.
 */

import { Duplex } from "node:stream";
import type { BufConn } from "./buf_conn.ts";

export function duplexOf(
  connecting: BufConn | Promise<BufConn>,
  filter?: (chunk: Uint8Array) => Uint8Array[],
): Duplex & { detach(): void } {
  let reading = false;
  let detached = false;
  let conn: BufConn | undefined = connecting instanceof Promise ? undefined : connecting;
  const ready = Promise.resolve(connecting);
  const d = new Duplex({
    // The peer's EOF ends our side too, so that the connection is closed and
    // released (a half-open connection has nothing more to say here).
    allowHalfOpen: false,
    read() {
      if (reading || detached) return;
      reading = true;
      (async () => {
        const c = conn ?? await ready;
        for (;;) {
          if (c.buffered === 0 && !(await c.fill())) {
            if (!detached) d.push(null);
            return;
          }
          if (detached) return;
          const chunk = c.buf.slice(c.start, c.end);
          c.consume(chunk.length);
          let more = true;
          if (filter === undefined) more = d.push(chunk);
          else for (const piece of filter(chunk)) more = d.push(piece);
          if (!more) {
            reading = false;
            return;
          }
        }
      })().catch((e) => {
        if (!detached) d.destroy(e as Error);
      });
    },
    write(chunk: Uint8Array, _enc, cb) {
      (conn !== undefined ? conn.writeAll(chunk) : ready.then((c) => c.writeAll(chunk)))
        .then(() => cb(), (e) => cb(e as Error));
    },
    final(cb) {
      ready.then((c) => c.closeWrite(), () => {}).finally(() => cb());
    },
    destroy(err, cb) {
      ready.then((c) => c.close(), () => {});
      cb(err);
    },
  });
  ready.then((c) => conn = c, (e) => d.destroy(e as Error));
  // A failed write or read (the peer reset the connection) destroys the
  // duplex with that error. Its owner sees the close; node:http2's sessions
  // in Deno listen for no 'error' on their socket, and an unheard one would
  // be thrown and stop the process.
  d.on("error", () => {});
  return Object.assign(d, {
    detach(): void {
      detached = true;
    },
  });
}

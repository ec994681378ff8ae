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
 *
 * What is written waits in the duplex while the peer does not read. node:http2
 * writes the replies it owes (PING and SETTINGS acknowledgements) whatever is
 * waiting, so a peer that floods PINGs and never reads would grow the queue
 * without end: past MAX_QUEUED_BYTES or MAX_QUEUED_WRITES the connection is
 * closed, as Envoy closes one with too many outbound control frames
 * (max_outbound_control_frames, CVE-2019-9512).
 */

import { Duplex } from "node:stream";
import type { BufConn } from "./buf_conn.ts";

/** Bytes written and not yet sent to the peer, past which the connection is closed. */
export const MAX_QUEUED_BYTES = 16 * 1024 * 1024;
/** Writes not yet sent to the peer (each a frame, often a few bytes), past which likewise. */
export const MAX_QUEUED_WRITES = 10_000;

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
        .then(() => {
          queued--;
          cb();
        }, (e) => cb(e as Error));
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
  // Writes wait in `d` while one is being sent: count them where they come in.
  let queued = 0;
  const write = d.write.bind(d) as (...args: unknown[]) => boolean;
  d.write = ((...args: unknown[]) => {
    if (++queued > MAX_QUEUED_WRITES || d.writableLength > MAX_QUEUED_BYTES) {
      d.destroy(new Error("the peer does not read what is sent to it"));
      return false;
    }
    return write(...args);
  }) as typeof d.write;
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

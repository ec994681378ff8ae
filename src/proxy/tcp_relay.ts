/**
 * Opaque byte relay between two connections, both directions at once, with
 * half-close: when one side finishes sending, the other side's write half is
 * shut and the opposite direction carries on. Used for CONNECT tunnels,
 * upgraded (WebSocket) connections and, with capture, opaque TCP.
 */

import type { BufConn } from "../net/buf_conn.ts";

export interface RelayCounts {
  /** Bytes from a to b and from b to a. */
  aToB: number;
  bToA: number;
}

async function pump(src: BufConn, dst: BufConn, count: (n: number) => void): Promise<void> {
  try {
    for (;;) {
      if (src.buffered === 0 && !(await src.fill())) break;
      const n = src.buffered;
      await dst.writeAll(src.buf.subarray(src.start, src.end));
      src.consume(n);
      count(n);
    }
    dst.closeWrite();
  } catch {
    // One side failed: nothing more can flow either way.
    src.close();
    dst.close();
  }
}

/** Relays until both directions are done, then closes both connections. */
export async function relay(a: BufConn, b: BufConn): Promise<RelayCounts> {
  const counts: RelayCounts = { aToB: 0, bToA: 0 };
  await Promise.all([
    pump(a, b, (n) => counts.aToB += n),
    pump(b, a, (n) => counts.bToA += n),
  ]);
  a.close();
  b.close();
  return counts;
}

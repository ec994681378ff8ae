/**
 * Opaque byte relay between two connections, both directions at once, with
 * half-close: when one side finishes sending, the other side's write half is
 * shut and the opposite direction carries on. An idle timeout closes both
 * when no byte moved either way for that long. Used for CONNECT tunnels,
 * upgraded (WebSocket) connections and opaque TCP.
 */

import type { BufConn } from "../net/buf_conn.ts";

export interface RelayCounts {
  /** Bytes from a to b and from b to a. */
  aToB: number;
  bToA: number;
  /** True when the idle timeout ended the relay. */
  idleTimedOut: boolean;
}

export interface RelayOptions {
  /** Close both sides after this long without a byte either way (0: never). */
  idleTimeoutMs?: number;
  /** Called as bytes move (for metrics of long-lived connections). */
  onBytes?: (aToB: number, bToA: number) => void;
}

async function pump(src: BufConn, dst: BufConn, moved: (n: number) => void): Promise<void> {
  try {
    for (;;) {
      if (src.buffered === 0 && !(await src.fill())) break;
      const n = src.buffered;
      await dst.writeAll(src.buf.subarray(src.start, src.end));
      src.consume(n);
      moved(n);
    }
    dst.closeWrite();
  } catch {
    // One side failed: nothing more can flow either way.
    src.close();
    dst.close();
  }
}

/** Relays until both directions are done, then closes both connections. */
export async function relay(a: BufConn, b: BufConn, opts: RelayOptions = {}): Promise<RelayCounts> {
  const counts: RelayCounts = { aToB: 0, bToA: 0, idleTimedOut: false };
  const idle = opts.idleTimeoutMs ?? 0;
  let last = Date.now();
  const timer = idle > 0
    ? setInterval(() => {
      if (Date.now() - last >= idle) {
        counts.idleTimedOut = true;
        a.close();
        b.close();
      }
    }, Math.min(idle, 1000))
    : undefined;
  try {
    await Promise.all([
      pump(a, b, (n) => {
        counts.aToB += n;
        last = Date.now();
        opts.onBytes?.(n, 0);
      }),
      pump(b, a, (n) => {
        counts.bToA += n;
        last = Date.now();
        opts.onBytes?.(0, n);
      }),
    ]);
  } finally {
    clearInterval(timer);
    a.close();
    b.close();
  }
  return counts;
}

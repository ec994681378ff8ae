/**
 * Protocol detection on the first bytes of a connection, which stay in the
 * connection's buffer (nothing is consumed): the HTTP/2 preface, a TLS
 * ClientHello record, an HTTP/1.x request line, or anything else (opaque).
 * Waits for at most as many bytes as it needs to tell them apart.
 */

import type { BufConn } from "../net/buf_conn.ts";

export type Protocol = "h2" | "http1" | "tls" | "opaque" | "closed";

const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Classifies buf[start, end); "more" when more bytes are needed to decide. */
export function classify(buf: Uint8Array, start: number, end: number): Protocol | "more" {
  const n = end - start;
  if (n === 0) return "more";
  const b0 = buf[start]!;
  if (b0 === 0x16) {
    if (n < 2) return "more";
    return buf[start + 1] === 0x03 ? "tls" : "opaque";
  }
  let prefaceSoFar = true;
  for (let i = 0; i < Math.min(n, PREFACE.length); i++) {
    if (buf[start + i] !== PREFACE[i]) {
      prefaceSoFar = false;
      break;
    }
  }
  if (prefaceSoFar) return n >= PREFACE.length ? "h2" : "more";
  // An HTTP/1 request line starts with a method token (upper-case letters here) and a space.
  for (let i = 0; i < Math.min(n, 24); i++) {
    const c = buf[start + i]!;
    if (c === 0x20) return i > 0 ? "http1" : "opaque";
    if (!((c >= 0x41 && c <= 0x5a) || c === 0x2d || c === 0x5f)) return "opaque";
  }
  return n >= 24 ? "opaque" : "more";
}

/** Reads until the protocol is known. */
export async function detect(c: BufConn): Promise<Protocol> {
  for (;;) {
    const p = classify(c.buf, c.start, c.end);
    if (p !== "more") return p;
    if (!(await c.fill())) return c.buffered === 0 ? "closed" : "opaque";
  }
}

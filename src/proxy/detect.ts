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

/** Reads until the protocol is known (or `stop()` says to give up). */
export async function detect(c: BufConn, stop: () => boolean = () => false): Promise<Protocol> {
  for (;;) {
    const p = classify(c.buf, c.start, c.end);
    if (p !== "more") return p;
    if (stop()) return "opaque";
    if (!(await c.fill())) return c.buffered === 0 ? "closed" : "opaque";
  }
}

/** Ports whose servers speak first (SMTP, MySQL, PostgreSQL, Redis, memcached, ...). */
export const SERVER_FIRST_PORTS: ReadonlySet<number> = new Set([
  21,
  22,
  25,
  110,
  143,
  465,
  587,
  993,
  995,
  3306,
  4222,
  5432,
  6379,
  11211,
  27017,
]);

/**
 * Reads until the protocol is known or `timeoutMs` passes with the client
 * silent ("timeout": likely a server-first protocol). A read still pending at
 * the timeout stays with the connection, so no byte is lost.
 */
export async function detectWithin(c: BufConn, timeoutMs: number): Promise<Protocol | "timeout"> {
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) return await detect(c);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const timeout = new Promise<"timeout">((resolve) =>
    timer = setTimeout(() => {
      timedOut = true;
      resolve("timeout");
    }, timeoutMs)
  );
  try {
    return await Promise.race([detect(c, () => timedOut), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Destinations that turned out to be server-first (the client stayed silent
 * and the server spoke), so later connections to them skip the detection
 * wait. Bounded: the oldest entry goes when full; entries expire.
 */
export class ServerFirstMemory {
  readonly #entries = new Map<string, number>();
  constructor(
    readonly capacity = 4096,
    readonly ttlMs = 3_600_000,
    readonly now: () => number = Date.now,
  ) {}

  has(host: string, port: number): boolean {
    const key = `${host}:${port}`;
    const until = this.#entries.get(key);
    if (until === undefined) return false;
    if (until < this.now()) {
      this.#entries.delete(key);
      return false;
    }
    return true;
  }

  remember(host: string, port: number): void {
    const key = `${host}:${port}`;
    this.#entries.delete(key);
    if (this.#entries.size >= this.capacity) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(key, this.now() + this.ttlMs);
  }

  get size(): number {
    return this.#entries.size;
  }
}

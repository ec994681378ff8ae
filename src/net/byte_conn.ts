/**
 * The byte stream a `BufConn` reads and writes: a Deno TCP connection (read
 * and written through the runtime's calls, `tcpByteConn`), or a node:tls
 * socket adapted to the same four calls. This lets the
 * HTTP engines run unchanged over plaintext and over mTLS.
 *
 * The TLS adapter pulls decrypted chunks from the socket's 'data' events into
 * the caller's buffer (pausing the socket when no read is waiting, so memory
 * stays bounded) and resolves writes when node has taken them.
 */

import type { Duplex } from "node:stream";

export interface ByteConn {
  /** Reads into `p`; resolves with the count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some or all of `p`; resolves with the count written. */
  write(p: Uint8Array): Promise<number>;
  closeWrite(): void;
  close(): void;
}

/**
 * The runtime's own read and write calls, when this Deno exposes them:
 * `Deno.Conn.read` tracks each pending read in a Set of its connection, and
 * adding to and deleting from that Set once per read made V8 rebuild the
 * Set's table in the old generation every few reads (about 300 bytes of old
 * space garbage per proxied request, most of remora's old-space churn).
 */
interface CoreIo {
  read(rid: number, p: Uint8Array): Promise<number>;
  write(rid: number, p: Uint8Array): Promise<number>;
}

/** The symbol under which Deno keeps a connection's resource id (found on the first connection). */
let ridSymbol: symbol | undefined;

function ridOf(conn: Deno.TcpConn): number | undefined {
  ridSymbol ??= Object.getOwnPropertySymbols(conn).find((s) =>
    s.description === "Deno.internal.rid"
  );
  const rid = ridSymbol === undefined
    ? undefined
    : (conn as unknown as Record<symbol, unknown>)[ridSymbol];
  return typeof rid === "number" ? rid : undefined;
}

function findCoreIo(): CoreIo | undefined {
  try {
    // deno-lint-ignore no-explicit-any
    const d = Deno as any;
    const core = d[d.internal]?.core;
    if (typeof core?.read === "function" && typeof core?.write === "function") return core;
  } catch {
    // Not available: Deno.Conn's own calls are used.
  }
  return undefined;
}

const coreIo = findCoreIo();

/** A Deno TCP connection as a ByteConn, reading and writing through the runtime's calls when it can. */
export function tcpByteConn(conn: Deno.TcpConn): ByteConn {
  const rid = coreIo === undefined ? undefined : ridOf(conn);
  if (coreIo === undefined || rid === undefined) return conn;
  return new CoreTcpConn(conn, rid, coreIo);
}

class CoreTcpConn implements ByteConn {
  readonly #conn: Deno.TcpConn;
  readonly #rid: number;
  readonly #io: CoreIo;

  constructor(conn: Deno.TcpConn, rid: number, io: CoreIo) {
    this.#conn = conn;
    this.#rid = rid;
    this.#io = io;
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    const n = await this.#io.read(this.#rid, p);
    return n === 0 ? null : n;
  }

  write(p: Uint8Array): Promise<number> {
    return this.#io.write(this.#rid, p);
  }

  closeWrite(): void {
    this.#conn.closeWrite();
  }

  close(): void {
    this.#conn.close();
  }
}

/**
 * Adapts a node stream (a TLSSocket) to ByteConn. The socket flows freely
 * into a queue of chunks, and is paused only while more than `HIGH_WATER`
 * bytes wait unread (pausing per chunk cost a third of the throughput).
 */
export class StreamByteConn implements ByteConn {
  readonly #s: Duplex;
  readonly #chunks: Uint8Array[] = [];
  #head = 0;
  #queued = 0;
  #paused = false;
  #ended = false;
  #error: Error | undefined;
  #waiter: (() => void) | undefined;

  constructor(s: Duplex) {
    this.#s = s;
    s.on("data", (c: Uint8Array) => {
      this.#chunks.push(c);
      this.#queued += c.length;
      if (this.#queued > HIGH_WATER && !this.#paused) {
        this.#paused = true;
        s.pause();
      }
      this.#wake();
    });
    s.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    s.on("close", () => {
      this.#ended = true;
      this.#wake();
    });
    s.on("error", (e: Error) => {
      this.#error = e;
      this.#wake();
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#head === this.#chunks.length) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
    // Copy as many queued bytes as fit.
    let n = 0;
    while (n < p.length && this.#head < this.#chunks.length) {
      const c = this.#chunks[this.#head]!;
      const k = Math.min(c.length, p.length - n);
      p.set(k === c.length ? c : c.subarray(0, k), n);
      n += k;
      if (k === c.length) this.#chunks[this.#head++] = EMPTY;
      else this.#chunks[this.#head] = c.subarray(k);
    }
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
    }
    this.#queued -= n;
    if (this.#paused && this.#queued <= HIGH_WATER / 2) {
      this.#paused = false;
      this.#s.resume();
    }
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    // node keeps a reference to the chunk until written: copy, since callers reuse buffers.
    const copy = p.slice();
    return new Promise((resolve, reject) => {
      this.#s.write(copy, (e?: Error | null) => e ? reject(e) : resolve(copy.length));
    });
  }

  closeWrite(): void {
    this.#s.end();
  }

  close(): void {
    this.#s.destroy();
  }
}

const HIGH_WATER = 256 * 1024;
const EMPTY = new Uint8Array(0);

/**
 * The byte stream a `BufConn` reads and writes: a Deno TCP connection as it
 * is, or a node:tls socket adapted to the same four calls. This lets the
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

/** Adapts a node stream (a TLSSocket) to ByteConn. */
export class StreamByteConn implements ByteConn {
  readonly #s: Duplex;
  #chunk: Uint8Array | undefined;
  #ended = false;
  #error: Error | undefined;
  #waiter: (() => void) | undefined;

  constructor(s: Duplex) {
    this.#s = s;
    s.pause();
    s.on("data", (c: Uint8Array) => {
      // One chunk at a time: the socket stays paused until it is read.
      this.#chunk = this.#chunk === undefined ? c : concat(this.#chunk, c);
      s.pause();
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
    while (this.#chunk === undefined) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return null;
      const wait = new Promise<void>((resolve) => this.#waiter = resolve);
      this.#s.resume();
      await wait;
    }
    const c = this.#chunk;
    const n = Math.min(c.length, p.length);
    p.set(c.subarray(0, n));
    this.#chunk = n === c.length ? undefined : c.subarray(n);
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

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

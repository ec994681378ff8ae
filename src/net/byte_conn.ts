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

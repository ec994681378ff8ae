/**
 * A connection (Deno TCP, or TLS through `byte_conn.ts`) with one reusable
 * read buffer.
 *
 * The proxy's byte loops run on this: `fill()` reads more bytes behind those
 * not yet consumed, `consume(n)` drops bytes from the front, `writeAll()`
 * writes until done. Reads go straight into the buffer with `conn.read` (no
 * web streams: they halve throughput, see DESIGN.md). At most one read is
 * outstanding; an idle pooled connection keeps a read pending so that a close
 * by the peer is noticed, and the next `fill()` picks up that same read.
 */

import { type ByteConn, writeLoop } from "./byte_conn.ts";

export const BUF_SIZE = 64 * 1024;

export class BufConn {
  readonly conn: ByteConn;
  buf: Uint8Array;
  /** Unconsumed bytes are buf[start, end). */
  start = 0;
  end = 0;
  #pending: Promise<boolean> | undefined;
  #closed = false;
  #idle = false;
  /** Set when the peer closed its sending side (read returned EOF). */
  eof = false;
  /** Set by a protocol engine while it waits for the next request (nothing in flight). */
  idle = false;
  readonly #whenClosed = Promise.withResolvers<void>();

  constructor(conn: ByteConn, size = BUF_SIZE) {
    this.conn = conn;
    this.buf = new Uint8Array(size);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves once `close()` has been called. */
  get whenClosed(): Promise<void> {
    return this.#whenClosed.promise;
  }

  get buffered(): number {
    return this.end - this.start;
  }

  /**
   * Reads more bytes after the buffered ones. Returns false at end of stream
   * (or when the connection was closed or failed). Callers that ask while a
   * read is pending share it, so each read is accounted for once.
   */
  fill(): Promise<boolean> {
    if (this.#pending !== undefined) return this.#pending;
    if (this.eof || this.#closed) return Promise.resolve(false);
    if (this.start === this.end) {
      this.start = this.end = 0;
    } else if (this.end === this.buf.length) {
      if (this.start === 0) {
        // A full buffer of unconsumed bytes: grow (callers bound head sizes).
        const bigger = new Uint8Array(this.buf.length * 2);
        bigger.set(this.buf);
        this.buf = bigger;
      } else {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      }
    }
    const p = this.#read(this.end);
    this.#pending = p;
    return p;
  }

  async #read(at: number): Promise<boolean> {
    let n: number | null;
    const into = at === 0 ? this.buf : this.buf.subarray(at);
    try {
      n = this.conn.readCount !== undefined
        ? (await this.conn.readCount(into)) || null
        : await this.conn.read(into);
    } catch {
      n = null;
    }
    this.#pending = undefined;
    if (n === null) {
      this.eof = true;
      return false;
    }
    this.end += n;
    return true;
  }

  /**
   * Starts a read while the connection sits idle in a pool; `onClose` runs if
   * the peer closes (or sends unexpected bytes) before `claim()`.
   */
  watchIdle(onClose: () => void): void {
    if (this.#pending !== undefined || this.eof) return;
    this.start = this.end = 0;
    this.#idle = true;
    this.fill().then(() => {
      if (this.#idle && !this.#closed) {
        // Still idle: EOF, error or stray bytes all make it unusable.
        this.#idle = false;
        onClose();
      }
    });
  }

  /**
   * Takes the connection out of idle; true when it is still healthy (its
   * watch read is pending, so the peer has neither closed nor sent bytes).
   */
  claim(): boolean {
    const healthy = this.#idle && this.#pending !== undefined && !this.eof && !this.#closed;
    this.#idle = false;
    return healthy;
  }

  consume(n: number): void {
    this.start += n;
  }

  /** Writes every byte of `data`; throws if the connection fails. */
  writeAll(data: Uint8Array): Promise<void> {
    const c = this.conn;
    return c.writeAll !== undefined ? c.writeAll(data) : writeLoop(c, data);
  }

  closeWrite(): void {
    if (this.#closed) return;
    try {
      // Deno's TcpConn.closeWrite returns a promise that rejects once the connection is gone.
      const r: unknown = this.conn.closeWrite();
      if (r instanceof Promise) r.catch(() => {});
    } catch {
      // Already closed.
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#whenClosed.resolve();
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

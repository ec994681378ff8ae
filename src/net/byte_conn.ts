/**
 * The byte stream a `BufConn` reads and writes: a Deno TCP connection (read
 * and written through the runtime's calls, `tcpByteConn`), or a node:tls
 * socket adapted to the same four calls (`tlsByteConn`). This lets the HTTP
 * engines run unchanged over plaintext and over mTLS.
 *
 * The TLS adapters queue decrypted chunks until the caller reads them
 * (pausing the source while too much waits, so memory stays bounded) and
 * resolve writes once the TLS layer has taken the bytes.
 */

import process from "node:process";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { BufConn } from "./buf_conn.ts";

export interface ByteConn {
  /** Reads into `p`; resolves with the count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /**
   * The same read with 0 for end of stream (`p` is never empty), where the
   * connection can do without the extra promise `read` costs.
   */
  readCount?(p: Uint8Array): Promise<number>;
  /** Writes some or all of `p`; resolves with the count written. */
  write(p: Uint8Array): Promise<number>;
  /**
   * Writes all of `p` in one call, where the connection can do without a
   * loop of `write`s (each a promise and a wait more).
   */
  writeAll?(p: Uint8Array): Promise<void>;
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
  /** Writes until all is written, natively (absent on runtimes without it). */
  writeAll?(rid: number, p: Uint8Array): Promise<void>;
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

/** Writes all of `p` with one `write` after another. */
export async function writeLoop(c: ByteConn, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) off += await c.write(off === 0 ? p : p.subarray(off));
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
    return (await this.readCount(p)) || null;
  }

  readCount(p: Uint8Array): Promise<number> {
    return this.#io.read(this.#rid, p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#io.write(this.#rid, p);
  }

  writeAll(p: Uint8Array): Promise<void> {
    const io = this.#io;
    if (io.writeAll === undefined) return writeLoop(this, p);
    try {
      return io.writeAll(this.#rid, p);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  closeWrite(): void {
    // Rejects when the connection is already gone: nothing is left to half-close then.
    this.#conn.closeWrite().catch(() => {});
  }

  close(): void {
    this.#conn.close();
  }
}

/**
 * Chunks waiting to be read, shared by the two TLS adapters and the HTTP/2
 * stream adapter (`proxy/h1_to_h2.ts`). The source flows freely into the
 * queue and is paused only while more than `HIGH_WATER` bytes wait unread
 * (pausing per chunk cost a third of the throughput).
 */
abstract class ChunkQueue {
  readonly #chunks: Uint8Array[] = [];
  #head = 0;
  #queued = 0;
  #paused = false;
  protected ended = false;
  protected error: Error | undefined;
  #waiter: (() => void) | undefined;
  /** The buffer of the read waiting for bytes, and what was copied into it. */
  #target: Uint8Array | undefined;
  #delivered = 0;

  protected abstract pauseSource(): void;
  protected abstract resumeSource(): void;

  protected enqueue(c: Uint8Array): void {
    this.#chunks.push(c);
    this.#queued += c.length;
    if (this.#queued > HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.pauseSource();
    }
    this.wake();
  }

  /**
   * Takes bytes the caller will overwrite once this returns: they go
   * straight into the buffer of a waiting read, the usual case, and
   * otherwise into a copy that is queued.
   */
  protected deliver(src: Uint8Array): void {
    const t = this.#target;
    if (t !== undefined && this.#delivered === 0 && this.#head === this.#chunks.length) {
      const k = Math.min(src.length, t.length);
      t.set(k === src.length ? src : src.subarray(0, k));
      this.#delivered = k;
      if (k < src.length) this.enqueue(src.slice(k));
      else this.wake();
      return;
    }
    this.enqueue(src.slice());
  }

  protected wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#head === this.#chunks.length) {
      if (this.error !== undefined) throw this.error;
      if (this.ended) return null;
      this.#target = p;
      await new Promise<void>((resolve) => this.#waiter = resolve);
      this.#target = undefined;
      const n = this.#delivered;
      if (n > 0) {
        this.#delivered = 0;
        return n;
      }
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
      this.resumeSource();
    }
    return n;
  }
}

/**
 * A queue fed by a node stream, written through its `write()`: what
 * `StreamByteConn` and the HTTP/2 upstream streams (`proxy/h1_to_h2.ts`)
 * share. Subclasses feed the queue and close the stream their own way.
 */
export abstract class DuplexQueue extends ChunkQueue {
  protected readonly stream: Duplex;

  constructor(s: Duplex) {
    super();
    this.stream = s;
  }

  protected pauseSource(): void {
    this.stream.pause();
  }

  protected resumeSource(): void {
    this.stream.resume();
  }

  write(p: Uint8Array): Promise<number> {
    if (this.error !== undefined) return Promise.reject(this.error);
    // node keeps a reference to the chunk until written: copy, since callers reuse buffers.
    const copy = p.slice();
    return new Promise((resolve, reject) => {
      this.stream.write(copy, (e?: Error | null) => e ? reject(e) : resolve(copy.length));
    });
  }

  closeWrite(): void {
    this.stream.end();
  }
}

/** Adapts a node stream (a TLSSocket) to ByteConn through its 'data' events and `write()`. */
export class StreamByteConn extends DuplexQueue implements ByteConn {
  constructor(s: Duplex) {
    super(s);
    s.on("data", (c: Uint8Array) => this.enqueue(c));
    s.on("end", () => {
      this.ended = true;
      this.wake();
    });
    s.on("close", () => {
      this.ended = true;
      this.wake();
    });
    s.on("error", (e: Error) => {
      this.error = e;
      this.wake();
    });
  }

  close(): void {
    this.stream.destroy();
  }
}

/**
 * A TLSSocket after its handshake, read and written at its TLS handle: the
 * handle's read callback feeds the queue, and plaintext goes to the handle's
 * `writeBuffer`. This skips node's Readable and Writable machinery, which
 * cost more per request than the TLS records themselves; the socket object
 * still owns the connection (errors, close, shutdown). The handle protocol
 * is node's stream_base one (`onread` with the byte count in
 * `streamBaseState`, write requests completed through `oncomplete`), as
 * Deno implements it; `tlsByteConn` checks that it is there and otherwise
 * falls back to `StreamByteConn`.
 */
class HandleByteConn extends ChunkQueue implements ByteConn {
  readonly #sock: TLSSocket;
  readonly #h: TlsHandle;
  readonly #sb: StreamBase;
  /** The ciphertext carrier, when remora feeds the TLS layer itself (`carryCiphertext`). */
  source: Carrier | undefined;

  constructor(sock: TLSSocket, h: TlsHandle, sb: StreamBase) {
    super();
    this.#sock = sock;
    this.#h = h;
    this.#sb = sb;
    // Bytes the socket decrypted before this took over (a client may send
    // its request together with its last handshake message).
    for (let c = sock.read(); c !== null; c = sock.read()) this.enqueue(c);
    const state = sb.streamBaseState;
    h.readStop();
    // Decrypted bytes land in one buffer shared by all connections and are
    // copied out at once, instead of in a new ArrayBuffer per read (young
    // ArrayBuffers are what made scavenges slow: each one is swept apart).
    const user = typeof h.useUserBuffer === "function" ? sharedReadBuffer() : undefined;
    if (user !== undefined) h.useUserBuffer!(user);
    h.onread = (buf, n) => {
      const nread = n ?? state[sb.kReadBytesOrError]!;
      if (nread > 0 && buf === undefined && user !== undefined) {
        this.deliver(nread === user.length ? user : user.subarray(0, nread));
      } else if (nread > 0 && buf !== undefined) {
        const off = buf instanceof ArrayBuffer ? state[sb.kArrayBufferOffset]! : 0;
        const bytes = buf instanceof ArrayBuffer
          ? new Uint8Array(buf, off, nread)
          : buf.subarray(0, nread);
        this.enqueue(bytes);
      } else if (nread < 0) {
        if (nread !== UV_EOF) this.error ??= new Error(`TLS read failed (code ${nread})`);
        this.ended = true;
        this.wake();
      }
    };
    h.readStart();
    sock.on("close", () => {
      this.ended = true;
      this.wake();
    });
    sock.on("error", (e: Error) => {
      this.error ??= e;
      this.wake();
    });
  }

  protected pauseSource(): void {
    this.#h.readStop();
    this.source?.pause();
  }

  protected resumeSource(): void {
    this.#h.readStart();
    this.source?.resume();
  }

  /** `write` takes all of `p` in (it resolves with its length): no loop needed. */
  writeAll(p: Uint8Array): Promise<void> {
    return this.write(p) as Promise<unknown> as Promise<void>;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.#sock.destroyed) return Promise.reject(new Error("TLS connection closed"));
    if (this.source !== undefined) return this.source.write(p);
    const sb = this.#sb;
    const req = new sb.WriteWrap();
    req.handle = this.#h;
    // The TLS layer takes the plaintext in during the call (callers may reuse `p` at once).
    return new Promise((resolve, reject) => {
      req.oncomplete = (status: number) =>
        status < 0 ? reject(new Error(`TLS write failed (code ${status})`)) : resolve(p.length);
      const err = this.#h.writeBuffer(req, p);
      if (err !== 0) reject(new Error(`TLS write failed (code ${err})`));
      else if (sb.streamBaseState[sb.kLastWriteWasAsync] === 0) resolve(p.length);
    });
  }

  closeWrite(): void {
    this.#sock.end();
  }

  close(): void {
    this.#sock.destroy();
  }
}

const UV_EOF = -4095;

interface TlsHandle {
  onread: (buf: ArrayBuffer | Uint8Array | undefined, n?: number) => void;
  /** Makes reads land in `buf` (onread then gets no buffer), as node's `onread: { buffer }`. */
  useUserBuffer?(buf: Uint8Array): unknown;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: object, data: Uint8Array): number;
}

interface StreamBase {
  WriteWrap: new () => { handle: unknown; oncomplete: (status: number) => void };
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

function findStreamBase(): StreamBase | undefined {
  try {
    // deno-lint-ignore no-explicit-any
    const sb = (process as any).binding("stream_wrap") as StreamBase;
    const ok = typeof sb?.WriteWrap === "function" && sb.streamBaseState instanceof Int32Array &&
      typeof sb.kReadBytesOrError === "number" && typeof sb.kArrayBufferOffset === "number" &&
      typeof sb.kLastWriteWasAsync === "number";
    return ok ? sb : undefined;
  } catch {
    return undefined;
  }
}

const streamBase = findStreamBase();

/**
 * A TLSSocket whose handshake is done, as a ByteConn: at its handle when
 * possible. `over` names the connection and duplex a server-side socket was
 * built on (`duplexOf(conn)`: the ClientHello was read for detection, so
 * node's TLS cannot own the TCP socket); ciphertext then moves between the
 * connection and the TLS layer directly (`carryCiphertext`).
 */
export function tlsByteConn(
  sock: TLSSocket,
  over?: { conn: BufConn; duplex: Duplex & { detach(): void } },
): ByteConn {
  const h = (sock as unknown as { _handle?: Partial<TlsHandle> })._handle;
  if (
    streamBase === undefined || h === undefined || h === null ||
    typeof h.readStart !== "function" || typeof h.readStop !== "function" ||
    typeof h.writeBuffer !== "function" || !("onread" in h)
  ) {
    return new StreamByteConn(sock);
  }
  const conn = new HandleByteConn(sock, h as TlsHandle, streamBase);
  if (over !== undefined) conn.source = carryCiphertext(sock, over.conn, over.duplex, streamBase);
  return conn;
}

/** How `HandleByteConn` drives a TLS layer that remora feeds itself. */
interface Carrier {
  pause(): void;
  resume(): void;
  /** Encrypts `p` and writes the records; resolves once they are written. */
  write(p: Uint8Array): Promise<number>;
}

interface JsStreamTls {
  readBuffer(b: Uint8Array): void;
  drainEncOut(): Uint8Array | ArrayBuffer | null | undefined;
  emitEof(): void;
  _parentWrap?: { stream?: unknown };
}

/**
 * Moves ciphertext between `c` and the TLS layer of a socket built over
 * `duplexOf(c)`, once its handshake is done. Reads from `c` go straight into
 * the TLS layer; what it has to send (records, alerts, close_notify) is
 * drained right after each call that can produce it and written to `c`, one
 * write after another. This skips the duplex, node's JS stream socket and
 * its deferred pumping. Returns undefined (nothing changed) when the socket
 * is not built as expected.
 */
function carryCiphertext(
  sock: TLSSocket,
  c: BufConn,
  duplex: Duplex & { detach(): void },
  sb: StreamBase,
): Carrier | undefined {
  const h = (sock as unknown as { _handle?: Partial<JsStreamTls> & object })._handle;
  const proto = h === undefined ? undefined : Object.getPrototypeOf(h) as Record<string, unknown>;
  const writeBuffer = proto?.writeBuffer;
  if (
    h === undefined || typeof h.readBuffer !== "function" ||
    typeof h.drainEncOut !== "function" || typeof h.emitEof !== "function" ||
    typeof writeBuffer !== "function" || h._parentWrap?.stream !== duplex
  ) {
    return undefined;
  }
  const tlsLayer = h as JsStreamTls;
  const wrap = h._parentWrap;
  // One write after another, so that records are never interleaved.
  let written: Promise<void> = Promise.resolve();
  const send = (bytes: Uint8Array): Promise<void> => {
    written = written.then(() => c.writeAll(bytes));
    return written;
  };
  const take = (): Uint8Array | undefined => {
    const out = tlsLayer.drainEncOut();
    if (out === null || out === undefined || out.byteLength === 0) return undefined;
    return out instanceof Uint8Array ? out : new Uint8Array(out);
  };
  /** Sends what the TLS layer has to send now. */
  const drain = (): Promise<void> => {
    const out = take();
    return out === undefined ? written : send(out);
  };
  /**
   * Sends records until the TLS layer has none left. A large write leaves
   * plaintext queued behind its size-limited output buffer: an empty read
   * makes it encrypt more, as node's pump does.
   */
  const drainAll = async (): Promise<void> => {
    for (;;) {
      let out = take();
      if (out === undefined) {
        tlsLayer.readBuffer(EMPTY);
        out = take();
        if (out === undefined) return;
      }
      await send(out);
    }
  };
  // Bytes the duplex took from `c` but node has not consumed yet come first.
  duplex.detach();
  duplex.removeAllListeners("data");
  duplex.pause();
  const early: Uint8Array[] = [];
  for (let b = duplex.read() as Uint8Array | null; b !== null; b = duplex.read()) early.push(b);
  let paused = false;
  let wake: (() => void) | undefined;
  const carrier: Carrier = {
    pause(): void {
      paused = true;
    },
    resume(): void {
      paused = false;
      // Records that arrived while paused are decrypted now.
      tlsLayer.readBuffer(EMPTY);
      drainAll().catch(() => {});
      const w = wake;
      wake = undefined;
      w?.();
    },
    write(p: Uint8Array): Promise<number> {
      const req = new sb.WriteWrap();
      req.handle = h;
      req.oncomplete = () => {};
      // The prototype's writeBuffer: the instance's own one also schedules
      // node's deferred pump, which `drain` does here at once.
      const err = (writeBuffer as (r: object, d: Uint8Array) => number).call(h, req, p);
      if (err !== 0) return Promise.reject(new Error(`TLS write failed (code ${err})`));
      // A small write becomes records at once; a large one may take several rounds.
      return (p.length <= SMALL_WRITE ? drain() : drainAll()).then(() => p.length);
    },
  };
  // What node's TLS socket itself still sends (shutdown, close) takes the same way.
  wrap.stream = {
    readable: true,
    writable: true,
    write(chunk: Uint8Array, cb: (e?: Error) => void): boolean {
      send(chunk).then(() => cb(), (e) => cb(e as Error));
      return true;
    },
    end(cb?: () => void): void {
      written.finally(() => {
        c.closeWrite();
        cb?.();
      });
    },
    destroy(): void {
      c.close();
    },
    pause: carrier.pause,
    resume: carrier.resume,
    cork(): void {},
    uncork(): void {},
  };
  for (const b of early) tlsLayer.readBuffer(b);
  drain().catch(() => {});
  (async () => {
    for (;;) {
      while (paused) await new Promise<void>((r) => wake = r);
      if (c.buffered === 0 && !(await c.fill())) {
        tlsLayer.emitEof();
        drain().catch(() => {});
        return;
      }
      // The TLS layer takes the bytes in during the call: the buffer can be reused.
      const chunk = c.buf.subarray(c.start, c.end);
      c.consume(chunk.length);
      tlsLayer.readBuffer(chunk);
      drain().catch((e) => sock.destroy(e as Error));
    }
  })().catch((e) => sock.destroy(e as Error));
  return carrier;
}

const HIGH_WATER = 256 * 1024;

let readBuffer: Uint8Array | undefined;

/** The buffer TLS handles decrypt into (see HandleByteConn), made on first use. */
function sharedReadBuffer(): Uint8Array {
  return readBuffer ??= new Uint8Array(64 * 1024);
}
/** Plaintext up to this size is encrypted in full by the write call (one TLS record). */
const SMALL_WRITE = 16 * 1024;
const EMPTY = new Uint8Array(0);

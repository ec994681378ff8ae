/**
 * HTTP/1.x bodies relayed byte for byte between two connections.
 *
 * A body is never buffered whole: bytes move in pieces of at most one read
 * buffer, each write awaited before the next read, so memory stays bounded
 * whatever the body size. Chunked bodies are passed through verbatim while a
 * small state machine finds where the message ends (so the connection can be
 * reused); chunk sizes and trailers are checked, not rewritten. Which side
 * failed is reported with `SideError`, so callers can tell an upstream reset
 * from a client that went away.
 */

import type { BufConn } from "../net/buf_conn.ts";
import { type Framing, HttpParseError } from "./h1_head.ts";

/** Which side of a relay failed: the one being read ("src") or written ("dst"). */
export class SideError extends Error {
  override name = "SideError";
  /** `malformed`: the side sent bytes that break the framing (a 400), not just a failure. */
  constructor(readonly side: "src" | "dst", message: string, readonly malformed = false) {
    super(message);
  }
}

async function write(dst: BufConn, data: Uint8Array): Promise<void> {
  try {
    await dst.writeAll(data);
  } catch (e) {
    throw new SideError("dst", `Write failed: ${(e as Error).message}`);
  }
}

/**
 * Relays one message body framed by `framing` from `src` to `dst`, consuming
 * exactly its bytes from `src`. Returns the number of body bytes on the wire;
 * of those, chunked framing (sizes, line ends, trailers) is also passed to
 * `onFraming`, once at the end.
 */
export function relayBody(
  src: BufConn,
  dst: BufConn,
  framing: Framing,
  onFraming?: (bytes: number) => void,
): Promise<number> {
  switch (framing.kind) {
    case "none":
      return Promise.resolve(0);
    case "length":
      return relayLength(src, dst, framing.length);
    case "chunked":
      return relayChunked(src, dst, onFraming);
    case "close":
      return relayUntilClose(src, dst);
  }
}

async function relayLength(src: BufConn, dst: BufConn, length: number): Promise<number> {
  let remaining = length;
  while (remaining > 0) {
    if (src.buffered === 0 && !(await src.fill())) {
      throw new SideError(
        "src",
        `Connection closed with ${remaining} of ${length} body bytes missing`,
      );
    }
    const n = Math.min(src.buffered, remaining);
    await write(dst, src.buf.subarray(src.start, src.start + n));
    src.consume(n);
    remaining -= n;
  }
  return length;
}

async function relayUntilClose(src: BufConn, dst: BufConn): Promise<number> {
  let total = 0;
  for (;;) {
    if (src.buffered === 0 && !(await src.fill())) return total;
    const n = src.buffered;
    await write(dst, src.buf.subarray(src.start, src.end));
    src.consume(n);
    total += n;
  }
}

const enum C {
  Size,
  SizeExt,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerLine,
  TrailerLf,
  FinalLf,
  Done,
}

/** Incremental scanner of chunked framing; `scan` returns bytes that belong to the body. */
export class ChunkedScanner {
  #state = C.Size;
  #size = 0;
  #digits = 0;
  #remaining = 0;
  /** Chunk data bytes scanned so far (the body without its framing). */
  payload = 0;

  get done(): boolean {
    return this.#state === C.Done;
  }

  /** Scans buf[start, end) and returns how many of those bytes the body owns. */
  scan(buf: Uint8Array, start: number, end: number): number {
    let i = start;
    while (i < end && this.#state !== C.Done) {
      const b = buf[i]!;
      switch (this.#state) {
        case C.Size: {
          const v = hexValue(b);
          if (v >= 0) {
            if (++this.#digits > 15) throw new HttpParseError("Chunk size too large");
            this.#size = this.#size * 16 + v;
          } else if (this.#digits === 0) {
            throw new HttpParseError("Malformed chunk size");
          } else if (b === 13) this.#state = C.SizeLf;
          else if (b === 10) this.#afterSize();
          else if (b === 59 || b === 32 || b === 9) this.#state = C.SizeExt;
          else throw new HttpParseError("Malformed chunk size");
          i++;
          break;
        }
        case C.SizeExt:
          if (b === 13) this.#state = C.SizeLf;
          else if (b === 10) this.#afterSize();
          i++;
          break;
        case C.SizeLf:
          if (b !== 10) throw new HttpParseError("Malformed chunk size line");
          this.#afterSize();
          i++;
          break;
        case C.Data: {
          const n = Math.min(this.#remaining, end - i);
          i += n;
          this.#remaining -= n;
          this.payload += n;
          if (this.#remaining === 0) this.#state = C.DataCr;
          break;
        }
        case C.DataCr:
          if (b === 13) this.#state = C.DataLf;
          else if (b === 10) this.#state = C.Size;
          else throw new HttpParseError("Chunk data longer than its size");
          i++;
          break;
        case C.DataLf:
          if (b !== 10) throw new HttpParseError("Chunk data longer than its size");
          this.#state = C.Size;
          i++;
          break;
        case C.TrailerStart:
          // An empty line ends the message; anything else is a trailer field.
          if (b === 13) this.#state = C.FinalLf;
          else if (b === 10) this.#state = C.Done;
          else this.#state = C.TrailerLine;
          i++;
          break;
        case C.TrailerLine:
          if (b === 13) this.#state = C.TrailerLf;
          else if (b === 10) this.#state = C.TrailerStart;
          i++;
          break;
        case C.TrailerLf:
          if (b !== 10) throw new HttpParseError("Malformed trailer line");
          this.#state = C.TrailerStart;
          i++;
          break;
        case C.FinalLf:
          if (b !== 10) throw new HttpParseError("Malformed end of chunked body");
          this.#state = C.Done;
          i++;
          break;
      }
    }
    return i - start;
  }

  #afterSize(): void {
    if (this.#size === 0) {
      this.#state = C.TrailerStart;
    } else {
      this.#remaining = this.#size;
      this.#state = C.Data;
    }
    this.#size = 0;
    this.#digits = 0;
  }
}

function hexValue(b: number): number {
  if (b >= 48 && b <= 57) return b - 48;
  if (b >= 97 && b <= 102) return b - 87;
  if (b >= 65 && b <= 70) return b - 55;
  return -1;
}

async function relayChunked(
  src: BufConn,
  dst: BufConn,
  onFraming?: (bytes: number) => void,
): Promise<number> {
  const scanner = new ChunkedScanner();
  let total = 0;
  while (!scanner.done) {
    if (src.buffered === 0 && !(await src.fill())) {
      throw new SideError("src", "Connection closed inside a chunked body");
    }
    let n: number;
    try {
      n = scanner.scan(src.buf, src.start, src.end);
    } catch (e) {
      throw new SideError("src", (e as Error).message, e instanceof HttpParseError);
    }
    await write(dst, src.buf.subarray(src.start, src.start + n));
    src.consume(n);
    total += n;
  }
  onFraming?.(total - scanner.payload);
  return total;
}

/**
 * Relays a chunked body from `src` to `dst` as plain bytes, without its chunk
 * framing and trailers: for HTTP/1.0 clients, which do not know chunked
 * encoding (RFC 9112 6.1), where the body then ends with the connection.
 * Consumes exactly the chunked message from `src`; returns the data bytes.
 */
export async function relayDechunked(src: BufConn, dst: BufConn): Promise<number> {
  let total = 0;
  for (;;) {
    const sizeLine = await _line(src);
    const hex = sizeLine.split(";")[0]!.trim();
    if (!/^[0-9a-fA-F]{1,15}$/.test(hex)) {
      throw new SideError("src", `Malformed chunk size: "${sizeLine.slice(0, 20)}"`, true);
    }
    const size = parseInt(hex, 16);
    if (size === 0) {
      while ((await _line(src)) !== ""); // trailers, then the empty line
      return total;
    }
    let remaining = size;
    while (remaining > 0) {
      if (src.buffered === 0 && !(await src.fill())) {
        throw new SideError("src", "Connection closed inside a chunked body");
      }
      const n = Math.min(src.buffered, remaining);
      await write(dst, src.buf.subarray(src.start, src.start + n));
      src.consume(n);
      remaining -= n;
      total += n;
    }
    if ((await _line(src)) !== "") {
      throw new SideError("src", "Chunk data longer than its size", true);
    }
  }
}

/** Reads one line (without CR LF) of chunked framing from `src`. */
async function _line(src: BufConn): Promise<string> {
  for (;;) {
    const lf = src.buf.subarray(src.start, src.end).indexOf(10);
    if (lf !== -1) {
      let end = src.start + lf;
      if (end > src.start && src.buf[end - 1] === 13) end--;
      const line = String.fromCharCode(...src.buf.subarray(src.start, end));
      src.consume(lf + 1);
      return line;
    }
    if (src.buffered > 4096) {
      throw new SideError("src", "Chunk size or trailer line too long", true);
    }
    if (!(await src.fill())) throw new SideError("src", "Connection closed inside a chunked body");
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Reads a whole length-framed body of at most `limit` bytes (for requests that
 * may be replayed) and consumes it from `src`. Returns undefined, consuming
 * nothing, when the body is chunked or larger than `limit`.
 */
export async function preloadBody(
  src: BufConn,
  framing: Framing,
  limit: number,
): Promise<Uint8Array | undefined> {
  if (framing.kind === "none") return EMPTY;
  if (framing.kind !== "length" || framing.length > limit) return undefined;
  while (src.buffered < framing.length) {
    if (!(await src.fill())) {
      throw new SideError(
        "src",
        `Connection closed with ${framing.length - src.buffered} body bytes missing`,
      );
    }
  }
  const body = src.buf.slice(src.start, src.start + framing.length);
  src.consume(framing.length);
  return body;
}

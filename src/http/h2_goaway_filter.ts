/**
 * Removes GOAWAY frames from a peer's HTTP/2 byte stream before node:http2
 * reads it, and reports them instead.
 *
 * Why: Deno 2.9's node:http2 aborts the whole process (an nghttp2 assertion
 * in find_stream_on_goaway_func, or free(): invalid pointer) when a GOAWAY
 * arrives on a session that has carried many streams — every h2load, curl or
 * gRPC client sends one when it is done. Sending GOAWAY is safe. So remora
 * never lets node:http2 see a received GOAWAY: the engine learns of it from
 * `onGoaway` (and stops opening streams on that connection), and the peer's
 * closing of the TCP connection ends the session as usual. Everything else
 * passes through byte for byte, split wherever the chunks split.
 *
 * `onGoaway` gets the frame's last stream id: the peer processes no stream
 * above it, so those can be refused here and retried elsewhere, as nghttp2
 * refuses them for Envoy. A frame too short to hold one reports the largest id.
 */

const GOAWAY = 0x7;
const PREFACE_LENGTH = 24;
/** Stream ids are 31 bits. */
const MAX_STREAM_ID = 0x7fffffff;

export class GoawayFilter {
  #preface: number;
  readonly #header = new Uint8Array(9);
  #headerFill = 0;
  /** Payload bytes of the current frame still to pass (>0) or skip (<0). */
  #payload = 0;
  #skipping = false;
  /** The skipped GOAWAY's last stream id so far, and how many of its 4 bytes are read. */
  #lastId = 0;
  #lastIdFill = 4;

  /** `clientPreface`: the stream starts with the 24-byte client preface (server side). */
  constructor(
    clientPreface: boolean,
    readonly onGoaway: (lastStreamId: number) => void = () => {},
  ) {
    this.#preface = clientPreface ? PREFACE_LENGTH : 0;
  }

  /** Returns the pieces of `chunk` to forward (views into it, or copies of split headers). */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let i = 0;
    const n = chunk.length;
    if (this.#preface > 0) {
      const k = Math.min(this.#preface, n);
      out.push(chunk.subarray(0, k));
      this.#preface -= k;
      i = k;
    }
    while (i < n) {
      if (this.#payload > 0) {
        if (this.#lastIdFill < 4) {
          // A GOAWAY's payload starts with its last stream id.
          this.#lastId = this.#lastId * 256 + chunk[i]!;
          this.#payload--;
          i++;
          if (++this.#lastIdFill === 4) this.onGoaway(this.#lastId % 0x80000000);
          else if (this.#payload === 0) {
            this.#lastIdFill = 4;
            this.onGoaway(MAX_STREAM_ID);
          }
          continue;
        }
        const k = Math.min(this.#payload, n - i);
        if (!this.#skipping) out.push(chunk.subarray(i, i + k));
        this.#payload -= k;
        i += k;
        continue;
      }
      // Collect a 9-byte frame header, possibly across chunks.
      const k = Math.min(9 - this.#headerFill, n - i);
      this.#header.set(chunk.subarray(i, i + k), this.#headerFill);
      this.#headerFill += k;
      i += k;
      if (this.#headerFill < 9) break;
      this.#headerFill = 0;
      const h = this.#header;
      const length = (h[0]! << 16) | (h[1]! << 8) | h[2]!;
      this.#skipping = h[3] === GOAWAY;
      this.#payload = length;
      if (!this.#skipping) out.push(h.slice());
      else if (length === 0) this.onGoaway(MAX_STREAM_ID);
      else {
        this.#lastId = 0;
        this.#lastIdFill = 0;
      }
    }
    return out;
  }
}

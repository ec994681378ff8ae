/**
 * HTTP/1.1 requests to an upstream whose port is declared HTTP2 or GRPC,
 * that is HTTP/2: as Envoy's clusters for such ports speak HTTP/2 whatever
 * the client spoke. The reverse of `h2_to_h1.ts`.
 *
 * The request head becomes a HEADERS frame on the upstream's pooled session
 * (`h2_sessions.ts`: h2c, or mTLS with ALPN istio-h2 to a meshed upstream):
 * Host as `:authority`, hop-by-hop fields left out, `te: trailers` kept. The
 * stream is then handed to the HTTP/1 engine (`http1.ts`) as a connection
 * that carries one exchange: bytes written to it go out as DATA (the engine
 * writes the request body without its chunk framing), and bytes read from it
 * are the response body framed as an HTTP/1.1 upstream would have framed it,
 * by its content-length or else chunked, with the trailers (gRPC's
 * grpc-status) in the last chunk when the client accepts them (`TE:
 * trailers`). Retries, timeouts, circuit breaking, metrics and logs are the
 * HTTP/1 engine's own. Nothing is pooled here and no stream is retried.
 */

import http2 from "node:http2";
import {
  type Framing,
  getHeader,
  type HeaderList,
  type ResponseHead,
  serializeHead,
} from "../http/h1_head.ts";
import { BufConn } from "../net/buf_conn.ts";
import { type ByteConn, DuplexQueue } from "../net/byte_conn.ts";
import { addFields, fieldList } from "./h2_fields.ts";
import { HOP_BY_HOP } from "./h2_to_h1.ts";
import { type H2Sessions, streamFailure } from "./h2_sessions.ts";
import type { Failure } from "./policy.ts";
import type { Upstream } from "./target.ts";

/** One attempt's request, as the HTTP/1 engine built it for the upstream. */
export interface H2Request {
  method: string;
  /** Path with query, as routed (rewrites applied). */
  path: string;
  scheme: string;
  /**
   * The upstream request's fields: Host (sent as `:authority`) and the
   * end-to-end fields; hop-by-hop ones are left out here.
   */
  headers: HeaderList;
  /** The client sent `TE: trailers`: so does the upstream request, and trailers come back. */
  trailers: boolean;
  /** The request has no body: the stream ends with its headers. */
  endStream: boolean;
}

/** Why a stream gave no response head (`status`: the one to answer with, when not 503). */
export interface H2Failure {
  failure: Failure;
  detail: string;
  status?: number;
}

/** One request on an upstream HTTP/2 stream, seen as a connection by the HTTP/1 engine. */
export interface H2Exchange {
  /**
   * The stream: writes are request body DATA, `closeWrite` ends the request,
   * reads give the response body with HTTP/1.1 framing (see the module doc),
   * `close` cancels the stream.
   */
  readonly conn: BufConn;
  /** The final response head (1xx are not passed on), or why none came. */
  readonly response: Promise<ResponseHead | H2Failure>;
  /** The grpc-status of the response's headers or trailers, "" when it has none (yet). */
  readonly grpcStatus: string;
  /** Sends the whole request body and ends the request. */
  send(body: Uint8Array): void;
}

/** Opens the request's stream to `up` on its pooled HTTP/2 session. */
export function openStream(sessions: H2Sessions, up: Upstream, req: H2Request): H2Exchange {
  const out: http2.OutgoingHttpHeaders = {
    ":method": req.method,
    ":path": req.path,
    ":scheme": req.scheme,
  };
  for (const [k, v] of req.headers) if (k === "host") out[":authority"] = v;
  addFields(out, req.headers.filter(([k]) => k !== "host" && !HOP_BY_HOP.has(k)));
  // The one TE allowed in HTTP/2; gRPC servers expect it.
  if (req.trailers) out["te"] = "trailers";
  return new StreamConn(sessions.request(up, out, req.endStream), req);
}

const CANCEL = http2.constants.NGHTTP2_CANCEL;
const REFUSED_STREAM = http2.constants.NGHTTP2_REFUSED_STREAM;
const END_STREAM = http2.constants.NGHTTP2_FLAG_END_STREAM;
const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");
const LAST_CHUNK = encoder.encode("0\r\n\r\n");

/** The stream as a ByteConn, and the exchange's response. */
class StreamConn extends DuplexQueue implements ByteConn, H2Exchange {
  readonly conn: BufConn;
  readonly response: Promise<ResponseHead | H2Failure>;
  grpcStatus = "";
  readonly #s: http2.ClientHttp2Stream;
  /** Response DATA is read out as chunks (the response has no content-length). */
  #chunked = false;
  #trailers: http2.IncomingHttpHeaders | undefined;

  constructor(s: http2.ClientHttp2Stream, req: H2Request) {
    super(s);
    this.#s = s;
    // Response bodies are read in pieces of at most 16 KiB (an HTTP/2 frame's default size).
    this.conn = new BufConn(this, 16 * 1024);
    const { promise, resolve } = Promise.withResolvers<ResponseHead | H2Failure>();
    this.response = promise;
    let headed = false;
    s.on("response", (h, flags: number) => {
      headed = true;
      resolve(this.#head(h, flags, req.method));
      // Read only from here: Deno's streams may emit 'data' before 'response', and the
      // framing is known only now.
      s.on("data", (c: Uint8Array) => {
        if (!this.#chunked) return this.enqueue(c);
        if (c.length === 0) return;
        this.enqueue(encoder.encode(`${c.length.toString(16)}\r\n`));
        this.enqueue(c);
        this.enqueue(CRLF);
      });
    });
    s.on("trailers", (t: http2.IncomingHttpHeaders) => {
      this.#trailers = t;
      const g = t["grpc-status"];
      if (g !== undefined) this.grpcStatus = String(g);
    });
    s.on("end", () => {
      if (this.#chunked) this.enqueue(req.trailers ? lastChunk(this.#trailers) : LAST_CHUNK);
      this.ended = true;
      this.wake();
    });
    s.on("close", () => {
      if (!headed) {
        resolve(
          s.rstCode === REFUSED_STREAM
            ? { failure: "refused-stream", detail: "upstream refused the stream" }
            : {
              failure: "reset",
              detail: `upstream stream closed before the response head (code ${s.rstCode})`,
            },
        );
      }
      // A stream cut before its end: the body's framing stays incomplete, which the reader sees.
      this.ended = true;
      this.wake();
    });
    s.on("error", (e: Error & { code?: string }) => {
      if (!headed) {
        resolve({ failure: streamFailure(e, s), detail: e.message });
      }
      this.error = e;
      this.wake();
    });
  }

  /** The response head as an HTTP/1.1 upstream would have sent it. */
  #head(h: http2.IncomingHttpHeaders, flags: number, method: string): ResponseHead | H2Failure {
    const status = Number(h[":status"]);
    const headers = fieldList(h, (k) => HOP_BY_HOP.has(k));
    const g = h["grpc-status"];
    if (g !== undefined) this.grpcStatus = String(g);
    // A response that ended with its headers (gRPC's trailers-only errors). Deno's client
    // streams do not set `endAfterHeaders`, but the HEADERS frame flags are passed along.
    const ended = (flags & END_STREAM) !== 0 || this.#s.readableEnded;
    const length = getHeader(headers, "content-length");
    let framing: Framing;
    if (method === "HEAD" || status === 204 || status === 304) framing = { kind: "none" };
    else if (ended) {
      framing = { kind: "none" };
      // Without a length, an HTTP/1.1 client would read the body until the connection closes.
      if (length === undefined) headers.push(["content-length", "0"]);
    } else if (length !== undefined) {
      // nghttp2 resets a stream whose content-length is not a number; this keeps out the
      // rest (one past what a JS number holds exactly).
      if (!/^[0-9]{1,15}$/.test(length)) {
        this.close();
        return {
          failure: "reset",
          detail: `upstream sent an invalid content-length: "${length.slice(0, 20)}"`,
          status: 502,
        };
      }
      framing = { kind: "length", length: Number(length) };
    } else {
      this.#chunked = true;
      framing = { kind: "chunked" };
    }
    return { status, reason: "", minor: 1, headers, framing, keepAlive: true, size: 0 };
  }

  send(body: Uint8Array): void {
    this.#s.end(body);
  }

  close(): void {
    if (!this.#s.closed) this.#s.close(CANCEL);
  }
}

/** The last chunk with the response's trailers (pseudo and framing fields left out). */
function lastChunk(t: http2.IncomingHttpHeaders | undefined): Uint8Array {
  if (t === undefined) return LAST_CHUNK;
  const fields = fieldList(t, (k) => HOP_BY_HOP.has(k) || k === "content-length");
  // "0", the trailer fields, the empty line: a head's own layout.
  return serializeHead("0", fields);
}

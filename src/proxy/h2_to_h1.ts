/**
 * One attempt of an HTTP/2 request (h2c or gRPC-less HTTP/2 from the client)
 * against an upstream whose port is declared HTTP, that is HTTP/1.1: as
 * Envoy's cluster for such a port speaks HTTP/1.1 whatever the client spoke.
 *
 * The request goes out as an HTTP/1.1 head (`:authority` as Host), its body
 * by its Content-Length or else chunked; the response head comes back
 * through the same parser as on the HTTP/1 listeners, and its body is
 * written to the stream without HTTP/1 framing. The connection returns to
 * the pool when the exchange ended cleanly. Outcomes are those of the
 * HTTP/2 attempts (`http2.ts`), so retries, timeouts and metrics are shared.
 */

import type http2 from "node:http2";
import { relayBody, relayDechunked } from "../http/h1_body.ts";
import {
  type HeaderList,
  HttpParseError,
  parseResponseHead,
  type ResponseHead,
  responseHeadEnd,
  serializeHead,
} from "../http/h1_head.ts";
import { BufConn } from "../net/buf_conn.ts";
import type { ByteConn } from "../net/byte_conn.ts";
import type { AttemptOptions, Outcome } from "./http2.ts";
import { addFields, fieldList } from "./h2_fields.ts";
import { applyHeaderOps } from "./policy.ts";
import type { ConnPool } from "./pool.ts";
import type { Upstream } from "./target.ts";

/**
 * Fields that are not carried across HTTP/2 (connection-specific, RFC 9113
 * 8.2.2, plus host, which becomes :authority) or only framed an HTTP/1
 * message. Shared with `http2.ts` and `h1_to_h2.ts`.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "te",
  "host",
]);

const encoder = new TextEncoder();

export function attemptHttp1(
  stream: http2.ServerHttp2Stream,
  out: http2.OutgoingHttpHeaders,
  up: Upstream,
  pool: ConnPool,
  o: AttemptOptions,
): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    let settled = false;
    /** The streamed request body goes chunked (it came without a content-length). */
    let streamedChunked = false;
    /** Whether the request body has gone out in full (a streamed one may still be going). */
    let bodySent = true;
    let conn: BufConn | undefined;
    let responded = false;
    /** The status passed on to the client once it responded (logged with a later failure). */
    let sentStatus = 0;
    const settle = (x: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(x);
    };
    const timer = Number.isFinite(o.perTryMs)
      ? setTimeout(() => {
        conn?.close();
        if (responded) {
          stream.close(CANCEL);
          settle({ kind: "done", status: 504, grpcStatus: "", flag: "UT" });
        } else settle({ kind: "timeout" });
      }, Math.max(1, o.perTryMs))
      : undefined;
    // The client reset the stream: the upstream request is abandoned (DR, as Envoy reports it).
    const gone = () => {
      conn?.close();
      settle({ kind: "done", status: 0, grpcStatus: "", flag: "DR" });
    };
    stream.once("close", gone);
    run().then(settle, (e) => {
      conn?.close();
      // The response began: the client must learn that it did not end well (a reset stream).
      if (responded && !stream.destroyed) stream.close(INTERNAL_ERROR);
      settle(
        responded
          ? { kind: "done", status: sentStatus, grpcStatus: "", flag: "UC" }
          : e instanceof HttpParseError
          ? { kind: "reset", detail: e.message, status: e.status }
          : { kind: "reset", detail: (e as Error).message },
      );
    }).finally(() => stream.off("close", gone));

    /** Sends the request on `c` and reads up to the final response head. */
    async function exchange(c: BufConn, head: Uint8Array, method: string): Promise<ResponseHead> {
      const body = o.request;
      await c.writeAll(head);
      if (body instanceof Uint8Array) {
        if (body.length > 0) await c.writeAll(body);
      } else if (body === "stream") {
        // The body streams on while the response is awaited (a server may answer first).
        bodySent = false;
        sendBody(stream, c, streamedChunked, o).then(() => bodySent = true, () => c.close());
      }
      // The response head, by the HTTP/1 listeners' parser (1xx skipped: HTTP/2 has its own).
      for (;;) {
        let end = -1;
        for (;;) {
          if (c.buffered > 0) {
            end = responseHeadEnd(c.buf, c.start, c.end);
            if (end !== -1) break;
          }
          if (!(await c.fill())) throw new Error("upstream closed before the response head");
        }
        const res = parseResponseHead(c.buf, c.start, end, method);
        c.consume(end - c.start);
        if (res.status >= 200 || res.status === 101) return res;
      }
    }

    async function run(): Promise<Outcome> {
      const method = String(out[":method"] ?? "GET");
      const headers: HeaderList = [
        ["host", String(out[":authority"] ?? "")],
        ...fieldList(out, (k) => HOP_BY_HOP.has(k) || k === "content-length"),
      ];
      const length = out["content-length"] === undefined
        ? undefined
        : String(out["content-length"]);
      const body = o.request;
      if (body instanceof Uint8Array) headers.push(["content-length", String(body.length)]);
      else if (body === "stream") {
        streamedChunked = length === undefined;
        headers.push(
          length !== undefined ? ["content-length", length] : [
            "transfer-encoding",
            "chunked",
          ],
        );
      } else if (method === "POST" || method === "PUT" || method === "PATCH") {
        headers.push(["content-length", "0"]);
      }
      const head = serializeHead(`${method} ${String(out[":path"] ?? "/")} HTTP/1.1`, headers);

      let c!: BufConn;
      let res: ResponseHead | undefined;
      // A pooled connection the upstream closed meanwhile fails at once: a replayable request
      // gets one fresh connection (as on the HTTP/1 listeners).
      for (let tries = 0; res === undefined; tries++) {
        let reused: boolean;
        try {
          ({ conn: c, reused } = await pool.acquire(up));
          conn = c;
        } catch (e) {
          return { kind: "connect", detail: (e as Error).message };
        }
        if (settled) {
          c.close();
          return { kind: "timeout" };
        }
        try {
          const sentAt = performance.now();
          res = await exchange(c, head, method);
          o.onResponseHead(performance.now() - sentAt);
        } catch (e) {
          c.close();
          // Only when the upstream sent nothing at all: else the failure is the answer.
          if (!reused || tries > 0 || body === "stream" || c.end > 0) throw e;
        }
      }
      if (res.status === 101) {
        c.close();
        throw new Error("upstream switched protocols");
      }
      if (o.holdStatus?.(res.status, "")) {
        c.close();
        return { kind: "reset", detail: `status ${res.status}`, status: res.status, held: true };
      }

      const list: HeaderList = res.headers.filter(([k]) => !HOP_BY_HOP.has(k));
      for (const ops of o.responseHeaders) applyHeaderOps(list, ops);
      const rh = addFields({ ":status": res.status }, list);
      if (stream.destroyed) {
        c.close();
        return { kind: "done", status: res.status, grpcStatus: "", flag: "DC" };
      }
      responded = true;
      sentStatus = res.status;
      if (res.framing.kind === "none") {
        stream.respond(rh, { endStream: true });
      } else {
        stream.respond(rh);
        const sink = new BufConn(streamSink(stream), 16);
        const n = res.framing.kind === "chunked"
          ? await relayDechunked(c, sink)
          : await relayBody(c, sink, res.framing);
        o.onResponseBytes(n);
        await new Promise<void>((r) => stream.end(r));
      }
      // A connection whose request body is still being sent (the upstream answered first) is not
      // reusable: the rest of that body would reach the next request's upstream.
      if (res.keepAlive && res.framing.kind !== "close" && bodySent) pool.release(up, c);
      else c.close();
      return { kind: "done", status: res.status, grpcStatus: "" };
    }
  });
}

const CANCEL = 0x8; // NGHTTP2_CANCEL
const INTERNAL_ERROR = 0x2; // NGHTTP2_INTERNAL_ERROR

/** Copies the client's request body to the upstream, chunked when it has no length. */
async function sendBody(
  stream: http2.ServerHttp2Stream,
  c: BufConn,
  chunked: boolean,
  o: AttemptOptions,
): Promise<void> {
  const keep = o.keep;
  if (keep !== undefined) keep.started = true;
  for await (const chunk of stream as AsyncIterable<Uint8Array>) {
    o.onRequestBytes(chunk.length);
    keep?.add(chunk);
    if (chunk.length === 0) continue;
    if (chunked) await c.writeAll(encoder.encode(`${chunk.length.toString(16)}\r\n`));
    await c.writeAll(chunk);
    if (chunked) await c.writeAll(CRLF);
  }
  if (keep !== undefined) keep.ended = true;
  if (chunked) await c.writeAll(LAST_CHUNK);
}

const CRLF = encoder.encode("\r\n");
const LAST_CHUNK = encoder.encode("0\r\n\r\n");

/** The write side of an HTTP/2 stream as a ByteConn, for the body relays. */
function streamSink(stream: http2.ServerHttp2Stream): ByteConn {
  return {
    read: () => Promise.resolve(null),
    write: (p: Uint8Array) =>
      new Promise((resolve, reject) => {
        // The stream keeps the chunk until sent: the relays reuse their buffer.
        const copy = p.slice();
        stream.write(copy, (e?: Error | null) => e ? reject(e) : resolve(copy.length));
      }),
    closeWrite: () => stream.end(),
    close: () => stream.close(CANCEL),
  };
}

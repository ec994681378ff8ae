/**
 * The HTTP/2 engine (h2c with prior knowledge, and gRPC): serves a downstream
 * connection whose first bytes were the HTTP/2 preface, and forwards each
 * stream over a pooled HTTP/2 session (`h2_sessions.ts`) to the upstream the
 * router chose, or as HTTP/1.1 to a port declared HTTP (`h2_to_h1.ts`).
 *
 * Framing, HPACK and flow control are node:http2's (as Deno provides it);
 * the downstream socket is a `Duplex` over the already-peeked `BufConn`, so
 * the bytes read for detection are replayed to the parser first. Bodies are
 * piped with backpressure, trailers (grpc-status) are passed through, and
 * the route's timeout and retry policy apply as in the HTTP/1 engine
 * (retries only for requests without a body, the ones that can be replayed).
 */

import http2 from "node:http2";
import type { Duplex } from "node:stream";
import type { HeaderOps } from "../config/runtime.ts";
import { log } from "../log.ts";
import type { BufConn } from "../net/buf_conn.ts";
import { type ConnInfo, destinationIpOf } from "./http1.ts";
import { grpcMessage, grpcStatusOf } from "./grpc_status.ts";
import { formatGrpcTimeout, grpcRequestTimeoutMs } from "./grpc_timeout.ts";
import { addFields, fieldList } from "./h2_fields.ts";
import { observe, type Observer } from "./observe.ts";
import {
  applyHeaderOps,
  backoffMs,
  type Failure,
  failureFlag,
  newRequestId,
  resetText,
  retriesFailure,
  retriesStatus,
  sleep,
} from "./policy.ts";
import type { ConnPool } from "./pool.ts";
import { breakerFor } from "./circuit_breaker.ts";
import { recordOutcome } from "./outlier.ts";
import { budgetFor } from "./retry_budget.ts";
import { setClientCertHeader } from "./xfcc.ts";
import { type RequestView, splitAuthority } from "./route_match.ts";
import type { Forward, HttpRouter, Upstream } from "./target.ts";
import type { RequestTrace } from "../telemetry/tracing.ts";
import { attemptHttp1, HOP_BY_HOP } from "./h2_to_h1.ts";
import { h2Duplex, type H2Sessions, streamFailure } from "./h2_sessions.ts";

export interface Http2Options extends Observer {
  router: HttpRouter;
  /** Dials upstreams (mTLS for meshed ones). */
  pool: ConnPool;
}

const UNKNOWN_CONN: ConnInfo = {
  remoteAddr: "unknown",
  remotePort: 0,
  localPort: 0,
  originalDst: undefined,
};

/** Where a downstream socket's `ConnInfo` is kept (node:http2 hands out proxies of sockets). */
const CONN_INFO = Symbol("remora.connInfo");

/** Serves HTTP/2 streams of one downstream connection. */
export class Http2Engine {
  readonly #opts: Http2Options;
  readonly #server: http2.Http2Server;
  readonly #sessions: H2Sessions;

  /** `sessions`: the upstream sessions, shared with HTTP/1.1 requests to HTTP/2 clusters. */
  constructor(opts: Http2Options, sessions: H2Sessions) {
    this.#opts = opts;
    this.#sessions = sessions;
    this.#server = http2.createServer({ maxSessionMemory: 64 });
    this.#server.on("stream", (stream, headers) => {
      // A client that goes away mid-stream (reset, broken pipe) errors its
      // streams: the stream closes and #handle sees that. Unheard, the error
      // would be thrown and stop the process.
      stream.on("error", () => {});
      const socket = stream.session?.socket as { [CONN_INFO]?: ConnInfo } | undefined;
      const info = socket?.[CONN_INFO] ?? UNKNOWN_CONN;
      // With @grpc/grpc-js in the program, npm's @types/node types this stream as Http2Stream.
      this.#handle(stream as http2.ServerHttp2Stream, headers, info).catch((e) => {
        log.warn("HTTP/2 stream failed", { error: String(e) });
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      });
    });
    this.#server.on("sessionError", () => {});
  }

  serve(client: BufConn, info: ConnInfo): void {
    // A client's GOAWAY only says it opens no more streams; it closes the connection next.
    const socket = h2Duplex(client, { clientPreface: true }) as Duplex & { [CONN_INFO]?: ConnInfo };
    socket[CONN_INFO] = info;
    socket.on("error", () => {});
    this.#server.emit("connection", socket);
  }

  async #handle(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    info: ConnInfo,
  ): Promise<void> {
    const start = performance.now();
    const method = String(headers[":method"] ?? "GET");
    const path = String(headers[":path"] ?? "/");
    const scheme = String(headers[":scheme"] ?? "http");
    const authority = String(headers[":authority"] ?? headers["host"] ?? "");
    const hp = splitAuthority(authority, scheme === "https" ? 443 : 80);
    const grpc = String(headers["content-type"] ?? "").startsWith("application/grpc");
    const flags: string[] = [];
    let requestBytes = 0;
    let responseBytes = 0;
    let upstreamMs = -1;
    // Set once the upstream headers are built; `finish` may run before that (local replies).
    let trace: RequestTrace | undefined = undefined;
    const finish = (
      labels: Forward["labels"],
      status: number,
      up: Upstream | undefined,
      grpcStatus: string,
    ) =>
      observe(this.#opts, {
        labels,
        status,
        flags,
        grpc,
        grpcStatus,
        startMs: start,
        requestBytes,
        responseBytes,
        requestFramingBytes: 0,
        responseFramingBytes: 0,
        trace,
        method,
        path,
        authority,
        protocol: "HTTP/2",
        conn: info,
        upstream: up,
        upstreamMs,
        clientRequestId: trace === undefined && typeof headers["x-request-id"] === "string"
          ? headers["x-request-id"]
          : undefined,
      });
    /** A local reply (a gRPC one to gRPC requests) and its record with the status sent. */
    const reply = (
      labels: Forward["labels"],
      status: number,
      body: string,
      up: Upstream | undefined,
      extra: Array<[string, string]> = [],
    ) => {
      const g = respondLocal(stream, status, body, extra, grpc);
      finish(labels, grpc ? 200 : status, up, g);
    };
    if (hp === undefined || method === "CONNECT") {
      respondLocal(stream, 400, "remora: :authority is missing or malformed", [], grpc);
      return;
    }
    const view: RequestView = {
      method,
      path,
      host: hp.host,
      authority,
      port: hp.port,
      scheme,
      header: (name) => {
        const v = headers[name];
        return v === undefined ? undefined : Array.isArray(v) ? v.join(",") : String(v);
      },
      originalDst: info.originalDst,
      sourceIp: info.remoteAddr,
      destinationIp: destinationIpOf(info),
      principal: info.peer?.principal,
    };
    const d = this.#opts.router.route(view);
    if (d.kind === "local") {
      if (d.flags !== "") flags.push(d.flags);
      // Local replies are traced and logged too (the context is read from the request).
      trace = this.#opts.telemetry?.onRequest(fieldList(headers));
      reply(d.labels, d.status, d.body, undefined, d.headers);
      return;
    }
    const route = d.route;
    const fault = route?.fault;
    // The route's timeout counts from here: an injected delay comes before it, as in Envoy.
    let routeStart = start;
    if (fault?.delay !== undefined && Math.random() * 100 < fault.delay.percentage) {
      flags.push("DI");
      await sleep(fault.delay.ms);
      routeStart = performance.now();
    }
    if (fault?.abort !== undefined && Math.random() * 100 < fault.abort.percentage) {
      flags.push("FI");
      trace = this.#opts.telemetry?.onRequest(fieldList(headers));
      reply(d.labels, fault.abort.status, "fault filter abort", undefined);
      return;
    }

    // Upstream request headers: end-to-end fields plus proxy headers and route operations.
    // "te: trailers" is the one TE allowed in HTTP/2 and gRPC servers expect it.
    const list = fieldList(
      headers,
      (k, v) => HOP_BY_HOP.has(k) && !(k === "te" && String(v).trim().toLowerCase() === "trailers"),
    );
    if (!list.some(([k]) => k === "x-request-id")) list.push(["x-request-id", newRequestId()]);
    setClientCertHeader(
      list,
      this.#opts.reporter === "destination",
      info.peer,
      this.#opts.self.principal?.(),
    );
    if (!list.some(([k]) => k === "x-forwarded-proto")) list.push(["x-forwarded-proto", scheme]);
    // Trace context in, this hop's context out (telemetry/tracing.ts).
    trace = this.#opts.telemetry?.onRequest(list);
    applyHeaderOps(list, route?.requestHeaders);
    applyHeaderOps(list, d.destination.requestHeaders);
    const out = addFields({
      ":method": method,
      ":path": d.path,
      ":scheme": scheme,
      ":authority": d.authority ?? authority,
    }, list);

    const retry = route?.retry;
    // A request that ended with its headers can be replayed; one with a body
    // (a gRPC call's message) is forwarded at once and a copy of up to
    // REPLAY_LIMIT bytes is kept, so it can be sent again once it has ended.
    const headersOnly = stream.readableEnded ||
      (stream as unknown as { endAfterHeaders: boolean }).endAfterHeaders;
    const body = retry !== undefined && !headersOnly ? new KeptBody() : undefined;
    const canReplay = () => body === undefined || !body.started || (body.ended && !body.over);
    const maxAttempts = retry !== undefined ? 1 + retry.attempts : 1;
    // A gRPC call's own deadline (grpc-timeout) is its timeout, within the route's.
    const timeoutMs = grpc
      ? grpcRequestTimeoutMs(route?.timeoutMs, view.header("grpc-timeout"))
      : route?.timeoutMs;
    const deadline = timeoutMs !== undefined && timeoutMs > 0 ? routeStart + timeoutMs : Infinity;
    if (grpc && deadline !== Infinity) {
      out["grpc-timeout"] = formatGrpcTimeout(
        Math.min(timeoutMs!, retry?.perTryTimeoutMs ?? Infinity),
      );
    }
    let previous: Upstream | undefined;
    // Resilience (circuit_breaker.ts, retry_budget.ts, outlier.ts): no work without a policy.
    const breaker = breakerFor(d.cluster);
    const budget = maxAttempts > 1 ? budgetFor(d.cluster) : undefined;
    const stats = this.#opts.metrics.resilience;
    let retrying = false;
    budget?.requestStarted();
    try {
      for (let n = 1; n <= maxAttempts; n++) {
        const up = d.next(previous);
        if (up === undefined) {
          flags.push("UH");
          reply(d.labels, 503, "no healthy upstream", undefined);
          return;
        }
        previous = up;
        if (n > 1) await sleep(backoffMs(n - 1));
        const last = n === maxAttempts;
        if (maxAttempts > 1) out["x-envoy-attempt-count"] = String(n);
        const over = breaker?.acquireStream();
        if (over !== undefined) {
          stats.overflow(d.labels.cluster, over);
          flags.push("UO");
          reply(
            d.labels,
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            undefined,
            [["x-envoy-overloaded", "true"]],
          );
          return;
        }
        d.begin(up);
        let outcome: Outcome;
        try {
          outcome = await this.#attempt(stream, out, up, {
            http1: d.cluster?.protocol === "HTTP",
            perTryMs: Math.min(deadline - performance.now(), retry?.perTryTimeoutMs ?? Infinity),
            // A retriable status is held back unless this is the last attempt.
            holdStatus: last || retry === undefined
              ? undefined
              : (s, grpc) => canReplay() && retriesStatus(retry, s, grpc),
            responseHeaders: [route?.responseHeaders, d.destination.responseHeaders],
            onResponseBytes: (k) => responseBytes += k,
            onResponseHead: (ms) => upstreamMs = ms,
            onRequestBytes: (k) => requestBytes += k,
            // The client's stream until an attempt has read from it, then the kept copy.
            request: headersOnly ? "none" : body?.started === true ? body.bytes() : "stream",
            keep: body,
          });
        } finally {
          d.end(up);
          breaker?.releaseStream();
          if (retrying) {
            budget!.retryEnded();
            retrying = false;
          }
        }
        recordOutcome(
          d.cluster,
          up,
          outcome.kind === "done"
            ? outcome.status
            : outcome.kind === "reset"
            ? outcome.status ?? 0
            : 0,
          stats,
        );
        if (outcome.kind === "done") {
          if (outcome.flag !== undefined) flags.push(outcome.flag);
          finish(d.labels, outcome.status, up, outcome.grpcStatus);
          return;
        }
        // The route's timeout ends the request, retries or not (as Envoy's global timeout does).
        const expired = deadline !== Infinity && performance.now() >= deadline;
        const failure: Failure = outcome.kind === "connect"
          ? "connect-failure"
          : outcome.kind === "reset"
          ? outcome.failure ?? "reset"
          : outcome.kind;
        const held = outcome.kind === "reset" && outcome.held === true;
        if (!last && canReplay() && !expired && (held || retriesFailure(retry!, failure))) {
          const refused = budget!.tryRetry();
          if (refused === undefined) {
            retrying = true;
            stats.retry(d.labels.cluster);
            continue;
          }
          stats.retryOverflow(d.labels.cluster, refused);
        }
        if (n > 1) flags.push("URX");
        const status = outcome.kind === "timeout" ? 504 : outcome.status ?? 503;
        flags.push(failureFlag(failure).flag);
        reply(
          d.labels,
          status,
          outcome.kind === "timeout"
            ? "upstream request timeout"
            : resetText(failure, outcome.detail),
          up,
        );
        return;
      }
    } finally {
      if (retrying) budget!.retryEnded();
      budget?.requestEnded();
    }
  }

  #attempt(
    stream: http2.ServerHttp2Stream,
    out: http2.OutgoingHttpHeaders,
    up: Upstream,
    o: AttemptOptions,
  ): Promise<Outcome> {
    if (o.http1) return attemptHttp1(stream, out, up, this.#opts.pool, o);
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const settle = (x: Outcome) => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          resolve(x);
        }
      };
      let ureq: http2.ClientHttp2Stream;
      try {
        ureq = this.#sessions.request(up, out, o.request === "none");
      } catch (e) {
        settle({ kind: "connect", detail: (e as Error).message });
        return;
      }
      let responded = false;
      /** The status passed on to the client once it responded (logged with a later failure). */
      let sentStatus = 0;
      const sentAt = performance.now();
      const timer = Number.isFinite(o.perTryMs)
        ? setTimeout(() => {
          ureq.close(http2.constants.NGHTTP2_CANCEL);
          if (responded) {
            stream.close(http2.constants.NGHTTP2_CANCEL);
            settle({ kind: "done", status: 504, grpcStatus: "", flag: "UT" });
          } else settle({ kind: "timeout" });
        }, Math.max(1, o.perTryMs))
        : undefined;
      if (o.request === "stream") {
        const keep = o.keep;
        if (keep !== undefined) keep.started = true;
        stream.on("data", (c: Uint8Array) => {
          o.onRequestBytes(c.length);
          keep?.add(c);
        });
        if (keep !== undefined) stream.once("end", () => keep.ended = true);
        stream.pipe(ureq);
      } else if (o.request !== "none") ureq.end(o.request);
      // The client reset the stream (a gRPC deadline, a cancel): the upstream stream is
      // cancelled too and the attempt ends now, as Envoy's DR (downstream remote reset).
      stream.on("close", () => {
        if (!ureq.closed) ureq.close(http2.constants.NGHTTP2_CANCEL);
        settle({ kind: "done", status: 0, grpcStatus: "", flag: "DR" });
      });
      // A stream that closes without ending (cancelled from here, reset by the upstream
      // without an error) ends the attempt too; 'end' and 'error' come first when there are any.
      ureq.on("close", () =>
        settle(
          responded
            ? { kind: "done", status: sentStatus, grpcStatus: "", flag: "UC" }
            : ureq.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM
            ? { kind: "reset", detail: "upstream refused the stream", failure: "refused-stream" }
            : { kind: "reset", detail: "upstream stream closed" },
        ));
      let trailers: http2.IncomingHttpHeaders | undefined;
      ureq.on("trailers", (t) => trailers = t);
      ureq.on("error", (e: Error & { code?: string }) => {
        if (responded) {
          if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
          settle({ kind: "done", status: sentStatus, grpcStatus: "", flag: "UC" });
          return;
        }
        const failure = streamFailure(e, ureq);
        settle(
          failure === "connect-failure"
            ? { kind: "connect", detail: e.message }
            : { kind: "reset", detail: e.message, failure },
        );
      });
      ureq.on("response", (h, flags: number) => {
        const status = Number(h[":status"] ?? 502);
        const g = h["grpc-status"];
        if (o.holdStatus?.(status, g === undefined ? "" : String(g))) {
          ureq.close(http2.constants.NGHTTP2_CANCEL);
          settle({ kind: "reset", detail: `status ${status}`, status, held: true });
          return;
        }
        responded = true;
        sentStatus = status;
        o.onResponseHead(performance.now() - sentAt);
        const list = fieldList(h, (k) => HOP_BY_HOP.has(k));
        for (const ops of o.responseHeaders) applyHeaderOps(list, ops);
        const rh = addFields({ ":status": status }, list);
        // A response that ended with its headers (e.g. gRPC's trailers-only
        // errors). Deno's client streams do not set `endAfterHeaders`, but the
        // HEADERS frame flags are passed along.
        const endNow = ureq.readableEnded ||
          (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 ||
          (ureq as unknown as { endAfterHeaders: boolean }).endAfterHeaders;
        const grpcInHeaders = h["grpc-status"] !== undefined ? String(h["grpc-status"]) : "";
        if (stream.destroyed) {
          ureq.close(http2.constants.NGHTTP2_CANCEL);
          settle({ kind: "done", status, grpcStatus: grpcInHeaders, flag: "DC" });
          return;
        }
        if (endNow) {
          stream.respond(rh, { endStream: true });
          settle({ kind: "done", status, grpcStatus: grpcInHeaders });
          return;
        }
        stream.respond(rh, { waitForTrailers: true });
        stream.on("wantTrailers", () => {
          const t: http2.OutgoingHttpHeaders = {};
          if (trailers !== undefined) {
            for (const [k, v] of Object.entries(trailers)) {
              if (!k.startsWith(":") && v !== undefined) t[k] = v;
            }
          }
          // Empty trailers end the stream with an empty DATA frame (END_STREAM);
          // `close()` would reset it and cut off response data still queued.
          stream.sendTrailers(t);
        });
        ureq.on("data", (c: Uint8Array) => o.onResponseBytes(c.length));
        ureq.pipe(stream);
        ureq.on("end", () => {
          const g = trailers?.["grpc-status"];
          settle({ kind: "done", status, grpcStatus: g !== undefined ? String(g) : grpcInHeaders });
        });
      });
    });
  }
}

/** Largest request body kept so that the request can be sent again. */
const REPLAY_LIMIT = 64 * 1024;

/** A copy of a request body as it streams, kept while it is at most REPLAY_LIMIT bytes. */
export class KeptBody {
  /** An attempt has begun reading the client's stream: later ones send the copy. */
  started = false;
  ended = false;
  over = false;
  #chunks: Uint8Array[] = [];
  #size = 0;

  add(c: Uint8Array): void {
    if (this.over) return;
    this.#size += c.length;
    if (this.#size > REPLAY_LIMIT) {
      this.over = true;
      this.#chunks = [];
    } else this.#chunks.push(c.slice());
  }

  bytes(): Uint8Array {
    const all = new Uint8Array(this.#size);
    let off = 0;
    for (const c of this.#chunks) {
      all.set(c, off);
      off += c.length;
    }
    return all;
  }
}

/** How one attempt runs (see `#attempt` and `attemptHttp1`). */
export interface AttemptOptions {
  /** The cluster's port is declared HTTP: HTTP/1.1 upstream, as Envoy's clusters for it are. */
  http1: boolean;
  perTryMs: number;
  /** Whether to drop this response and retry: by status and a trailers-only grpc-status. */
  holdStatus: ((status: number, grpcStatus: string) => boolean) | undefined;
  responseHeaders: Array<HeaderOps | undefined>;
  onResponseBytes: (n: number) => void;
  /** The response head came, `ms` after the request went upstream. */
  onResponseHead: (ms: number) => void;
  onRequestBytes: (n: number) => void;
  /** The request body: none, the downstream stream's, or a kept copy sent again. */
  request: "none" | "stream" | Uint8Array;
  /** Where a streamed request body is copied to, for retries. */
  keep: KeptBody | undefined;
}

export type Outcome =
  | { kind: "done"; status: number; grpcStatus: string; flag?: string }
  | { kind: "timeout" }
  | { kind: "connect"; detail: string; status?: number }
  /**
   * `held`: a response dropped by `holdStatus`, to be retried by its status.
   * `failure`: whether the upstream reset the stream (default "reset": the connection ended).
   */
  | {
    kind: "reset";
    detail: string;
    status?: number;
    held?: true;
    failure?: "reset" | "remote-reset" | "refused-stream";
  };

/**
 * Sends remora's own answer. To a gRPC request it is a trailers-only gRPC
 * response, as Envoy's local replies are: HTTP 200, the status mapped to a
 * grpc-status, the text as grpc-message (a gRPC client would read a text
 * body as a message frame). Returns the grpc-status sent, "" for plain HTTP.
 */
function respondLocal(
  stream: http2.ServerHttp2Stream,
  status: number,
  body: string,
  extra: Array<[string, string]> = [],
  grpc = false,
): string {
  const grpcStatus = grpc ? String(grpcStatusOf(status)) : "";
  if (stream.destroyed || stream.headersSent) {
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return grpcStatus;
  }
  if (grpc) {
    const h: http2.OutgoingHttpHeaders = { ":status": 200 };
    for (const [k, v] of extra) h[k] = v;
    h["content-type"] = "application/grpc";
    h["grpc-status"] = grpcStatus;
    if (body !== "") h["grpc-message"] = grpcMessage(body);
    stream.respond(h, { endStream: true });
    return grpcStatus;
  }
  const h: http2.OutgoingHttpHeaders = {
    ":status": status,
    "content-type": "text/plain; charset=utf-8",
  };
  for (const [k, v] of extra) h[k] = v;
  stream.respond(h);
  stream.end(body === "" ? "" : body + "\n");
  return "";
}

/**
 * The HTTP/1.1 engine: serves one downstream connection, request after
 * request, and forwards each to an upstream chosen by the listener's router.
 *
 * Per request: read and parse the head (`h1_head.ts`) → route (`HttpRouter`)
 * → fault injection → attempts (pooled upstream connection, head, body relay,
 * response head; or, for a cluster whose port is declared HTTP2 or GRPC, a
 * stream of the upstream's HTTP/2 session seen as a connection, `h1_to_h2.ts`;
 * retried per the route's policy when the request can be replayed) →
 * response head and body relayed back → metrics. Bodies stream in
 * both directions with bounded memory; `Expect: 100-continue`, chunked
 * framing, Upgrade (WebSocket) and CONNECT tunnels are passed through. Errors
 * become Envoy-style local replies (503 UF/UC, 504 UT, 502 UPE) only while no
 * response byte has been sent; after that the client connection is closed.
 */

import { preloadBody, relayBody, relayDechunked, SideError } from "../http/h1_body.ts";
import {
  endToEndHeaders,
  findHeadEnd,
  getHeader,
  type HeaderList,
  headerValue,
  HttpParseError,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
  type ResponseHead,
  responseHeadEnd,
  serializeHead,
} from "../http/h1_head.ts";
import { reasonPhrase } from "../http/status.ts";
import { log } from "../log.ts";
import type { BufConn } from "../net/buf_conn.ts";
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
import { ConnectError, type ConnPool } from "./pool.ts";
import { type RequestView, splitAuthority } from "./route_match.ts";
import type { Forward, HttpRouter, LocalReply, Upstream } from "./target.ts";
import { relay } from "./tcp_relay.ts";
import { allocBytes } from "../net/slab.ts";
import { acquireConn, breakerFor, type CircuitBreaker, reusable } from "./circuit_breaker.ts";
import { hedge, hedgeable, type Racer } from "./hedge.ts";
import { recordOutcome } from "./outlier.ts";
import { budgetFor, type RetryBudget } from "./retry_budget.ts";
import type { Cluster } from "../config/runtime.ts";
import { setClientCertHeader } from "./xfcc.ts";
import { grpcMessage, grpcStatusOf } from "./grpc_status.ts";
import { HeadWatch } from "./head_watch.ts";
import { formatGrpcTimeout, grpcRequestTimeoutMs } from "./grpc_timeout.ts";
import type { RequestTrace } from "../telemetry/tracing.ts";
import type { PeerInfo } from "../tls/mtls.ts";
// Types only: h1_to_h2.ts (node:http2) is loaded when first needed (http2_lazy.ts).
import type { H2Exchange, H2Request } from "./h1_to_h2.ts";

/** Facts about the downstream connection. */
export interface ConnInfo {
  remoteAddr: string;
  remotePort: number;
  localPort: number;
  /** The address the client connected to (this proxy's), when known. */
  localAddr?: string;
  /** Where the client was going before an iptables REDIRECT, when it was redirected. */
  originalDst: { host: string; port: number } | undefined;
  /** The mTLS peer, when the connection came in over mesh mTLS. */
  peer?: PeerInfo;
}

export interface Http1Options extends Observer {
  router: HttpRouter;
  pool: ConnPool;
  /** Streams to HTTP/2 upstreams, for clusters whose port is declared HTTP2 or GRPC. */
  h2: H2Upstreams;
  /** Explicit forward proxy mode: absolute-form targets and CONNECT accepted. */
  explicitProxy: boolean;
}

/**
 * Opens a request's stream to an HTTP/2 upstream (`h1_to_h2.ts`, loaded with
 * node:http2 on first use by `http2_lazy.ts`).
 */
export interface H2Upstreams {
  open(up: Upstream, req: H2Request): H2Exchange | Promise<H2Exchange>;
}

/** The address a connection was made to: its original destination when redirected, else the listener's. */
export function destinationIpOf(info: ConnInfo): string | undefined {
  return info.originalDst?.host ?? info.localAddr;
}

/** Largest request body kept in memory so that the request can be retried. */
const REPLAY_LIMIT = 64 * 1024;

/** Client connections waiting for a request head (see head_watch.ts), swept once started. */
const awaitingHead = new HeadWatch();
let sweeping = false;

/** Serves HTTP/1.x requests on `client` until it closes or must be closed. */
export async function serveHttp1(
  client: BufConn,
  info: ConnInfo,
  opts: Http1Options,
): Promise<void> {
  if (!sweeping) {
    sweeping = true;
    awaitingHead.start();
  }
  try {
    for (;;) {
      let headEnd = -1;
      for (;;) {
        if (client.buffered > 0) {
          headEnd = findHeadEnd(client.buf, client.start, client.end);
          if (headEnd !== -1) break;
          if (client.buffered >= MAX_HEAD_BYTES) {
            await writeLocal(client, 431, "remora: request head larger than 64 KiB", [], false);
            return;
          }
        }
        // Between requests the connection is idle: a draining listener may close it.
        client.idle = client.buffered === 0;
        awaitingHead.waiting(client);
        const more = await client.fill();
        client.idle = false;
        if (!more) return;
      }
      awaitingHead.done(client);
      let head: RequestHead;
      try {
        head = parseRequestHead(client.buf, client.start, headEnd);
      } catch (e) {
        if (!(e instanceof HttpParseError)) throw e;
        await writeLocal(client, e.status, `remora: bad request: ${e.message}`, [], false).catch(
          () => {},
        );
        return;
      }
      client.consume(headEnd - client.start);
      if (!(await new Exchange(client, head, info, opts).run())) return;
    }
  } catch (e) {
    if (!(e instanceof SideError)) log.warn("HTTP/1 connection failed", { error: String(e) });
  } finally {
    awaitingHead.done(client);
    client.close();
  }
}

/**
 * Exchanges waiting for an upstream's answer. One that has waited SLOW_MS
 * starts a read on its client, which tells if the client leaves (Envoy's DC).
 * Starting that read on every request instead cost a few percent of
 * throughput; a request slow enough to be abandoned is found within a second.
 * A plain array with each exchange's index in it: a Set would hash every
 * Exchange object, which cost more than the rest of this bookkeeping.
 */
const waiting: Exchange[] = [];
const SLOW_MS = 500;
let watching = false;

function startWatching(): void {
  // One timer for all, started with the first and not keeping the process alive.
  watching = true;
  const timer = setInterval(() => {
    const now = performance.now();
    for (let i = waiting.length - 1; i >= 0; i--) waiting[i]!.watchClient(now);
  }, SLOW_MS);
  Deno.unrefTimer(timer);
}

interface Attempt {
  /** The upstream connection, or the HTTP/2 stream seen as one (`h2`). */
  conn: BufConn;
  up: Upstream;
  head: ResponseHead;
  /** The request body relay while it streams (undefined when sent already). */
  body: Promise<void> | undefined;
  bodyDone: boolean;
  /** Set when the attempt went to an HTTP/2 upstream (`h1_to_h2.ts`). */
  h2: H2Exchange | undefined;
}

type AttemptResult = Attempt | { failure: Failure; detail: string; status?: number };

/** An attempt under way on `conn`, its response head to come. */
function newAttempt(conn: BufConn, up: Upstream, h2: H2Exchange | undefined): Attempt {
  return {
    conn,
    up,
    head: undefined as unknown as ResponseHead,
    body: undefined,
    bodyDone: true,
    h2,
  };
}

/** Lets a hedge race cancel an attempt (by closing its connection). */
interface AttemptControl {
  conn: BufConn | undefined;
  cancelled: boolean;
}

/** One request and its response on a downstream connection. */
class Exchange {
  readonly #client: BufConn;
  readonly #head: RequestHead;
  /** The request is a gRPC call (its content-type), read once. */
  readonly #grpc: boolean;
  readonly #info: ConnInfo;
  readonly #opts: Http1Options;
  readonly #start = performance.now();
  /** From the request going upstream to its response head (see ExchangeFacts), -1 before. */
  #upstreamMs = -1;
  #flags: string[] = [];
  #status = 0;
  #requestBytes = 0;
  #responseBytes = 0;
  #responseFramingBytes = 0;
  #requestFramingBytes = 0;
  #responded = false;
  #grpcStatus = "";
  /** Whether remora answered the client's Expect: 100-continue itself. */
  #continued = false;
  /** The cluster being forwarded to (its connectionPool settings apply). */
  #cluster: Cluster | undefined = undefined;
  /** For spans and access logs. */
  #requestView: RequestView | undefined;
  #trace: RequestTrace | undefined;
  /** Why the client's request body broke its framing, when it did. */
  #badBody: string | undefined;
  /** The client closed its connection before the response began (Envoy's DC). */
  #gone = false;
  /** The upstream connection of the attempt under way, closed if the client goes. */
  #upstream: BufConn | undefined;
  /** Those of more attempts under way at once (a hedge), made only when there are. */
  #more: BufConn[] | undefined;

  #hold(conn: BufConn): void {
    if (this.#upstream === undefined) this.#upstream = conn;
    else (this.#more ??= []).push(conn);
  }

  #drop(conn: BufConn): void {
    if (this.#upstream === conn) this.#upstream = this.#more?.pop();
    else if (this.#more !== undefined) {
      const i = this.#more.indexOf(conn);
      if (i !== -1) this.#more.splice(i, 1);
    }
  }

  constructor(client: BufConn, head: RequestHead, info: ConnInfo, opts: Http1Options) {
    this.#client = client;
    this.#head = head;
    this.#grpc = isGrpc(head.headers);
    this.#info = info;
    this.#opts = opts;
    this.#requestBytes = head.size;
  }

  /** Handles the exchange; returns whether the connection may carry another. */
  async run(): Promise<boolean> {
    const head = this.#head;
    const view = this.#view();
    this.#requestView = view;
    if (view === undefined) {
      await this.#local(
        400,
        "remora: request target or Host header is missing or malformed",
        "",
        false,
      );
      return false;
    }
    const decision = this.#opts.router.route(view);
    let keep = head.keepAlive && head.framing.kind === "none";
    if (decision.kind === "local") {
      // Local replies are traced and logged too (the context is read from the request).
      this.#trace = this.#opts.telemetry?.onRequest([...head.headers]);
      await this.#replyLocal(decision, keep);
      this.#record(decision.labels, undefined);
      return keep;
    }
    if (head.method === "CONNECT") {
      if (!this.#opts.explicitProxy) {
        await this.#local(
          405,
          "remora: CONNECT is only served by the outbound listener",
          "",
          false,
        );
        return false;
      }
      // A tunnel would carry bytes past the service's routes and policies:
      // as an Istio sidecar, remora tunnels only to hosts outside the registry.
      if (decision.cluster !== undefined && !decision.cluster.passthrough) {
        await this.#local(
          404,
          `remora: CONNECT to ${view.authority} is refused: it is a service of the mesh, send its requests through the proxy instead`,
          "NR",
          false,
        );
        this.#record(decision.labels, undefined);
        return false;
      }
      await this.#connect(decision);
      this.#record(decision.labels, undefined);
      return false;
    }
    keep = await this.#forward(decision, view);
    return keep;
  }

  #view(): RequestView | undefined {
    const head = this.#head;
    let target = head.target;
    let authority: string | undefined;
    let scheme = "http";
    if (head.method === "CONNECT") {
      authority = target;
      target = "";
    } else if (!target.startsWith("/") && target !== "*") {
      const m = /^(https?):\/\/([^/?#]+)([^#]*)/i.exec(target);
      if (m === null) return undefined;
      scheme = m[1]!.toLowerCase();
      authority = m[2]!;
      target = m[3] === "" ? "/" : m[3]!;
      if (scheme === "https") return undefined;
    } else {
      authority = getHeader(head.headers, "host");
    }
    if (authority === undefined) return undefined;
    const hp = splitAuthority(authority, scheme === "https" ? 443 : 80);
    if (hp === undefined) return undefined;
    const headers = head.headers;
    return {
      method: head.method,
      path: target,
      host: hp.host,
      authority,
      port: hp.port,
      scheme,
      header: (name) => headerValue(headers, name),
      originalDst: this.#info.originalDst,
      sourceIp: this.#info.remoteAddr,
      destinationIp: destinationIpOf(this.#info),
      principal: this.#info.peer?.principal,
    };
  }

  async #forward(fwd: Forward, view: RequestView): Promise<boolean> {
    const head = this.#head;
    const route = fwd.route;
    const fault = route?.fault;
    // The route's timeout counts from here: an injected delay comes before it, as in Envoy.
    let routeStart = this.#start;
    if (fault?.delay !== undefined && Math.random() * 100 < fault.delay.percentage) {
      this.#flags.push("DI");
      await sleep(fault.delay.ms);
      routeStart = performance.now();
    }
    if (fault?.abort !== undefined && Math.random() * 100 < fault.abort.percentage) {
      this.#flags.push("FI");
      this.#trace = this.#opts.telemetry?.onRequest([...head.headers]);
      const keep = head.keepAlive && head.framing.kind === "none";
      await this.#local(fault.abort.status, "fault filter abort", "", keep);
      this.#record(fwd.labels, undefined);
      return keep;
    }

    const upgrade = head.upgrade !== undefined;
    const headers = endToEndHeaders(head.headers, upgrade ? "upgrade" : undefined);
    // Expect: 100-continue is answered here, as Envoy does: a body small enough
    // to be replayed is read before any upstream sees the request, so waiting
    // for the upstream's 100 would leave the client waiting for nothing.
    if (
      head.minor === 1 && head.framing.kind !== "none" &&
      getHeader(headers, "expect")?.toLowerCase() === "100-continue"
    ) {
      removeHeader(headers, "expect");
      this.#continued = true;
      await writeOrSideError(this.#client, CONTINUE);
    }
    setHeader(
      headers,
      "host",
      fwd.authority ?? view.authority,
    );
    if (getHeader(headers, "x-request-id") === undefined) {
      headers.push(["x-request-id", newRequestId()]);
    }
    setClientCertHeader(
      headers,
      this.#opts.reporter === "destination",
      this.#info.peer,
      this.#opts.self.principal?.(),
    );
    if (getHeader(headers, "x-forwarded-proto") === undefined) {
      headers.push(["x-forwarded-proto", view.scheme]);
    }
    // Trace context in, this hop's context out (telemetry/tracing.ts).
    this.#trace = this.#opts.telemetry?.onRequest(headers);
    applyHeaderOps(headers, route?.requestHeaders);
    applyHeaderOps(headers, fwd.destination.requestHeaders);
    if (head.framing.kind === "chunked") headers.push(["transfer-encoding", "chunked"]);
    if (upgrade) headers.push(["connection", "upgrade"]);
    const line = `${head.method} ${fwd.path} HTTP/1.1`;

    const retry = route?.retry;
    // Bodies small enough are kept so that the request can be sent again.
    const body = await preloadBody(this.#client, head.framing, REPLAY_LIMIT);
    const maxAttempts = body !== undefined && retry !== undefined ? 1 + retry.attempts : 1;
    // With the request read in full, a client that waits long for its answer is watched, to
    // find out if it leaves meanwhile (see SLOW_MS).
    const watched = body !== undefined && head.upgrade === undefined;
    if (watched) this.#wait();
    // Hedging (remora.dev/hedge-delay) only repeats safe requests without a body.
    const hedgeDelay = route?.hedge !== undefined && body?.length === 0 && hedgeable(head.method)
      ? route.hedge.delayMs
      : undefined;

    // A gRPC call's own deadline (grpc-timeout) is its timeout, within the route's.
    const grpc = this.#grpc;
    const routeTimeout = grpc
      ? grpcRequestTimeoutMs(route?.timeoutMs, getHeader(head.headers, "grpc-timeout"))
      : route?.timeoutMs;
    const deadline = routeTimeout !== undefined && routeTimeout > 0
      ? routeStart + routeTimeout
      : Infinity;
    if (grpc && deadline !== Infinity) {
      const expected = Math.min(routeTimeout!, retry?.perTryTimeoutMs ?? Infinity);
      setHeader(headers, "grpc-timeout", formatGrpcTimeout(expected));
    }
    // Resilience state of the cluster: all undefined (no work) without a policy or retries.
    const cluster = fwd.cluster;
    this.#cluster = cluster;
    // A port declared HTTP2 or GRPC is spoken to in HTTP/2, as Envoy's clusters for it are.
    const h2 = cluster !== undefined &&
      (cluster.protocol === "HTTP2" || cluster.protocol === "GRPC");
    const repeats = maxAttempts > 1 || hedgeDelay !== undefined;
    const budget = repeats ? budgetFor(cluster) : undefined;
    const breaker = breakerFor(cluster);
    const stats = this.#opts.metrics.resilience;
    const name = fwd.labels.cluster;
    // The upstream sees which attempt this is, as with Envoy's x-envoy-attempt-count (last field).
    if (repeats) headers.push(["x-envoy-attempt-count", "1"]);
    // An HTTP/2 attempt is made from `headers` (see #h2Request).
    const requestHead = h2 ? EMPTY : serializeHead(line, headers);
    let headFor = (_n: number) => requestHead;
    if (repeats) {
      headFor = (n) => {
        if (n === 1) return requestHead;
        const again = headers.slice();
        again[again.length - 1] = ["x-envoy-attempt-count", String(n)];
        return serializeHead(line, again);
      };
    }
    /** Drops a response that will not be used, with its circuit-breaker slot. */
    const discard = (r: AttemptResult) => {
      if ("failure" in r) return;
      r.conn.close();
      releaseSlot(breaker, h2);
    };
    /** One attempt: a circuit-breaker slot, the exchange up to the response head, the outcome. */
    const tryOnce = async (up: Upstream, n: number, ctl?: AttemptControl) => {
      if (breaker !== undefined) {
        // HTTP/2 streams share a connection: only the cluster's request limit applies.
        const over = h2 ? breaker.acquireStream() : await breaker.acquire(deadline);
        if (over !== undefined) {
          stats.overflow(name, over);
          return { failure: "overflow", detail: over, status: 503 } as AttemptResult;
        }
      }
      // Without a route timeout there is no clock to read (each read is a runtime call).
      const perTry = Math.min(
        deadline === Infinity ? Infinity : deadline - performance.now(),
        retry?.perTryTimeoutMs ?? Infinity,
      );
      fwd.begin(up);
      let r: AttemptResult;
      try {
        r = h2
          ? await this.#attemptH2(up, this.#h2Request(fwd, view, headers, n, repeats, body), {
            body,
            perTryMs: perTry,
            ctl,
          })
          : await this.#attempt(up, headFor(n), body, perTry, deadline, ctl);
      } finally {
        fwd.end(up);
      }
      if (ctl?.cancelled !== true) {
        recordOutcome(cluster, up, "failure" in r ? 0 : r.head.status, stats);
      }
      if ("failure" in r) releaseSlot(breaker, h2);
      return r;
    };

    let previous: Upstream | undefined;
    let result: AttemptResult | undefined;
    let attempts = 1;
    let retrying = false;
    budget?.requestStarted();
    try {
      for (let n = 1;; n++) {
        if (this.#gone) break;
        const up = fwd.next(previous);
        if (up === undefined) {
          result = { failure: "connect-failure", detail: "no healthy upstream", status: 503 };
          this.#flags.push("UH");
          break;
        }
        previous = up;
        if (n > 1) attempts = n;
        if (deadline !== Infinity && deadline - performance.now() <= 0) {
          result = { failure: "timeout", detail: "upstream request timeout" };
          break;
        }
        if (n === 1 && hedgeDelay !== undefined) {
          const h = await this.#hedged(up, tryOnce, hedgeDelay, {
            next: () => fwd.next(up),
            budget: budget!,
            final: (r) =>
              !("failure" in r) &&
              !(retry !== undefined && retriesStatus(retry, r.head.status, r.h2?.grpcStatus)),
            discard,
          });
          result = h.result;
          if (h.hedged) {
            n = attempts = 2;
            if (h.winner !== undefined) previous = h.winner;
          }
        } else {
          result = await tryOnce(up, n);
        }
        if (retrying) {
          budget!.retryEnded();
          retrying = false;
        }
        if (n >= maxAttempts || retry === undefined) break;
        // The route's timeout has ended the request: no retry (as Envoy's global timeout).
        if (deadline !== Infinity && performance.now() >= deadline) break;
        const again = "failure" in result
          ? retriesFailure(retry, result.failure)
          : retriesStatus(retry, result.head.status, result.h2?.grpcStatus);
        if (!again) break;
        const refused = budget!.tryRetry();
        if (refused !== undefined) {
          stats.retryOverflow(name, refused);
          break;
        }
        retrying = true;
        stats.retry(name);
        discard(result);
        await sleep(backoffMs(n));
      }
    } finally {
      if (retrying) budget!.retryEnded();
      budget?.requestEnded();
      if (watched) this.#unwait();
    }
    if (this.#gone) {
      // Nobody to answer: recorded as Envoy does (response code 0, flag DC).
      if (result !== undefined && !("failure" in result)) discard(result);
      this.#flags.push("DC");
      this.#status = 0;
      this.#record(fwd.labels, undefined);
      return false;
    }
    const failed = result === undefined || "failure" in result ||
      (retry !== undefined && retriesStatus(retry, result.head.status, result.h2?.grpcStatus));
    if (attempts > 1 && failed) this.#flags.push("URX");
    if (result === undefined || "failure" in result) {
      return await this.#fail(fwd, result);
    }
    try {
      return await this.#respond(fwd, result);
    } finally {
      releaseSlot(breaker, h2);
    }
  }

  /** The first attempt, hedged after `delayMs` by a second one on another endpoint. */
  async #hedged(
    up: Upstream,
    tryOnce: (up: Upstream, n: number, ctl?: AttemptControl) => Promise<AttemptResult>,
    delayMs: number,
    o: {
      next: () => Upstream | undefined;
      budget: RetryBudget;
      final: (r: AttemptResult) => boolean;
      discard: (r: AttemptResult) => void;
    },
  ): Promise<{ result: AttemptResult; hedged: boolean; winner: Upstream | undefined }> {
    const stats = this.#opts.metrics.resilience;
    const name = this.#cluster?.name ?? "unknown";
    const racer = (u: Upstream, n: number): Racer<AttemptResult> => {
      const ctl: AttemptControl = { conn: undefined, cancelled: false };
      return {
        promise: tryOnce(u, n, ctl),
        cancel: () => {
          ctl.cancelled = true;
          ctl.conn?.close();
        },
      };
    };
    let second: Upstream | undefined;
    const h = await hedge(racer(up, 1), {
      delayMs,
      startHedge: () => {
        second = o.next();
        if (second === undefined) return undefined;
        const refused = o.budget.tryRetry();
        if (refused !== undefined) {
          stats.retryOverflow(name, refused);
          return undefined;
        }
        const r = racer(second, 2);
        r.promise = r.promise.finally(() => o.budget.retryEnded());
        return r;
      },
      usable: o.final,
      discard: o.discard,
    });
    if (h.hedged) stats.hedge(name, h.hedgeWon);
    return { result: h.result, hedged: h.hedged, winner: h.hedgeWon ? second : up };
  }

  async #attempt(
    up: Upstream,
    requestHead: Uint8Array,
    body: Uint8Array | undefined,
    perTryMs: number,
    deadline: number,
    ctl?: AttemptControl,
  ): Promise<AttemptResult> {
    let conn: BufConn;
    let reused: boolean;
    try {
      ({ conn, reused } = await acquireConn(this.#opts.pool, this.#cluster, up));
    } catch (e) {
      const timedOut = e instanceof ConnectError && e.timedOut;
      return {
        failure: "connect-failure",
        detail: (e as Error).message,
        status: timedOut ? 504 : 503,
      };
    }
    if (ctl !== undefined) {
      // A hedge race may cancel this attempt by closing its connection.
      ctl.conn = conn;
      if (ctl.cancelled) conn.close();
    }
    this.#hold(conn);
    if (this.#gone) conn.close();
    let timedOut = false;
    const timer = Number.isFinite(perTryMs)
      ? setTimeout(() => {
        timedOut = true;
        conn.close();
      }, Math.max(1, perTryMs))
      : undefined;
    try {
      const result = await this.#exchangeOn(conn, up, requestHead, body);
      if (timedOut) return { failure: "timeout", detail: "upstream request timeout" };
      if ("failure" in result && reused && body !== undefined && performance.now() < deadline) {
        // A pooled connection the upstream had just closed: try once on a fresh one.
        const fresh = await acquireConn(this.#opts.pool, this.#cluster, up).catch(() => undefined);
        if (fresh === undefined) return result;
        this.#drop(conn);
        conn = fresh.conn;
        this.#hold(conn);
        if (ctl !== undefined) {
          ctl.conn = conn;
          if (ctl.cancelled) conn.close();
        }
        const again = await this.#exchangeOn(conn, up, requestHead, body);
        return timedOut ? { failure: "timeout", detail: "upstream request timeout" } : again;
      }
      return result;
    } finally {
      clearTimeout(timer);
      this.#drop(conn);
    }
  }

  /** This exchange's place in `waiting`, -1 when not there. */
  #waitAt = -1;

  #wait(): void {
    this.#waitAt = waiting.length;
    waiting.push(this);
    if (!watching) startWatching();
  }

  #unwait(): void {
    const i = this.#waitAt;
    if (i < 0) return;
    this.#waitAt = -1;
    const last = waiting.pop()!;
    if (last !== this) {
      waiting[i] = last;
      last.#waitAt = i;
    }
  }

  /** Notes a client that closes before its response begins, and abandons the upstream attempt. */
  watchClient(now: number): void {
    if (now - this.#start < SLOW_MS) return;
    this.#unwait();
    this.#client.fill().then((more) => {
      if (more || this.#responded) return;
      this.#gone = true;
      this.#upstream?.close();
      // A hedged request has a second attempt out.
      if (this.#more !== undefined) { for (const c of this.#more) c.close(); }
    });
  }

  /** Sends the request on `conn` and reads up to the final response head. */
  async #exchangeOn(
    conn: BufConn,
    up: Upstream,
    requestHead: Uint8Array,
    body: Uint8Array | undefined,
  ): Promise<AttemptResult> {
    const sentAt = performance.now();
    const attempt = newAttempt(conn, up, undefined);
    try {
      if (body !== undefined && body.length > 0 && body.length + requestHead.length <= 16384) {
        const both = allocBytes(requestHead.length + body.length);
        both.set(requestHead);
        both.set(body, requestHead.length);
        await conn.writeAll(both);
      } else {
        await conn.writeAll(requestHead);
        if (body !== undefined && body.length > 0) await conn.writeAll(body);
      }
    } catch (e) {
      conn.close();
      return {
        failure: "reset",
        detail: `upstream reset while sending the request: ${(e as Error).message}`,
      };
    }
    if (body === undefined) {
      attempt.bodyDone = false;
      const framing = this.#head.framing;
      // Chunk framing is told apart for access logs (a callback only where there is any).
      const onFraming = framing.kind === "chunked"
        ? (n: number) => this.#requestFramingBytes += n
        : undefined;
      attempt.body = relayBody(this.#client, conn, framing, onFraming).then(
        (n) => {
          this.#requestBytes += n;
          attempt.bodyDone = true;
        },
        (e) => this.#requestBodyFailed(e, conn),
      );
    } else {
      this.#requestBytes += body.length;
    }
    for (;;) {
      let end = -1;
      for (;;) {
        if (conn.buffered > 0) {
          try {
            end = responseHeadEnd(conn.buf, conn.start, conn.end);
          } catch (e) {
            conn.close();
            this.#flags.push("UPE");
            return { failure: "reset", detail: (e as Error).message, status: 502 };
          }
          if (end !== -1) break;
        }
        if (!(await conn.fill())) {
          conn.close();
          return {
            failure: "reset",
            detail: "upstream connection closed before the response head",
          };
        }
      }
      let head: ResponseHead;
      try {
        head = parseResponseHead(conn.buf, conn.start, end, this.#head.method);
      } catch (e) {
        conn.close();
        this.#flags.push("UPE");
        return { failure: "reset", detail: (e as Error).message, status: 502 };
      }
      conn.consume(end - conn.start);
      if (head.status === 101 && this.#head.upgrade === undefined) {
        // Switching protocols nobody asked for: what follows is not HTTP.
        conn.close();
        this.#flags.push("UPE");
        return {
          failure: "reset",
          detail: "upstream switched protocols (101) without an Upgrade request",
          status: 502,
        };
      }
      if (head.status === 100 && this.#continued) {
        // The client has had its 100 Continue from remora already.
        continue;
      }
      if (head.status >= 100 && head.status < 200 && head.status !== 101) {
        // 100 Continue and other interim responses go to the client as they come.
        const interim = serializeHead(
          `HTTP/1.1 ${head.status} ${head.reason || reasonPhrase(head.status)}`,
          endToEndHeaders(head.headers),
        );
        try {
          await this.#client.writeAll(interim);
        } catch {
          conn.close();
          return { failure: "reset", detail: "client went away" };
        }
        continue;
      }
      attempt.head = head;
      this.#upstreamMs = performance.now() - sentAt;
      return attempt;
    }
  }

  /** The request body failed on its way upstream: which side failed decides what follows. */
  #requestBodyFailed(e: unknown, conn: BufConn): void {
    // The client side failing ends the exchange; the upstream side is reported by the response read.
    // A body that breaks its framing is the client's error: it gets a 400 (see #fail).
    if (e instanceof SideError && e.side === "src") {
      if (e.malformed) this.#badBody = e.message;
      else this.#client.close();
    }
    conn.close();
  }

  /** Attempt `n`'s request to an HTTP/2 upstream: the head's fields, with its attempt count. */
  #h2Request(
    fwd: Forward,
    view: RequestView,
    headers: HeaderList,
    n: number,
    repeats: boolean,
    body: Uint8Array | undefined,
  ): H2Request {
    let list = headers;
    if (repeats && n > 1) {
      list = headers.slice();
      list[list.length - 1] = ["x-envoy-attempt-count", String(n)];
    }
    return {
      method: this.#head.method,
      path: fwd.path,
      scheme: view.scheme,
      headers: list,
      // TE is hop-by-hop (left out of `headers`): "trailers" goes on to the upstream.
      trailers: acceptsTrailers(headerValue(this.#head.headers, "te")),
      endStream: body !== undefined && body.length === 0,
    };
  }

  /**
   * An attempt on an HTTP/2 upstream (`h1_to_h2.ts`): the request on a
   * stream of the upstream's session, its body after it (as DATA, without
   * chunk framing), up to the final response head. Timeouts, hedging and a
   * client that leaves cancel the stream, as they close an HTTP/1 connection.
   */
  async #attemptH2(
    up: Upstream,
    req: H2Request,
    o: { body: Uint8Array | undefined; perTryMs: number; ctl: AttemptControl | undefined },
  ): Promise<AttemptResult> {
    let x: H2Exchange;
    try {
      x = await this.#opts.h2.open(up, req);
    } catch (e) {
      // node:http2 refused the request's headers.
      return { failure: "reset", detail: `upstream stream not opened: ${(e as Error).message}` };
    }
    const conn = x.conn;
    const ctl = o.ctl;
    if (ctl !== undefined) {
      ctl.conn = conn;
      if (ctl.cancelled) conn.close();
    }
    this.#upstream = conn;
    if (this.#gone) conn.close();
    let timedOut = false;
    const timer = Number.isFinite(o.perTryMs)
      ? setTimeout(() => {
        timedOut = true;
        conn.close();
      }, Math.max(1, o.perTryMs))
      : undefined;
    const sentAt = performance.now();
    const attempt = newAttempt(conn, up, x);
    const body = o.body;
    if (body === undefined) {
      attempt.bodyDone = false;
      const framing = this.#head.framing;
      const relayed = framing.kind === "chunked"
        ? relayDechunked(this.#client, conn)
        : relayBody(this.#client, conn, framing);
      attempt.body = relayed.then(
        (n) => {
          this.#requestBytes += n;
          attempt.bodyDone = true;
          conn.closeWrite();
        },
        (e) => this.#requestBodyFailed(e, conn),
      );
    } else if (body.length > 0) {
      this.#requestBytes += body.length;
      x.send(body);
    }
    try {
      const r = await x.response;
      if (timedOut) return { failure: "timeout", detail: "upstream request timeout" };
      if ("failure" in r) {
        if (r.status === 502) this.#flags.push("UPE");
        return r;
      }
      attempt.head = r;
      this.#upstreamMs = performance.now() - sentAt;
      return attempt;
    } finally {
      clearTimeout(timer);
      this.#upstream = undefined;
    }
  }

  async #respond(fwd: Forward, a: Attempt): Promise<boolean> {
    const req = this.#head;
    const res = a.head;
    this.#status = res.status;
    const upgraded = res.status === 101 && req.upgrade !== undefined;
    const headers = endToEndHeaders(res.headers, upgraded ? "upgrade" : undefined);
    applyHeaderOps(headers, fwd.route?.responseHeaders);
    applyHeaderOps(headers, fwd.destination.responseHeaders);
    // The client's connection outlives an upstream's that closes after this response (an
    // HTTP/1.0 app, "Connection: close"), as Envoy's does, when the body has its own end.
    let keep = req.keepAlive && !upgraded && res.framing.kind !== "close";
    // An HTTP/1.0 client does not know chunked encoding: it gets the bare body,
    // ended by closing the connection (RFC 9112 6.1).
    const dechunk = req.minor === 0 && res.framing.kind === "chunked";
    if (dechunk) keep = false;
    else if (res.framing.kind === "chunked") headers.push(["transfer-encoding", "chunked"]);
    if (upgraded) headers.push(["connection", "upgrade"]);
    else if (!keep) headers.push(["connection", "close"]);
    else if (req.minor === 0) headers.push(["connection", "keep-alive"]);
    const grpc = getHeader(res.headers, "grpc-status");
    if (grpc !== undefined) this.#grpcStatus = grpc;
    const out = serializeHead(
      `HTTP/1.1 ${res.status} ${res.reason || reasonPhrase(res.status)}`,
      headers,
    );
    this.#responded = true;
    try {
      // The head and the body bytes already read usually go out in one write.
      let framing = res.framing;
      const first = framing.kind === "length" ? Math.min(a.conn.buffered, framing.length) : 0;
      if (first > 0 && framing.kind === "length") {
        const both = allocBytes(out.length + first);
        both.set(out);
        both.set(a.conn.buf.subarray(a.conn.start, a.conn.start + first), out.length);
        a.conn.consume(first);
        framing = first === framing.length
          ? { kind: "none" }
          : { kind: "length", length: framing.length - first };
        await writeOrSideError(this.#client, both);
        this.#responseBytes += both.length;
      } else {
        await writeOrSideError(this.#client, out);
        this.#responseBytes += out.length;
      }
      this.#responseFramingBytes += out.length;
      if (upgraded) {
        const counts = await relay(this.#client, a.conn);
        this.#requestBytes += counts.aToB;
        this.#responseBytes += counts.bToA;
        this.#record(fwd.labels, a.up);
        return false;
      }
      this.#responseBytes += dechunk ? await relayDechunked(a.conn, this.#client) : await relayBody(
        a.conn,
        this.#client,
        framing,
        framing.kind === "chunked" ? (n) => this.#responseFramingBytes += n : undefined,
      );
      // gRPC's status comes in an HTTP/2 upstream's trailers, whether or not the client gets them.
      if (a.h2 !== undefined && a.h2.grpcStatus !== "") this.#grpcStatus = a.h2.grpcStatus;
    } catch (e) {
      a.conn.close();
      this.#flags.push(e instanceof SideError && e.side === "dst" ? "DC" : "UC");
      this.#record(fwd.labels, a.up);
      return false;
    }
    if (!a.bodyDone) {
      // The upstream answered before reading the whole request body; this
      // connection pair cannot be reused.
      keep = false;
      a.conn.close();
      await a.body;
    } else if (a.h2 === undefined && res.keepAlive && reusable(this.#cluster, a.conn)) {
      this.#opts.pool.release(a.up, a.conn);
    } else {
      a.conn.close();
    }
    this.#record(fwd.labels, a.up);
    return keep;
  }

  async #fail(
    fwd: Forward,
    r: { failure: Failure; detail: string; status?: number } | undefined,
  ): Promise<boolean> {
    if (this.#badBody !== undefined) {
      // The upstream connection was closed because the client's body was malformed.
      log.debug("bad request body", { detail: this.#badBody, cluster: fwd.labels.cluster });
      await this.#local(400, `remora: bad request body: ${this.#badBody}`, "DPE", false)
        .catch(() => {});
      this.#record(fwd.labels, undefined);
      return false;
    }
    let status = r?.status ?? 503;
    let body: string;
    const extra: HeaderList = [];
    switch (r?.failure) {
      case "overflow":
        // A connectionPool limit refused the attempt: answered at once, as Envoy does.
        status = 503;
        this.#flags.push("UO");
        extra.push(["x-envoy-overloaded", "true"]);
        body = "upstream connect error or disconnect/reset before headers. reset reason: overflow";
        break;
      case "timeout":
        status = 504;
        this.#flags.push("UT");
        body = "upstream request timeout";
        break;
      case "connect-failure":
        if (!this.#flags.includes("UH")) this.#flags.push("UF");
        body = r.detail === "no healthy upstream"
          ? "no healthy upstream"
          : resetText("connect-failure", r.detail);
        break;
      default: {
        const failure = r?.failure ?? "reset";
        if (!this.#flags.includes("UPE")) this.#flags.push(failureFlag(failure).flag);
        body = resetText(failure, r?.detail ?? "unknown");
      }
    }
    log.debug("upstream request failed", {
      status,
      detail: r?.detail ?? "",
      cluster: fwd.labels.cluster,
    });
    // The request body may be half sent: the client connection cannot be reused.
    const keep = this.#head.keepAlive && this.#head.framing.kind === "none";
    await this.#local(status, body, "", keep, extra).catch(() => {});
    this.#record(fwd.labels, undefined);
    return keep;
  }

  async #connect(fwd: Forward): Promise<void> {
    const up = fwd.next(undefined);
    if (up === undefined) {
      await this.#local(503, "no healthy upstream", "UH", false);
      return;
    }
    let conn: BufConn;
    try {
      ({ conn } = await this.#opts.pool.acquire(up));
    } catch (e) {
      await this.#local(
        503,
        `remora: CONNECT to ${up.host}:${up.port} failed: ${(e as Error).message}`,
        "UF",
        false,
      );
      return;
    }
    this.#status = 200;
    this.#responded = true;
    await this.#client.writeAll(serializeHead("HTTP/1.1 200 Connection Established", []));
    const counts = await relay(this.#client, conn);
    this.#requestBytes += counts.aToB;
    this.#responseBytes += counts.bToA;
  }

  async #replyLocal(d: LocalReply, keep: boolean): Promise<void> {
    if (d.flags !== "") this.#flags.push(d.flags);
    const headers: HeaderList = [...d.headers];
    applyHeaderOps(headers, d.route?.responseHeaders);
    await this.#local(d.status, d.body, "", keep, headers);
  }

  async #local(
    status: number,
    body: string,
    flag: string,
    keep: boolean,
    extra: HeaderList = [],
  ): Promise<void> {
    if (flag !== "") this.#flags.push(flag);
    this.#status = status;
    if (this.#responded) return;
    this.#responded = true;
    if (this.#grpc) {
      // To a gRPC call, remora's answer is gRPC's (trailers-only: HTTP 200 and a grpc-status,
      // the text as grpc-message), as Envoy's local replies are, whatever the HTTP version.
      const g = String(grpcStatusOf(status));
      this.#status = 200;
      this.#grpcStatus = g;
      const headers: HeaderList = [...extra.filter(([k]) => k !== "content-type")];
      headers.push(["content-type", "application/grpc"], ["grpc-status", g]);
      if (body !== "") headers.push(["grpc-message", grpcMessage(body)]);
      const n = await writeLocal(this.#client, 200, "", headers, keep);
      this.#responseBytes += n.written;
      this.#responseFramingBytes += n.head;
      return;
    }
    const n = await writeLocal(this.#client, status, body, extra, keep);
    this.#responseBytes += n.written;
    this.#responseFramingBytes += n.head;
  }

  #record(labels: Forward["labels"], up: Upstream | undefined): void {
    observe(this.#opts, {
      labels,
      status: this.#status,
      flags: this.#flags,
      grpc: this.#grpcStatus !== "" || this.#grpc,
      grpcStatus: this.#grpcStatus,
      startMs: this.#start,
      requestBytes: this.#requestBytes,
      responseBytes: this.#responseBytes,
      requestFramingBytes: this.#head.size + this.#requestFramingBytes,
      responseFramingBytes: this.#responseFramingBytes,
      trace: this.#trace,
      method: this.#head.method,
      path: this.#requestView?.path ?? this.#head.target,
      authority: this.#requestView?.authority ?? "",
      protocol: this.#head.minor === 0 ? "HTTP/1.0" : "HTTP/1.1",
      conn: this.#info,
      upstream: up,
      upstreamMs: this.#upstreamMs,
      clientRequestId: this.#trace === undefined
        ? getHeader(this.#head.headers, "x-request-id")
        : undefined,
    });
  }
}

/**
 * Gives back an attempt's circuit-breaker slot: a stream's for an HTTP/2
 * upstream, else a request's and its connection's.
 */
function releaseSlot(breaker: CircuitBreaker | undefined, h2: boolean): void {
  if (breaker === undefined) return;
  if (h2) breaker.releaseStream();
  else breaker.release();
}

/** Whether a client's TE field accepts trailers (RFC 9110 10.1.4). */
function acceptsTrailers(te: string | undefined): boolean {
  if (te === undefined) return false;
  for (const t of te.split(",")) if (t.trim().toLowerCase() === "trailers") return true;
  return false;
}

const EMPTY = new Uint8Array(0);

function isGrpc(headers: HeaderList): boolean {
  return getHeader(headers, "content-type")?.startsWith("application/grpc") ?? false;
}

function setHeader(headers: HeaderList, name: string, value: string): void {
  for (let i = 0; i < headers.length; i++) {
    if (headers[i]![0] === name) {
      headers[i] = [name, value];
      for (let j = headers.length - 1; j > i; j--) {
        if (headers[j]![0] === name) headers.splice(j, 1);
      }
      return;
    }
  }
  headers.push([name, value]);
}

function removeHeader(headers: HeaderList, name: string): void {
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i]![0] === name) headers.splice(i, 1);
}

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

async function writeOrSideError(c: BufConn, data: Uint8Array): Promise<void> {
  try {
    await c.writeAll(data);
  } catch (e) {
    throw new SideError("dst", `Write to the client failed: ${(e as Error).message}`);
  }
}

const encoder = new TextEncoder();

/** Writes a complete local reply; returns the bytes written, and of those the head's. */
export async function writeLocal(
  client: BufConn,
  status: number,
  body: string,
  extra: HeaderList,
  keep: boolean,
): Promise<{ written: number; head: number }> {
  const bytes = encoder.encode(body === "" ? "" : body + "\n");
  // A route's response header operations may set the type (a JSON directResponse); the length is remora's.
  const headers: HeaderList = extra.filter(([n]) => n !== "content-length");
  if (!headers.some(([n]) => n === "content-type")) {
    headers.push(["content-type", "text/plain; charset=utf-8"]);
  }
  headers.push(["content-length", String(bytes.length)], ["server", "remora"]);
  if (!keep) headers.push(["connection", "close"]);
  const head = serializeHead(`HTTP/1.1 ${status} ${reasonPhrase(status)}`, headers);
  const all = allocBytes(head.length + bytes.length);
  all.set(head);
  all.set(bytes, head.length);
  await client.writeAll(all);
  return { written: all.length, head: head.length };
}

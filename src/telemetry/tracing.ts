/**
 * Distributed tracing and access logging for the HTTP engines: the sampler,
 * the span of each sidecar hop, and the per-exchange hook the engines call.
 *
 * Two calls per exchange, one per end:
 * - `TelemetryHook.onRequest(headers)` — the engines call it on the upstream
 *   request's header list. It reads the incoming context (W3C traceparent /
 *   tracestate, B3 multi or single; see `trace_context.ts`), decides sampling
 *   (parent-based: a caller's decision is honoured, else
 *   `randomSamplingPercentage`), gives this hop a new span id and rewrites the
 *   trace headers for the next hop (traceparent always; B3 in the format the
 *   request used, or multi-header when the Zipkin exporter is on). The
 *   outbound hop is a CLIENT span, the inbound hop a SERVER span, so B's
 *   SERVER span is a child of A's CLIENT span when the app forwards headers.
 * - `TelemetryHook.onExchange(facts)` — from `proxy/observe.ts` when the
 *   exchange is done: a span for sampled requests, handed to the exporters'
 *   bounded queues (`span_export.ts`), and an access log line.
 *
 * Cost when a request is not sampled: one pass over the header names, two
 * id slices, the traceparent string and one small context record; no span
 * object and no exporter call. With no exporter configured and access logs
 * off, `onRequest` returns at once and the headers pass untouched.
 *
 * What applies comes from flags (endpoints, default sampling, access log
 * format) and the config's Telemetry resource (`compile_telemetry.ts`),
 * recomputed only when the config object changes.
 */

import type { TelemetryPolicy } from "../config/compile_telemetry.ts";
import { TRACING_PROVIDERS } from "../config/validate_telemetry.ts";
import type { HeaderList } from "../http/h1_head.ts";
import { log } from "../log.ts";
import type { ConnInfo } from "../proxy/http1.ts";
import type { ExchangeFacts, SelfInfo } from "../proxy/observe.ts";
import { type AccessEntry, type AccessLogFormat, formatLine, StdoutLog } from "./access_log.ts";
import type { Metrics, Reporter } from "./metrics.ts";
import { otlpExporter } from "./otlp_exporter.ts";
import type { BatchExporter, BatchOptions, FinishedSpan, SpanSource } from "./span_export.ts";
import {
  extract,
  type Format,
  inject,
  newRootTraceparent,
  newSpanId,
  newTraceId,
} from "./trace_context.ts";
import { zipkinExporter } from "./zipkin_exporter.ts";

function appLabelOr(self: SelfInfo): string {
  const app = self.meta?.app;
  return app !== undefined && app !== "" && app !== "unknown" ? app : self.workload;
}

/** One opaque TCP connection, for its access log line. */
export interface ConnectionFacts {
  /** performance.now() when the connection was accepted. */
  startMs: number;
  conn: ConnInfo;
  upstream: { host: string; port: number } | undefined;
  cluster: string;
  /** Bytes from the client, and to it. */
  bytesReceived: number;
  bytesSent: number;
  requestedServerName: string | undefined;
  /** The other side's SPIFFE ID: the verified caller inbound, the required upstream outbound. */
  peerPrincipal: string | undefined;
}

/** What one exchange carries from `onRequest` to `onExchange`. */
export interface RequestTrace {
  /** "" when tracing is off (the record exists for the access log only). */
  traceId: string;
  spanId: string;
  parentSpanId: string;
  traceState: string;
  sampled: boolean;
  requestId: string;
  userAgent: string;
  xForwardedFor: string;
}

export interface TelemetryOptions {
  getConfig(): { telemetry: TelemetryPolicy };
  metrics: Metrics;
  self: SelfInfo;
  /** OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces. */
  otlpEndpoint: string | undefined;
  /** Zipkin v2 spans URL, e.g. http://zipkin:9411/api/v2/spans. */
  zipkinEndpoint: string | undefined;
  /** Access log format when no Telemetry rule says otherwise ("off" = none). */
  accessLog: AccessLogFormat | "off";
  /** randomSamplingPercentage when the Telemetry resource sets none (Istio's default is 1). */
  samplingPercent: number;
  /** Batching of the exporters (tests shorten the interval). */
  batch?: BatchOptions;
  /** [0, 1) random source for sampling (tests pin it). */
  random?: () => number;
  /** Where access log lines go (default stdout). */
  accessLogSink?: StdoutLog;
}

/** What applies to one side under one config. */
interface Effective {
  propagate: boolean;
  report: boolean;
  percent: number;
  exporters: BatchExporter[];
  b3: Format;
  accessLog: AccessLogFormat | undefined;
}

/** The process-wide tracing and access log state: exporters, log writer, settings. */
export class Telemetry {
  readonly #o: TelemetryOptions;
  readonly #exporters = new Map<"otlp" | "zipkin", BatchExporter>();
  readonly log: StdoutLog;
  readonly random: () => number;
  readonly source: SpanSource;

  constructor(o: TelemetryOptions) {
    this.#o = o;
    this.random = o.random ?? Math.random;
    this.source = {
      // Istio's default (APP_LABEL_AND_NAMESPACE): the app label, else the workload name.
      serviceName: `${appLabelOr(o.self)}.${o.self.namespace}`,
      workload: o.self.workload,
      namespace: o.self.namespace,
    };
    const m = o.metrics;
    const opts = (name: string): BatchOptions => ({
      ...o.batch,
      onExported: (n) => m.spansExported.inc({ exporter: name }, n),
      onDropped: (reason, n) => m.spansDropped.inc({ exporter: name, reason }, n),
    });
    if (o.otlpEndpoint !== undefined) {
      this.#exporters.set("otlp", otlpExporter(o.otlpEndpoint, this.source, opts("otlp")));
    }
    if (o.zipkinEndpoint !== undefined) {
      this.#exporters.set("zipkin", zipkinExporter(o.zipkinEndpoint, this.source, opts("zipkin")));
    }
    this.log = o.accessLogSink ?? new StdoutLog(() => m.accessLogDropped.inc());
  }

  get options(): TelemetryOptions {
    return this.#o;
  }

  /** The hook for one side: outbound (`source`) or inbound (`destination`). */
  hook(reporter: Reporter): TelemetryHook {
    return new TelemetryHook(this, reporter);
  }

  /** What applies to `reporter` under `policy`. */
  effective(policy: TelemetryPolicy, reporter: Reporter): Effective {
    const side = policy[reporter];
    const t = side.tracing;
    const exporters: BatchExporter[] = [];
    if (t?.providers === undefined) exporters.push(...this.#exporters.values());
    else {
      for (const name of t.providers) {
        const kind = TRACING_PROVIDERS[name];
        const e = kind === undefined ? undefined : this.#exporters.get(kind);
        if (e !== undefined) exporters.push(e);
        else {
          log.warn("Telemetry names a tracing provider without an endpoint; it is not used", {
            provider: name,
            flag: kind === "zipkin" ? "--zipkin-endpoint" : "--otlp-endpoint",
          });
        }
      }
    }
    const al = side.accessLogging;
    const flagFormat = this.#o.accessLog;
    const accessLog = al === undefined
      ? (flagFormat === "off" ? undefined : flagFormat)
      : al.disabled
      ? undefined
      : flagFormat === "off"
      ? "text"
      : flagFormat;
    const propagate = this.#exporters.size > 0;
    return {
      propagate,
      report: propagate && exporters.length > 0 && !(t?.disableSpanReporting ?? false),
      percent: t?.randomSamplingPercentage ?? this.#o.samplingPercent,
      exporters,
      b3: exporters.some((e) => e.name === "zipkin") ? "b3multi" : "none",
      accessLog,
    };
  }

  /** Sends what is queued (bounded wait) and writes pending log lines. */
  async close(): Promise<void> {
    await Promise.all([...this.#exporters.values()].map((e) => e.close()));
    await this.log.flush();
  }
}

const T = 116; // "t"
const B = 98; // "b"
const X = 120; // "x"
const U = 117; // "u"

/** One side's per-exchange hook (see the module doc). */
export class TelemetryHook {
  readonly #t: Telemetry;
  readonly #reporter: Reporter;
  #policy: TelemetryPolicy | undefined;
  #eff: Effective | undefined;

  constructor(t: Telemetry, reporter: Reporter) {
    this.#t = t;
    this.#reporter = reporter;
  }

  #effective(): Effective {
    const policy = this.#t.options.getConfig().telemetry;
    if (policy !== this.#policy || this.#eff === undefined) {
      this.#policy = policy;
      this.#eff = this.#t.effective(policy, this.#reporter);
    }
    return this.#eff;
  }

  /**
   * Reads the incoming trace context from the upstream request `headers`,
   * decides sampling, and rewrites the trace headers for the next hop.
   * Returns undefined when neither tracing nor access logging is on.
   */
  onRequest(headers: HeaderList): RequestTrace | undefined {
    const eff = this.#effective();
    if (!eff.propagate && eff.accessLog === undefined) return undefined;
    let traceparent: string | undefined;
    let tracestate: string | undefined;
    let b3: string | undefined;
    let b3TraceId: string | undefined;
    let b3SpanId: string | undefined;
    let b3Sampled: string | undefined;
    let b3Flags: string | undefined;
    let requestId = "";
    let userAgent = "";
    let xff = "";
    let any = false;
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i]!;
      const name = h[0];
      const c = name.charCodeAt(0);
      if (c === T) {
        if (name === "traceparent") traceparent = h[1];
        else if (name === "tracestate") {
          tracestate = tracestate === undefined ? h[1] : tracestate + "," + h[1];
        } else continue;
        any = true;
      } else if (c === B) {
        if (name === "b3") {
          b3 = h[1];
          any = true;
        }
      } else if (c === X) {
        if (name.length > 5 && name.charCodeAt(2) === B && name.startsWith("x-b3-")) {
          if (name === "x-b3-traceid") b3TraceId = h[1];
          else if (name === "x-b3-spanid") b3SpanId = h[1];
          else if (name === "x-b3-sampled") b3Sampled = h[1];
          else if (name === "x-b3-flags") b3Flags = h[1];
          any = true;
        } else if (name === "x-request-id") requestId = h[1];
        else if (name === "x-forwarded-for") xff = h[1];
      } else if (c === U && name === "user-agent") userAgent = h[1];
    }
    if (!eff.propagate) {
      return {
        traceId: "",
        spanId: "",
        parentSpanId: "",
        traceState: "",
        sampled: false,
        requestId,
        userAgent,
        xForwardedFor: xff,
      };
    }
    let traceId: string;
    let parentSpanId = "";
    let traceState = "";
    let sampled: boolean;
    let format: Format = eff.b3;
    let shortTraceId = false;
    if (any) {
      const ex = extract({ traceparent, tracestate, b3, b3TraceId, b3SpanId, b3Sampled, b3Flags });
      traceId = ex.traceId === "" ? newTraceId() : ex.traceId;
      parentSpanId = ex.parentSpanId;
      traceState = ex.traceState;
      // Parent-based: a caller's decision is kept, else the random percentage decides.
      sampled = ex.sampled ?? this.#draw(eff.percent);
      shortTraceId = ex.shortTraceId;
      // B3 is written back in the form it came in, even when W3C carried the context;
      // with Zipkin on, the x-b3-* headers go too (apps that forward only those keep the trace).
      if (b3 !== undefined) format = format === "b3multi" ? "b3both" : "b3single";
      else if (b3TraceId !== undefined || b3Sampled !== undefined || b3Flags !== undefined) {
        format = "b3multi";
      }
    } else {
      sampled = this.#draw(eff.percent);
      if (!sampled && format === "none" && eff.accessLog === undefined) {
        // Most requests: a new trace, not sampled, not logged. The next hop
        // learns the ids and nothing here needs them again.
        headers.push(["traceparent", newRootTraceparent()]);
        return undefined;
      }
      traceId = newTraceId();
    }
    const spanId = newSpanId();
    inject(
      headers,
      { traceId, spanId, parentSpanId, sampled, traceState, shortTraceId },
      format,
      any,
    );
    return {
      traceId,
      spanId,
      parentSpanId,
      traceState,
      sampled,
      requestId,
      userAgent,
      xForwardedFor: xff,
    };
  }

  /** The random sampling decision: true for `percent` of calls. */
  #draw(percent: number): boolean {
    return this.#t.random() * 100 < percent;
  }

  /**
   * Reports a finished exchange: its span when sampled, its access log line
   * when on. `peer` names the peer's identity when the facts do not (the
   * identity required of a meshed upstream, outbound).
   */
  onExchange(x: ExchangeFacts, flags: string, durationMs: number, peer?: string): void {
    const eff = this.#effective();
    const t = x.trace;
    const sampledSpan = t !== undefined && t.sampled && eff.report;
    if (!sampledSpan && eff.accessLog === undefined) return;
    if (peer !== undefined && x.peerPrincipal === undefined) x = { ...x, peerPrincipal: peer };
    const startEpochMs = performance.timeOrigin + x.startMs;
    if (sampledSpan) {
      const span = this.#span(x, t, flags, startEpochMs, durationMs);
      for (const e of eff.exporters) e.push(span);
    }
    if (eff.accessLog !== undefined) {
      this.#t.log.write(formatLine(eff.accessLog, this.#entry(x, flags, startEpochMs, durationMs)));
    }
  }

  #span(
    x: ExchangeFacts,
    t: RequestTrace,
    flags: string,
    startEpochMs: number,
    durationMs: number,
  ): FinishedSpan {
    const client = this.#reporter === "source";
    const q = x.path.indexOf("?");
    const { host, port } = splitHostPort(x.authority);
    const peerAddress = client ? x.upstream?.host ?? "" : x.conn.remoteAddr;
    const peerPort = client ? x.upstream?.port ?? 0 : x.conn.remotePort;
    // A span waits up to a batch interval for export: its strings are copied
    // so that it does not keep alive the larger strings they were cut from
    // (a block of pooled ids, the request head's text).
    return {
      traceId: own(t.traceId),
      spanId: own(t.spanId),
      parentSpanId: own(t.parentSpanId),
      traceState: own(t.traceState),
      kind: client ? "CLIENT" : "SERVER",
      name: x.method,
      startEpochMs,
      durationMs,
      error: x.status === 0 || x.status >= (client ? 400 : 500),
      method: own(x.method),
      urlPath: own(q === -1 ? x.path : x.path.slice(0, q)),
      scheme: "http",
      status: x.status,
      protocolVersion: x.protocol === "HTTP/2" ? "2" : x.protocol === "HTTP/1.0" ? "1.0" : "1.1",
      serverAddress: own(host),
      serverPort: port !== 0 ? port : client ? x.upstream?.port ?? 0 : 0,
      peerAddress: peerAddress.startsWith("::ffff:") ? peerAddress.slice(7) : peerAddress,
      peerPort,
      upstreamCluster: x.labels.cluster,
      responseFlags: flags,
      requestId: own(t.requestId),
      peerPrincipal: x.peerPrincipal ?? (client ? "" : x.conn.peer?.principal ?? ""),
      // Bodies, as http.*.body.size means (heads and chunk framing left out).
      requestBytes: x.requestBytes - x.requestFramingBytes,
      responseBytes: x.responseBytes - x.responseFramingBytes,
    };
  }

  /**
   * An opaque TCP connection's access log line, when access logs are on: as
   * Envoy's TCP proxy logs it, with no method, path, protocol or status.
   */
  onConnection(x: ConnectionFacts, flags: string): void {
    const eff = this.#effective();
    if (eff.accessLog === undefined) return;
    const [sourcePrincipal, destinationPrincipal] = this.#principals(x.peerPrincipal ?? "");
    this.#t.log.write(formatLine(eff.accessLog, {
      startEpochMs: performance.timeOrigin + x.startMs,
      method: "",
      path: "",
      protocol: "",
      responseCode: 0,
      responseFlags: flags,
      bytesReceived: x.bytesReceived,
      bytesSent: x.bytesSent,
      durationMs: performance.now() - x.startMs,
      upstreamServiceMs: -1,
      upstreamHost: upstreamHostOf(x.upstream),
      upstreamCluster: x.cluster,
      requestId: "",
      authority: "",
      downstreamRemoteAddress: downstreamOf(x.conn),
      requestedServerName: x.requestedServerName ?? "",
      sourcePrincipal,
      destinationPrincipal,
      traceId: "",
      userAgent: "",
      xForwardedFor: "",
    }));
  }

  #entry(x: ExchangeFacts, flags: string, startEpochMs: number, durationMs: number): AccessEntry {
    const t = x.trace;
    const client = this.#reporter === "source";
    // Inbound: the caller's SPIFFE id from its mTLS certificate.
    const [sourcePrincipal, destinationPrincipal] = this.#principals(
      x.peerPrincipal ?? (client ? "" : x.conn.peer?.principal ?? ""),
    );
    return {
      startEpochMs,
      method: x.method,
      path: x.path,
      protocol: x.protocol,
      responseCode: x.status,
      responseFlags: flags,
      // Envoy's BYTES_RECEIVED and BYTES_SENT: body bytes.
      bytesReceived: x.requestBytes - x.requestFramingBytes,
      bytesSent: x.responseBytes - x.responseFramingBytes,
      durationMs,
      upstreamServiceMs: x.upstreamMs,
      upstreamHost: upstreamHostOf(x.upstream),
      upstreamCluster: x.labels.cluster,
      requestId: t?.requestId || x.clientRequestId || crypto.randomUUID(),
      authority: x.authority,
      downstreamRemoteAddress: downstreamOf(x.conn),
      requestedServerName: x.requestedServerName ?? "",
      sourcePrincipal,
      destinationPrincipal,
      traceId: t?.traceId ?? "",
      userAgent: t?.userAgent ?? "",
      xForwardedFor: t?.xForwardedFor ?? "",
    };
  }

  /**
   * The source and destination principals of a logged exchange or connection:
   * the peer's identity on its side, this workload's own on the other, and
   * neither without mTLS (no peer identity).
   */
  #principals(peer: string): [string, string] {
    const own = peer === "" ? "" : this.#t.options.self.principal?.() ?? "";
    return this.#reporter === "source" ? [own, peer] : [peer, own];
  }
}

function upstreamHostOf(up: { host: string; port: number } | undefined): string {
  return up === undefined ? "" : hostPort(up.host, up.port);
}

function downstreamOf(conn: ConnInfo): string {
  return conn.remoteAddr === "unknown" ? "" : hostPort(conn.remoteAddr, conn.remotePort);
}

function hostPort(host: string, port: number): string {
  const h = host.startsWith("::ffff:") ? host.slice(7) : host;
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/**
 * A copy of `s` that does not refer to the string it was sliced from. A
 * concatenation is flattened into a new string when sliced; the slice then
 * refers only to that.
 */
function own(s: string): string {
  return s.length < 13 ? s : (s + " ").slice(0, -1);
}

/** "host:port", "[v6]:port" or "host" → host and port (0 when none). */
export function splitHostPort(authority: string): { host: string; port: number } {
  if (authority.startsWith("[")) {
    const end = authority.indexOf("]");
    if (end === -1) return { host: authority, port: 0 };
    const rest = authority.slice(end + 1);
    return {
      host: authority.slice(1, end),
      port: rest.startsWith(":") ? Number(rest.slice(1)) || 0 : 0,
    };
  }
  const colon = authority.lastIndexOf(":");
  if (colon === -1 || authority.indexOf(":") !== colon) return { host: authority, port: 0 };
  return { host: authority.slice(0, colon), port: Number(authority.slice(colon + 1)) || 0 };
}

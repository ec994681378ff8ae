/**
 * Access log lines for finished HTTP exchanges, in Envoy's two shapes:
 * JSON (one object per line, Envoy's / Istio's field names, missing values
 * `null`) and text (Envoy's default format string, missing values `-`):
 *
 *   [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
 *   %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
 *   %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
 *   "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
 *
 * `StdoutLog` writes lines to stdout without ever making a request wait:
 * lines are queued and written by one asynchronous write at a time (whole
 * lines only, so lines never interleave); when stdout does not keep up and
 * 4 MiB are pending, new lines are dropped and counted. Byte counts are
 * remora's (head and body), as its metrics count them.
 */

/** One finished exchange as the access log sees it. */
export interface AccessEntry {
  startEpochMs: number;
  method: string;
  /** As received, with the query. */
  path: string;
  protocol: string;
  /** 0 when no response was sent. */
  responseCode: number;
  /** Envoy's flags joined with ",", "-" when none. */
  responseFlags: string;
  bytesReceived: number;
  bytesSent: number;
  durationMs: number;
  /** Envoy's upstream service time (ms): request sent upstream to response head; -1 for none. */
  upstreamServiceMs: number;
  /** "ip:port", "" when no upstream was reached. */
  upstreamHost: string;
  upstreamCluster: string;
  requestId: string;
  authority: string;
  downstreamRemoteAddress: string;
  requestedServerName: string;
  sourcePrincipal: string;
  destinationPrincipal: string;
  traceId: string;
  userAgent: string;
  xForwardedFor: string;
}

export type AccessLogFormat = "json" | "text";

const orNull = (s: string) => s === "" ? null : s;

export function jsonLine(e: AccessEntry): string {
  return JSON.stringify({
    start_time: new Date(e.startEpochMs).toISOString(),
    method: orNull(e.method),
    path: orNull(e.path),
    protocol: orNull(e.protocol),
    response_code: e.responseCode,
    response_flags: e.responseFlags,
    bytes_received: e.bytesReceived,
    bytes_sent: e.bytesSent,
    duration: Math.round(e.durationMs),
    upstream_service_time: e.upstreamServiceMs < 0 ? null : String(Math.round(e.upstreamServiceMs)),
    upstream_host: orNull(e.upstreamHost),
    upstream_cluster: orNull(e.upstreamCluster),
    x_request_id: orNull(e.requestId),
    authority: orNull(e.authority),
    downstream_remote_address: orNull(e.downstreamRemoteAddress),
    requested_server_name: orNull(e.requestedServerName),
    source_principal: orNull(e.sourcePrincipal),
    destination_principal: orNull(e.destinationPrincipal),
    trace_id: orNull(e.traceId),
    user_agent: orNull(e.userAgent),
    x_forwarded_for: orNull(e.xForwardedFor),
  });
}

const dash = (s: string) => s === "" ? "-" : s;

export function textLine(e: AccessEntry): string {
  return `[${new Date(e.startEpochMs).toISOString()}] "${dash(e.method)} ${dash(e.path)} ${
    dash(e.protocol)
  }" ${e.responseCode} ${e.responseFlags} ${e.bytesReceived} ${e.bytesSent} ${
    Math.round(e.durationMs)
  } ${e.upstreamServiceMs < 0 ? "-" : Math.round(e.upstreamServiceMs)} "${
    dash(e.xForwardedFor)
  }" "${dash(e.userAgent)}" "${dash(e.requestId)}" "${dash(e.authority)}" "${
    dash(e.upstreamHost)
  }"`;
}

export function formatLine(format: AccessLogFormat, e: AccessEntry): string {
  return format === "json" ? jsonLine(e) : textLine(e);
}

const MAX_PENDING_CHARS = 4 * 1024 * 1024;

/** Something lines can be written to (Deno.stdout in production). */
export interface LineSink {
  write(p: Uint8Array): Promise<number>;
}

/** Writes whole lines to stdout asynchronously; drops (and counts) when it cannot keep up. */
export class StdoutLog {
  readonly #sink: LineSink;
  readonly #onDropped: () => void;
  #pending: string[] = [];
  #pendingChars = 0;
  #writing: Promise<void> | undefined;
  readonly #encoder = new TextEncoder();

  constructor(onDropped: () => void, sink: LineSink = Deno.stdout) {
    this.#sink = sink;
    this.#onDropped = onDropped;
  }

  write(line: string): void {
    if (this.#pendingChars + line.length > MAX_PENDING_CHARS) {
      this.#onDropped();
      return;
    }
    this.#pending.push(line);
    this.#pendingChars += line.length + 1;
    if (this.#writing === undefined) this.#writing = this.#drain();
  }

  async #drain(): Promise<void> {
    // Lines logged while a write is out are gathered into the next one.
    await Promise.resolve();
    try {
      while (this.#pending.length > 0) {
        const text = this.#pending.join("\n") + "\n";
        this.#pending = [];
        this.#pendingChars = 0;
        let bytes = this.#encoder.encode(text);
        while (bytes.length > 0) {
          const n = await this.#sink.write(bytes);
          bytes = bytes.subarray(n);
        }
      }
    } catch {
      // stdout is gone: nothing more can be logged.
      this.#pending = [];
      this.#pendingChars = 0;
    } finally {
      this.#writing = undefined;
    }
  }

  /** Resolves when what was logged so far is written. */
  async flush(): Promise<void> {
    while (this.#writing !== undefined) await this.#writing;
  }
}

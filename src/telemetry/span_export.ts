/**
 * The finished-span record and the batching exporter both span exporters
 * share (`otlp_exporter.ts`, `zipkin_exporter.ts` only encode).
 *
 * `push()` is all the request path does: append to a bounded queue, or drop
 * and count (`queue_full`) when the queue is full. Batches of up to
 * `maxBatch` spans leave every `intervalMs`, or as soon as a batch is full,
 * one POST at a time with a timeout; a failed or timed-out POST drops its
 * batch and counts it (`export_failed`, `timeout`). Nothing is retried and
 * nothing on the request path ever awaits an export, so a collector that is
 * down or slow costs spans, never traffic.
 */

import { log } from "../log.ts";

/** One sampled hop, as the exporters encode it. Built only for sampled requests. */
export interface FinishedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  traceState: string;
  /** Outbound hop: CLIENT; inbound hop: SERVER. */
  kind: "CLIENT" | "SERVER";
  name: string;
  startEpochMs: number;
  durationMs: number;
  /** OpenTelemetry status ERROR (client: status ≥ 400 or none; server: ≥ 500 or none). */
  error: boolean;
  method: string;
  /** Path without the query (url.path). */
  urlPath: string;
  scheme: string;
  /** 0 when no response was sent. */
  status: number;
  /** "1.1", "1.0" or "2". */
  protocolVersion: string;
  serverAddress: string;
  serverPort: number;
  peerAddress: string;
  peerPort: number;
  upstreamCluster: string;
  responseFlags: string;
  requestId: string;
  /** The peer's SPIFFE id, "" until mTLS tells it. */
  peerPrincipal: string;
  requestBytes: number;
  responseBytes: number;
}

/** Who the spans are from (the OpenTelemetry resource / Zipkin localEndpoint). */
export interface SpanSource {
  /** `<workload>.<namespace>`, as Istio names services in traces. */
  serviceName: string;
  workload: string;
  namespace: string;
}

export interface BatchOptions {
  /** Queue bound (default 2048). */
  maxQueue?: number;
  /** Spans per POST (default 512). */
  maxBatch?: number;
  /** How often a partial batch leaves (default 1000 ms). */
  intervalMs?: number;
  /** POST timeout (default 5000 ms). */
  timeoutMs?: number;
  onExported?: (n: number) => void;
  onDropped?: (reason: "queue_full" | "export_failed" | "timeout", n: number) => void;
}

export interface Encoder {
  contentType: string;
  encode(spans: readonly FinishedSpan[], source: SpanSource): string;
}

/** A bounded queue of spans drained by periodic POSTs to one collector URL. */
export class BatchExporter {
  readonly name: string;
  readonly #url: string;
  readonly #encoder: Encoder;
  readonly #source: SpanSource;
  readonly #maxQueue: number;
  readonly #maxBatch: number;
  readonly #timeoutMs: number;
  readonly #opts: BatchOptions;
  #queue: FinishedSpan[] = [];
  #inflight: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval>;
  #soon: ReturnType<typeof setTimeout> | undefined;
  #warned = false;

  constructor(
    name: string,
    url: string,
    encoder: Encoder,
    source: SpanSource,
    opts: BatchOptions = {},
  ) {
    this.name = name;
    this.#url = url;
    this.#encoder = encoder;
    this.#source = source;
    this.#opts = opts;
    this.#maxQueue = opts.maxQueue ?? 2048;
    this.#maxBatch = opts.maxBatch ?? 512;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#timer = setInterval(() => this.#flush(), opts.intervalMs ?? 1000);
    Deno.unrefTimer(Number(this.#timer));
  }

  /** Queues one span, or drops it when the queue is full. Never blocks, never throws. */
  push(span: FinishedSpan): void {
    if (this.#queue.length >= this.#maxQueue) {
      this.#opts.onDropped?.("queue_full", 1);
      return;
    }
    this.#queue.push(span);
    if (this.#queue.length >= this.#maxBatch && this.#inflight === undefined && !this.#soon) {
      this.#soon = setTimeout(() => {
        this.#soon = undefined;
        this.#flush();
      }, 0);
    }
  }

  get queued(): number {
    return this.#queue.length;
  }

  #flush(): void {
    if (this.#inflight !== undefined || this.#queue.length === 0) return;
    const batch = this.#queue.length <= this.#maxBatch
      ? this.#queue
      : this.#queue.slice(0, this.#maxBatch);
    this.#queue = this.#queue.length <= this.#maxBatch ? [] : this.#queue.slice(this.#maxBatch);
    this.#inflight = this.#post(batch).finally(() => {
      this.#inflight = undefined;
      // A full queue left behind goes out now rather than at the next tick.
      if (this.#queue.length >= this.#maxBatch) this.#flush();
    });
  }

  async #post(batch: FinishedSpan[]): Promise<void> {
    let body: string;
    try {
      body = this.#encoder.encode(batch, this.#source);
    } catch (e) {
      this.#fail("export_failed", batch.length, `cannot encode spans: ${(e as Error).message}`);
      return;
    }
    const signal = AbortSignal.timeout(this.#timeoutMs);
    try {
      const res = await fetch(this.#url, {
        method: "POST",
        headers: { "content-type": this.#encoder.contentType },
        body,
        signal,
      });
      await res.body?.cancel();
      if (res.ok) {
        this.#opts.onExported?.(batch.length);
        this.#warned = false;
      } else {
        this.#fail("export_failed", batch.length, `collector answered ${res.status}`);
      }
    } catch (e) {
      const timedOut = signal.aborted;
      this.#fail(
        timedOut ? "timeout" : "export_failed",
        batch.length,
        timedOut ? `no answer in ${this.#timeoutMs}ms` : (e as Error).message,
      );
    }
  }

  #fail(reason: "export_failed" | "timeout", n: number, detail: string): void {
    this.#opts.onDropped?.(reason, n);
    if (!this.#warned) {
      // Once per outage, not once per batch.
      this.#warned = true;
      log.warn("span export failed; spans are dropped until it succeeds", {
        exporter: this.name,
        url: this.#url,
        detail,
      });
    }
  }

  /** Stops the timer and sends what is queued, waiting at most `waitMs`. */
  async close(waitMs = 2000): Promise<void> {
    clearInterval(this.#timer);
    if (this.#soon !== undefined) clearTimeout(this.#soon);
    const until = Date.now() + waitMs;
    while (Date.now() < until && (this.#queue.length > 0 || this.#inflight !== undefined)) {
      this.#flush();
      const current = this.#inflight;
      if (current === undefined) break;
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        current,
        new Promise((r) => t = setTimeout(r, Math.max(1, until - Date.now()))),
      ]);
      clearTimeout(t);
    }
  }
}

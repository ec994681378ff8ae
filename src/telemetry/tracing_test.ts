import assert from "node:assert/strict";
import type { TelemetryPolicy } from "../config/compile_telemetry.ts";
import type { HeaderList } from "../http/h1_head.ts";
import type { ExchangeFacts } from "../proxy/observe.ts";
import { StdoutLog } from "./access_log.ts";
import { Metrics } from "./metrics.ts";
import { otlpJson } from "./otlp_exporter.ts";
import { BatchExporter, type FinishedSpan } from "./span_export.ts";
import { Telemetry } from "./tracing.ts";
import { zipkinJson } from "./zipkin_exporter.ts";

const SPAN: FinishedSpan = {
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  parentSpanId: "a2fb4a1d1a96d312",
  traceState: "",
  kind: "SERVER",
  name: "GET",
  startEpochMs: 1_700_000_000_123.5,
  durationMs: 2.25,
  error: false,
  method: "GET",
  urlPath: "/p",
  scheme: "http",
  status: 200,
  protocolVersion: "1.1",
  serverAddress: "b",
  serverPort: 80,
  peerAddress: "10.0.0.1",
  peerPort: 4000,
  upstreamCluster: "inbound|80||",
  responseFlags: "-",
  requestId: "r",
  peerPrincipal: "",
  requestBytes: 1,
  responseBytes: 2,
};

const NO_POLICY: TelemetryPolicy = {
  source: { tracing: undefined, accessLogging: undefined },
  destination: { tracing: undefined, accessLogging: undefined },
};

function facts(over: Partial<ExchangeFacts> = {}): ExchangeFacts {
  return {
    labels: { service: "b.default", serviceName: "b", serviceNamespace: "default", cluster: "c1" },
    status: 200,
    flags: [],
    grpc: false,
    grpcStatus: "",
    startMs: performance.now(),
    upstreamMs: -1,
    clientRequestId: undefined,
    requestBytes: 10,
    responseBytes: 20,
    requestFramingBytes: 0,
    responseFramingBytes: 0,
    trace: undefined,
    method: "GET",
    path: "/x?y=1",
    authority: "b.example:8080",
    protocol: "HTTP/1.1",
    conn: { remoteAddr: "127.0.0.1", remotePort: 5555, localPort: 15006, originalDst: undefined },
    upstream: { host: "127.0.0.9", port: 9080, endpoint: undefined },
    ...over,
  };
}

/** A Telemetry whose OTLP exporter points at nothing (tests read the queue via a fake push). */
function make(opts: { pct?: number; random?: number; policy?: TelemetryPolicy; log?: string[] }) {
  const lines = opts.log ?? [];
  const sink = { write: (p: Uint8Array) => Promise.resolve(p.length) };
  const log = new StdoutLog(() => {}, sink);
  const origWrite = log.write.bind(log);
  log.write = (line: string) => {
    lines.push(line);
    origWrite(line);
  };
  const t = new Telemetry({
    getConfig: () => ({ telemetry: opts.policy ?? NO_POLICY }),
    metrics: new Metrics(),
    self: { workload: "a", namespace: "default" },
    otlpEndpoint: "http://127.0.0.1:9/v1/traces",
    zipkinEndpoint: undefined,
    accessLog: "off",
    samplingPercent: opts.pct ?? 1,
    random: () => opts.random ?? 0.5,
    accessLogSink: log,
    batch: { intervalMs: 60_000 },
  });
  const pushed: FinishedSpan[] = [];
  const origPush = BatchExporter.prototype.push;
  return {
    t,
    pushed,
    lines,
    capture<T>(fn: () => T): T {
      BatchExporter.prototype.push = function (s: FinishedSpan) {
        pushed.push(s);
      };
      try {
        return fn();
      } finally {
        BatchExporter.prototype.push = origPush;
      }
    },
  };
}

Deno.test("onRequest: a new trace, sampled by the random percentage, traceparent injected", async () => {
  const m = make({ pct: 60, random: 0.5 });
  const h: HeaderList = [["host", "b"], ["x-request-id", "rid-1"]];
  const hook = m.t.hook("source");
  const tr = hook.onRequest(h)!;
  assert.equal(tr.sampled, true);
  assert.equal(tr.parentSpanId, "");
  assert.equal(tr.requestId, "rid-1");
  assert.deepEqual(h[2], ["traceparent", `00-${tr.traceId}-${tr.spanId}-01`]);
  m.capture(() => hook.onExchange(facts({ trace: tr }), "-", 3));
  assert.equal(m.pushed.length, 1);
  const sp = m.pushed[0]!;
  assert.equal(sp.kind, "CLIENT");
  assert.equal(sp.urlPath, "/x");
  assert.equal(sp.serverAddress, "b.example");
  assert.equal(sp.serverPort, 8080);
  assert.equal(sp.peerAddress, "127.0.0.9");
  assert.equal(sp.requestId, "rid-1");
  await m.t.close();
});

Deno.test("onExchange: an outbound span names the identity required of the upstream; the facts' own peer wins", async () => {
  const m = make({ pct: 100, random: 0 });
  const hook = m.t.hook("source");
  const id = "spiffe://cluster.local/ns/default/sa/b";
  m.capture(() => hook.onExchange(facts({ trace: hook.onRequest([]) }), "-", 1, id));
  m.capture(() => hook.onExchange(facts({ trace: hook.onRequest([]) }), "-", 1));
  m.capture(() =>
    hook.onExchange(facts({ trace: hook.onRequest([]), peerPrincipal: "spiffe://x/y" }), "-", 1, id)
  );
  assert.deepEqual(m.pushed.map((sp) => sp.peerPrincipal), [id, "", "spiffe://x/y"]);
  await m.t.close();
});

Deno.test("onRequest: a new trace that is not sampled still tells the next hop", async () => {
  const m = make({ pct: 1, random: 0.5 });
  const hook = m.t.hook("source");
  const h: HeaderList = [["host", "b"]];
  // Nothing is kept for an unsampled, unlogged exchange: no span, no log line.
  assert.equal(hook.onRequest(h), undefined);
  assert.equal(h.length, 2);
  assert.equal(h[1]![0], "traceparent");
  assert.match(h[1]![1], /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  m.capture(() => hook.onExchange(facts({ trace: undefined }), "-", 3));
  assert.equal(m.pushed.length, 0);
  await m.t.close();
});

Deno.test("onRequest: the caller's decision wins over the random percentage", async () => {
  const m = make({ pct: 100, random: 0 });
  const parent = "00f067aa0ba902b7";
  const tid = "4bf92f3577b34da6a3ce929d0e0e4736";
  const h: HeaderList = [["traceparent", `00-${tid}-${parent}-00`]];
  const hook = m.t.hook("destination");
  const tr = hook.onRequest(h)!;
  assert.equal(tr.sampled, false);
  assert.equal(tr.traceId, tid);
  assert.equal(tr.parentSpanId, parent);
  assert.equal(h.length, 1);
  assert.equal(h[0]![1], `00-${tid}-${tr.spanId}-00`);
  m.capture(() => hook.onExchange(facts({ trace: tr }), "-", 1));
  assert.equal(m.pushed.length, 0, "an unsampled request builds no span");
  await m.t.close();
});

Deno.test("onRequest: B3 multi is continued in B3, and the SERVER span is the caller's child", async () => {
  const m = make({ pct: 0 });
  const h: HeaderList = [
    ["x-b3-traceid", "463ac35c9f6413ad"],
    ["x-b3-spanid", "a2fb4a1d1a96d312"],
    ["x-b3-sampled", "1"],
  ];
  const hook = m.t.hook("destination");
  const tr = hook.onRequest(h)!;
  assert.equal(tr.traceId, "0000000000000000463ac35c9f6413ad");
  assert.equal(tr.parentSpanId, "a2fb4a1d1a96d312");
  assert.equal(tr.sampled, true);
  const get = (n: string) => h.find(([k]) => k === n)?.[1];
  assert.equal(get("x-b3-traceid"), "463ac35c9f6413ad");
  assert.equal(get("x-b3-spanid"), tr.spanId);
  assert.equal(get("x-b3-parentspanid"), "a2fb4a1d1a96d312");
  assert.equal(get("x-b3-sampled"), "1");
  m.capture(() => hook.onExchange(facts({ trace: tr, status: 503 }), "UF", 1));
  assert.equal(m.pushed[0]!.kind, "SERVER");
  assert.equal(m.pushed[0]!.parentSpanId, "a2fb4a1d1a96d312");
  assert.equal(m.pushed[0]!.error, true);
  assert.equal(m.pushed[0]!.peerAddress, "127.0.0.1");
  await m.t.close();
});

Deno.test("Telemetry policy: sampling percentage, disableSpanReporting and access logs", async () => {
  const lines: string[] = [];
  const policy: TelemetryPolicy = {
    source: {
      tracing: { providers: undefined, randomSamplingPercentage: 100, disableSpanReporting: true },
      accessLogging: { providers: ["envoy"], disabled: false },
    },
    destination: {
      tracing: undefined,
      accessLogging: { providers: undefined, disabled: true },
    },
  };
  const m = make({ pct: 0, random: 0.99, policy, log: lines });
  const out = m.t.hook("source");
  const tr = out.onRequest([["user-agent", "curl/8"]])!;
  assert.equal(tr.sampled, true, "100% from the Telemetry resource");
  m.capture(() => out.onExchange(facts({ trace: tr }), "-", 2));
  assert.equal(m.pushed.length, 0, "span reporting disabled");
  assert.equal(lines.length, 1);
  assert.match(
    lines[0]!,
    /^\[\d{4}-\d\d-\d\dT.*\] "GET \/x\?y=1 HTTP\/1\.1" 200 - 10 20 2 - "-" "curl\/8" "[0-9a-f-]{36}" "b\.example:8080" "127\.0\.0\.9:9080"$/,
  );
  const inb = m.t.hook("destination");
  inb.onExchange(facts({ trace: inb.onRequest([]) }), "-", 2);
  assert.equal(lines.length, 1, "access logs disabled on the inbound side");
  await m.t.close();
});

Deno.test("encoders: OTLP JSON and Zipkin v2 carry ids, kind, times and attributes", () => {
  const sp = SPAN;
  const source = { serviceName: "b.default", workload: "b", namespace: "default" };
  const otlp = JSON.parse(otlpJson.encode([sp], source));
  const rs = otlp.resourceSpans[0];
  assert.deepEqual(rs.resource.attributes[0], {
    key: "service.name",
    value: { stringValue: "b.default" },
  });
  const o = rs.scopeSpans[0].spans[0];
  assert.equal(o.kind, 2);
  assert.equal(o.parentSpanId, sp.parentSpanId);
  assert.equal(o.startTimeUnixNano, "1700000000123500000");
  assert.equal(o.endTimeUnixNano, "1700000000125750000");
  const attr = (k: string) => o.attributes.find((a: { key: string }) => a.key === k)?.value;
  assert.deepEqual(attr("http.response.status_code"), { intValue: "200" });
  assert.deepEqual(attr("url.path"), { stringValue: "/p" });
  assert.deepEqual(attr("network.peer.address"), { stringValue: "10.0.0.1" });
  const z = JSON.parse(zipkinJson.encode([sp], source))[0];
  assert.equal(z.id, sp.spanId);
  assert.equal(z.parentId, sp.parentSpanId);
  assert.equal(z.kind, "SERVER");
  assert.equal(z.timestamp, 1_700_000_000_123_500);
  assert.equal(z.duration, 2250);
  assert.deepEqual(z.remoteEndpoint, { ipv4: "10.0.0.1", port: 4000 });
  assert.equal(z.tags["http.response.status_code"], "200");
});

Deno.test("BatchExporter: a full queue and a dead collector drop and count, never throw", async () => {
  const dropped: Record<string, number> = {};
  // A port nothing listens on: connections are refused.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const e = new BatchExporter("otlp", `http://127.0.0.1:${port}/v1/traces`, otlpJson, {
    serviceName: "a",
    workload: "a",
    namespace: "default",
  }, {
    maxQueue: 4,
    maxBatch: 100,
    intervalMs: 10,
    timeoutMs: 500,
    onDropped: (r, n) => dropped[r] = (dropped[r] ?? 0) + n,
  });
  for (let i = 0; i < 6; i++) e.push(SPAN);
  assert.equal(dropped.queue_full, 2);
  const until = Date.now() + 5000;
  while ((dropped.export_failed ?? 0) + (dropped.timeout ?? 0) < 4 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal((dropped.export_failed ?? 0) + (dropped.timeout ?? 0), 4);
  await e.close();
});

Deno.test("Zipkin on: a single b3 header also goes on as x-b3-*; spans are named by the app label", async () => {
  const t = new Telemetry({
    getConfig: () => ({ telemetry: NO_POLICY }),
    metrics: new Metrics(),
    self: {
      workload: "client-7d9f",
      namespace: "shop",
      meta: {
        app: "client",
        version: "v1",
        canonicalService: "client",
        canonicalRevision: "v1",
        cluster: "unknown",
        key: "client|v1|client|v1|unknown",
      },
    },
    otlpEndpoint: undefined,
    zipkinEndpoint: "http://127.0.0.1:9/api/v2/spans",
    accessLog: "off",
    samplingPercent: 0,
    random: () => 0.5,
    batch: { intervalMs: 60_000 },
  });
  try {
    assert.equal(t.source.serviceName, "client.shop", "Istio's APP_LABEL_AND_NAMESPACE");
    const headers: HeaderList = [["b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"]];
    t.hook("source").onRequest(headers);
    const names = headers.map(([k]) => k);
    assert.ok(names.includes("b3"), names.join());
    assert.ok(names.includes("x-b3-traceid") && names.includes("x-b3-spanid"), names.join());
    const traceId = headers.find(([k]) => k === "x-b3-traceid")![1];
    assert.equal(traceId, "80f198ee56343ba864fe8b2a57d3eff7");
  } finally {
    await t.close();
  }
});

/**
 * Distributed tracing end to end: two remoras (A outbound → B inbound → an
 * echo app) export spans to a real OTLP/HTTP receiver in the test (and a
 * Zipkin v2 receiver), with the parent/child links Istio gives: B's SERVER
 * span is a child of A's CLIENT span, the app sees B's span as its parent.
 * A B3 context from the client is continued; a collector that is down
 * changes nothing for traffic and its drops are counted.
 */

import assert from "node:assert/strict";
import {
  curl,
  type Echo,
  eventually,
  parseMetrics,
  type Remora,
  scrape,
  startRemora,
  startUpstream,
  sumMetric,
  type Upstream,
  writeConfig,
} from "./harness.ts";

const HOST = "b.mesh.internal";

/** A collector that records what is POSTed to it, as parsed JSON. */
interface Receiver {
  port: number;
  bodies: Array<{ path: string; contentType: string; json: unknown }>;
  close(): Promise<void>;
}

function startReceiver(): Receiver {
  const bodies: Receiver["bodies"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const text = await req.text();
    try {
      bodies.push({
        path: new URL(req.url).pathname,
        contentType: req.headers.get("content-type") ?? "",
        json: JSON.parse(text),
      });
    } catch {
      return new Response("bad json", { status: 400 });
    }
    return new Response("{}", { headers: { "content-type": "application/json" } });
  });
  return { port: server.addr.port, bodies, close: () => server.shutdown() };
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Array<{ key: string; value: { stringValue?: string; intValue?: string } }>;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
}

/** Every OTLP span received, with its resource's service.name. */
function otlpSpans(r: Receiver): Array<OtlpSpan & { service: string }> {
  const out: Array<OtlpSpan & { service: string }> = [];
  for (const b of r.bodies) {
    if (b.path !== "/v1/traces") continue;
    // deno-lint-ignore no-explicit-any
    for (const rs of (b.json as any).resourceSpans) {
      const service = rs.resource.attributes.find((a: { key: string }) => a.key === "service.name")
        ?.value.stringValue;
      for (const ss of rs.scopeSpans) for (const s of ss.spans) out.push({ ...s, service });
    }
  }
  return out;
}

const attr = (s: OtlpSpan, k: string) => {
  const v = s.attributes.find((a) => a.key === k)?.value;
  return v?.stringValue ?? v?.intValue;
};

function meshConfig(bPort: number, extra = ""): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: b }
spec:
  hosts: [${HOST}]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: ${bPort} }, labels: { app: b } }]
${extra}`;
}

const TELEMETRY_100 = `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  tracing:
  - providers: [{ name: otel }]
    randomSamplingPercentage: 100
`;

/** A (outbound, config from `yaml(bInbound)`) → B (inbound) → echo app. */
async function pair(
  receiver: Receiver,
  opts: { aArgs?: string[]; bArgs?: string[]; yaml?: (b: number) => string } = {},
): Promise<{ a: Remora; b: Remora; app: Upstream; stop(): Promise<void> }> {
  const app = await startUpstream("app-b");
  const otlp = `http://127.0.0.1:${receiver.port}/v1/traces`;
  const started: Remora[] = [];
  try {
    const b = await startRemora([
      "--app-port",
      String(app.port),
      "--workload",
      "b",
      "--otlp-endpoint",
      otlp,
      "--trace-sampling",
      "100",
      ...(opts.bArgs ?? []),
    ]);
    started.push(b);
    const config = await writeConfig(
      (opts.yaml ?? ((p) => meshConfig(p, TELEMETRY_100)))(b.inbound),
    );
    const a = await startRemora([
      "--config",
      config,
      "--workload",
      "a",
      "--otlp-endpoint",
      otlp,
      ...(opts.aArgs ?? []),
    ]);
    started.push(a);
    return {
      a,
      b,
      app,
      stop: async () => {
        await Promise.all(started.map((r) => r.stop()));
        await app.close();
      },
    };
  } catch (e) {
    await Promise.all(started.map((r) => r.stop()));
    await app.close();
    throw e;
  }
}

Deno.test("tracing: A's CLIENT span is the parent of B's SERVER span; the app sees B's span", async () => {
  const receiver = startReceiver();
  const p = await pair(receiver);
  try {
    const res = await curl(["-x", `http://127.0.0.1:${p.a.outbound}`, `http://${HOST}/hello?q=1`]);
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as Echo;
    const tp = String(echo.headers["traceparent"]);
    assert.match(tp, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.ok(
      await eventually(() => otlpSpans(receiver).length >= 2, 8000),
      `spans received: ${JSON.stringify(receiver.bodies)}`,
    );
    const spans = otlpSpans(receiver);
    const client = spans.find((s) => s.kind === 3)!;
    const server = spans.find((s) => s.kind === 2)!;
    assert.equal(client.service, "a.default");
    assert.equal(server.service, "b.default");
    assert.equal(server.traceId, client.traceId);
    assert.equal(server.parentSpanId, client.spanId, "B's span is a child of A's");
    assert.equal(client.parentSpanId, undefined, "A started the trace");
    assert.equal(tp, `00-${server.traceId}-${server.spanId}-01`, "the app's parent is B's span");
    for (const s of [client, server]) {
      assert.equal(attr(s, "http.request.method"), "GET");
      assert.equal(attr(s, "url.path"), "/hello");
      assert.equal(attr(s, "http.response.status_code"), "200");
      assert.equal(attr(s, "server.address"), HOST);
      assert.equal(attr(s, "network.peer.address"), "127.0.0.1");
      assert.ok(BigInt(s.endTimeUnixNano) >= BigInt(s.startTimeUnixNano));
    }
    assert.equal(attr(client, "upstream_cluster"), `outbound|80||${HOST}`);
    assert.equal(attr(client, "response_flags"), "-");
    assert.equal(receiver.bodies[0]!.contentType, "application/json");
    const rid = String(echo.headers["x-request-id"]);
    assert.equal(attr(client, "guid:x-request-id"), rid, "x-request-id is kept across hops");
    assert.equal(attr(server, "guid:x-request-id"), rid);
  } finally {
    await p.stop();
    await receiver.close();
  }
});

Deno.test("tracing: a B3 context from the client is continued, in B3", async () => {
  const receiver = startReceiver();
  const p = await pair(receiver);
  try {
    const res = await curl([
      "-x",
      `http://127.0.0.1:${p.a.outbound}`,
      "-H",
      "x-b3-traceid: 463ac35c9f6413ad",
      "-H",
      "x-b3-spanid: a2fb4a1d1a96d312",
      "-H",
      "x-b3-sampled: 1",
      `http://${HOST}/b3`,
    ]);
    assert.equal(res.status, 200, res.body);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.headers["x-b3-traceid"], "463ac35c9f6413ad");
    assert.equal(echo.headers["x-b3-sampled"], "1");
    assert.ok(await eventually(() => otlpSpans(receiver).length >= 2, 8000));
    const spans = otlpSpans(receiver);
    const client = spans.find((s) => s.kind === 3)!;
    const server = spans.find((s) => s.kind === 2)!;
    assert.equal(client.traceId, "0000000000000000463ac35c9f6413ad");
    assert.equal(client.parentSpanId, "a2fb4a1d1a96d312");
    assert.equal(server.traceId, client.traceId);
    assert.equal(server.parentSpanId, client.spanId);
    assert.equal(echo.headers["x-b3-spanid"], server.spanId);
  } finally {
    await p.stop();
    await receiver.close();
  }
});

Deno.test("tracing: a caller's 'not sampled' is honoured; a malformed traceparent starts a new trace", async () => {
  const receiver = startReceiver();
  const p = await pair(receiver);
  try {
    const tid = "4bf92f3577b34da6a3ce929d0e0e4736";
    const unsampled = await curl([
      "-x",
      `http://127.0.0.1:${p.a.outbound}`,
      "-H",
      `traceparent: 00-${tid}-00f067aa0ba902b7-00`,
      `http://${HOST}/nope`,
    ]);
    assert.equal(unsampled.status, 200);
    const echo = JSON.parse(unsampled.body) as Echo;
    assert.match(String(echo.headers["traceparent"]), new RegExp(`^00-${tid}-[0-9a-f]{16}-00$`));
    const bad = await curl([
      "-x",
      `http://127.0.0.1:${p.a.outbound}`,
      "-H",
      "traceparent: 00-zzzz-broken",
      `http://${HOST}/bad`,
    ]);
    assert.equal(bad.status, 200);
    const badEcho = JSON.parse(bad.body) as Echo;
    assert.match(String(badEcho.headers["traceparent"]), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.ok(await eventually(() => otlpSpans(receiver).length >= 2, 8000));
    await new Promise((r) => setTimeout(r, 1500));
    const spans = otlpSpans(receiver);
    assert.equal(spans.filter((s) => s.traceId === tid).length, 0, "unsampled: no span");
    assert.equal(spans.length, 2, "the malformed one: a new sampled trace, two spans");
  } finally {
    await p.stop();
    await receiver.close();
  }
});

Deno.test("tracing: a collector that is down changes nothing for traffic; drops are counted", async () => {
  // A port nothing listens on.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = (l.addr as Deno.NetAddr).port;
  l.close();
  const app = await startUpstream("app");
  const r = await startRemora([
    "--app-port",
    String(app.port),
    "--otlp-endpoint",
    `http://127.0.0.1:${dead}/v1/traces`,
    "--trace-sampling",
    "100",
  ]);
  try {
    for (let i = 0; i < 50; i++) {
      const res = await curl([`http://127.0.0.1:${r.inbound}/n/${i}`]);
      assert.equal(res.status, 200, res.body);
    }
    let dropped = 0;
    assert.ok(
      await eventually(async () => {
        dropped = sumMetric(parseMetrics(await scrape(r)), "remora_spans_dropped_total", {
          exporter: "otlp",
        });
        return dropped >= 50;
      }, 8000),
      `dropped ${dropped}`,
    );
  } finally {
    await r.stop();
    await app.close();
  }
});

Deno.test("tracing: the Zipkin exporter sends valid v2 JSON", async () => {
  const receiver = startReceiver();
  const app = await startUpstream("app");
  const r = await startRemora([
    "--app-port",
    String(app.port),
    "--workload",
    "z",
    "--zipkin-endpoint",
    `http://127.0.0.1:${receiver.port}/api/v2/spans`,
    "--trace-sampling",
    "100",
  ]);
  try {
    const res = await curl([
      "-H",
      "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
      `http://127.0.0.1:${r.inbound}/zip`,
    ]);
    assert.equal(res.status, 200);
    const echo = JSON.parse(res.body) as Echo;
    assert.match(
      String(echo.headers["b3"]),
      /^80f198ee56343ba864fe8b2a57d3eff7-[0-9a-f]{16}-1-e457b5a2e4d86bd1$/,
    );
    assert.ok(await eventually(() => receiver.bodies.length >= 1, 8000));
    const body = receiver.bodies[0]!;
    assert.equal(body.path, "/api/v2/spans");
    // deno-lint-ignore no-explicit-any
    const spans = body.json as any[];
    assert.ok(Array.isArray(spans));
    const s = spans[0];
    assert.equal(s.traceId, "80f198ee56343ba864fe8b2a57d3eff7");
    assert.equal(s.parentId, "e457b5a2e4d86bd1");
    assert.match(s.id, /^[0-9a-f]{16}$/);
    assert.equal(s.kind, "SERVER");
    assert.equal(s.localEndpoint.serviceName, "z.default");
    assert.ok(Number.isInteger(s.timestamp) && Number.isInteger(s.duration) && s.duration > 0);
    assert.equal(s.tags["http.response.status_code"], "200");
    assert.equal(s.tags["url.path"], "/zip");
    for (const v of Object.values(s.tags)) assert.equal(typeof v, "string");
  } finally {
    await r.stop();
    await app.close();
    await receiver.close();
  }
});

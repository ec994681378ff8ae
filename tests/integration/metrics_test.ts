/**
 * What remora reports: Istio-standard request metrics on the stats port
 * (checked by Prometheus' own `promtool check metrics` and by label values
 * for known requests, with no raw paths in any label), and the admin
 * (loopback only) and health endpoints.
 */

import assert from "node:assert/strict";
import {
  curl,
  curlLines,
  eventually,
  get,
  parseMetrics,
  type Remora,
  runCommand,
  type Sample,
  startRemora,
  startUpstream,
  sumMetric,
  type Upstream,
} from "./harness.ts";

const HOST = "svc.example.internal";

function config(port: number): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
  namespace: shop
spec:
  hosts: [${HOST}]
  resolution: STATIC
  ports:
  - number: 80
    name: http
    protocol: HTTP
  endpoints:
  - address: 127.0.0.1
    ports: {http: ${port}}
    labels: {app: reviews, version: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
  namespace: shop
spec:
  hosts: [${HOST}]
  http:
  - match:
    - uri: {prefix: /api/}
    - uri: {prefix: /status/}
    route:
    - destination: {host: ${HOST}}
`;
}

interface Env {
  r: Remora;
  up: Upstream;
  other: Upstream;
  scrape(): Promise<{ text: string; samples: Sample[] }>;
}

async function withMetrics(fn: (e: Env) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-metrics-" });
  let up: Upstream | undefined;
  let other: Upstream | undefined;
  let r: Remora | undefined;
  try {
    up = await startUpstream("reviews");
    other = await startUpstream("other");
    await Deno.writeTextFile(`${dir}/mesh.yaml`, config(up.port));
    r = await startRemora([
      "--config",
      `${dir}/mesh.yaml`,
      "--workload",
      "productpage",
      "--namespace",
      "bookinfo",
      "--app-port",
      String(other.port),
    ]);
    const rr = r;
    const scrape = async () => {
      const res = await get(rr.stats, "/stats/prometheus");
      assert.equal(res.status, 200);
      return { text: res.body, samples: parseMetrics(res.body) };
    };
    await fn({ r, up, other, scrape });
  } finally {
    await r?.stop();
    await up?.close();
    await other?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The labels every Istio request series must carry. */
const ISTIO_LABELS = [
  "reporter",
  "source_workload",
  "source_workload_namespace",
  "destination_service",
  "destination_service_name",
  "destination_workload",
  "response_code",
  "request_protocol",
  "grpc_response_status",
  "response_flags",
  "connection_security_policy",
];

async function post(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST" });
  return { status: res.status, body: await res.text() };
}

Deno.test("the Prometheus scrape passes promtool and carries Istio's labels", async () => {
  await withMetrics(async (e) => {
    const proxy = ["-x", `http://127.0.0.1:${e.r.outbound}`];
    const codes = await curlLines(proxy, [
      `http://${HOST}/api/ok`,
      `http://${HOST}/api/ok`,
      `http://${HOST}/api/ok`,
      `http://${HOST}/status/503`,
      `http://${HOST}/no-route-here`,
      `http://127.0.0.1:${e.other.port}/passthrough`,
    ]);
    assert.deepEqual(codes, ["200", "200", "200", "503", "404", "200"]);
    const inbound = await curl([`http://127.0.0.1:${e.r.inbound}/in`]);
    assert.equal(inbound.status, 200);

    // Metrics are recorded when a response ends; give the last one a moment.
    let s: Sample[] = [];
    let text = "";
    assert.ok(
      await eventually(async () => {
        ({ text, samples: s } = await e.scrape());
        return sumMetric(s, "istio_requests_total") >= 7;
      }),
    );

    const check = await runCommand("promtool", ["check", "metrics"], { stdin: text });
    const problems = check.stderr.trim().split("\n").filter((l) => l !== "");
    console.log(`promtool exit ${check.code}: ${problems.join(" | ") || "no problems"}`);
    // promtool 2.42 exits 1 for format errors and 3 for lint problems only. The
    // one lint it reports is the unit in istio_request_duration_milliseconds, a
    // name Istio fixes (dashboards and alerts use it): that, and only that, is
    // allowed.
    assert.ok(check.code === 0 || check.code === 3, `promtool exit ${check.code}: ${problems}`);
    const allowed =
      /^istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"$/;
    for (const p of problems) assert.match(p.trim(), allowed);

    const series = s.filter((x) => x.name === "istio_requests_total");
    for (const x of series) {
      for (const l of ISTIO_LABELS) {
        assert.ok(l in x.labels, `${l} missing on ${JSON.stringify(x)}`);
      }
    }
    const known = {
      reporter: "source",
      source_workload: "productpage",
      source_workload_namespace: "bookinfo",
      destination_service: HOST,
      destination_service_name: HOST,
      destination_workload: "reviews",
      destination_workload_namespace: "shop",
      request_protocol: "http",
      grpc_response_status: "",
      response_flags: "-",
    };
    const ok = series.filter((x) =>
      Object.entries({ ...known, response_code: "200" }).every(([k, v]) => x.labels[k] === v)
    );
    assert.equal(ok.length, 1, `one series for the 200s: ${JSON.stringify(series, null, 1)}`);
    assert.equal(ok[0]!.value, 3);

    // Istio's default retry policy tried the 503 twice more: the flag says retries ran out.
    assert.equal(
      sumMetric(s, "istio_requests_total", {
        ...known,
        response_code: "503",
        response_flags: "URX",
      }),
      1,
    );
    assert.equal(
      sumMetric(s, "istio_requests_total", {
        reporter: "source",
        destination_service: HOST,
        response_code: "404",
        response_flags: "NR",
      }),
      1,
      "a request no route matched is a local 404 with flag NR",
    );
    assert.equal(
      sumMetric(s, "istio_requests_total", {
        reporter: "destination",
        destination_workload: "productpage",
        destination_workload_namespace: "bookinfo",
        response_code: "200",
      }),
      1,
      "the inbound side reports as destination",
    );

    // Histograms for the same series: buckets with +Inf, _sum and _count.
    for (
      const h of [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
      ]
    ) {
      const match = { ...known, response_code: "200" };
      assert.equal(sumMetric(s, `${h}_count`, match), 3, `${h}_count`);
      assert.equal(sumMetric(s, `${h}_bucket`, { ...match, le: "+Inf" }), 3, `${h} +Inf bucket`);
      assert.ok(s.filter((x) => x.name === `${h}_bucket`).length > 10, `${h} buckets`);
      assert.ok(sumMetric(s, `${h}_sum`, match) > 0, `${h}_sum`);
    }
    assert.match(text, /# TYPE istio_request_duration_milliseconds histogram/);
    assert.match(text, /# TYPE istio_requests_total counter/);
    // The response bytes include the upstream's body.
    const respSum = sumMetric(s, "istio_response_bytes_sum", { ...known, response_code: "200" });
    assert.ok(respSum > 3 * 100, `response bytes sum ${respSum}`);
  });
});

Deno.test("connection_security_policy is unknown when the source reports, none for plaintext inbound", async () => {
  await withMetrics(async (e) => {
    assert.equal(
      (await curl(["-x", `http://127.0.0.1:${e.r.outbound}`, `http://${HOST}/api/x`])).status,
      200,
    );
    assert.equal((await curl([`http://127.0.0.1:${e.r.inbound}/in`])).status, 200);
    let s: Sample[] = [];
    assert.ok(
      await eventually(async () => {
        s = (await e.scrape()).samples;
        return sumMetric(s, "istio_requests_total") >= 2;
      }),
    );
    const policy = (reporter: string) =>
      s.filter((x) => x.name === "istio_requests_total" && x.labels.reporter === reporter)
        .map((x) => x.labels.connection_security_policy);
    // Istio's standard metrics: "unknown when report is from source since
    // security policy cannot be properly populated"; "none" for plaintext at
    // the destination.
    assert.deepEqual(policy("destination"), ["none"]);
    assert.deepEqual(policy("source"), ["unknown"]);
  });
});

Deno.test("no raw path, query or id appears in any label value", async () => {
  await withMetrics(async (e) => {
    const proxy = ["-x", `http://127.0.0.1:${e.r.outbound}`];
    const tokens = Array.from({ length: 30 }, () => `tok${crypto.randomUUID().slice(0, 13)}`);
    const urls = tokens.flatMap((t, i) => [
      `http://${HOST}/api/${t}?q=${t}`,
      `http://${HOST}/${t}`,
      `http://127.0.0.1:${e.other.port}/${t}/${i}`,
    ]);
    const codes = await curlLines([...proxy, "-H", `x-request-id: ${tokens[0]}`], urls);
    assert.equal(codes.length, urls.length);
    const { text, samples } = await e.scrape();
    assert.ok(sumMetric(samples, "istio_requests_total") >= urls.length - 1);
    for (const t of tokens) assert.ok(!text.includes(t), `${t} leaked into the scrape`);
    for (const x of samples.filter((x) => x.name.startsWith("istio_"))) {
      for (const v of Object.values(x.labels)) {
        assert.ok(!v.includes("/"), `a label value looks like a path: ${v}`);
      }
    }
    // A bounded set of series: the number does not grow with distinct paths.
    const n = samples.filter((x) => x.name === "istio_requests_total").length;
    assert.ok(n <= 4, `${n} series for 3 kinds of request`);
  });
});

Deno.test("admin on loopback: /ready, /config_dump, /logging; health and stats ports", async () => {
  await withMetrics(async (e) => {
    assert.match(e.r.stdout(), new RegExp(`admin listening on 127\\.0\\.0\\.1:${e.r.admin}\\b`));

    const ready = await get(e.r.admin, "/ready");
    assert.equal(ready.status, 200);

    const dump = await get(e.r.admin, "/config_dump");
    assert.equal(dump.status, 200);
    const cfg = JSON.parse(dump.body);
    assert.match(cfg.version, /^[0-9a-f]{12}$/);
    assert.ok(!Number.isNaN(Date.parse(cfg.loadedAt)), `loadedAt ${cfg.loadedAt}`);
    assert.ok(Math.abs(Date.now() - Date.parse(cfg.loadedAt)) < 60_000);
    assert.match(cfg.source, /mesh\.yaml$/);
    assert.ok(JSON.stringify(cfg).includes(HOST));

    // A GET does not change the level; a POST does.
    const viaGet = await get(e.r.admin, "/logging?level=debug");
    assert.equal(viaGet.status, 405);
    assert.match((await get(e.r.admin, "/logging")).body, /active level: (?!debug)/);
    const debug = await post(e.r.admin, "/logging?level=debug");
    assert.equal(debug.status, 200);
    assert.match(debug.body, /debug/);
    assert.match((await get(e.r.admin, "/logging")).body, /active level: debug/);
    // Envoy's spellings of the levels; its per-logger form is refused, not ignored.
    const warning = await post(e.r.admin, "/logging?level=warning");
    assert.deepEqual([warning.status, warning.body.trim()], [200, "active level: warn"]);
    const paths = await post(e.r.admin, "/logging?paths=router:debug");
    assert.equal(paths.status, 400);
    assert.match(paths.body, /one logger/);
    await post(e.r.admin, "/logging?level=debug");
    // At debug level a failed upstream request is logged.
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    const fail = await curl([
      "-x",
      `http://127.0.0.1:${e.r.outbound}`,
      `http://127.0.0.1:${port}/`,
    ]);
    assert.equal(fail.status, 503);
    assert.ok(
      await eventually(() => /\bdebug\b.*upstream request failed/.test(e.r.stderr())),
      `stderr:\n${e.r.stderr()}`,
    );

    const bad = await post(e.r.admin, "/logging?level=chatty");
    assert.equal(bad.status, 400);
    assert.match(bad.body, /chatty/);
    assert.match((await get(e.r.admin, "/logging")).body, /active level: debug/, "unchanged");
    assert.equal((await post(e.r.admin, "/logging?level=info")).status, 200);

    const health = await get(e.r.health, "/healthz/ready");
    assert.equal(health.status, 200);
    const stats = await get(e.r.stats, "/stats/prometheus");
    assert.equal(stats.status, 200);
    assert.match(stats.body, /remora_config_reloads_total\{result="accepted"\} 1/);
    // Admin endpoints are not on the stats or health ports.
    assert.equal((await get(e.r.stats, "/config_dump")).status, 404);
    assert.equal((await get(e.r.health, "/logging?level=debug")).status, 404);
  });
});

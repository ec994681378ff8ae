/**
 * Access logs on stdout: `--access-log json` lines parse as JSON with
 * Envoy's fields, `--access-log text` lines follow Envoy's default format,
 * and a Telemetry `accessLogging` rule turns them on or off.
 */

import assert from "node:assert/strict";
import {
  curl,
  eventually,
  serviceEntryYaml,
  startH2Upstream,
  startRemora,
  startUpstream,
  writeConfig,
} from "./harness.ts";

const FIELDS = [
  "start_time",
  "method",
  "path",
  "protocol",
  "response_code",
  "response_flags",
  "bytes_received",
  "bytes_sent",
  "duration",
  "upstream_host",
  "upstream_cluster",
  "x_request_id",
  "authority",
  "downstream_remote_address",
  "requested_server_name",
  "source_principal",
  "destination_principal",
  "trace_id",
  "upstream_service_time",
];

function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

Deno.test("access log: JSON lines with Envoy's fields, one per request", async () => {
  const app = await startUpstream("app");
  const r = await startRemora(["--app-port", String(app.port), "--access-log", "json"]);
  try {
    const ok = await curl(["-H", "x-request-id: req-1", `http://127.0.0.1:${r.inbound}/a?b=c`]);
    assert.equal(ok.status, 200);
    const nf = await curl([`http://127.0.0.1:${r.inbound}/status/404`]);
    assert.equal(nf.status, 404);
    const post = await curl(["--data-binary", "hello world", `http://127.0.0.1:${r.inbound}/p`]);
    assert.equal(post.status, 200);
    const chunked = await curl([
      "-H",
      "transfer-encoding: chunked",
      "--data-binary",
      "hello world",
      `http://127.0.0.1:${r.inbound}/p`,
    ]);
    assert.equal(chunked.status, 200);
    assert.ok(await eventually(() => jsonLines(r.stdout()).length >= 4));
    const [a, b, c, d] = jsonLines(r.stdout());
    assert.equal(d!.bytes_received, 11, "chunk framing is not body");
    // Envoy's BYTES_RECEIVED / BYTES_SENT: bodies, without the heads.
    assert.equal(a!.bytes_received, 0);
    assert.equal(a!.bytes_sent, new TextEncoder().encode(ok.body).length);
    assert.equal(c!.bytes_received, 11);
    for (const f of FIELDS) assert.ok(f in a!, `field ${f} in ${JSON.stringify(a)}`);
    assert.equal(a!.method, "GET");
    assert.equal(a!.path, "/a?b=c");
    assert.equal(a!.protocol, "HTTP/1.1");
    assert.equal(a!.response_code, 200);
    assert.equal(a!.response_flags, "-");
    assert.equal(a!.x_request_id, "req-1");
    assert.equal(a!.authority, `127.0.0.1:${r.inbound}`);
    assert.equal(a!.upstream_host, `127.0.0.1:${app.port}`);
    assert.equal(typeof a!.upstream_cluster, "string");
    assert.match(String(a!.downstream_remote_address), /^127\.0\.0\.1:\d+$/);
    assert.ok(typeof a!.bytes_sent === "number" && (a!.bytes_sent as number) > 0);
    assert.ok(!Number.isNaN(Date.parse(String(a!.start_time))));
    assert.equal(b!.response_code, 404);
    assert.match(String(b!.x_request_id), /^[0-9a-f-]{36}$/, "generated when absent");
    // Envoy's x-envoy-upstream-service-time: milliseconds, as the header's text.
    assert.match(String(a!.upstream_service_time), /^\d+$/);
    const slow = await curl([`http://127.0.0.1:${r.inbound}/delay/300`]);
    assert.equal(slow.status, 200);
    assert.ok(await eventually(() => jsonLines(r.stdout()).length >= 5));
    const e = jsonLines(r.stdout())[4]!;
    const upstream = Number(e.upstream_service_time);
    assert.ok(upstream >= 290 && upstream <= (e.duration as number), JSON.stringify(e));
  } finally {
    await r.stop();
    await app.close();
  }
});

Deno.test("access log: text lines in Envoy's default format", async () => {
  const app = await startUpstream("app");
  const r = await startRemora(["--app-port", String(app.port), "--access-log", "text"]);
  try {
    const res = await curl(["-A", "curl-test", `http://127.0.0.1:${r.inbound}/t`]);
    assert.equal(res.status, 200);
    const re =
      /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET \/t HTTP\/1\.1" 200 - \d+ \d+ \d+ \d+ "-" "curl-test" "[0-9a-f-]{36}" "127\.0\.0\.1:\d+" "127\.0\.0\.1:\d+"$/;
    assert.ok(
      await eventually(() => r.stdout().split("\n").some((l) => re.test(l))),
      r.stdout(),
    );
  } finally {
    await r.stop();
    await app.close();
  }
});

Deno.test("access log: a Telemetry accessLogging rule turns logs on, and disabled turns them off", async () => {
  const app = await startUpstream("app");
  const on = await writeConfig(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: logs }
spec:
  accessLogging:
  - providers: [{ name: envoy }]
`);
  const off = await writeConfig(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: logs }
spec:
  accessLogging:
  - disabled: true
`);
  const a = await startRemora(["--app-port", String(app.port), "--config", on]);
  const b = await startRemora([
    "--app-port",
    String(app.port),
    "--config",
    off,
    "--access-log",
    "json",
  ]);
  try {
    assert.equal((await curl([`http://127.0.0.1:${a.inbound}/on`])).status, 200);
    assert.equal((await curl([`http://127.0.0.1:${b.inbound}/off`])).status, 200);
    assert.ok(await eventually(() => /"GET \/on HTTP\/1\.1" 200/.test(a.stdout())), a.stdout());
    await new Promise((res) => setTimeout(res, 300));
    assert.ok(!b.stdout().includes("/off"), b.stdout());
  } finally {
    await a.stop();
    await b.stop();
    await app.close();
  }
});

Deno.test("access log: local replies are logged too (no route, REGISTRY_ONLY, admin port refused)", async () => {
  const cfg = await writeConfig(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default }
spec: { outboundTrafficPolicy: { mode: REGISTRY_ONLY } }
`);
  const r = await startRemora(["--config", cfg, "--access-log", "json"]);
  try {
    const blocked = await curl([
      "-x",
      `http://127.0.0.1:${r.outbound}`,
      "http://unknown.example/x",
    ]);
    assert.equal(blocked.status, 502);
    assert.ok(await eventually(() => jsonLines(r.stdout()).length >= 1));
    const [line] = jsonLines(r.stdout());
    assert.equal(line!.response_code, 502);
    assert.equal(line!.response_flags, "NR");
    assert.equal(line!.authority, "unknown.example");
    assert.equal(line!.path, "/x");
    assert.equal(line!.upstream_service_time, null, "no upstream answered");
    assert.match(String(line!.x_request_id), /^[0-9a-f-]{36}$/, "made before routing, as Envoy");
    const mine = await curl([
      "-x",
      `http://127.0.0.1:${r.outbound}`,
      "-H",
      "x-request-id: my-id-7",
      "http://unknown.example/y",
    ]);
    assert.equal(mine.status, 502);
    assert.ok(await eventually(() => jsonLines(r.stdout()).length >= 2));
    assert.equal(jsonLines(r.stdout())[1]!.x_request_id, "my-id-7");
  } finally {
    await r.stop();
  }
});

Deno.test("access log: HTTP/2 exchanges carry the upstream service time, to an HTTP/2 app and to an HTTP/1.1 one", async () => {
  const h2app = await startH2Upstream("h2app");
  const h1app = await startUpstream("h1app");
  const cfg = await writeConfig(serviceEntryYaml("h1svc", "h1.svc.test", [h1app.port]));
  const r = await startRemora([
    "--config",
    cfg,
    "--app-port",
    String(h2app.port),
    "--access-log",
    "json",
  ]);
  try {
    const toH2 = await curl(["--http2-prior-knowledge", `http://127.0.0.1:${r.inbound}/delay/200`]);
    assert.equal(toH2.status, 200, toH2.body);
    const toH1 = await curl([
      "--http2-prior-knowledge",
      "-H",
      "Host: h1.svc.test",
      `http://127.0.0.1:${r.outbound}/delay/200`,
    ]);
    assert.equal(toH1.status, 200, toH1.body);
    assert.ok(await eventually(() => jsonLines(r.stdout()).length >= 2));
    for (const e of jsonLines(r.stdout())) {
      assert.equal(e.protocol, "HTTP/2");
      const upstream = Number(e.upstream_service_time);
      assert.ok(upstream >= 190 && upstream <= (e.duration as number), JSON.stringify(e));
    }
  } finally {
    await r.stop();
    await h2app.close();
    await h1app.close();
  }
});

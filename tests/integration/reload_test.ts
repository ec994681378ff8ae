/**
 * Hot reload of the config file of a running `remora run`: a good change moves
 * traffic and shows in /config_dump; a bad change is refused (logged with its
 * field paths, counted in remora_config_reloads_total) while the last good
 * config keeps serving; a request in flight during a reload finishes.
 */

import assert from "node:assert/strict";
import {
  curl,
  eventually,
  get,
  parseMetrics,
  type Remora,
  startRemora,
  startUpstream,
  sumMetric,
  type Upstream,
} from "./harness.ts";

const HOST = "svc.example.internal";

/** A config routing HOST to one endpoint at `port` (a VirtualService adds a response header). */
function configFor(port: number, tag: string): string {
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
    labels: {app: svc}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
  namespace: shop
spec:
  hosts: [${HOST}]
  http:
  - headers:
      response:
        set: {x-config: ${tag}}
    route:
    - destination: {host: ${HOST}}
`;
}

interface Env {
  r: Remora;
  u1: Upstream;
  u2: Upstream;
  path: string;
  dir: string;
  /** Name of the upstream that answers a request for HOST now. */
  who(): Promise<string>;
  dump(): Promise<Record<string, unknown>>;
  reloads(result: string): Promise<number>;
}

async function withReload(fn: (e: Env) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-reload-" });
  const path = `${dir}/mesh.yaml`;
  let u1: Upstream | undefined;
  let u2: Upstream | undefined;
  let r: Remora | undefined;
  try {
    u1 = await startUpstream("u1");
    u2 = await startUpstream("u2");
    await Deno.writeTextFile(path, configFor(u1.port, "A"));
    r = await startRemora(["--config", path]);
    const rr = r;
    const who = async () => {
      const res = await curl(["-x", `http://127.0.0.1:${rr.outbound}`, `http://${HOST}/who`]);
      return res.status === 200 ? JSON.parse(res.body).server : `status ${res.status}`;
    };
    const dump = async () => JSON.parse((await get(rr.admin, "/config_dump")).body);
    const reloads = async (result: string) =>
      sumMetric(
        parseMetrics((await get(rr.stats, "/stats/prometheus")).body),
        "remora_config_reloads_total",
        { result },
      );
    await fn({ r, u1, u2, path, dir, who, dump, reloads });
  } finally {
    await r?.stop();
    await u1?.close();
    await u2?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("a changed config file moves traffic within 2s and shows in /config_dump", async () => {
  await withReload(async (e) => {
    assert.equal(await e.who(), "u1");
    const before = await e.dump();
    assert.equal(before.source, e.path);
    assert.match(String(before.version), /^[0-9a-f]{12}$/);
    assert.equal(await e.reloads("accepted"), 1, "the initial load counts as accepted");

    const t0 = Date.now();
    await Deno.writeTextFile(e.path, configFor(e.u2.port, "B"));
    const moved = await eventually(async () => (await e.who()) === "u2", 2000);
    assert.ok(moved, `traffic still on ${await e.who()} after 2s`);
    const took = Date.now() - t0;

    const after = await e.dump();
    assert.notEqual(after.version, before.version);
    assert.ok(
      Date.parse(String(after.loadedAt)) > Date.parse(String(before.loadedAt)),
      "loadedAt moved forward",
    );
    const text = JSON.stringify(after);
    assert.ok(text.includes(String(e.u2.port)), "the dump holds the new endpoint");
    assert.ok(!text.includes(`"port":${e.u1.port}`), "and not the old one");
    assert.equal(await e.reloads("accepted"), 2);
    const res = await curl(["-x", `http://127.0.0.1:${e.r.outbound}`, `http://${HOST}/h`]);
    assert.match(res.headers, /^x-config: B\r$/m);
    // The stats port names the active version too.
    const info = parseMetrics((await get(e.r.stats, "/stats/prometheus")).body)
      .filter((s) => s.name === "remora_config_info" && s.value === 1);
    assert.deepEqual(info.map((s) => s.labels.version), [after.version]);
    console.log(`reload took effect within ${took}ms`);

    // Editors that save by renaming a new file over the old one are seen too.
    await Deno.writeTextFile(`${e.dir}/.mesh.yaml.tmp`, configFor(e.u1.port, "C"));
    await Deno.rename(`${e.dir}/.mesh.yaml.tmp`, e.path);
    assert.ok(await eventually(async () => (await e.who()) === "u1", 2000), "rename seen");
  });
});

Deno.test("a broken config file is refused, counted and logged; the last good one serves", async () => {
  await withReload(async (e) => {
    await Deno.writeTextFile(e.path, configFor(e.u2.port, "B"));
    assert.ok(await eventually(async () => (await e.who()) === "u2", 2000));
    const good = await e.dump();
    const rejected = await e.reloads("rejected");
    assert.equal(rejected, 0);

    const broken = configFor(e.u1.port, "D")
      .replace("resolution: STATIC", "resolution: STATICC")
      .replace("labels: {app: svc}", "lables: {app: svc}");
    await Deno.writeTextFile(e.path, broken);
    assert.ok(
      await eventually(async () => (await e.reloads("rejected")) === rejected + 1, 3000),
      'remora_config_reloads_total{result="rejected"} went up by one',
    );
    // Both errors, each with its file, document and field path.
    const logged = await eventually(() =>
      e.r.stderr().includes("spec.resolution") && e.r.stderr().includes("spec.endpoints[0].lables")
    );
    assert.ok(logged, `stderr:\n${e.r.stderr()}`);
    const lines = e.r.stderr().split("\n");
    const line = lines.find((l) => l.includes("spec.endpoints[0].lables"))!;
    assert.ok(line.includes(e.path), line);
    assert.ok(line.includes("ServiceEntry svc"), line);
    assert.ok(lines.some((l) => l.includes("spec.resolution") && l.includes("STATICC")));

    // Still on B, same version.
    for (let i = 0; i < 5; i++) assert.equal(await e.who(), "u2");
    const still = await e.dump();
    assert.equal(still.version, good.version);
    assert.equal(await e.reloads("accepted"), 2);
    const errs = JSON.stringify(still.lastReloadErrors ?? "");
    assert.match(errs, /lables/, "/config_dump tells why the last change was refused");

    // A YAML syntax error is refused the same way.
    await Deno.writeTextFile(e.path, "apiVersion: [\n");
    assert.ok(await eventually(async () => (await e.reloads("rejected")) === rejected + 2, 3000));
    assert.equal(await e.who(), "u2");

    // Fixing the file is picked up again.
    await Deno.writeTextFile(e.path, configFor(e.u1.port, "E"));
    assert.ok(await eventually(async () => (await e.who()) === "u1", 2000));
  });
});

Deno.test("a request in flight during a reload completes on the config it started with", async () => {
  await withReload(async (e) => {
    const slow = curl(["-x", `http://127.0.0.1:${e.r.outbound}`, `http://${HOST}/delay/1500`]);
    // Reload once the request has reached the upstream.
    assert.ok(await eventually(() => e.u1.requests === 1, 2000));
    await Deno.writeTextFile(e.path, configFor(e.u2.port, "B"));
    assert.ok(await eventually(async () => (await e.who()) === "u2", 2000));
    const res = await slow;
    assert.equal(res.status, 200, res.body);
    assert.match(res.body, /delayed 1500 from u1/);
    assert.match(res.headers, /^x-config: A\r$/m, "response policy of the old config");
  });
});

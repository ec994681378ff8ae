/**
 * The control API in one process: a real ControlServer on 127.0.0.1:0 over
 * TLS, and the proxy's side (ControlChannel, ConfigStream, ControlAgent).
 * Covers what the integration test cannot provoke through `remora control`:
 * a snapshot the proxy refuses (NACK with every error, the last good config
 * kept, the server told), CSRs for another identity, missing tokens; plus
 * tokens files and --control URLs.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { loadConfigTexts } from "../config/source.ts";
import type { RuntimeConfig } from "../config/runtime.ts";
import { initCa, issueCert } from "../identity/ca.ts";
import { Metrics } from "../telemetry/metrics.ts";
import { MeshIdentity } from "../tls/mtls.ts";
import { ControlAgent } from "./agent.ts";
import { ControlCache } from "./cache.ts";
import { ControlChannel, ControlError } from "./client.ts";
import { newKeyAndCsr } from "./csr.ts";
import { ControlServer } from "./server.ts";
import { loadSnapshotDir, snapshotOf } from "./snapshot.ts";
import { parseControlUrl } from "./target.ts";
import { bearerToken, Tokens } from "./tokens.ts";

const TD = "cluster.local";

const GOOD = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: s }
spec:
  hosts: [s.mesh.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: 8080 } }]
`;

const BAD = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: s }
spec:
  hosts: [s.mesh.internal]
  http: [{ route: [{ destination: { host: s.mesh.internal, subset: nope } }], bogus: 1 }]
`;

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error("Timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function withServer(
  body: (s: { server: ControlServer; port: number; rootPem: string; dir: string }) => Promise<void>,
): Promise<void> {
  const ca = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
  const serverCert = await issueCert(ca, {
    id: `spiffe://${TD}/ns/istio-system/sa/remora-control`,
    ttlMs: 3_600_000,
  });
  const first = snapshotOf([{ name: "good.yaml", yaml: GOOD }], "test");
  assert.ok(first.ok);
  const server = new ControlServer({
    ca,
    serverCert,
    snapshot: first.snapshot,
    tokens: () => Promise.resolve(Tokens.parse("token-aaaa default a\n")),
    certTtlMs: 3_600_000,
    controlPlane: "test",
  });
  const dir = await Deno.makeTempDir({ prefix: "remora-control-unit-" });
  try {
    const port = await server.listen("127.0.0.1", 0);
    await body({ server, port, rootPem: ca.certPem, dir });
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("control: a snapshot the proxy refuses is NACKed with every error; the last good config stays", async () => {
  await withServer(async ({ server, port, rootPem, dir }) => {
    await Deno.writeTextFile(`${dir}/token`, "token-aaaa\n");
    const metrics = new Metrics();
    const agent = await ControlAgent.start({
      target: parseControlUrl(`https://127.0.0.1:${port}`),
      tokenFile: `${dir}/token`,
      rootCertPem: rootPem,
      cacheDir: `${dir}/cache`,
      workload: { namespace: "default", labels: {} },
      node: { id: "n1", namespace: "default", labels: {}, serviceAccount: "" },
      metrics,
      certTtlMs: 3_600_000,
    });
    try {
      assert.equal(agent.identity.spiffeId, `spiffe://${TD}/ns/default/sa/a`);
      const initial = loadConfigTexts([], "embedded default");
      assert.ok(initial.ok);
      let active: RuntimeConfig = initial.config;
      agent.run({
        mesh: new MeshIdentity(agent.identity),
        getConfig: () => active,
        setActive: (c) => active = c,
      });
      await until(() => active.version === server.snapshot.version);
      const good = active.version;
      await until(() => server.streams[0]?.ackedVersion === good);
      assert.equal(server.streams[0]?.node?.serviceAccount, "a");

      // The server is made to send a set the proxy's validator refuses.
      server.publish({ version: "bad-1", resources: [{ name: "bad.yaml", yaml: BAD }] });
      await until(() => server.streams[0]?.lastNack !== undefined);
      const nack = server.streams[0]!.lastNack!;
      assert.match(nack, /bad\.yaml: document 1 \(VirtualService s\)/);
      assert.match(nack, /bogus/);
      assert.equal(active.version, good);
      assert.equal(server.streams[0]?.ackedVersion, good);
      const d = agent.describe() as { stream: { lastNack: { version: string; error: string } } };
      assert.equal(d.stream.lastNack.version, "bad-1");
      assert.match(await metrics.render(), /remora_control_updates_total\{result="nack"\} 1/);

      // The next good set is applied and cached.
      const next = snapshotOf([{ name: "good.yaml", yaml: GOOD.replace("8080", "8081") }], "t");
      assert.ok(next.ok);
      server.publish(next.snapshot);
      await until(() => active.version === next.snapshot.version);
      await until(() => server.streams[0]?.lastNack === undefined);
      const cached = JSON.parse(await Deno.readTextFile(`${dir}/cache/config.json`));
      assert.equal(cached.version, next.snapshot.version);
      assert.equal((await Deno.stat(`${dir}/cache/key.pem`)).mode! & 0o777, 0o600);
    } finally {
      await agent.close();
    }
  });
});

Deno.test("control: CreateCertificate signs only the token's identity", async () => {
  await withServer(async ({ port, rootPem }) => {
    const ch = new ControlChannel(parseControlUrl(`https://127.0.0.1:${port}`), rootPem);
    try {
      const mine = await newKeyAndCsr(`spiffe://${TD}/ns/default/sa/a`);
      const chain = await ch.createCertificate("token-aaaa", mine.csrPem, 60);
      assert.equal(chain.length, 2);
      assert.equal(chain[1], rootPem);

      const other = await newKeyAndCsr(`spiffe://${TD}/ns/default/sa/admin`);
      await assert.rejects(ch.createCertificate("token-aaaa", other.csrPem, 60), (e) => {
        assert.ok(e instanceof ControlError);
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
        assert.match(e.message, /asks for url:spiffe:\/\/cluster\.local\/ns\/default\/sa\/admin/);
        return true;
      });
      await assert.rejects(ch.createCertificate("wrong-token", mine.csrPem, 60), (e) => {
        assert.ok(e instanceof ControlError && e.permanent);
        assert.equal(e.code, grpc.status.UNAUTHENTICATED);
        assert.match(e.message, /The bootstrap token is not valid/);
        return true;
      });
    } finally {
      ch.close();
    }
  });
});

Deno.test("control: the channel refuses a server outside the trust bundle", async () => {
  await withServer(async ({ port }) => {
    const other = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
    const ch = new ControlChannel(parseControlUrl(`https://127.0.0.1:${port}`), other.certPem);
    try {
      const csr = await newKeyAndCsr();
      await assert.rejects(ch.createCertificate("token-aaaa", csr.csrPem, 60, 3000), (e) => {
        assert.ok(e instanceof ControlError);
        assert.equal(e.code, grpc.status.UNAVAILABLE);
        return true;
      });
    } finally {
      ch.close();
    }
  });
});

Deno.test("control: tokens files and bearer tokens", () => {
  const t = Tokens.parse("# comment\n\ntoken-aaaa default a\ntoken-bbbb prod b  \n");
  assert.equal(t.size, 2);
  assert.deepEqual(t.lookup("token-bbbb"), { namespace: "prod", serviceAccount: "b" });
  assert.equal(t.lookup("token-bbb"), undefined);
  assert.throws(() => Tokens.parse("token-aaaa default\n", "f"), /f:1: expected TOKEN NAMESPACE/);
  assert.throws(() => Tokens.parse("short ns sa\n"), /shorter than 8/);
  assert.throws(() => Tokens.parse("token-aaaa ns/x sa\n"), /namespace "ns\/x"/);
  // One token, one identity: a second line with the same token is refused, naming both.
  assert.throws(
    () => Tokens.parse("token-aaaa default a\ntoken-aaaa kube-system admin\n", "f"),
    /f:2: the same token as line 1/,
  );
  assert.equal(bearerToken("Bearer abc"), "abc");
  assert.equal(bearerToken("bearer  abc "), "abc");
  assert.equal(bearerToken("Basic abc"), undefined);
  assert.equal(bearerToken(undefined), undefined);
});

Deno.test("control: --control URLs", () => {
  assert.deepEqual(parseControlUrl("https://10.0.0.1:15012"), {
    url: "https://10.0.0.1:15012",
    address: "10.0.0.1:15012",
  });
  assert.equal(parseControlUrl("https://control.mesh").address, "control.mesh:443");
  assert.throws(() => parseControlUrl("http://x:1"), /must start with https:\/\//);
  assert.throws(() => parseControlUrl("https://x:1/path"), /without a path/);
  assert.throws(() => parseControlUrl("x:1:2"), /not a URL|https/);
});

Deno.test("a config directory with an empty file (one being written) is refused, naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-snapshot-" });
  try {
    await Deno.writeTextFile(`${dir}/good.yaml`, GOOD);
    await Deno.writeTextFile(`${dir}/policy.yaml`, "");
    const r = await loadSnapshotDir(dir);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.deepEqual(r.errors.map((e) => e.file), ["policy.yaml"]);
      assert.match(r.errors[0]!.message, /the file is empty/);
    }
    // A broken file beside it is reported too, not hidden behind the empty one.
    await Deno.writeTextFile(`${dir}/zz-broken.yaml`, "kind: Nope\n");
    const both = await loadSnapshotDir(dir);
    assert.equal(both.ok, false);
    if (!both.ok) {
      assert.deepEqual([...new Set(both.errors.map((e) => e.file))], [
        "policy.yaml",
        "zz-broken.yaml",
      ]);
    }
    await Deno.remove(`${dir}/zz-broken.yaml`);
    await Deno.writeTextFile(`${dir}/policy.yaml`, "# nothing yet\n");
    const ok = await loadSnapshotDir(dir);
    assert.equal(ok.ok, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt cached config is not used, and the log says why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-cache-" });
  const lines: string[] = [];
  const original = console.error;
  console.error = (s: string) => lines.push(s);
  try {
    const cache = new ControlCache(dir);
    assert.equal(await cache.readConfig(), undefined, "none yet");
    assert.deepEqual(lines, [], "an absent cache is not worth a warning");
    await Deno.writeTextFile(`${dir}/config.json`, '{"url": "https://x", "vers');
    assert.equal(await cache.readConfig(), undefined);
    assert.match(lines.join("\n"), /the cached config is corrupt; it is not used.*config\.json/);
  } finally {
    console.error = original;
    await Deno.remove(dir, { recursive: true });
  }
});

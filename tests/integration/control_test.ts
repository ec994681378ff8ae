/**
 * The control endpoint as users run it: a real `remora control` process
 * serving a directory and signing CSRs, and real `remora run --control`
 * proxies. Proxy A reaches proxy B's inbound over mTLS with the certificates
 * the control server issued (A's ServiceEntry endpoint names B's service
 * account). Checked: a change in the directory reaches both proxies' /config_dump within
 * a second and changes traffic; a bad change is refused by the server and
 * traffic keeps its routes; with the control server killed traffic keeps
 * flowing, and once it is back the proxies resync; a short-lived
 * certificate is renewed (the serial openssl sees on the inbound port
 * changes); a proxy restarted with --cache-dir while control is down serves
 * its cached config; a wrong token gets no certificate and a clear error;
 * conflicting flags are usage errors. Everything listens on 127.0.0.1;
 * every process is stopped and the temp dir removed in `finally`.
 */

import assert from "node:assert/strict";
import { initCa, writeCa } from "../../src/identity/ca.ts";
import {
  type Echo,
  exec,
  type Remora,
  runCommand,
  startRemora,
  startUpstream,
  type Upstream,
} from "./harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TD = "cluster.local";

interface Control {
  port: number;
  stderr(): string;
  stop(): Promise<void>;
}

/** Starts `remora control` and waits for its "control listening on" line. */
async function startControl(args: string[], timeoutMs = 30_000): Promise<Control> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, "control", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  let err = "";
  let out = "";
  const dec = new TextDecoder();
  (async () => {
    for await (const c of child.stderr) err += dec.decode(c, { stream: true });
  })().catch(() => {});
  const seen = Promise.withResolvers<number>();
  (async () => {
    for await (const c of child.stdout) {
      out += dec.decode(c, { stream: true });
      const m = /remora: control listening on [^\s]*:(\d+)/.exec(out);
      if (m !== null) seen.resolve(Number(m[1]));
    }
    seen.reject(new Error(`remora control exited before listening:\n${err}`));
  })().catch(() => {});
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const port = await Promise.race([
      seen.promise,
      new Promise<never>((_, rej) => {
        timer = setTimeout(
          () => rej(new Error(`remora control did not start:\n${err}`)),
          timeoutMs,
        );
      }),
    ]);
    return { port, stderr: () => err, stop };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

interface Dump {
  version: string;
  source: string;
  control: {
    url: string;
    stream: {
      state: string;
      acceptedVersion: string | null;
      lastAck: { version: string } | null;
      lastNack: { version: string; error: string } | null;
      lastError: { message: string } | null;
    };
    certificate: { identity: string; serial: string; from: string };
  };
}

async function dump(r: Remora): Promise<Dump> {
  const res = await fetch(`http://127.0.0.1:${r.admin}/config_dump`);
  return await res.json() as Dump;
}

/** Polls `check` every 50ms until it holds; returns the milliseconds it took. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs: number) {
  const start = Date.now();
  for (;;) {
    if (await check().catch(() => false)) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`Timed out after ${timeoutMs}ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** GET through a proxy's outbound listener; the echo upstream's JSON, or the status. */
async function get(
  r: Remora,
  url: string,
): Promise<{ status: number; echo?: Echo; body: string }> {
  const out = await exec("curl", [
    "-s",
    "--max-time",
    "10",
    "-w",
    "\n%{http_code}",
    "-x",
    `http://127.0.0.1:${r.outbound}`,
    url,
  ], { timeoutMs: 15_000 });
  const nl = out.stdout.lastIndexOf("\n");
  const body = out.stdout.slice(0, nl);
  const status = Number(out.stdout.slice(nl + 1));
  try {
    return { status, echo: JSON.parse(body) as Echo, body };
  } catch {
    return { status, body };
  }
}

/** The serial number of the certificate a proxy's inbound port presents to mesh TLS. */
async function inboundSerial(r: Remora): Promise<string> {
  const s = await exec("openssl", [
    "s_client",
    "-connect",
    `127.0.0.1:${r.inbound}`,
    "-alpn",
    "istio",
    "-servername",
    "outbound_.80_._.b.mesh.internal",
  ], { timeoutMs: 10_000, stdin: new Uint8Array() });
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(s.stdout)?.[0];
  assert.ok(pem !== undefined, `no certificate from openssl s_client:\n${s.stdout}${s.stderr}`);
  const x = await exec("openssl", ["x509", "-noout", "-serial"], {
    stdin: new TextEncoder().encode(pem),
  });
  return x.stdout.trim().replace(/^serial=/, "").toLowerCase();
}

function serviceB(port: number): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: b }
spec:
  hosts: [b.mesh.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: ${port} }, serviceAccount: b }]
`;
}

function routeB(value: string): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: b }
spec:
  hosts: [b.mesh.internal]
  http:
    - route: [{ destination: { host: b.mesh.internal } }]
      headers: { request: { set: { x-route: "${value}" } } }
`;
}

const BAD_ROUTE = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: b }
spec:
  hosts: [b.mesh.internal]
  http:
    - route: [{ destination: { host: b.mesh.internal }, weight: 120 }]
      retries: { attempts: 2, retryOn: "bogus-condition" }
`;

const BASE = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: placeholder }
spec:
  hosts: [placeholder.mesh.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: 9 } }]
`;

/** Writes a file by rename, as editors and config management do. */
async function put(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

Deno.test("control: config pushes, refusals, outage, resync, renewal and cache with two mTLS proxies", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-control-it-" });
  const procs: Array<{ stop(): Promise<void> }> = [];
  let app: Upstream | undefined;
  let control: Control | undefined;
  try {
    await writeCa(`${dir}/ca`, await initCa({ trustDomain: TD, ttlMs: 24 * 3_600_000 }));
    await Deno.mkdir(`${dir}/cfg`);
    await put(`${dir}/cfg/00-base.yaml`, BASE);
    await Deno.writeTextFile(
      `${dir}/tokens`,
      "# token namespace service-account\ntoken-for-a default a\ntoken-for-b default b\n" +
        "token-for-c default c\n",
    );
    for (const w of ["a", "b", "c"]) {
      await Deno.writeTextFile(`${dir}/token-${w}`, `token-for-${w}\n`);
    }
    const controlArgs = [
      "--config-dir",
      `${dir}/cfg`,
      "--ca",
      `${dir}/ca`,
      "--tokens",
      `${dir}/tokens`,
    ];
    control = await startControl([...controlArgs, "--listen", "127.0.0.1:0"]);
    const port = control.port;
    const url = `https://127.0.0.1:${port}`;
    const proxyArgs = (w: string) => [
      "--control",
      url,
      "--token-file",
      `${dir}/token-${w}`,
      "--root-cert",
      `${dir}/ca/root-cert.pem`,
      "--workload",
      w,
      "--labels",
      `app=${w}`,
    ];

    app = await startUpstream("app-b");
    const b = await startRemora([...proxyArgs("b"), "--app-port", String(app.port)]);
    procs.push(b);
    let a = await startRemora([...proxyArgs("a"), "--cache-dir", `${dir}/cache-a`]);
    procs.push(a);

    // Both connect and apply the first snapshot; identities come from the tokens.
    for (const [p, sa] of [[a, "a"], [b, "b"]] as const) {
      await until(
        `${sa} connected`,
        async () => (await dump(p)).control.stream.state === "connected",
        10_000,
      );
      const d = await dump(p);
      assert.equal(d.control.url, url);
      assert.equal(d.source, `control ${url}`);
      assert.equal(d.control.certificate.identity, `spiffe://${TD}/ns/default/sa/${sa}`);
    }
    const first = (await dump(a)).version;

    // 1. A change reaches both proxies within a second and changes traffic (A → B over mTLS).
    assert.notEqual((await get(a, "http://b.mesh.internal/echo")).echo?.server, "app-b");
    await put(`${dir}/cfg/10-b.yaml`, serviceB(b.inbound) + "---\n" + routeB("one"));
    const took = await until("both proxies on the new version", async () => {
      const [da, db] = [await dump(a), await dump(b)];
      return da.version !== first && da.version === db.version;
    }, 1000);
    console.log(`config change visible in both /config_dump after ${took}ms`);
    const v1 = (await dump(a)).version;
    const r1 = await get(a, "http://b.mesh.internal/echo");
    assert.equal(r1.status, 200, r1.body);
    assert.equal(r1.echo?.server, "app-b");
    assert.equal(r1.echo?.headers["x-route"], "one");
    assert.match(
      String(r1.echo?.headers["x-forwarded-client-cert"]),
      new RegExp(`URI=spiffe://${TD}/ns/default/sa/a`),
    );

    // 2. A bad change is refused by the server (every error logged); proxies and traffic keep v1.
    await put(`${dir}/cfg/10-b.yaml`, serviceB(b.inbound) + "---\n" + BAD_ROUTE);
    await until(
      "the server refuses the change",
      () => Promise.resolve(/config change refused/.test(control!.stderr())),
      5_000,
    );
    assert.match(control.stderr(), /weight/);
    assert.match(control.stderr(), /retryOn/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await dump(a)).version, v1);
    assert.equal((await dump(b)).version, v1);
    assert.equal((await get(a, "http://b.mesh.internal/echo")).echo?.headers["x-route"], "one");

    // 3. The control server killed: the proxies say so and traffic keeps flowing over mTLS.
    await control.stop();
    control = undefined;
    for (const p of [a, b]) {
      await until(
        "stream reconnecting",
        async () => (await dump(p)).control.stream.state === "reconnecting",
        5_000,
      );
    }
    const outage = await dump(a);
    assert.ok(outage.control.stream.lastError !== null);
    assert.equal(outage.version, v1);
    const r2 = await get(a, "http://b.mesh.internal/echo");
    assert.equal(r2.status, 200, r2.body);
    assert.equal(r2.echo?.headers["x-route"], "one");

    // 4. Restarted (with the good change in place): the proxies resync and a new change arrives.
    await put(`${dir}/cfg/10-b.yaml`, serviceB(b.inbound) + "---\n" + routeB("two"));
    control = await startControl([...controlArgs, "--listen", `127.0.0.1:${port}`]);
    await until("both proxies resynced", async () => {
      const [da, db] = [await dump(a), await dump(b)];
      return da.version !== v1 && da.version === db.version &&
        da.control.stream.state === "connected";
    }, 15_000);
    assert.equal((await get(a, "http://b.mesh.internal/echo")).echo?.headers["x-route"], "two");
    await put(`${dir}/cfg/10-b.yaml`, serviceB(b.inbound) + "---\n" + routeB("three"));
    await until(
      "the next change after the restart",
      async () =>
        (await get(a, "http://b.mesh.internal/echo")).echo?.headers["x-route"] === "three",
      5_000,
    );
    const v3 = (await dump(a)).version;

    // 5. A short-lived certificate (6s) is renewed at about half its life: the inbound serial changes.
    const c = await startRemora([...proxyArgs("c"), "--cert-ttl", "6s", "--namespace", "prod"]);
    procs.push(c);
    // Its token stands for default/c: the certificate's namespace is not --namespace.
    assert.match(c.stderr(), /the identity's namespace is not --namespace/);
    const serial1 = await inboundSerial(c);
    assert.equal(serial1, (await dump(c)).control.certificate.serial.toLowerCase());
    await until(
      "the certificate renewed",
      async () => (await inboundSerial(c)) !== serial1,
      10_000,
    );
    // The token moves to another service account: the next renewal gets that identity.
    await Deno.writeTextFile(
      `${dir}/tokens`,
      (await Deno.readTextFile(`${dir}/tokens`)).replace(
        "token-for-c default c\n",
        "token-for-c default c2\n",
      ),
    );
    await until(
      "the identity moved with the token",
      async () =>
        (await dump(c)).control.certificate.identity === `spiffe://${TD}/ns/default/sa/c2`,
      10_000,
    );
    assert.match(c.stderr() + c.stdout(), /the bootstrap token stands for another identity now/);
    const renewals = await (await fetch(`http://127.0.0.1:${c.stats}/stats/prometheus`)).text();
    assert.match(renewals, /remora_control_cert_renewals_total\{result="success"\} [2-9]/);
    assert.match(renewals, /remora_control_stream_state 1/);
    assert.match(renewals, /remora_control_updates_total\{result="ack"\} [1-9]/);

    // 6. A restarted with its cache while control is down: it serves the cached config and cert.
    await control.stop();
    control = undefined;
    await a.stop();
    procs.splice(procs.indexOf(a), 1);
    a = await startRemora([...proxyArgs("a"), "--cache-dir", `${dir}/cache-a`]);
    procs.push(a);
    const cached = await dump(a);
    assert.equal(cached.version, v3);
    assert.match(cached.source, /^cache /);
    assert.equal(cached.control.certificate.from, "cache");
    assert.notEqual(cached.control.stream.state, "connected");
    const r3 = await get(a, "http://b.mesh.internal/echo");
    assert.equal(r3.status, 200, r3.body);
    assert.equal(r3.echo?.headers["x-route"], "three");
    const keyMode = (await Deno.stat(`${dir}/cache-a/key.pem`)).mode! & 0o777;
    assert.equal(keyMode, 0o600);
  } finally {
    for (const p of procs) await p.stop();
    await control?.stop();
    await app?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("control: a wrong bootstrap token gets no certificate and a clear error; bad flags are usage errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-control-it-" });
  let control: Control | undefined;
  try {
    await writeCa(`${dir}/ca`, await initCa({ trustDomain: TD, ttlMs: 3_600_000 }));
    await Deno.mkdir(`${dir}/cfg`);
    await put(`${dir}/cfg/base.yaml`, BASE);
    await Deno.writeTextFile(`${dir}/tokens`, "token-for-a default a\n");
    await Deno.writeTextFile(`${dir}/wrong`, "not-the-token\n");
    control = await startControl([
      "--config-dir",
      `${dir}/cfg`,
      "--ca",
      `${dir}/ca`,
      "--tokens",
      `${dir}/tokens`,
      "--listen",
      "127.0.0.1:0",
    ]);
    const remora = (...args: string[]) =>
      runCommand(Deno.execPath(), ["run", "-A", `${ROOT}main.ts`, "run", ...args], {
        cwd: ROOT,
        timeoutMs: 30_000,
      });
    const common = ["--root-cert", `${dir}/ca/root-cert.pem`, "--admin-port", "0"];
    /** A proxy of this control server, with the token in `tokenFile`. */
    const proxyWith = (tokenFile: string, ...extra: string[]) =>
      remora(
        "--control",
        `https://127.0.0.1:${control!.port}`,
        "--token-file",
        `${dir}/${tokenFile}`,
        ...extra,
        ...common,
      );
    const wrong = await proxyWith("wrong");
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /refused the certificate request/);
    assert.match(wrong.stderr, /UNAUTHENTICATED: The bootstrap token is not valid/);
    assert.match(control.stderr(), /certificate refused/);
    // --control-id names the server's identity: the right one gets as far as the token.
    const named = await proxyWith(
      "wrong",
      "--control-id",
      `spiffe://${TD}/ns/istio-system/sa/remora-control`,
    );
    assert.equal(named.code, 1, named.stderr);
    assert.match(named.stderr, /UNAUTHENTICATED: The bootstrap token is not valid/);
    const badId = await proxyWith("wrong", "--control-id", "istiod");
    assert.equal(badId.code, 2, badId.stderr);
    assert.match(badId.stderr, /Flag --control-id: /);
    // Two tokens in the file: refused at once, and neither is printed.
    await Deno.writeTextFile(`${dir}/two`, "token-secret-one\ntoken-secret-two\n");
    const two = await proxyWith("two");
    assert.equal(two.code, 1, two.stderr);
    assert.match(two.stderr, /holds more than one token/);
    assert.doesNotMatch(two.stderr + two.stdout, /token-secret/);

    const both = await remora("--control", "https://127.0.0.1:1", "--config", "x.yaml");
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--control and --config cannot be used together/);
    const id = await remora("--control", "https://127.0.0.1:1", "--identity-dir", dir);
    assert.equal(id.code, 2);
    assert.match(id.stderr, /--control and --identity-dir cannot be used together/);
    const plain = await remora("--control", "http://127.0.0.1:1", "--token-file", "t");
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /must start with https:\/\//);
  } finally {
    await control?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/**
 * A control server that signs certificates but holds back config until told:
 * a control plane that is slow or stuck after the proxy got its identity.
 */
async function startSilentControl(dir: string) {
  const grpc = await import("@grpc/grpc-js");
  const { certificateService, configDiscoveryService } = await import(
    "../../src/control/api.ts"
  );
  const { issueCert, loadCa, signCsr } = await import("../../src/identity/ca.ts");
  const ca = await loadCa(`${dir}/ca`);
  const serverCert = await issueCert(ca, {
    id: `spiffe://${TD}/ns/istio-system/sa/remora-control`,
    ttlMs: 3_600_000,
  });
  const streams: Array<{ write(m: unknown): void; end(): void }> = [];
  const server = new grpc.Server();
  server.addService(configDiscoveryService(), {
    // deno-lint-ignore no-explicit-any
    streamConfig: (call: any) => {
      streams.push(call);
      call.on("data", () => {});
      call.on("error", () => {});
    },
  });
  server.addService(certificateService(), {
    // deno-lint-ignore no-explicit-any
    createCertificate: (call: any, done: any) => {
      signCsr(ca, call.request.csr, { id: `spiffe://${TD}/ns/default/sa/b`, ttlMs: 3_600_000 })
        .then((c) => done(null, { certChain: [c.certChainPem, ca.certPem] }), (e) => done(e));
    },
  });
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{
    cert_chain: Buffer.from(serverCert.certChainPem),
    private_key: Buffer.from(serverCert.keyPem),
  }], false);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (e, p) => e ? reject(e) : resolve(p))
  );
  return {
    port,
    streams,
    push(yaml: string): void {
      for (const s of streams) {
        s.write({ versionInfo: "v1", resources: [{ name: "base.yaml", yaml }], nonce: "n1" });
      }
    },
    stop(): void {
      for (const s of streams) s.end();
      server.forceShutdown();
    },
  };
}

Deno.test("control: until the first config arrives the proxy is not ready and inbound serves nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-control-wait-" });
  let control: Awaited<ReturnType<typeof startSilentControl>> | undefined;
  let app: Upstream | undefined;
  let b: Remora | undefined;
  try {
    await writeCa(`${dir}/ca`, await initCa({ trustDomain: TD, ttlMs: 3_600_000 }));
    await Deno.writeTextFile(`${dir}/token`, "any\n");
    control = await startSilentControl(dir);
    app = await startUpstream("app-b");
    b = await startRemora([
      "--control",
      `https://127.0.0.1:${control.port}`,
      "--token-file",
      `${dir}/token`,
      "--root-cert",
      `${dir}/ca/root-cert.pem`,
      "--app-port",
      String(app.port),
    ]);
    const ready = async () => {
      const r = await fetch(`http://127.0.0.1:${b!.health}/healthz/ready`);
      await r.body?.cancel();
      return r.status;
    };
    await until(
      "the config stream is open",
      () => Promise.resolve(control!.streams.length > 0),
      10_000,
    );
    assert.equal(await ready(), 503, "not ready before any config");
    // The app is not reachable through the inbound port meanwhile (the embedded default has no policy).
    const early = await exec("curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://127.0.0.1:${b.inbound}/echo`,
    ]);
    assert.equal(early.stdout, "000", "the connection is closed unanswered");
    assert.equal(app.requests, 0);

    control.push(BASE);
    await until("ready once the config is applied", async () => (await ready()) === 200, 10_000);
    const r = await fetch(`http://127.0.0.1:${b.inbound}/echo`);
    assert.equal(r.status, 200, await r.text());
    assert.equal(app.requests, 1);
  } finally {
    await b?.stop();
    await app?.close();
    control?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("control: a ConfigMap-style ..data swap is published; a dangling link is refused; an empty directory is warned about", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-control-dir-" });
  let control: Control | undefined;
  try {
    await writeCa(`${dir}/ca`, await initCa({ trustDomain: TD, ttlMs: 3_600_000 }));
    // An empty directory: served, with a warning that proxies get no policies.
    await Deno.mkdir(`${dir}/empty`);
    const empty = await startControl([
      "--config-dir",
      `${dir}/empty`,
      "--ca",
      `${dir}/ca`,
      "--listen",
      "127.0.0.1:0",
    ]);
    await empty.stop();
    assert.match(empty.stderr(), /holds no config files: proxies get no services and no policies/);

    // A Kubernetes ConfigMap volume: files are links through ..data to a timestamped directory.
    const cm = `${dir}/cm`;
    await Deno.mkdir(`${cm}/..v1`, { recursive: true });
    await Deno.writeTextFile(`${cm}/..v1/base.yaml`, BASE);
    await Deno.symlink("..v1", `${cm}/..data`);
    await Deno.symlink("..data/base.yaml", `${cm}/base.yaml`);
    control = await startControl([
      "--config-dir",
      cm,
      "--ca",
      `${dir}/ca`,
      "--listen",
      "127.0.0.1:0",
    ]);
    const published = () => (control!.stderr().match(/config published/g) ?? []).length;
    // The kubelet's update: a new directory, ..data swapped to it by rename, the old one gone.
    await Deno.mkdir(`${cm}/..v2`);
    await Deno.writeTextFile(`${cm}/..v2/base.yaml`, BASE.replace("{ http: 9 }", "{ http: 10 }"));
    await Deno.symlink("..v2", `${cm}/..data_tmp`);
    await Deno.rename(`${cm}/..data_tmp`, `${cm}/..data`);
    await Deno.remove(`${cm}/..v1`, { recursive: true });
    await until("the swap is published", () => Promise.resolve(published() === 1), 10_000);

    // A file that became a link to nothing: the set is refused, the last good one stays.
    await Deno.symlink(`${dir}/nowhere.yaml`, `${cm}/extra.yaml`);
    await until(
      "the dangling link is refused",
      () => Promise.resolve(/symbolic link to a file that does not exist/.test(control!.stderr())),
      10_000,
    );
    assert.match(
      control.stderr(),
      /config change refused; the last good snapshot keeps being served/,
    );
    assert.equal(published(), 1);
  } finally {
    await control?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

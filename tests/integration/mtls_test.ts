/**
 * mTLS between two remoras with real peers: A's outbound originates mTLS to
 * B's inbound (a ServiceEntry endpoint with a serviceAccount), B terminates
 * it and forwards to the app. openssl s_client and curl knock on B's inbound
 * port with and without certificates, with a certificate from another CA and
 * with an expired one; B's identity is rotated while a request is in flight.
 */

import assert from "node:assert/strict";
import { type Ca, initCa, issueCert, writeIssued } from "../../src/identity/ca.ts";
import {
  curl,
  type Echo,
  eventually,
  type Remora,
  startRemora,
  startUpstream,
  type Upstream,
  writeConfig,
} from "./harness.ts";

const TD = "cluster.local";
const HOUR = 3_600_000;

async function identityDir(
  ca: Ca,
  sa: string,
  opts: { ttlMs?: number; now?: Date } = {},
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `remora-id-${sa}-` });
  const issued = await issueCert(ca, {
    id: `spiffe://${TD}/ns/default/sa/${sa}`,
    ttlMs: opts.ttlMs ?? HOUR,
    ...(opts.now ? { now: opts.now } : {}),
  });
  await writeIssued(dir, issued);
  return dir;
}

/**
 * A certificate from `ca` made by openssl with the extensions `ext` (one per
 * line), as cert-chain.pem and key.pem in a new directory.
 */
async function opensslCert(ca: Ca, ext: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "remora-odd-" });
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  await Deno.writeTextFile(`${dir}/ca.key`, ca.keyPem);
  await Deno.writeTextFile(`${dir}/leaf.ext`, ext + "\n");
  const sh =
    `openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr -subj /O=odd 2>/dev/null && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert-chain.pem -days 1 -extfile leaf.ext 2>/dev/null`;
  const out = await new Deno.Command("bash", { args: ["-c", sh], cwd: dir }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return dir;
}

function meshConfig(port: number, serviceAccount: string): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: b }
spec:
  hosts: [b.mesh.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: ${port} }, serviceAccount: ${serviceAccount} }]
`;
}

interface Pair {
  ca: Ca;
  app: Upstream;
  a: Remora;
  b: Remora;
  dirs: { a: string; b: string };
}

async function withPair(
  opts: { expectSa?: string; bArgs?: string[] },
  body: (p: Pair) => Promise<void>,
): Promise<void> {
  const ca = await initCa({ trustDomain: TD, ttlMs: 24 * HOUR });
  const dirs = { a: await identityDir(ca, "a"), b: await identityDir(ca, "b") };
  let app: Upstream | undefined;
  let a: Remora | undefined;
  let b: Remora | undefined;
  try {
    app = await startUpstream("app-b");
    b = await startRemora([
      "--identity-dir",
      dirs.b,
      "--app-port",
      String(app.port),
      ...(opts.bArgs ?? []),
    ]);
    const cfg = await writeConfig(meshConfig(b.inbound, opts.expectSa ?? "b"));
    a = await startRemora(["--identity-dir", dirs.a, "--config", cfg]);
    await body({ ca, app, a, b, dirs });
  } finally {
    await a?.stop();
    await b?.stop();
    await app?.close();
    for (const d of Object.values(dirs)) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

async function run(
  cmd: string,
  args: string[],
  stdin = "",
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(stdin));
  await w.close();
  const timer = setTimeout(() => child.kill(), 15_000);
  const o = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

async function curlThrough(
  a: Remora,
  extra: string[] = [],
): Promise<{ status: number; body: string }> {
  const r = await run("curl", [
    "-sS",
    "--max-time",
    "10",
    "-w",
    "\n%{http_code}",
    "-x",
    `http://127.0.0.1:${a.outbound}`,
    ...extra,
    "http://b.mesh.internal/echo",
  ]);
  const nl = r.out.lastIndexOf("\n");
  return { status: Number(r.out.slice(nl + 1)), body: r.out.slice(0, nl) };
}

async function scrape(port: number): Promise<string> {
  return await (await fetch(`http://127.0.0.1:${port}/stats/prometheus`)).text();
}

Deno.test("mtls: A's outbound reaches B's inbound over mTLS; identities reach metrics and the app", async () => {
  await withPair({}, async ({ a, b }) => {
    const r = await curlThrough(a, [
      "-H",
      "x-forwarded-client-cert: By=forged;URI=spiffe://evil/sa/root",
    ]);
    assert.equal(r.status, 200, r.body + a.stderr());
    const echo = JSON.parse(r.body) as Echo;
    // The app learns who called, from B; the client's own value never gets through.
    assert.equal(
      echo.headers["x-forwarded-client-cert"],
      `By=spiffe://${TD}/ns/default/sa/b;Hash=${
        (echo.headers["x-forwarded-client-cert"] as string).match(/Hash=([0-9a-f]{64})/)?.[1]
      };Subject="";URI=spiffe://${TD}/ns/default/sa/a`,
    );
    const atB = await scrape(b.stats);
    assert.match(
      atB,
      /istio_requests_total\{reporter="destination",[^}]*source_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/a"[^}]*destination_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/b"[^}]*connection_security_policy="mutual_tls"[^}]*\} 1/,
    );
    const atA = await scrape(a.stats);
    assert.match(
      atA,
      /istio_requests_total\{reporter="source",[^}]*source_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/a"[^}]*destination_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/b"/,
    );
  });
});

Deno.test("mtls: auto mTLS sends plaintext where the endpoint's PeerAuthentication is DISABLE or its tlsMode label says disabled", async () => {
  const disable = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: b-plain, namespace: default }
spec:
  selector: { matchLabels: { app: b } }
  mtls: { mode: DISABLE }
`;
  const bConfig = await writeConfig(disable);
  await withPair({ bArgs: ["--config", bConfig, "--labels", "app=b"] }, async ({ a, b, dirs }) => {
    // A second A, whose config knows B's policy and labels, as Istio's control plane would.
    const se = (host: string, labels: string) =>
      `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${host.split(".")[0]}, namespace: default }
spec:
  hosts: [${host}]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { http: ${b.inbound} }, serviceAccount: b, labels: ${labels} }]
`;
    const cfg = await writeConfig(
      disable + se("b1.mesh.internal", "{ app: b }") +
        se("b2.mesh.internal", "{ security.istio.io/tlsMode: disabled }"),
    );
    const a2 = await startRemora(["--identity-dir", dirs.a, "--config", cfg]);
    try {
      for (const host of ["b1.mesh.internal", "b2.mesh.internal"]) {
        const r = await curl(["-x", `http://127.0.0.1:${a2.outbound}`, `http://${host}/x`]);
        assert.equal(r.status, 200, `${host}: ${r.body} ${a2.stderr()}`);
      }
      // The first A, which does not know B's policy, still speaks mTLS, which B refuses.
      assert.equal((await curlThrough(a)).status, 503);
      const atB = await scrape(b.stats);
      assert.match(
        atB,
        /istio_requests_total\{reporter="destination",[^}]*connection_security_policy="none"[^}]*\} 2/,
      );
    } finally {
      await a2.stop();
    }
  });
});

Deno.test("mtls: a retired root left in both bundles beside the valid one: the pair still talks, and each warns", async () => {
  const ca = await initCa({ trustDomain: TD, ttlMs: 24 * HOUR });
  const past = new Date(Date.now() - 3 * HOUR);
  const retired = await initCa({ trustDomain: TD, ttlMs: HOUR, now: past });
  const dirs = { a: await identityDir(ca, "a"), b: await identityDir(ca, "b") };
  for (const d of Object.values(dirs)) {
    await Deno.writeTextFile(`${d}/root-cert.pem`, retired.certPem + ca.certPem);
  }
  const app = await startUpstream("app-b");
  let a: Remora | undefined;
  let b: Remora | undefined;
  try {
    b = await startRemora(["--identity-dir", dirs.b, "--app-port", String(app.port)]);
    a = await startRemora([
      "--identity-dir",
      dirs.a,
      "--config",
      await writeConfig(meshConfig(b.inbound, "b")),
    ]);
    const r = await curlThrough(a);
    assert.equal(r.status, 200, r.body + a.stderr());
    for (const s of [a, b]) {
      assert.match(s.stderr() + s.stdout(), /root-cert\.pem: certificate 1 .* expired at/);
    }
  } finally {
    await a?.stop();
    await b?.stop();
    await app.close();
    for (const d of Object.values(dirs)) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});

Deno.test("mtls: a server with the wrong SPIFFE ID fails the request with 503, never plaintext", async () => {
  await withPair({ expectSa: "payments" }, async ({ a, app }) => {
    const r = await curlThrough(a);
    assert.equal(r.status, 503);
    assert.match(
      r.body,
      /expected spiffe:\/\/cluster\.local\/ns\/default\/sa\/payments, presented spiffe:\/\/cluster\.local\/ns\/default\/sa\/b/,
    );
    assert.match(
      a.stderr(),
      /expected spiffe:\/\/cluster\.local\/ns\/default\/sa\/payments, presented spiffe:\/\/cluster\.local\/ns\/default\/sa\/b/,
    );
    assert.equal(app.requests, 0, "nothing reached the app");
    // Each refused upstream handshake is counted (the default retries tried it 3 times).
    assert.match(
      await scrape(a.stats),
      /^remora_tls_handshake_failures_total\{side="outbound"\} [1-9]/m,
    );
  });
});

Deno.test("mtls: openssl and curl against B's inbound port: only certificates of the mesh get through", async () => {
  await withPair({}, async ({ ca, b, dirs }) => {
    const other = await initCa({ trustDomain: TD, ttlMs: HOUR });
    const stranger = await identityDir(other, "a");
    const id = (sa: string) => `URI:spiffe://${TD}/ns/default/sa/${sa}`;
    // Signed by the mesh's CA, but for servers only, or naming two identities.
    const serverOnly = await opensslCert(
      ca,
      `subjectAltName=${id("a")}\nextendedKeyUsage=serverAuth`,
    );
    const twoIds = await opensslCert(ca, `subjectAltName=${id("a")},${id("admin")}`);
    const expired = await identityDir(
      await initCa({ trustDomain: TD, ttlMs: 24 * HOUR, now: new Date(Date.now() - 12 * HOUR) }),
      "a",
      {
        now: new Date(Date.now() - 3 * HOUR),
        ttlMs: HOUR,
      },
    );
    try {
      const hello = (certDir: string | undefined) =>
        run("openssl", [
          "s_client",
          "-connect",
          `127.0.0.1:${b.inbound}`,
          "-alpn",
          "istio-http/1.1",
          "-CAfile",
          `${dirs.b}/root-cert.pem`,
          ...(certDir === undefined
            ? []
            : ["-cert", `${certDir}/cert-chain.pem`, "-key", `${certDir}/key.pem`]),
          "-ign_eof",
        ], "GET /via-openssl HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
      const good = await hello(dirs.a);
      assert.match(good.out, /HTTP\/1\.1 200 OK/, good.out);
      assert.match(good.out, /Verify return code: 0 \(ok\)/);
      for (
        const [what, dir] of [
          ["no certificate", undefined],
          ["another CA", stranger],
          ["an expired certificate", expired],
          ["a server-only certificate", serverOnly],
          ["a certificate with two SPIFFE IDs", twoIds],
        ] as const
      ) {
        const r = await hello(dir);
        assert.doesNotMatch(r.out, /HTTP\/1\.1 200/, `${what} must not get a response:\n${r.out}`);
      }
      const scraped = await scrape(b.stats);
      assert.match(scraped, /remora_tls_handshake_failures_total\{side="inbound"\} [5-9]/);
    } finally {
      for (const d of [serverOnly, twoIds]) {
        await Deno.remove(d, { recursive: true }).catch(() => {});
      }
      await Deno.remove(stranger, { recursive: true }).catch(() => {});
      await Deno.remove(expired, { recursive: true }).catch(() => {});
    }
  });
});

Deno.test("mtls: B's identity rotates without a restart; an open request finishes, new connections get the new cert", async () => {
  await withPair({}, async ({ ca, a, b, dirs }) => {
    const serial = async () => {
      const r = await run("openssl", [
        "s_client",
        "-connect",
        `127.0.0.1:${b.inbound}`,
        "-cert",
        `${dirs.a}/cert-chain.pem`,
        "-key",
        `${dirs.a}/key.pem`,
        "-alpn",
        "istio",
      ]);
      const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.out)?.[0] ??
        "";
      const x = await run("openssl", ["x509", "-noout", "-serial"], pem);
      return x.out.trim();
    };
    const before = await serial();
    assert.match(before, /^serial=/);
    // A slow request is in flight through the old mTLS connection while the identity changes.
    const slow = run("curl", [
      "-sS",
      "--max-time",
      "15",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-x",
      `http://127.0.0.1:${a.outbound}`,
      "http://b.mesh.internal/delay/1500",
    ]);
    await new Promise((r) => setTimeout(r, 300));
    await writeIssued(
      dirs.b,
      await issueCert(ca, { id: `spiffe://${TD}/ns/default/sa/b`, ttlMs: 2 * HOUR }),
    );
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await serial();
    }
    assert.notEqual(after, before, "new connections present the new certificate");
    assert.equal((await slow).out, "200", "the request in flight finished");
    assert.match(b.stderr(), /identity rotated/);
    // A broken file is refused and the current identity stays.
    await Deno.writeTextFile(`${dirs.b}/cert-chain.pem`, "not a certificate\n");
    await new Promise((r) => setTimeout(r, 800));
    assert.match(
      await scrape(b.stats),
      /remora_identity_rotations_total\{result="rejected"\} [1-9]/,
    );
    assert.equal(await serial(), after);
    assert.equal((await curlThrough(a)).status, 200);
  });
});

const B_POLICIES = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: default }
spec:
  selector: { matchLabels: { app: b } }
  mtls: { mode: STRICT }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-a, namespace: default }
spec:
  selector: { matchLabels: { app: b } }
  action: ALLOW
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/default/sa/a"] } }]
      to: [{ operation: { methods: ["GET"], paths: ["/public*", "/admin*"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: default }
spec:
  selector: { matchLabels: { app: b } }
  action: DENY
  rules:
    - to: [{ operation: { paths: ["/admin", "/admin/*"] } }]
`;

Deno.test("mtls: STRICT refuses plaintext; AuthorizationPolicy allows a, denies /admin in every spelling", async () => {
  const policies = await writeConfig(B_POLICIES);
  await withPair({ bArgs: ["--config", policies, "--labels", "app=b"] }, async ({ a, b, app }) => {
    // Plaintext straight to B's inbound port is refused under STRICT.
    const plain = await run("curl", [
      "-sS",
      "--max-time",
      "5",
      `http://127.0.0.1:${b.inbound}/public/x`,
    ]);
    assert.match(plain.out, /Empty reply|reset|closed/i, plain.out);
    assert.equal(app.requests, 0);
    const get = async (path: string) => {
      const r = await run("curl", [
        "-sS",
        "--path-as-is",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "-x",
        `http://127.0.0.1:${a.outbound}`,
        `http://b.mesh.internal${path}`,
      ]);
      const nl = r.out.lastIndexOf("\n");
      return { status: Number(r.out.slice(nl + 1)), body: r.out.slice(0, nl) };
    };
    const ok = await get("/public/page?x=1");
    assert.equal(ok.status, 200, ok.body);
    assert.equal((JSON.parse(ok.body) as Echo).url, "/public/page?x=1");
    for (
      const path of [
        "/admin",
        "/admin/",
        "//admin",
        "/./admin",
        "/public/../admin",
        "/%61dmin",
        "/admin%2Fsecret",
        "/%2Fadmin",
        "/admin/./x",
      ]
    ) {
      const r = await get(path);
      assert.equal(r.status, 403, `${path}: ${r.status} ${r.body}`);
      assert.equal(r.body.trim(), "RBAC: access denied");
    }
    // Not allowed by any ALLOW rule: denied too.
    assert.equal((await get("/other")).status, 403);
    // A path that normalizes into an allowed one reaches the app normalized.
    const norm = await get("/public//x/../y");
    assert.equal(norm.status, 200);
    assert.equal((JSON.parse(norm.body) as Echo).url, "/public/y");
  });
});

Deno.test({
  name:
    "mtls: testssl.sh finds only TLS 1.2/1.3, AEAD ciphers and forward secrecy on the inbound port",
  ignore: (() => {
    try {
      Deno.statSync("/usr/bin/testssl");
      return false;
    } catch {
      console.warn(
        "skipping testssl.sh test: /usr/bin/testssl not installed (apt-get install testssl.sh)",
      );
      return true;
    }
  })(),
  async fn() {
    const strict = await writeConfig(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: default }
spec: { mtls: { mode: STRICT } }
`);
    await withPair({ bArgs: ["--config", strict] }, async ({ a, b }) => {
      const r = await run("testssl", [
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "batch",
        "-p",
        "-s",
        "-f",
        `127.0.0.1:${b.inbound}`,
      ]);
      const line = (label: string) =>
        r.out.split("\n").find((l) => l.trimStart().startsWith(label)) ?? `${label}: (missing)`;
      for (const old of ["SSLv2", "SSLv3", "TLS 1 ", "TLS 1.1"]) {
        assert.match(line(old), /not offered/, r.out);
      }
      assert.match(line("TLS 1.2"), /offered \(OK\)/);
      assert.match(line("TLS 1.3"), /offered \(OK\)/);
      for (
        const weak of [
          "NULL ciphers",
          "Anonymous NULL",
          "Export ciphers",
          "LOW: 64 Bit",
          "Triple DES",
          "Obsolete CBC",
        ]
      ) {
        assert.match(line(weak), /not offered/, line(weak));
      }
      assert.match(line("Strong encryption (AEAD ciphers)"), /offered \(OK\)/);
      assert.match(line("PFS is offered"), /\(OK\)/);
      // The scan's broken handshakes leave the proxy serving.
      assert.equal((await curlThrough(a)).status, 200, b.stderr());
    });
  },
});

Deno.test("mtls: large bodies cross the mTLS hop intact, both ways", async () => {
  await withPair({}, async ({ a }) => {
    const size = 5_000_000;
    const down = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      "-x",
      `http://127.0.0.1:${a.outbound}`,
      `http://b.mesh.internal/bytes/${size}`,
    ]);
    assert.equal(down.out.trim(), `200 ${size}`);
    const file = await Deno.makeTempFile();
    try {
      const body = new Uint8Array(3_000_000).map((_, i) => i % 251);
      await Deno.writeFile(file, body);
      const up = await run("curl", [
        "-sS",
        "--max-time",
        "20",
        "-x",
        `http://127.0.0.1:${a.outbound}`,
        "--data-binary",
        `@${file}`,
        "http://b.mesh.internal/upload",
      ]);
      assert.equal((JSON.parse(up.out) as Echo).bodyBytes, body.length, up.out);
    } finally {
      await Deno.remove(file);
    }
  });
});

/**
 * Runs `body` with a remora (no identity) whose `--config` is `yaml`, in front of an app on
 * `--app-port`; stops both and removes the config.
 */
async function withPolicies(
  yaml: string,
  body: (r: Remora, app: Upstream) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-policies-" });
  const app = await startUpstream("app");
  let r: Remora | undefined;
  try {
    await Deno.writeTextFile(`${dir}/mesh.yaml`, yaml);
    r = await startRemora(["--config", `${dir}/mesh.yaml`, "--app-port", String(app.port)]);
    await body(r, app);
  } finally {
    await r?.stop();
    await app.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("mtls: STRICT without an identity refuses every connection instead of serving plaintext", async () => {
  const strict = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default }
spec: { mtls: { mode: STRICT } }
`;
  await withPolicies(strict, async (r, app) => {
    const res = await curl(["--max-time", "5", `http://127.0.0.1:${r.inbound}/x`]);
    assert.notEqual(res.code, 0, "the connection is closed unanswered");
    assert.equal(app.requests + app.connections, 0, "nothing reached the app");
    assert.match(r.stderr(), /STRICT applies but remora has no mesh identity/);
  });
});

Deno.test("authz: pseudo-headers, host, repeated headers and destination.ip mean the same on HTTP/1 and HTTP/2", async () => {
  const deny = (name: string, rule: string) =>
    `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name} }
spec:
  action: DENY
  rules: [${rule}]
`;
  const policies =
    deny("secret", `{ when: [{ key: "request.headers[:path]", values: ["/secret*"] }] }`) +
    deny(
      "tenant",
      `{ to: [{ operation: { paths: [/tenant] } }], when: [{ key: "request.headers[x-tenant]", values: ["*other"] }] }`,
    ) +
    deny(
      "dst",
      `{ to: [{ operation: { paths: [/dst] } }], when: [{ key: destination.ip, values: [127.0.0.1/32] }] }`,
    ) +
    deny("host", `{ when: [{ key: "request.headers[host]", values: ["evil*"] }] }`);
  await withPolicies(policies, async (r) => {
    const base = `http://127.0.0.1:${r.inbound}`;
    const status = async (args: string[]) => (await curl(args)).status;
    assert.equal(await status([`${base}/fine`]), 200);
    for (const proto of [[], ["--http2-prior-knowledge"]]) {
      const tag = proto.length === 0 ? "HTTP/1.1" : "h2c";
      // :path is the normalized path on both protocols.
      assert.equal(await status([...proto, `${base}/secret/x`]), 403, `${tag} /secret`);
      assert.equal(
        await status([...proto, "--path-as-is", `${base}//secret/x`]),
        403,
        `${tag} //secret`,
      );
      // A repeated header is every value joined, so the second one counts too.
      const twice = ["-H", "x-tenant: acme", "-H", "x-tenant: other"];
      assert.equal(await status([...proto, ...twice, `${base}/tenant`]), 403, `${tag} tenant`);
      // (Allowed h2c requests reach an HTTP/1-only app and fail there: not a 403 is what counts.)
      assert.notEqual(await status([...proto, "-H", "x-tenant: acme", `${base}/tenant`]), 403, tag);
      // host is the authority on both: HTTP/2 has no Host field, and the rule still holds.
      assert.equal(await status([...proto, "-H", "Host: evil.test", `${base}/x`]), 403, tag);
      // destination.ip is the address the client connected to.
      assert.equal(await status([...proto, `${base}/dst`]), 403, `${tag} destination.ip`);
      assert.notEqual(await status([...proto, `${base}/fine`]), 403, `${tag} /fine`);
    }
  });
});

Deno.test("authz: istio.io/dry-run policies are logged with what they would decide, never enforced", async () => {
  const dry = (name: string, action: string, paths: string) =>
    `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name}, annotations: { istio.io/dry-run: "true" } }
spec:
  action: ${action}
  rules: [{ to: [{ operation: { paths: [${paths}] } }] }]
`;
  const policies = dry("try-no-admin", "DENY", `"/admin*"`) +
    dry("try-public-only", "ALLOW", `"/public*"`);
  await withPolicies(policies, async (r, app) => {
    const base = `http://127.0.0.1:${r.inbound}`;
    for (const path of ["/admin/x", "/public/y", "/other"]) {
      assert.equal((await curl([`${base}${path}`])).status, 200, path);
    }
    assert.equal(app.requests, 3, "every request reached the app");
    const lines = () =>
      (r.stdout() + r.stderr()).split("\n").filter((l) => l.includes("authorization dry-run"));
    assert.ok(await eventually(() => lines().length === 6), lines().join("\n"));
    const said = (path: string, action: string) =>
      lines().find((l) => l.includes(path) && l.includes(action)) ?? "";
    assert.match(said("/admin/x", "DENY"), /result=denied.*policy=default\/try-no-admin/);
    assert.match(said("/admin/x", "ALLOW"), /result=denied/);
    assert.match(said("/public/y", "ALLOW"), /result=allowed.*policy=default\/try-public-only/);
    assert.match(said("/other", "DENY"), /result=allowed/);
    for (const l of lines()) assert.match(l, /enforced=allowed/);
  });
});

Deno.test("/config_dump shows the mTLS mode per port and the policies that apply to this workload", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-secdump-" });
  let r: Remora | undefined;
  try {
    await Deno.writeTextFile(
      `${dir}/mesh.yaml`,
      `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: ns-wide, namespace: shop }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: metrics-port, namespace: shop }
spec:
  selector: { matchLabels: { app: cart } }
  portLevelMtls: { "9090": { mode: PERMISSIVE } }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: shop }
spec:
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: for-others, namespace: shop }
spec:
  selector: { matchLabels: { app: other } }
  action: ALLOW
  rules: [{}]
---
# No namespace: the workload's, as kubectl apply -n shop would put it.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-debug }
spec:
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/debug*"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: try-public-only, annotations: { istio.io/dry-run: "true" } }
spec:
  action: ALLOW
  rules: [{ to: [{ operation: { paths: ["/public*"] } }] }]
`,
    );
    r = await startRemora([
      "--config",
      `${dir}/mesh.yaml`,
      "--namespace",
      "shop",
      "--labels",
      "app=cart",
    ]);
    const dump = await (await fetch(`http://127.0.0.1:${r.admin}/config_dump`)).json();
    assert.deepEqual(dump.security.peerAuthentication, {
      mode: "STRICT",
      ports: { "9090": "PERMISSIVE" },
      policies: { mesh: null, namespace: "shop/ns-wide", workload: "shop/metrics-port" },
    });
    assert.deepEqual(dump.security.authorizationPolicies, {
      deny: ["shop/no-admin", "shop/no-debug"],
      allow: [],
      audit: [],
      dryRun: { deny: [], allow: ["shop/try-public-only"] },
    });
    assert.deepEqual(dump.security.workload, { namespace: "shop", labels: { app: "cart" } });
  } finally {
    await r?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("mtls: opaque TCP over mTLS is reported as mutual_tls with both principals, and logged", async () => {
  const ca = await initCa({ trustDomain: TD, ttlMs: 24 * HOUR });
  const dirs = { a: await identityDir(ca, "a"), b: await identityDir(ca, "b") };
  // A TCP echo app (not HTTP).
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const c of l) {
      (async () => {
        const buf = new Uint8Array(4096);
        for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
          await c.write(buf.subarray(0, n));
        }
      })().catch(() => {}).finally(() => c.close());
    }
  })().catch(() => {});
  let b: Remora | undefined;
  try {
    b = await startRemora([
      "--identity-dir",
      dirs.b,
      "--app-port",
      String((l.addr as Deno.NetAddr).port),
      "--access-log",
      "json",
    ]);
    // The mesh's TCP ALPN, with a's certificate: bytes only, no HTTP.
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: b.inbound,
      caCerts: [await Deno.readTextFile(`${dirs.b}/root-cert.pem`)],
      cert: await Deno.readTextFile(`${dirs.a}/cert-chain.pem`),
      key: await Deno.readTextFile(`${dirs.a}/key.pem`),
      alpnProtocols: ["istio"],
      unsafelyDisableHostnameVerification: true,
    });
    const sent = "opaque-bytes-1234\n";
    await conn.write(new TextEncoder().encode(sent));
    const got = new Uint8Array(100);
    const n = await conn.read(got);
    conn.close();
    assert.equal(new TextDecoder().decode(got.subarray(0, n ?? 0)), sent);
    const metrics = await scrape(b.stats);
    const opened = metrics.split("\n").find((x) =>
      x.startsWith("istio_tcp_connections_opened_total{")
    );
    assert.ok(opened !== undefined, metrics);
    assert.match(opened!, /connection_security_policy="mutual_tls"/);
    assert.match(opened!, /source_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/a"/);
    assert.match(opened!, /destination_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/b"/);
    let line: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && line === undefined; i++) {
      const found = b.stdout().split("\n").find((x) => x.startsWith("{"));
      if (found !== undefined) line = JSON.parse(found);
      else await new Promise((ok) => setTimeout(ok, 100));
    }
    assert.ok(line !== undefined, b.stdout());
    assert.equal(line!.method, null);
    assert.equal(line!.response_code, 0);
    assert.equal(line!.bytes_received, sent.length);
    assert.equal(line!.bytes_sent, sent.length);
    assert.equal(line!.source_principal, "spiffe://cluster.local/ns/default/sa/a");
    assert.equal(line!.destination_principal, "spiffe://cluster.local/ns/default/sa/b");
    assert.match(String(line!.upstream_cluster), /^inbound\|\d+\|\|$/);
  } finally {
    await b?.stop();
    l.close();
    await serving;
    for (const d of Object.values(dirs)) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});

Deno.test("mtls: plaintext to a sidecar with an identity carries no principal on either side", async () => {
  const ca = await initCa({ trustDomain: TD, ttlMs: 24 * HOUR });
  const dir = await identityDir(ca, "b");
  const app = await startUpstream("app");
  let b: Remora | undefined;
  try {
    b = await startRemora([
      "--identity-dir",
      dir,
      "--app-port",
      String(app.port),
      "--access-log",
      "json",
    ]);
    const res = await run("curl", [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://127.0.0.1:${b.inbound}/plain`,
    ]);
    assert.equal(res.out, "200");
    const line = (await scrape(b.stats)).split("\n").find((l) =>
      l.startsWith("istio_requests_total{")
    );
    assert.ok(line !== undefined);
    assert.match(line!, /source_principal="unknown"/);
    assert.match(
      line!,
      /destination_principal="unknown"/,
      "its own identity was not used: no mTLS",
    );
    assert.match(line!, /connection_security_policy="none"/);
    let log: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && log === undefined; i++) {
      const l = b.stdout().split("\n").find((x) => x.startsWith("{"));
      if (l !== undefined) log = JSON.parse(l);
      else await new Promise((ok) => setTimeout(ok, 100));
    }
    assert.equal(log?.destination_principal, null);
    assert.equal(log?.source_principal, null);
  } finally {
    await b?.stop();
    await app.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

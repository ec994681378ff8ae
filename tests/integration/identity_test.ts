/**
 * Identity tooling as a user meets it: `remora ca init` and `remora ca issue`
 * run as real processes, their files checked by openssl (SANs, EKUs, the
 * chain for TLS server and client purposes, the key's curve) and by
 * `loadIdentity`; an existing CA is not replaced without --force; bad flags
 * exit 2 naming the flag. Files live in a temp dir that is always removed.
 */

import assert from "node:assert/strict";
import { initCa, issueCert, writeIssued } from "../../src/identity/ca.ts";
import { loadIdentity } from "../../src/identity/identity.ts";
import { exec, type Remora, runCommand, startRemora } from "./harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const ORDERS = "spiffe://cluster.local/ns/default/sa/orders";

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

async function remora(...args: string[]): Promise<Out> {
  const out = await runCommand(Deno.execPath(), ["run", "-A", `${ROOT}main.ts`, ...args], {
    cwd: ROOT,
    timeoutMs: 30_000,
  });
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: out.stderr };
}

async function openssl(...args: string[]): Promise<string> {
  const r = await exec("openssl", args, { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `openssl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-identity-it-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function ok(out: Out, what: string): void {
  assert.equal(out.code, 0, `${what}: exit ${out.code}\n${out.stderr}`);
}

Deno.test("ca init and ca issue write an identity openssl and loadIdentity accept", async () => {
  await withTempDir(async (dir) => {
    const init = await remora(
      "ca",
      "init",
      "--trust-domain",
      "cluster.local",
      "--out",
      `${dir}/ca`,
    );
    ok(init, "ca init");
    assert.match(init.stdout, /CA for trust domain cluster\.local written to/);
    assert.equal((await Deno.stat(`${dir}/ca/root-key.pem`)).mode! & 0o777, 0o600);
    const root = await openssl(
      "x509",
      "-in",
      `${dir}/ca/root-cert.pem`,
      "-noout",
      "-subject",
      "-ext",
      "basicConstraints,keyUsage",
    );
    assert.match(root, /subject=O ?= ?cluster\.local/);
    assert.match(root, /Basic Constraints: critical\s+CA:TRUE/);
    assert.match(root, /Key Usage: critical\s+Certificate Sign, CRL Sign/);

    const issue = await remora(
      "ca",
      "issue",
      "--ca",
      `${dir}/ca`,
      "--id",
      ORDERS,
      "--ttl",
      "24h",
      "--out",
      `${dir}/id`,
    );
    ok(issue, "ca issue");
    assert.match(issue.stdout, new RegExp(`${ORDERS} written to`));
    assert.equal((await Deno.stat(`${dir}/id/key.pem`)).mode! & 0o777, 0o600);
    assert.equal(
      await Deno.readTextFile(`${dir}/id/root-cert.pem`),
      await Deno.readTextFile(`${dir}/ca/root-cert.pem`),
    );

    const chain = `${dir}/id/cert-chain.pem`;
    const ext = await openssl(
      "x509",
      "-in",
      chain,
      "-noout",
      "-ext",
      "subjectAltName,extendedKeyUsage,basicConstraints,keyUsage",
    );
    assert.match(
      ext,
      /Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/orders\s/,
    );
    assert.match(
      ext,
      /Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/,
    );
    assert.match(ext, /CA:FALSE/);
    assert.match(ext, /Digital Signature, Key Encipherment/);
    const verify = ["-CAfile", `${dir}/id/root-cert.pem`];
    assert.match(await openssl("verify", ...verify, chain), /: OK\n$/);
    assert.match(await openssl("verify", "-purpose", "sslserver", ...verify, chain), /: OK\n$/);
    assert.match(await openssl("verify", "-purpose", "sslclient", ...verify, chain), /: OK\n$/);
    const key = await openssl("pkey", "-in", `${dir}/id/key.pem`, "-noout", "-text");
    assert.match(key, /NIST CURVE: P-256/);
    const dates = await openssl("x509", "-in", chain, "-noout", "-startdate", "-enddate");
    const [start, end] = [...dates.matchAll(/=(.*)\n/g)].map((m) => Date.parse(m[1]!));
    assert.equal(end! - start!, 24 * 3_600_000 + 60_000, "now-1m .. now+24h");

    const id = await loadIdentity(`${dir}/id`);
    assert.equal(id.spiffeId, ORDERS);
    assert.equal(id.serviceAccount, "orders");
  });
});

Deno.test("ca init refuses to replace a CA unless --force", async () => {
  await withTempDir(async (dir) => {
    ok(await remora("ca", "init", "--out", dir, "--ttl", "1h"), "first init");
    const before = await Deno.readTextFile(`${dir}/root-cert.pem`);
    const again = await remora("ca", "init", "--out", dir);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /root-key\.pem exists: a CA is there already \(use --force/);
    assert.equal(await Deno.readTextFile(`${dir}/root-cert.pem`), before);
    ok(await remora("ca", "init", "--out", dir, "--force"), "init --force");
    assert.notEqual(await Deno.readTextFile(`${dir}/root-cert.pem`), before);
  });
});

Deno.test("ca: bad flags exit 2 naming the flag", async () => {
  await withTempDir(async (dir) => {
    ok(await remora("ca", "init", "--trust-domain", "cluster.local", "--out", `${dir}/ca`), "init");
    const issue = (...args: string[]) =>
      remora("ca", "issue", "--ca", `${dir}/ca`, "--out", `${dir}/id`, ...args);
    const cases: Array<[Promise<Out>, RegExp]> = [
      [issue("--id", "orders"), /Flag --id: "orders" is not a SPIFFE ID/],
      [issue("--id", "spiffe://cluster.local/orders"), /Flag --id: .*\/ns\/<namespace>\/sa\//],
      [
        issue("--id", "spiffe://other.local/ns/default/sa/orders"),
        /Flag --id: .* is in trust domain "other\.local", the CA in .* issues in "cluster\.local"/,
      ],
      [issue("--id", ORDERS, "--ttl", "0s"), /Flag --ttl must be at least 1s/],
      [issue("--id", ORDERS, "--ttl", "1d"), /Flag --ttl takes a duration/],
      [issue(), /Missing flag --id/],
      [remora("ca", "issue", "--ca", `${dir}/ca`, "--id", ORDERS), /Missing flag --out/],
      [remora("ca", "init", "--trust-domain", "Bad Domain", "--out", dir), /Flag --trust-domain:/],
      [remora("ca", "init"), /Missing flag --out/],
      [remora("ca", "init", "--out", dir, "--bogus"), /Unknown flag: --bogus/],
      [remora("ca", "rotate"), /Unknown ca command: rotate/],
    ];
    for (const [run, why] of cases) {
      const out = await run;
      assert.equal(out.code, 2, `${why}: exit ${out.code}\n${out.stderr}`);
      assert.match(out.stderr, why);
    }
    // A CA directory that is not there is a refused file, not a bad flag: exit 1.
    const missing = await remora(
      "ca",
      "issue",
      "--ca",
      `${dir}/nope`,
      "--id",
      ORDERS,
      "--out",
      `${dir}/id`,
    );
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(
      missing.stderr,
      /the CA in .*\/nope was refused: .*\/nope\/root-cert\.pem: cannot read file/,
    );
    assert.equal(
      (await Array.fromAsync(Deno.readDir(dir))).length,
      1,
      "nothing but the CA written",
    );
  });
});

Deno.test("ca help texts", async () => {
  const top = await remora("ca", "--help");
  ok(top, "ca --help");
  assert.match(top.stdout, /init +Create a root key/);
  const init = await remora("ca", "init", "--help");
  ok(init, "ca init --help");
  assert.match(init.stdout, /--ttl DURATION +Lifetime of the root certificate \(default 87600h\)/);
  const issue = await remora("ca", "issue", "--help");
  ok(issue, "ca issue --help");
  assert.match(issue.stdout, /--id SPIFFE_ID/);
  assert.match(issue.stdout, /--ttl DURATION .*\(default 24h\)/);
  const main = await remora("--help");
  assert.match(main.stdout, /ca +Certificate authority for SPIFFE identities/);
});

Deno.test("run warns when the identity's namespace is not --namespace, and when a rotation changes the SPIFFE ID", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-id-warn-" });
  let r: Remora | undefined;
  try {
    const ca = await initCa({ trustDomain: "cluster.local", ttlMs: 3_600_000 });
    const issue = (id: string) => issueCert(ca, { id, ttlMs: 3_600_000 });
    await writeIssued(`${dir}/id`, await issue("spiffe://cluster.local/ns/shop/sa/orders"));
    r = await startRemora(["--identity-dir", `${dir}/id`, "--namespace", "default"]);
    assert.match(r.stderr(), /the identity's namespace is not --namespace/);
    await writeIssued(`${dir}/id`, await issue("spiffe://cluster.local/ns/shop/sa/payments"));
    const deadline = Date.now() + 5000;
    while (!/rotated to another SPIFFE ID/.test(r.stderr()) && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.match(
      r.stderr(),
      /identity rotated to another SPIFFE ID.*sa\/payments.*was=.*sa\/orders/,
    );
  } finally {
    await r?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

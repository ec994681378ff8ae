/**
 * Tests of the workload identity: a good set loads with its SPIFFE parts and
 * validity; a key from another set, a chain from another CA, an expired or
 * not yet valid certificate, no URI SAN, two URI SANs, a CA as leaf and
 * garbage are each refused with an error naming the file; intermediates
 * chain up to the bundle. `IdentityWatcher` reports replaced files as a new
 * identity, a broken set as an error only, and rides out files replaced one
 * by one. Expiry warnings start at Istio's rotation point. Files live in a
 * temp dir; every wait is bounded; watchers are always closed.
 */

import assert from "node:assert/strict";
import { type Ca, caFromPem, initCa, issueCert, type IssuedCert, writeIssued } from "./ca.ts";
import {
  expiryWarningAt,
  expiryWarnings,
  type Identity,
  IdentityError,
  identityFromPem,
  IdentityWatcher,
  loadIdentity,
} from "./identity.ts";
import { EC_P256, generateKeyPair, privateKeyPem, x509 } from "./x509.ts";

const HOUR = 3_600_000;
const ORDERS = "spiffe://cluster.local/ns/default/sa/orders";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-identity-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Polls `cond` every 20ms; fails after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const _ca = initCa({ trustDomain: "cluster.local", ttlMs: 1000 * HOUR });
const _otherCa = initCa({ trustDomain: "cluster.local", ttlMs: 1000 * HOUR });

/** A leaf signed by `ca` with exactly these SANs and CA flag, for malformed sets. */
async function leafWith(
  ca: Ca,
  opts: { sans: x509.JsonGeneralNames; isCa?: boolean },
): Promise<{ certChainPem: string; keyPem: string; rootCertPem: string }> {
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.create({
    subject: "O=test",
    issuer: ca.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: ca.signer.key,
    signingAlgorithm: EC_P256,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + HOUR),
    extensions: [
      new x509.BasicConstraintsExtension(opts.isCa === true, undefined, true),
      ...(opts.sans.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(opts.sans)]),
    ],
  });
  return {
    certChainPem: cert.toString("pem"),
    keyPem: await privateKeyPem(keys.privateKey),
    rootCertPem: ca.certPem,
  };
}

async function refused(
  pems: { certChainPem: string; keyPem: string; rootCertPem: string },
  file: string,
  why: RegExp,
  now?: Date,
): Promise<void> {
  await assert.rejects(identityFromPem(pems, now === undefined ? {} : { now }), (e) => {
    assert.ok(e instanceof IdentityError, String(e));
    assert.equal(e.file, file);
    assert.match(e.message, why);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    return true;
  });
}

Deno.test("loadIdentity reads a good set with Istio's file names", async () => {
  await withTempDir(async (dir) => {
    const ca = await _ca;
    const issued = await issueCert(ca, { id: ORDERS, ttlMs: 24 * HOUR });
    await writeIssued(dir, issued);
    const id = await loadIdentity(dir);
    assert.equal(id.spiffeId, ORDERS);
    assert.equal(id.trustDomain, "cluster.local");
    assert.equal(id.namespace, "default");
    assert.equal(id.serviceAccount, "orders");
    assert.equal(id.certChainPem, issued.certChainPem);
    assert.equal(id.keyPem, issued.keyPem);
    assert.equal(id.rootCertPem, ca.certPem);
    assert.deepEqual([id.notBefore, id.notAfter], [issued.notBefore, issued.notAfter]);
    assert.match(id.serialNumber, /^[0-9a-f]{32}$/);
    await Deno.remove(`${dir}/key.pem`);
    await assert.rejects(loadIdentity(dir), {
      name: "IdentityError",
      message: `${dir}/key.pem: cannot read file: no such file`,
    });
  });
});

Deno.test("identityFromPem refuses a key that is not the certificate's", async () => {
  const ca = await _ca;
  const a = await issueCert(ca, { id: ORDERS, ttlMs: HOUR });
  const b = await issueCert(ca, { id: ORDERS, ttlMs: HOUR });
  await refused(
    { ...a, keyPem: b.keyPem },
    "key.pem",
    /private key does not match the certificate/,
  );
  await refused({ ...a, keyPem: "junk" }, "key.pem", /no PEM private key found/);
  await refused(
    { ...a, keyPem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" },
    "key.pem",
    /cannot parse private key/,
  );
});

Deno.test("identityFromPem refuses a chain from another CA", async () => {
  const issued = await issueCert(await _ca, { id: ORDERS, ttlMs: HOUR });
  await refused(
    { ...issued, rootCertPem: (await _otherCa).certPem },
    "cert-chain.pem",
    /the certificate \(issuer O=cluster\.local\) is not signed by a CA in root-cert\.pem/,
  );
  // Both roots in the bundle: accepted (a trust bundle during CA rotation).
  const both = (await _otherCa).certPem + (await _ca).certPem;
  assert.equal((await identityFromPem({ ...issued, rootCertPem: both })).spiffeId, ORDERS);
});

Deno.test("identityFromPem refuses expired and not yet valid certificates", async () => {
  const ca = await _ca;
  const past = new Date(Date.now() - 2 * HOUR);
  const expired = await issueCert(ca, { id: ORDERS, ttlMs: HOUR, now: past });
  await refused(expired, "cert-chain.pem", /the certificate expired at 20\d\d-/);
  const future = await issueCert(ca, {
    id: ORDERS,
    ttlMs: HOUR,
    now: new Date(Date.now() + 2 * HOUR),
  });
  await refused(future, "cert-chain.pem", /the certificate is not valid before 20\d\d-/);
  const oldCa = await initCa({ trustDomain: "cluster.local", ttlMs: HOUR, now: past });
  const old = await issueCert(oldCa, { id: ORDERS, ttlMs: HOUR, now: past });
  await refused(old, "root-cert.pem", /the root expired at/);
  // A retired root left in the bundle beside a valid one: accepted, warned about, trusting nothing.
  const good = await issueCert(ca, { id: ORDERS, ttlMs: HOUR });
  const id = await identityFromPem({ ...good, rootCertPem: oldCa.certPem + ca.certPem });
  assert.equal(id.spiffeId, ORDERS);
  const warnings = expiryWarnings(id);
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(
    warnings[0]!,
    /^root-cert\.pem: certificate 1 \(.*\) expired at 20\d\d-.*trusts no peer/,
  );
});

Deno.test("identityFromPem wants exactly one URI SAN, a SPIFFE ID, on a non-CA leaf", async () => {
  const ca = await _ca;
  await refused(
    await leafWith(ca, { sans: [] }),
    "cert-chain.pem",
    /exactly one URI SAN \(a SPIFFE ID\), it has 0$/,
  );
  await refused(
    await leafWith(ca, { sans: [{ type: "dns", value: "orders.default.svc" }] }),
    "cert-chain.pem",
    /it has 0$/,
  );
  await refused(
    await leafWith(ca, {
      sans: [{ type: "url", value: ORDERS }, {
        type: "url",
        value: "spiffe://cluster.local/ns/default/sa/admin",
      }],
    }),
    "cert-chain.pem",
    /it has 2: spiffe:\/\/cluster\.local\/ns\/default\/sa\/orders, spiffe:.*admin/,
  );
  await refused(
    await leafWith(ca, { sans: [{ type: "url", value: "https://orders.example" }] }),
    "cert-chain.pem",
    /"https:\/\/orders\.example" is not a SPIFFE ID/,
  );
  await refused(
    await leafWith(ca, { sans: [{ type: "url", value: ORDERS }], isCa: true }),
    "cert-chain.pem",
    /is a CA, not a workload certificate/,
  );
  const ok = await leafWith(ca, {
    sans: [{ type: "url", value: ORDERS }, { type: "dns", value: "orders" }],
  });
  assert.equal((await identityFromPem(ok)).spiffeId, ORDERS, "a DNS SAN beside it is fine");
});

Deno.test("identityFromPem refuses unparsable PEM and a root that is not a CA", async () => {
  const issued = await issueCert(await _ca, { id: ORDERS, ttlMs: HOUR });
  await refused({ ...issued, certChainPem: "hello" }, "cert-chain.pem", /no PEM certificate found/);
  await refused(
    { ...issued, certChainPem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" },
    "cert-chain.pem",
    /certificate 1 does not parse/,
  );
  await refused({ ...issued, rootCertPem: "" }, "root-cert.pem", /no PEM certificate found/);
  await refused(
    { ...issued, rootCertPem: issued.certChainPem },
    "root-cert.pem",
    /certificate 1 \(\) is not a CA/,
  );
});

Deno.test("identityFromPem follows intermediates in cert-chain.pem up to the bundle", async () => {
  const root = await _ca;
  const keys = await generateKeyPair();
  const intermediate = await x509.X509CertificateGenerator.create({
    subject: "O=cluster.local, CN=intermediate",
    issuer: root.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: root.signer.key,
    signingAlgorithm: EC_P256,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 100 * HOUR),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const inter = await caFromPem(intermediate.toString("pem"), await privateKeyPem(keys.privateKey));
  const leaf: IssuedCert = await issueCert(inter, { id: ORDERS, ttlMs: HOUR });
  const chain = leaf.certChainPem + inter.certPem;
  const id = await identityFromPem({ ...leaf, certChainPem: chain, rootCertPem: root.certPem });
  assert.equal(id.spiffeId, ORDERS);
  await refused(
    { ...leaf, rootCertPem: root.certPem },
    "cert-chain.pem",
    /issuer O=cluster\.local, CN=intermediate\) is not signed by a CA in root-cert\.pem/,
  );
  const other = await issueCert(await _otherCa, { id: ORDERS, ttlMs: HOUR });
  await refused(
    {
      ...leaf,
      certChainPem: other.certChainPem.replace(/\n$/, "") + "\n" + inter.certPem,
      keyPem: other.keyPem,
      rootCertPem: root.certPem,
    },
    "cert-chain.pem",
    /the certificate is not signed by certificate 2/,
  );
});

function identityOf(issued: IssuedCert, lifetimeMs: number): Identity {
  const notBefore = new Date("2030-01-01T00:00:00Z");
  return {
    spiffeId: issued.spiffeId,
    trustDomain: "cluster.local",
    namespace: "default",
    serviceAccount: "orders",
    certChainPem: "",
    keyPem: "",
    rootCertPem: "",
    serialNumber: "01",
    notBefore,
    notAfter: new Date(notBefore.getTime() + lifetimeMs),
  };
}

Deno.test("expiryWarnings start at 20% left, or 24h left capped at half the lifetime", async () => {
  const issued = await issueCert(await _ca, { id: ORDERS, ttlMs: HOUR });
  const at = (id: Identity, h: number) => new Date(id.notBefore.getTime() + h * HOUR);
  const day = identityOf(issued, 24 * HOUR);
  assert.deepEqual(expiryWarningAt(day), at(day, 12), "24h cert: at its half-life");
  assert.deepEqual(expiryWarnings(day, at(day, 11.9)), []);
  const [w] = expiryWarnings(day, at(day, 13));
  assert.equal(
    w,
    `Identity certificate ${ORDERS} expires in 11h0m (at 2030-01-02T00:00:00.000Z): rotate it`,
  );
  assert.match(expiryWarnings(day, at(day, 24.5))[0]!, /expired at 2030-01-02T00:00:00\.000Z/);
  const year = identityOf(issued, 365 * 24 * HOUR);
  assert.deepEqual(expiryWarningAt(year), at(year, 0.8 * 365 * 24), "a year: 20% left (73 days)");
  assert.match(expiryWarnings(year, at(year, 0.9 * 365 * 24))[0]!, /expires in 36d/);
  const threeDays = identityOf(issued, 72 * HOUR);
  assert.deepEqual(expiryWarningAt(threeDays), at(threeDays, 48), "3 days: 24h left");
});

/** Writes one file without a rename, as `cp` or an editor in place would. */
async function writeInPlace(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text);
}

function recorder() {
  const identities: Identity[] = [];
  const errors: IdentityError[] = [];
  const restored: Identity[] = [];
  return {
    identities,
    errors,
    restored,
    onIdentity: (i: Identity) => identities.push(i),
    onError: (e: IdentityError) => errors.push(e),
    onRestored: (i: Identity) => restored.push(i),
  };
}

Deno.test("IdentityWatcher reports rotated files as a new identity", async () => {
  await withTempDir(async (dir) => {
    const ca = await _ca;
    await writeIssued(dir, await issueCert(ca, { id: ORDERS, ttlMs: HOUR }));
    const first = await loadIdentity(dir);
    const rec = recorder();
    const watcher = new IdentityWatcher(dir, { ...rec, current: first, debounceMs: 50 });
    try {
      const next = await issueCert(ca, { id: ORDERS, ttlMs: 2 * HOUR });
      await writeIssued(dir, next);
      await waitFor(() => rec.identities.length === 1, "the rotated identity");
      assert.deepEqual(rec.identities[0]!.notAfter, next.notAfter);
      assert.notDeepEqual(rec.identities[0]!.notAfter, first.notAfter);
      assert.equal(watcher.current, rec.identities[0]);
      // Rewriting the same files is not a rotation.
      await writeIssued(dir, next);
      await sleep(500);
      assert.equal(rec.identities.length, 1);
      assert.deepEqual(rec.errors, []);
    } finally {
      await watcher.close();
    }
  });
});

Deno.test("IdentityWatcher refuses a broken set and reports no identity", async () => {
  await withTempDir(async (dir) => {
    const ca = await _ca;
    const issued = await issueCert(ca, { id: ORDERS, ttlMs: HOUR });
    await writeIssued(dir, issued);
    const rec = recorder();
    const watcher = new IdentityWatcher(dir, {
      ...rec,
      current: await loadIdentity(dir),
      debounceMs: 30,
      retryMs: 100,
    });
    try {
      await writeInPlace(`${dir}/cert-chain.pem`, "-----BEGIN CERTIFICATE-----\ngarbage\n");
      await waitFor(() => rec.errors.length >= 1, "the refusal");
      assert.match(rec.errors[0]!.message, new RegExp(`^${dir}/cert-chain.pem: `));
      assert.equal(rec.errors[0]!.file, `${dir}/cert-chain.pem`);
      // A key from another set: refused too, naming key.pem.
      const other = await issueCert(ca, { id: ORDERS, ttlMs: HOUR });
      await writeInPlace(`${dir}/cert-chain.pem`, issued.certChainPem);
      await writeInPlace(`${dir}/key.pem`, other.keyPem);
      await waitFor(() => rec.errors.some((e) => e.file.endsWith("key.pem")), "the key refusal");
      assert.deepEqual(rec.identities, []);
      assert.deepEqual(rec.restored, []);
      // The good files back: no rotation (the same identity), but said once.
      await writeInPlace(`${dir}/key.pem`, issued.keyPem);
      await waitFor(() => rec.restored.length === 1, "the restored files");
      assert.deepEqual(rec.identities, []);
      // Other files in the directory are no concern of the watcher.
      const before = rec.errors.length;
      await Deno.writeTextFile(`${dir}/notes.txt`, "hello");
      await sleep(400);
      assert.equal(rec.errors.length, before);
    } finally {
      await watcher.close();
    }
  });
});

Deno.test("IdentityWatcher rides out files replaced one by one", async () => {
  await withTempDir(async (dir) => {
    const ca = await _ca;
    await writeIssued(dir, await issueCert(ca, { id: ORDERS, ttlMs: HOUR }));
    const rec = recorder();
    const watcher = new IdentityWatcher(dir, {
      ...rec,
      current: await loadIdentity(dir),
      debounceMs: 50,
      retryMs: 400,
    });
    try {
      const next = await issueCert(ca, { id: ORDERS, ttlMs: 3 * HOUR });
      // The key first, then a pause longer than the debounce: the set is inconsistent for a while.
      await writeInPlace(`${dir}/key.pem`, next.keyPem);
      await sleep(150);
      await writeInPlace(`${dir}/cert-chain.pem`, next.certChainPem);
      await waitFor(() => rec.identities.length === 1, "the new identity");
      assert.deepEqual(rec.identities[0]!.notAfter, next.notAfter);
      await sleep(500);
      assert.deepEqual(rec.errors, [], "the brief mismatch was not reported");
    } finally {
      await watcher.close();
    }
  });
});

Deno.test("IdentityWatcher follows a Kubernetes-style ..data symlink swap", async () => {
  await withTempDir(async (dir) => {
    const ca = await _ca;
    await writeIssued(`${dir}/..v1`, await issueCert(ca, { id: ORDERS, ttlMs: HOUR }));
    await Deno.symlink("..v1", `${dir}/..data`);
    for (const f of ["cert-chain.pem", "key.pem", "root-cert.pem"]) {
      await Deno.symlink(`..data/${f}`, `${dir}/${f}`);
    }
    const rec = recorder();
    const watcher = new IdentityWatcher(dir, {
      ...rec,
      current: await loadIdentity(dir),
      debounceMs: 50,
    });
    try {
      const next = await issueCert(ca, { id: ORDERS, ttlMs: 5 * HOUR });
      await writeIssued(`${dir}/..v2`, next);
      await Deno.symlink("..v2", `${dir}/..data_tmp`);
      await Deno.rename(`${dir}/..data_tmp`, `${dir}/..data`);
      await waitFor(() => rec.identities.length === 1, "the swapped identity");
      assert.deepEqual(rec.identities[0]!.notAfter, next.notAfter);
    } finally {
      await watcher.close();
    }
  });
});

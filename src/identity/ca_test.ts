/**
 * Tests of the CA: the root and workload certificates have Istio's shape
 * (read back with @peculiar/x509), validity never outlives the root, bad
 * IDs and foreign trust domains are refused, CSRs are signed only for the
 * ID they were authenticated as, and files land with Istio's names and a
 * 0600 key. Files live in a temp dir that is always removed.
 */

import assert from "node:assert/strict";
import {
  CA_CERT_FILE,
  CA_KEY_FILE,
  CaError,
  caFromPem,
  initCa,
  issueCert,
  loadCa,
  signCsr,
  writeCa,
  writeIssued,
} from "./ca.ts";
import { loadIdentity } from "./identity.ts";
import { EC_P256, generateKeyPair, uriSans, x509 } from "./x509.ts";

const HOUR = 3_600_000;
const ORDERS = "spiffe://cluster.local/ns/default/sa/orders";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-ca-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("initCa makes a self-signed EC P-256 root for the trust domain", async () => {
  const now = new Date("2030-01-01T00:00:00Z");
  const ca = await initCa({ trustDomain: "cluster.local", ttlMs: 10 * HOUR, now });
  assert.equal(ca.trustDomain, "cluster.local");
  assert.equal(ca.cert.subject, "O=cluster.local");
  assert.equal(ca.cert.issuer, "O=cluster.local");
  assert.ok(await ca.cert.verify({ signatureOnly: true }), "self-signed");
  const bc = ca.cert.getExtension(x509.BasicConstraintsExtension)!;
  assert.equal(bc.ca, true);
  assert.equal(bc.critical, true);
  const ku = ca.cert.getExtension(x509.KeyUsagesExtension)!;
  assert.equal(ku.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  assert.equal(ku.critical, true);
  assert.deepEqual(uriSans(ca.cert), ["spiffe://cluster.local"]);
  assert.equal(ca.cert.notBefore.getTime(), now.getTime() - 60_000);
  assert.equal(ca.cert.notAfter.getTime(), now.getTime() + 10 * HOUR);
  assert.deepEqual((ca.cert.publicKey.algorithm as EcKeyAlgorithm).namedCurve, "P-256");
  assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  await assert.rejects(initCa({ trustDomain: "Bad!", ttlMs: HOUR }), CaError);
  await assert.rejects(initCa({ trustDomain: "td", ttlMs: 0 }), /must be positive/);
});

Deno.test("writeCa writes root-key.pem 0600 and refuses to replace a CA without force", async () => {
  await withTempDir(async (dir) => {
    const ca = await initCa({ trustDomain: "cluster.local", ttlMs: HOUR });
    await writeCa(`${dir}/ca`, ca);
    assert.equal((await Deno.stat(`${dir}/ca/${CA_KEY_FILE}`)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/ca/${CA_CERT_FILE}`)).mode! & 0o777, 0o644);
    const other = await initCa({ trustDomain: "cluster.local", ttlMs: HOUR });
    await assert.rejects(writeCa(`${dir}/ca`, other), /exists: a CA is there already/);
    assert.equal(await Deno.readTextFile(`${dir}/ca/${CA_CERT_FILE}`), ca.certPem, "unchanged");
    await writeCa(`${dir}/ca`, other, { force: true });
    const loaded = await loadCa(`${dir}/ca`);
    assert.equal(loaded.certPem, other.certPem);
    assert.equal(loaded.trustDomain, "cluster.local");
    assert.deepEqual((await Array.fromAsync(Deno.readDir(`${dir}/ca`))).map((e) => e.name).sort(), [
      CA_CERT_FILE,
      CA_KEY_FILE,
    ], "no temp files left");
  });
});

Deno.test("loadCa names the file at fault", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      loadCa(dir),
      new RegExp(`${dir}/root-cert.pem: cannot read file: no such`),
    );
    const a = await initCa({ trustDomain: "cluster.local", ttlMs: HOUR });
    const b = await initCa({ trustDomain: "cluster.local", ttlMs: HOUR });
    await Deno.writeTextFile(`${dir}/${CA_CERT_FILE}`, a.certPem);
    await Deno.writeTextFile(`${dir}/${CA_KEY_FILE}`, b.keyPem);
    await assert.rejects(loadCa(dir), /root-key\.pem: the key does not match the certificate/);
    await Deno.writeTextFile(`${dir}/${CA_KEY_FILE}`, "not a key");
    await assert.rejects(loadCa(dir), /root-key\.pem: no PEM private key found/);
    const leaf = await issueCert(a, { id: ORDERS, ttlMs: HOUR });
    await assert.rejects(caFromPem(leaf.certChainPem, leaf.keyPem), /is not a CA/);
  });
});

Deno.test("caFromPem takes an Istio-style root without a SAN: trust domain from O", async () => {
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: "O=mesh.example",
    keys,
    signingAlgorithm: EC_P256,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  const der = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  const ca = await caFromPem(cert.toString("pem"), x509.PemConverter.encode(der, "PRIVATE KEY"));
  assert.equal(ca.trustDomain, "mesh.example");
});

Deno.test("issueCert makes a workload certificate with Istio's shape", async () => {
  const now = new Date("2030-01-01T00:00:00Z");
  const ca = await initCa({ trustDomain: "cluster.local", ttlMs: 1000 * HOUR, now });
  const issued = await issueCert(ca, { id: ORDERS, ttlMs: 24 * HOUR, now });
  const cert = new x509.X509Certificate(issued.certChainPem);
  assert.equal(cert.subject, "");
  assert.equal(cert.issuer, "O=cluster.local");
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
  assert.deepEqual(san.names.toJSON(), [{ type: "url", value: ORDERS }], "the SPIFFE ID only");
  assert.equal(san.critical, true, "critical: the subject is empty");
  assert.equal(cert.getExtension(x509.BasicConstraintsExtension)?.ca, false);
  assert.equal(
    cert.getExtension(x509.KeyUsagesExtension)?.usages,
    x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
  );
  assert.deepEqual([...cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages], [
    x509.ExtendedKeyUsage.serverAuth,
    x509.ExtendedKeyUsage.clientAuth,
  ]);
  assert.ok(await cert.verify({ publicKey: ca.cert.publicKey, signatureOnly: true }));
  assert.equal(cert.notBefore.getTime(), now.getTime() - 60_000);
  assert.equal(cert.notAfter.getTime(), now.getTime() + 24 * HOUR);
  assert.deepEqual([issued.notBefore, issued.notAfter], [cert.notBefore, cert.notAfter]);
  assert.equal(issued.rootCertPem, ca.certPem);
  assert.equal(issued.spiffeId, ORDERS);
  assert.match(issued.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  const other = await issueCert(ca, { id: ORDERS, ttlMs: HOUR, now });
  assert.notEqual(new x509.X509Certificate(other.certChainPem).serialNumber, cert.serialNumber);
});

Deno.test("issueCert never outlives the CA and refuses bad IDs, foreign domains, an expired CA", async () => {
  const now = new Date("2030-01-01T00:00:00Z");
  const ca = await initCa({ trustDomain: "cluster.local", ttlMs: 10 * HOUR, now });
  const long = await issueCert(ca, { id: ORDERS, ttlMs: 100 * HOUR, now });
  assert.equal(long.notAfter.getTime(), ca.cert.notAfter.getTime());
  const early = await issueCert(ca, {
    id: ORDERS,
    ttlMs: HOUR,
    now: new Date(now.getTime() - 30_000),
  });
  assert.equal(early.notBefore.getTime(), ca.cert.notBefore.getTime(), "not before the CA");
  await assert.rejects(
    issueCert(ca, { id: "spiffe://cluster.local/orders", ttlMs: HOUR, now }),
    /path must be/,
  );
  await assert.rejects(
    issueCert(ca, { id: "spiffe://other.local/ns/default/sa/orders", ttlMs: HOUR, now }),
    /trust domain "other\.local", the CA's is "cluster\.local"/,
  );
  await assert.rejects(issueCert(ca, { id: ORDERS, ttlMs: -1, now }), /must be positive/);
  await assert.rejects(
    issueCert(ca, { id: ORDERS, ttlMs: HOUR, now: new Date(now.getTime() + 11 * HOUR) }),
    /CA certificate expired/,
  );
});

async function csr(keys: CryptoKeyPair, sans?: x509.JsonGeneralNames): Promise<string> {
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "O=ignored",
    keys,
    signingAlgorithm: EC_P256,
    extensions: sans === undefined ? [] : [new x509.SubjectAlternativeNameExtension(sans)],
  });
  return req.toString("pem");
}

Deno.test("signCsr certifies the requester's key for the authenticated ID only", async () => {
  const ca = await initCa({ trustDomain: "cluster.local", ttlMs: 100 * HOUR });
  const keys = await generateKeyPair();
  for (const pem of [await csr(keys), await csr(keys, [{ type: "url", value: ORDERS }])]) {
    const issued = await signCsr(ca, pem, { id: ORDERS, ttlMs: HOUR });
    const cert = new x509.X509Certificate(issued.certChainPem);
    assert.deepEqual(uriSans(cert), [ORDERS]);
    assert.equal(cert.subject, "", "the CSR's subject is ignored");
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
    assert.deepEqual(new Uint8Array(cert.publicKey.rawData), spki);
    assert.equal(issued.keyPem, "");
  }
  await assert.rejects(
    signCsr(ca, await csr(keys, [{ type: "url", value: "spiffe://cluster.local/ns/x/sa/y" }]), {
      id: ORDERS,
      ttlMs: HOUR,
    }),
    /asks for url:spiffe:\/\/cluster\.local\/ns\/x\/sa\/y, not spiffe/,
  );
  await assert.rejects(
    signCsr(ca, await csr(keys, [{ type: "url", value: ORDERS }, { type: "dns", value: "x" }]), {
      id: ORDERS,
      ttlMs: HOUR,
    }),
    /asks for url:.*, dns:x/,
  );
  // A CSR whose signature was made by another key.
  const good = new x509.Pkcs10CertificateRequest(await csr(keys));
  const forged = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "O=ignored",
    keys: { publicKey: keys.publicKey, privateKey: (await generateKeyPair()).privateKey },
    signingAlgorithm: EC_P256,
  });
  assert.ok(await good.verify());
  await assert.rejects(
    signCsr(ca, forged.toString("pem"), { id: ORDERS, ttlMs: HOUR }),
    /does not verify/,
  );
  await assert.rejects(
    signCsr(ca, "junk", { id: ORDERS, ttlMs: HOUR }),
    /Cannot parse the certificate signing request/,
  );
});

Deno.test("writeIssued writes Istio's file names, the key 0600, and loadIdentity accepts them", async () => {
  await withTempDir(async (dir) => {
    const ca = await initCa({ trustDomain: "cluster.local", ttlMs: 100 * HOUR });
    const issued = await issueCert(ca, { id: ORDERS, ttlMs: HOUR });
    await writeIssued(`${dir}/id`, issued);
    const names = (await Array.fromAsync(Deno.readDir(`${dir}/id`))).map((e) => e.name).sort();
    assert.deepEqual(names, ["cert-chain.pem", "key.pem", "root-cert.pem"]);
    assert.equal((await Deno.stat(`${dir}/id/key.pem`)).mode! & 0o777, 0o600);
    const id = await loadIdentity(`${dir}/id`);
    assert.equal(id.spiffeId, ORDERS);
    assert.equal(id.certChainPem, issued.certChainPem);
    assert.equal(id.rootCertPem, ca.certPem);
  });
});

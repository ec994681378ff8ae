/**
 * remora's certificate authority for a mesh without a control plane: a root
 * key and self-signed root certificate (`initCa`), and workload certificates
 * with a SPIFFE URI SAN signed by it, either with a fresh EC P-256 key
 * (`issueCert`) or for a certificate signing request (`signCsr`, what a
 * control plane's CA service does).
 *
 * Certificates follow Istio's shape: the root has subject O=<trust domain>,
 * CA:true and keyCertSign/cRLSign; a workload certificate has an empty
 * subject, the SPIFFE ID as its only (critical) SAN, digitalSignature and
 * keyEncipherment, serverAuth and clientAuth, and a validity that starts a
 * minute early (clock skew) and never outlives the root. Files are written
 * with Istio's names, keys with mode 0600, each file replaced atomically. All
 * X.509 encoding is `@peculiar/x509`'s; this module does not parse command
 * lines (see `cli/ca.ts`) or load identities for serving (see `identity.ts`).
 */

import { CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE } from "./identity.ts";
import { parseSpiffeId, trustDomainProblem } from "./spiffe.ts";
import {
  EC_P256,
  generateKeyPair,
  importPrivateKeyPem,
  parseCertificates,
  type PrivateKey,
  privateKeyPem,
  sameBytes,
  uriSans,
  x509,
} from "./x509.ts";

/** The CA's file names in its directory. */
export const CA_KEY_FILE = "root-key.pem";
export const CA_CERT_FILE = "root-cert.pem";

/** A CA that can sign: its certificate and private key. */
export interface Ca {
  trustDomain: string;
  cert: x509.X509Certificate;
  certPem: string;
  keyPem: string;
  signer: PrivateKey;
}

/** A signed workload certificate, as the three files of an identity directory hold it. */
export interface IssuedCert {
  spiffeId: string;
  /** The leaf certificate (no intermediates: remora's CA signs with the root). */
  certChainPem: string;
  /** The private key (PKCS#8 PEM); empty for `signCsr`, whose key stays with the requester. */
  keyPem: string;
  /** The CA certificate, the trust bundle. */
  rootCertPem: string;
  notBefore: Date;
  notAfter: Date;
}

/** A CA operation that cannot be done, with the reason. */
export class CaError extends Error {
  override name = "CaError";
}

const _SKEW_MS = 60_000;
const _SAN_OID = "2.5.29.17";

/** Creates a new CA for `trustDomain`, valid from a minute ago for `ttlMs`. */
export async function initCa(
  opts: { trustDomain: string; ttlMs: number; now?: Date },
): Promise<Ca> {
  const problem = trustDomainProblem(opts.trustDomain);
  if (problem !== undefined) throw new CaError(problem);
  if (!(opts.ttlMs > 0)) throw new CaError(`CA lifetime must be positive, got ${opts.ttlMs}ms`);
  const now = opts.now ?? new Date();
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: _serial(),
    name: [{ O: [opts.trustDomain] }],
    notBefore: new Date(now.getTime() - _SKEW_MS),
    notAfter: new Date(now.getTime() + opts.ttlMs),
    signingAlgorithm: EC_P256,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      new x509.SubjectAlternativeNameExtension([{
        type: "url",
        value: `spiffe://${opts.trustDomain}`,
      }]),
    ],
  });
  const keyPem = await privateKeyPem(keys.privateKey);
  return await caFromPem(cert.toString("pem") + "\n", keyPem, { now });
}

/**
 * Makes a `Ca` from PEM texts, checking that the certificate is a CA, the
 * key is its key, it is valid at `now`, and it names a trust domain (a
 * spiffe://<td> URI SAN, else its subject's O, as Istio's roots have).
 */
export async function caFromPem(
  certPem: string,
  keyPem: string,
  opts: { now?: Date } = {},
): Promise<Ca> {
  let cert: x509.X509Certificate;
  try {
    const certs = parseCertificates(certPem);
    cert = certs[0]!;
  } catch (e) {
    throw new CaError(`${CA_CERT_FILE}: ${_reason(e)}`);
  }
  let signer: PrivateKey;
  try {
    signer = await importPrivateKeyPem(keyPem);
  } catch (e) {
    throw new CaError(`${CA_KEY_FILE}: ${_reason(e)}`);
  }
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca !== true) {
    throw new CaError(`${CA_CERT_FILE}: the certificate is not a CA (basicConstraints CA:true)`);
  }
  if (!sameBytes(signer.spki, cert.publicKey.rawData)) {
    throw new CaError(`${CA_KEY_FILE}: the key does not match the certificate in ${CA_CERT_FILE}`);
  }
  const now = opts.now ?? new Date();
  if (now > cert.notAfter) {
    throw new CaError(
      `${CA_CERT_FILE}: the CA certificate expired at ${cert.notAfter.toISOString()}`,
    );
  }
  const fromSan = uriSans(cert).find((u) => u.startsWith("spiffe://"))?.slice("spiffe://".length);
  const trustDomain = fromSan ?? cert.subjectName.getField("O")[0];
  if (trustDomain === undefined || trustDomainProblem(trustDomain) !== undefined) {
    throw new CaError(
      `${CA_CERT_FILE}: the CA certificate names no trust domain (a spiffe:// URI SAN or O=)`,
    );
  }
  return { trustDomain, cert, certPem, keyPem, signer };
}

/** Reads a CA from `dir` (root-cert.pem, root-key.pem). Errors name the file. */
export async function loadCa(dir: string, opts: { now?: Date } = {}): Promise<Ca> {
  const read = async (name: string) => {
    try {
      return await Deno.readTextFile(`${dir}/${name}`);
    } catch (e) {
      throw new CaError(`${dir}/${name}: cannot read file: ${_reason(e)}`);
    }
  };
  const certPem = await read(CA_CERT_FILE);
  const keyPem = await read(CA_KEY_FILE);
  try {
    return await caFromPem(certPem, keyPem, opts);
  } catch (e) {
    throw new CaError(`${dir}/${_reason(e)}`);
  }
}

/**
 * Writes a CA to `dir` (created if missing): root-key.pem (0600) and
 * root-cert.pem. Refuses to replace an existing CA unless `force`.
 */
export async function writeCa(dir: string, ca: Ca, opts: { force?: boolean } = {}): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  if (opts.force !== true) {
    for (const name of [CA_KEY_FILE, CA_CERT_FILE]) {
      if (await _exists(`${dir}/${name}`)) {
        throw new CaError(
          `${dir}/${name} exists: a CA is there already (use --force to replace it)`,
        );
      }
    }
  }
  await _writeAtomic(`${dir}/${CA_KEY_FILE}`, ca.keyPem, 0o600);
  await _writeAtomic(`${dir}/${CA_CERT_FILE}`, ca.certPem, 0o644);
}

/** Issues a workload certificate for `id` with a new EC P-256 key. */
export async function issueCert(
  ca: Ca,
  opts: { id: string; ttlMs: number; now?: Date },
): Promise<IssuedCert> {
  const keys = await generateKeyPair();
  const issued = await _sign(ca, keys.publicKey, opts);
  return { ...issued, keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * Signs a PKCS#10 certificate signing request for `id` (the identity the
 * caller was authenticated as). The request's signature must verify, and a
 * SAN it asks for must be `id` alone; everything else in it (subject, other
 * extensions) is ignored: the certificate has the same shape as `issueCert`'s.
 */
export async function signCsr(
  ca: Ca,
  csrPem: string,
  opts: { id: string; ttlMs: number; now?: Date },
): Promise<IssuedCert> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (e) {
    throw new CaError(`Cannot parse the certificate signing request: ${_reason(e)}`);
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new CaError("The certificate signing request's signature does not verify");
  const san = csr.getExtension(_SAN_OID);
  if (san !== null) {
    const names = (san instanceof x509.SubjectAlternativeNameExtension
      ? san
      : new x509.SubjectAlternativeNameExtension(san.rawData)).names.items;
    const asked = names.map((n) =>
      `${n.type}:${n.value}`
    );
    if (names.length !== 1 || names[0]!.type !== "url" || names[0]!.value !== opts.id) {
      throw new CaError(
        `The certificate signing request asks for ${asked.join(", ")}, not ${opts.id}`,
      );
    }
  }
  const issued = await _sign(ca, csr.publicKey, opts);
  return { ...issued, keyPem: "" };
}

/**
 * Writes an issued certificate to `dir` (created if missing) with Istio's
 * names: cert-chain.pem, key.pem (0600) and root-cert.pem. Each file is
 * replaced atomically; the key is written before the chain, the bundle
 * first, so a watcher sees at most a short mismatch.
 */
export async function writeIssued(dir: string, issued: IssuedCert): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await _writeAtomic(`${dir}/${ROOT_CERT_FILE}`, issued.rootCertPem, 0o644);
  if (issued.keyPem !== "") await _writeAtomic(`${dir}/${KEY_FILE}`, issued.keyPem, 0o600);
  await _writeAtomic(`${dir}/${CERT_CHAIN_FILE}`, issued.certChainPem, 0o644);
}

async function _sign(
  ca: Ca,
  publicKey: x509.PublicKeyType,
  opts: { id: string; ttlMs: number; now?: Date },
): Promise<Omit<IssuedCert, "keyPem">> {
  let id;
  try {
    id = parseSpiffeId(opts.id);
  } catch (e) {
    throw new CaError(_reason(e));
  }
  if (id.trustDomain !== ca.trustDomain) {
    throw new CaError(
      `${opts.id} is in trust domain "${id.trustDomain}", the CA's is "${ca.trustDomain}"`,
    );
  }
  if (!(opts.ttlMs > 0)) {
    throw new CaError(`Certificate lifetime must be positive, got ${opts.ttlMs}ms`);
  }
  const now = (opts.now ?? new Date()).getTime();
  const caNotBefore = ca.cert.notBefore.getTime();
  const caNotAfter = ca.cert.notAfter.getTime();
  if (now >= caNotAfter) {
    throw new CaError(`The CA certificate expired at ${ca.cert.notAfter.toISOString()}`);
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: _serial(),
    subject: [],
    issuer: ca.cert.subjectName,
    notBefore: new Date(Math.max(now - _SKEW_MS, caNotBefore)),
    notAfter: new Date(Math.min(now + opts.ttlMs, caNotAfter)),
    publicKey,
    signingKey: ca.signer.key,
    signingAlgorithm: ca.signer.signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
      // The subject is empty, so the SAN is critical (RFC 5280 4.2.1.6), as in Istio's certs.
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: id.id }], true),
    ],
  });
  return {
    spiffeId: id.id,
    certChainPem: cert.toString("pem") + "\n",
    rootCertPem: ca.certPem,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

/** A random positive 128-bit serial number in hex (RFC 5280: at most 20 octets, positive). */
function _serial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x40;
  return Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
}

async function _exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Writes `text` to a temp file beside `path` with `mode`, then renames it over `path`. */
async function _writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const slash = path.lastIndexOf("/");
  const tmp = `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(tmp, text, { mode, createNew: true });
    await Deno.chmod(tmp, mode); // the umask applies at creation: set the mode exactly
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

function _reason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.IsADirectory) return "is a directory";
  return e instanceof Error ? e.message : String(e);
}

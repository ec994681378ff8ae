/**
 * The workload's own identity: the certificate chain, private key and trust
 * bundle in a directory with Istio's file names (cert-chain.pem, key.pem,
 * root-cert.pem), checked as one set and watched for rotation.
 *
 * `loadIdentity` accepts a set only when every PEM parses, the key is the
 * leaf certificate's, the chain verifies up to a root of the bundle, the leaf
 * carries exactly one URI SAN and it is an Istio SPIFFE ID, and every
 * certificate is valid now; each problem is an `IdentityError` naming the
 * file. `IdentityWatcher` reports a good new set or a refused one through
 * callbacks (keeping the old identity, logging and counting are the caller's
 * job), and `expiryWarnings` says when rotation is overdue. It does not serve
 * TLS or issue certificates (see `ca.ts`).
 */

import { DirWatcher } from "../fs/dir_watch.ts";
import { parseSpiffeId } from "./spiffe.ts";
import { importPrivateKeyPem, parseCertificates, sameBytes, uriSans, x509 } from "./x509.ts";

/** Istio's file names in an identity directory. */
export const CERT_CHAIN_FILE = "cert-chain.pem";
export const KEY_FILE = "key.pem";
export const ROOT_CERT_FILE = "root-cert.pem";

/** A checked identity: PEM texts ready for node:tls, and what they say. */
export interface Identity {
  /** spiffe://<trust domain>/ns/<namespace>/sa/<service account> */
  spiffeId: string;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
  /** The leaf certificate, then any intermediates (node:tls `cert`). */
  certChainPem: string;
  /** The leaf's private key (node:tls `key`). */
  keyPem: string;
  /** The trust bundle: roots that peers' chains must lead to (node:tls `ca`). */
  rootCertPem: string;
  /** The leaf's serial number in hex, for logs. */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

/** Why an identity set was refused; `file` is the path of the file at fault. */
export class IdentityError extends Error {
  override name = "IdentityError";
  readonly file: string;
  constructor(file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.file = file;
  }
}

/** Reads and checks the identity in `dir`; throws an `IdentityError` naming the file at fault. */
export async function loadIdentity(dir: string, opts: { now?: Date } = {}): Promise<Identity> {
  const texts: string[] = [];
  for (const name of [CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE]) {
    try {
      texts.push(await Deno.readTextFile(`${dir}/${name}`));
    } catch (e) {
      throw new IdentityError(`${dir}/${name}`, `cannot read file: ${_reason(e)}`);
    }
  }
  return await identityFromPem(
    { certChainPem: texts[0]!, keyPem: texts[1]!, rootCertPem: texts[2]! },
    { ...opts, dir },
  );
}

/**
 * Checks an identity given as PEM texts (see `loadIdentity`). Errors name
 * the files as `dir`/<Istio's name>, or the bare names without `dir`.
 */
export async function identityFromPem(
  pems: { certChainPem: string; keyPem: string; rootCertPem: string },
  opts: { now?: Date; dir?: string } = {},
): Promise<Identity> {
  const file = (name: string) => opts.dir === undefined ? name : `${opts.dir}/${name}`;
  const chainFile = file(CERT_CHAIN_FILE);
  const rootFile = file(ROOT_CERT_FILE);
  const keyFile = file(KEY_FILE);
  const now = opts.now ?? new Date();

  const bundle = _parse(rootFile, pems.rootCertPem);
  bundle.forEach((root, i) => {
    if (root.getExtension(x509.BasicConstraintsExtension)?.ca !== true) {
      throw new IdentityError(rootFile, `certificate ${i + 1} (${root.subject}) is not a CA`);
    }
  });
  // A bundle may keep a root past its time (one being retired): it trusts nothing then, as
  // in Envoy, and expiryWarnings says so. With none valid now, the set is refused.
  const roots = bundle.filter((r) => now >= r.notBefore && now <= r.notAfter);
  if (roots.length === 0) {
    _checkValidity(rootFile, bundle[0]!, now, bundle.length > 1 ? "certificate 1" : "the root");
  }
  const chain = _parse(chainFile, pems.certChainPem);
  const leaf = chain[0]!;

  let key;
  try {
    key = await importPrivateKeyPem(pems.keyPem);
  } catch (e) {
    throw new IdentityError(keyFile, _reason(e));
  }
  if (!sameBytes(key.spki, leaf.publicKey.rawData)) {
    throw new IdentityError(
      keyFile,
      `the private key does not match the certificate in ${CERT_CHAIN_FILE}`,
    );
  }

  const uris = uriSans(leaf);
  if (uris.length !== 1) {
    throw new IdentityError(
      chainFile,
      `the certificate must have exactly one URI SAN (a SPIFFE ID), it has ${uris.length}` +
        (uris.length > 0 ? `: ${uris.join(", ")}` : ""),
    );
  }
  let id;
  try {
    id = parseSpiffeId(uris[0]!);
  } catch (e) {
    throw new IdentityError(chainFile, _reason(e));
  }
  if (leaf.getExtension(x509.BasicConstraintsExtension)?.ca === true) {
    throw new IdentityError(chainFile, "the certificate is a CA, not a workload certificate");
  }
  const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku !== null) {
    for (
      const [name, oid] of [["serverAuth", x509.ExtendedKeyUsage.serverAuth], [
        "clientAuth",
        x509.ExtendedKeyUsage.clientAuth,
      ]]
    ) {
      if (!eku.usages.includes(oid!)) {
        throw new IdentityError(chainFile, `the certificate's extendedKeyUsage lacks ${name}`);
      }
    }
  }

  for (let i = 0; i < chain.length; i++) {
    const what = i === 0 ? "the certificate" : `certificate ${i + 1}`;
    _checkValidity(chainFile, chain[i]!, now, what);
    const issuer = chain[i + 1];
    if (issuer !== undefined) {
      if (!(await _signedBy(chain[i]!, issuer))) {
        throw new IdentityError(chainFile, `${what} is not signed by certificate ${i + 2}`);
      }
      continue;
    }
    const last = chain[i]!;
    const anchored = roots.some((r) => sameBytes(r.rawData, last.rawData)) ||
      (await Promise.all(roots.map((r) => _signedBy(last, r)))).some((ok) => ok);
    if (!anchored) {
      throw new IdentityError(
        chainFile,
        `${what} (issuer ${last.issuer || "empty"}) is not signed by a CA in ${ROOT_CERT_FILE}`,
      );
    }
  }

  return {
    spiffeId: id.id,
    trustDomain: id.trustDomain,
    namespace: id.namespace,
    serviceAccount: id.serviceAccount,
    certChainPem: pems.certChainPem,
    keyPem: pems.keyPem,
    rootCertPem: pems.rootCertPem,
    serialNumber: leaf.serialNumber,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
  };
}

/** Whether two identities are the same files, byte for byte. */
export function sameIdentity(a: Identity, b: Identity): boolean {
  return a.certChainPem === b.certChainPem && a.keyPem === b.keyPem &&
    a.rootCertPem === b.rootCertPem;
}

const _DAY_MS = 24 * 3_600_000;

/**
 * When expiry warnings start for `identity`: when less than 20% of its
 * lifetime remains, or less than 24h; the 24h rule is capped at half the
 * lifetime, so a 24h certificate (Istio's default) warns once it is past
 * the half-life where Istio rotates, not from the start.
 */
export function expiryWarningAt(identity: Identity): Date {
  const lifetime = identity.notAfter.getTime() - identity.notBefore.getTime();
  const lead = Math.max(0.2 * lifetime, Math.min(_DAY_MS, 0.5 * lifetime));
  return new Date(identity.notAfter.getTime() - lead);
}

/** Warnings about `identity`'s expiry at `now`: empty while it is far from expiring. */
export function expiryWarnings(identity: Identity, now: Date = new Date()): string[] {
  const left = identity.notAfter.getTime() - now.getTime();
  if (left <= 0) {
    return [
      `Identity certificate ${identity.spiffeId} expired at ${identity.notAfter.toISOString()}`,
    ];
  }
  const warnings = _rootWarnings(identity.rootCertPem, now);
  if (now < expiryWarningAt(identity)) return warnings;
  return [
    `Identity certificate ${identity.spiffeId} expires in ${_humanMs(left)} ` +
    `(at ${identity.notAfter.toISOString()}): rotate it`,
    ...warnings,
  ];
}

/** The roots of a bundle that trust nothing at `now` (expired, or not valid yet). */
function _rootWarnings(rootCertPem: string, now: Date): string[] {
  const out: string[] = [];
  let bundle: x509.X509Certificate[];
  try {
    bundle = parseCertificates(rootCertPem);
  } catch {
    return out; // a loaded identity's bundle parses: checked when it was loaded
  }
  bundle.forEach((r, i) => {
    const when = now < r.notBefore
      ? `is not valid before ${r.notBefore.toISOString()}`
      : now > r.notAfter
      ? `expired at ${r.notAfter.toISOString()}`
      : undefined;
    if (when !== undefined) {
      out.push(
        `${ROOT_CERT_FILE}: certificate ${
          i + 1
        } (${r.subject}) ${when}; it trusts no peer until it is valid or removed`,
      );
    }
  });
  return out;
}

export interface IdentityWatcherOptions {
  /** Called with each new identity set that passed every check. */
  onIdentity: (identity: Identity) => void;
  /** Called when a changed set is refused; the caller keeps the old identity. */
  onError: (error: IdentityError) => void;
  /** Called when, after a refusal, the files hold the identity being served again. */
  onRestored?: (identity: Identity) => void;
  /** Quiet time after the last change before loading (default 100ms). */
  debounceMs?: number;
  /**
   * A refused set is loaded once more after this long before it is reported
   * (default 200ms): files replaced one by one are briefly inconsistent.
   */
  retryMs?: number;
  /** The identity currently served; loading the same files again is not reported. */
  current?: Identity;
  /** The clock validity is checked against (tests). */
  now?: () => Date;
}

/**
 * Watches an identity directory and reloads the set when one of its files
 * changes. It watches the directory, not the files, so files replaced by
 * rename and Kubernetes secret volumes (which swap a `..data` symlink) are
 * seen. Changes are debounced, loads never overlap, and an inconsistent set
 * is retried once before it is refused. It does not load the set at start:
 * call `loadIdentity` for the initial identity.
 */
export class IdentityWatcher {
  readonly dir: string;
  readonly #opts: IdentityWatcherOptions;
  readonly #watch: DirWatcher;
  #current: Identity | undefined;
  /** The next load is the one retry of a set found inconsistent. */
  #retrying = false;
  /** The last load was refused (reported through onError). */
  #refused = false;

  constructor(dir: string, opts: IdentityWatcherOptions) {
    this.dir = dir;
    this.#opts = opts;
    this.#current = opts.current;
    const names = new Set([CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE]);
    this.#watch = new DirWatcher(dir, {
      matches: (p) => {
        const base = p.slice(p.lastIndexOf("/") + 1);
        return names.has(base) || base.startsWith("..");
      },
      reload: () => this.#reload(),
      onWatchError: (reason) =>
        opts.onError(new IdentityError(dir, `cannot watch directory: ${reason}`)),
      ...(opts.debounceMs === undefined ? {} : { debounceMs: opts.debounceMs }),
    });
  }

  /** The last identity reported (or given as `current`). */
  get current(): Identity | undefined {
    return this.#current;
  }

  async #reload(): Promise<void> {
    const retry = this.#retrying;
    this.#retrying = false;
    try {
      const now = this.#opts.now?.() ?? new Date();
      const identity = await loadIdentity(this.dir, { now });
      if (this.#watch.closed) return;
      const refused = this.#refused;
      this.#refused = false;
      if (this.#current !== undefined && sameIdentity(this.#current, identity)) {
        if (refused) this.#opts.onRestored?.(identity);
        return;
      }
      this.#current = identity;
      this.#opts.onIdentity(identity);
    } catch (e) {
      if (this.#watch.closed) return;
      const retryMs = this.#opts.retryMs ?? 200;
      if (!retry && retryMs > 0) {
        // Files replaced one by one are briefly inconsistent: look once more,
        // unless a newer change already scheduled a load.
        if (!this.#watch.busy) {
          this.#retrying = true;
          this.#watch.schedule(retryMs);
        }
        return;
      }
      this.#refused = true;
      this.#opts.onError(e instanceof IdentityError ? e : new IdentityError(this.dir, _reason(e)));
    }
  }

  /** Stops watching; resolves once no load is running. Safe to call twice. */
  close(): Promise<void> {
    return this.#watch.close();
  }
}

function _parse(file: string, pem: string): x509.X509Certificate[] {
  try {
    return parseCertificates(pem);
  } catch (e) {
    throw new IdentityError(file, _reason(e));
  }
}

function _checkValidity(file: string, cert: x509.X509Certificate, now: Date, what: string): void {
  if (now < cert.notBefore) {
    throw new IdentityError(file, `${what} is not valid before ${cert.notBefore.toISOString()}`);
  }
  if (now > cert.notAfter) {
    throw new IdentityError(file, `${what} expired at ${cert.notAfter.toISOString()}`);
  }
}

async function _signedBy(
  cert: x509.X509Certificate,
  issuer: x509.X509Certificate,
): Promise<boolean> {
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

function _humanMs(ms: number): string {
  if (ms >= 2 * _DAY_MS) return `${Math.floor(ms / _DAY_MS)}d`;
  if (ms >= 3_600_000) {
    return `${Math.floor(ms / 3_600_000)}h${Math.floor((ms % 3_600_000) / 60_000)}m`;
  }
  if (ms >= 60_000) return `${Math.floor(ms / 60_000)}m`;
  return `${Math.ceil(ms / 1000)}s`;
}

function _reason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.IsADirectory) return "is a directory";
  return e instanceof Error ? e.message : String(e);
}

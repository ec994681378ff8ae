/**
 * Mutual TLS between sidecars: terminating it on inbound connections and
 * originating it to meshed upstreams, with SPIFFE identities.
 *
 * Inbound TLS is node:tls (Deno's `Deno.listenTls` cannot ask for or show
 * client certificates), run over remora's own connection through a Duplex,
 * so the ClientHello bytes read for detection are replayed to it. Outbound
 * TLS is Deno's own client where it can do the whole check, else node:tls
 * (`originate`). The result is a `BufConn` again, so the HTTP engines run
 * unchanged over TLS. Material comes from a `MeshIdentity`, which swaps it whole on
 * rotation: new handshakes use the new certificate, open connections keep
 * theirs. Only TLS 1.2 and 1.3 with forward-secret AEAD ciphers are offered.
 *
 * Like Istio, sidecars mark mesh mTLS with ALPN: "istio-h2",
 * "istio-http/1.1", "istio-http/1.0", or "istio" for TCP; the inbound side
 * uses that to tell mesh traffic from an app's own TLS under PERMISSIVE.
 */

import { createHash, X509Certificate } from "node:crypto";
import tls from "node:tls";
import { BufConn } from "../net/buf_conn.ts";
import { tcpByteConn, tlsByteConn } from "../net/byte_conn.ts";
import { setNoDelay } from "../net/ffi.ts";
import { uriSans, x509 } from "../identity/x509.ts";
import { duplexOf } from "../net/duplex.ts";

/** The certificate material of this workload. */
export interface TlsMaterial {
  spiffeId: string;
  trustDomain: string;
  certChainPem: string;
  keyPem: string;
  rootCertPem: string;
}

/** TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all fine). */
const CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** ALPN values of mesh traffic, as Istio's sidecars use them. */
export const MESH_ALPN = ["istio-h2", "istio-http/1.1", "istio-http/1.0", "istio"];

/** Holds the current material; replaced whole on rotation. */
export class MeshIdentity {
  #material: TlsMaterial;
  #roots: X509Certificate[];
  constructor(material: TlsMaterial) {
    this.#material = material;
    this.#roots = parseRoots(material.rootCertPem);
  }
  get material(): TlsMaterial {
    return this.#material;
  }
  /** The trust bundle, parsed once per rotation. */
  get roots(): readonly X509Certificate[] {
    return this.#roots;
  }
  rotate(material: TlsMaterial): void {
    this.#roots = parseRoots(material.rootCertPem);
    this.#material = material;
  }
}

function parseRoots(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [])
    .map((p) => new X509Certificate(p));
}

interface PeerCertificate {
  raw?: Uint8Array;
  issuerCertificate?: PeerCertificate;
}

/**
 * Checks a peer's certificate chain against the trust bundle ourselves: the
 * leaf (and any intermediates it came with) must lead to a root of the
 * bundle by signature, and each must be within its validity period. node:tls
 * as Deno provides it does not enforce this in every case, so the mesh does
 * not rely on it. Returns the problem, or undefined when the chain is good.
 */
export function chainProblem(
  peer: PeerCertificate | null | undefined,
  roots: readonly X509Certificate[],
  now = new Date(),
): string | undefined {
  if (peer?.raw === undefined || peer.raw.length === 0) return "no certificate presented";
  return chainProblemOf(peer as PeerCertificate & { raw: Uint8Array }, roots, now);
}

/**
 * What disqualifies a mesh peer's certificate: its chain (`chainProblem`),
 * an extendedKeyUsage that does not allow `purpose` (a server-only
 * certificate cannot act as a client, nor the reverse), or more than one
 * SPIFFE ID (an X.509-SVID has exactly one: policies reading the first
 * would miss the others).
 */
export function peerProblem(
  peer: PeerCertificate | null | undefined,
  roots: readonly X509Certificate[],
  purpose: Purpose,
): string | undefined {
  const problem = chainProblem(peer, roots);
  if (problem !== undefined) return problem;
  const leaf = leafOf(peer!.raw!);
  if (leaf.error !== undefined) return `certificate cannot be read: ${leaf.error}`;
  if (leaf.ids.length > 1) {
    return `certificate has ${leaf.ids.length} SPIFFE IDs; an X.509-SVID has exactly one`;
  }
  const usages = leaf.usages;
  if (usages !== undefined && !usages.includes(EKU_OID[purpose]) && !usages.includes(ANY_EKU)) {
    return `certificate is not for TLS ${
      purpose === "clientAuth" ? "clients" : "servers"
    } (its extendedKeyUsage lacks ${purpose})`;
  }
  return undefined;
}

export type Purpose = "clientAuth" | "serverAuth";

const EKU_OID: Record<Purpose, string> = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};
const ANY_EKU = "2.5.29.37.0";

/** What the mesh reads from a peer's leaf certificate. */
interface Leaf {
  /** Its URI SANs that are SPIFFE IDs, each whole. */
  ids: string[];
  /** Its extendedKeyUsage OIDs; undefined: no such extension (any use). */
  usages: string[] | undefined;
  /** Why it could not be read. */
  error?: string;
}

/** Leaves read so far, by DER hash: a certificate is parsed once, not per connection. */
const leaves = new Map<string, Leaf>();

/**
 * A leaf's SPIFFE IDs and extendedKeyUsage, read from its DER with the X.509
 * library. Not from node:tls's `subjectaltname` text: Deno's does not quote a
 * URI with a comma in it, so "URI:https://x/a,URI:spiffe://td/ns/n/sa/admin"
 * (one URI) would read as two names, the second an identity the certificate
 * does not hold.
 */
function leafOf(raw: Uint8Array): Leaf {
  const key = createHash("sha256").update(raw).digest("hex");
  const known = leaves.get(key);
  if (known !== undefined) return known;
  let leaf: Leaf;
  try {
    const cert = new x509.X509Certificate(new Uint8Array(raw));
    const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
    leaf = {
      ids: uriSans(cert).filter((u) => u.startsWith("spiffe://")),
      usages: eku === null ? undefined : eku.usages.map(String),
    };
  } catch (e) {
    leaf = { ids: [], usages: undefined, error: (e as Error).message };
  }
  if (leaves.size >= 1024) leaves.clear();
  leaves.set(key, leaf);
  return leaf;
}

function chainProblemOf(
  peer: PeerCertificate & { raw: Uint8Array },
  roots: readonly X509Certificate[],
  now: Date,
): string | undefined {
  let cert = new X509Certificate(peer.raw);
  let next = peer.issuerCertificate;
  for (let depth = 0; depth < 5; depth++) {
    if (new Date(cert.validFrom) > now) {
      return `certificate ${cert.serialNumber} is not valid before ${cert.validFrom}`;
    }
    if (new Date(cert.validTo) < now) {
      return `certificate ${cert.serialNumber} expired at ${cert.validTo}`;
    }
    for (const root of roots) {
      // A root of the bundle outside its validity period trusts nothing (see identity.ts).
      if (new Date(root.validFrom) > now || new Date(root.validTo) < now) continue;
      if (cert.checkIssued(root) && cert.verify(root.publicKey)) return undefined;
    }
    // Not signed by a root: climb to the intermediate the peer sent, if any.
    if (next?.raw === undefined || next.raw.length === 0) break;
    const parent = new X509Certificate(next.raw);
    if (
      parent.fingerprint256 === cert.fingerprint256 || !cert.checkIssued(parent) ||
      !cert.verify(parent.publicKey)
    ) {
      break;
    }
    // Only a CA may issue (basicConstraints CA:TRUE, RFC 5280 4.2.1.9): else any workload's
    // key could sign a certificate for whatever identity it likes.
    if (!parent.ca) {
      return `certificate ${parent.serialNumber} in the chain is not a CA certificate`;
    }
    cert = parent;
    next = next.issuerCertificate === next ? undefined : next.issuerCertificate;
  }
  return "certificate is not signed by the mesh's trust bundle";
}

/** Socket errors of a connection that did not reach its host. */
const CONNECT_CODES = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EADDRNOTAVAIL",
  "ENOTFOUND",
]);

/** A TLS handshake or identity check failed. */
export class MtlsError extends Error {
  override name = "MtlsError";
}

/** What the inbound side learnt of its peer. */
export interface PeerInfo {
  /** The peer's SPIFFE ID (spiffe://...), when it presented a certificate with one. */
  principal: string | undefined;
  /** SHA-256 of the peer certificate (DER), hex, for x-forwarded-client-cert. */
  certHash: string | undefined;
  /** Negotiated ALPN protocol, or "" when none. */
  alpn: string;
}

/** The SPIFFE ID (a whole URI SAN) of a peer's certificate, if it has one. */
export function spiffeIdOf(peer: PeerCertificate | null | undefined): string | undefined {
  if (peer?.raw === undefined || peer.raw.length === 0) return undefined;
  return leafOf(peer.raw).ids[0];
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new MtlsError(`${what} timed out after ${ms}ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Terminates TLS on an accepted connection whose ClientHello is buffered in
 * `c`. With `requireClientCert`, a client without a valid certificate from
 * the trust bundle fails the handshake.
 */
export async function terminate(
  c: BufConn,
  identity: MeshIdentity,
  opts: { requireClientCert: boolean; timeoutMs: number },
): Promise<{ conn: BufConn; peer: PeerInfo }> {
  const m = identity.material;
  const duplex = duplexOf(c);
  const sock = new tls.TLSSocket(duplex as unknown as import("node:net").Socket, {
    isServer: true,
    key: m.keyPem,
    cert: m.certChainPem,
    ca: m.rootCertPem,
    requestCert: true,
    rejectUnauthorized: opts.requireClientCert,
    minVersion: "TLSv1.2",
    ciphers: CIPHERS,
    ALPNProtocols: [...MESH_ALPN, "h2", "http/1.1"],
  });
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        sock.once("secure", () => resolve());
        sock.once(
          "error",
          (e: Error) => reject(new MtlsError(`TLS handshake failed: ${e.message}`)),
        );
        sock.once("close", () => reject(new MtlsError("TLS handshake failed: connection closed")));
      }),
      opts.timeoutMs,
      "TLS handshake",
    );
  } catch (e) {
    sock.destroy();
    throw e;
  }
  const cert = sock.getPeerCertificate(true) as PeerCertificate | null;
  const problem = peerProblem(cert, identity.roots, "clientAuth");
  if (problem !== undefined && opts.requireClientCert) {
    sock.destroy();
    throw new MtlsError(`Client certificate refused: ${problem}`);
  }
  const verified = problem === undefined;
  const principal = verified ? spiffeIdOf(cert) : undefined;
  const certHash = verified && cert?.raw !== undefined
    ? createHash("sha256").update(cert.raw).digest("hex")
    : undefined;
  return {
    conn: new BufConn(tlsByteConn(sock, { conn: c, duplex })),
    peer: {
      principal,
      certHash,
      alpn: typeof sock.alpnProtocol === "string" ? sock.alpnProtocol : "",
    },
  };
}

/** What an outbound connection must find at the other end. */
export interface MtlsTarget {
  /** The SPIFFE ID the server must present; undefined accepts any ID of the trust domain. */
  expectedId: string | undefined;
  /** ALPN to offer: istio-http/1.1, istio-h2 or istio (TCP). */
  alpn: string;
}

/**
 * What is wrong with the server a connection reached, or undefined when it
 * is the one expected: the chain must lead to the trust bundle, and the
 * SPIFFE ID must be the expected one (or, with none expected, one of the
 * trust domain). `mismatch` says which kind of problem it is.
 */
function serverProblem(
  cert: PeerCertificate | null | undefined,
  identity: MeshIdentity,
  target: MtlsTarget,
): { message: string; mismatch: boolean } | undefined {
  const problem = peerProblem(cert, identity.roots, "serverAuth");
  if (problem !== undefined) {
    return { message: `Server certificate refused: ${problem}`, mismatch: false };
  }
  const presented = spiffeIdOf(cert);
  const domain = identity.material.trustDomain;
  const ok = target.expectedId === undefined
    ? presented?.startsWith(`spiffe://${domain}/`) === true
    : presented === target.expectedId;
  if (ok) return undefined;
  return {
    message: `Server identity mismatch: expected ${
      target.expectedId ?? `an identity of trust domain ${domain}`
    }, presented ${presented ?? "none"}`,
    mismatch: true,
  };
}

/**
 * Connects to host:port and originates mTLS with this workload's
 * certificate, verifying the chain against the trust bundle and the server's
 * SPIFFE ID. A mismatch fails with an error naming the expected and the
 * presented identity; there is no fallback to plaintext.
 *
 * Deno's own TLS client is used when it can do the whole check
 * (`originateNative`): a request through it costs the sidecar less CPU than
 * through node:tls (80 -> 70 µs at 1000 req/s, docs/performance.md).
 * Otherwise, and to report a failed handshake, node:tls does it on node's
 * own TCP socket (one hop less than a Duplex over a Deno connection).
 */
export async function originate(
  host: string,
  port: number,
  identity: MeshIdentity,
  target: MtlsTarget,
  timeoutMs: number,
): Promise<BufConn> {
  const started = Date.now();
  const native = await originateNative(host, port, identity, target, timeoutMs);
  if (native instanceof BufConn) return native;
  return originateNode(host, port, identity, target, timeoutMs - (Date.now() - started));
}

/** Upstreams whose chain Deno's client cannot check for us, per trust bundle (see originateNative). */
const nodeOnly = new WeakMap<readonly X509Certificate[], Set<string>>();

/** The symbol of Deno's TlsConn method that returns the peer certificate, found on first use. */
let peerCertSymbol: symbol | null | undefined;
/** Set once Deno's client turns out unable to do the whole job in this process. */
let nativeUnavailable = false;

function peerCertificateOf(conn: Deno.TlsConn): PeerCertificate | undefined {
  peerCertSymbol ??=
    Object.getOwnPropertySymbols(Object.getPrototypeOf(conn)).find((s) =>
      s.description === "getPeerCertificate"
    ) ?? null;
  if (peerCertSymbol === null) return undefined;
  const get = (conn as unknown as Record<symbol, unknown>)[peerCertSymbol];
  if (typeof get !== "function") return undefined;
  const cert: unknown = get.call(conn, false);
  return cert !== null && typeof cert === "object" ? cert as PeerCertificate : undefined;
}

/**
 * Originates mTLS with `Deno.connectTls`: rustls checks the chain (its
 * hostname check is off: mesh certificates name a SPIFFE ID, not a host),
 * then the peer certificate it shows is checked here as node:tls's is.
 * Deno shows only the leaf, so a chain through intermediates cannot be
 * checked here: such an upstream is left to node:tls from then on. Returns
 * undefined when node:tls is to take over: this runtime lacks what is
 * needed, the chain needs intermediates, or the handshake failed (node:tls
 * then reports why). A wrong identity or a timeout fails here.
 */
async function originateNative(
  host: string,
  port: number,
  identity: MeshIdentity,
  target: MtlsTarget,
  timeoutMs: number,
): Promise<BufConn | undefined> {
  const key = `${host}:${port}`;
  if (nativeUnavailable || nodeOnly.get(identity.roots)?.has(key)) return undefined;
  const m = identity.material;
  let conn: Deno.TlsConn;
  try {
    const connecting = Deno.connectTls({
      hostname: host,
      port,
      caCerts: [m.rootCertPem],
      cert: m.certChainPem,
      key: m.keyPem,
      alpnProtocols: [target.alpn],
      unsafelyDisableHostnameVerification: true,
    });
    conn = await withTimeout(
      connecting.then(async (c) => {
        await c.handshake();
        return c;
      }),
      timeoutMs,
      "mTLS handshake",
    ).catch((e) => {
      connecting.then((c) => c.close(), () => {});
      throw e;
    });
  } catch (e) {
    if (e instanceof MtlsError) throw e;
    return undefined;
  }
  const cert = peerCertificateOf(conn);
  // Requests are small writes that must leave at once (no Nagle delay).
  if (cert === undefined || !setNoDelay(conn)) {
    conn.close();
    nativeUnavailable = true;
    return undefined;
  }
  const problem = serverProblem(cert, identity, target);
  if (problem?.mismatch) {
    conn.close();
    throw new MtlsError(problem.message);
  }
  if (problem !== undefined) {
    conn.close();
    let set = nodeOnly.get(identity.roots);
    if (set === undefined) nodeOnly.set(identity.roots, set = new Set());
    if (set.size < 1024) set.add(key);
    return undefined;
  }
  return new BufConn(tcpByteConn(conn as unknown as Deno.TcpConn));
}

async function originateNode(
  host: string,
  port: number,
  identity: MeshIdentity,
  target: MtlsTarget,
  timeoutMs: number,
): Promise<BufConn> {
  const m = identity.material;
  let mismatch: string | undefined;
  const sock = tls.connect({
    host,
    port,
    key: m.keyPem,
    cert: m.certChainPem,
    ca: m.rootCertPem,
    minVersion: "TLSv1.2",
    ciphers: CIPHERS,
    ALPNProtocols: [target.alpn],
    servername: undefined,
    checkServerIdentity: (_host, cert) => {
      const problem = serverProblem(cert as PeerCertificate, identity, target);
      if (problem === undefined) return undefined;
      if (problem.mismatch) mismatch = problem.message;
      return new MtlsError(problem.message);
    },
  });
  // Requests are small writes that must leave at once (no Nagle delay).
  sock.setNoDelay(true);
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        sock.once("secureConnect", () => resolve());
        sock.once("error", (e: Error & { code?: string }) =>
          // Not reaching the host is no handshake failure (a plain Error: the pool's 503 UF).
          reject(
            mismatch === undefined && CONNECT_CODES.has(e.code ?? "")
              ? new Error(`connect to ${host}:${port} failed: ${e.message}`)
              : new MtlsError(mismatch ?? `mTLS to upstream failed: ${e.message}`),
          ));
        sock.once(
          "close",
          () => reject(new MtlsError("mTLS to upstream failed: connection closed")),
        );
      }),
      Math.max(timeoutMs, 1),
      "mTLS handshake",
    );
  } catch (e) {
    sock.destroy();
    throw e;
  }
  return new BufConn(tlsByteConn(sock));
}

/** The certificate's notAfter, for expiry checks on loaded material. */
export function notAfter(certPem: string): Date {
  return new Date(new X509Certificate(certPem).validTo);
}

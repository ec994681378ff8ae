/**
 * The X.509 library remora uses, set up once: `@peculiar/x509` over Deno's
 * WebCrypto. It is the only module that imports the library, and it loads the
 * Reflect metadata polyfill the library needs (through tsyringe) first.
 *
 * Besides re-exporting the library it offers the few helpers the identity
 * code shares: PEM splitting, private key import (PKCS#8, SEC1 and PKCS#1
 * PEM, through node:crypto, which reads all three), the signing algorithm
 * for a key, and the URI SANs of a certificate. It does not decide what a
 * valid identity or CA is (see `identity.ts` and `ca.ts`).
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import nodeCrypto from "node:crypto";

x509.cryptoProvider.set(crypto);

export { x509 };

/** A private key as WebCrypto can sign with, and as files store it. */
export interface PrivateKey {
  /** WebCrypto key, usable for signing. */
  key: CryptoKey;
  /** The signing algorithm that goes with it (ECDSA with SHA-256/384, or RSA PKCS#1 v1.5). */
  signingAlgorithm: Algorithm | EcdsaParams | RsaHashedImportParams;
  /** The public key as DER SubjectPublicKeyInfo, to compare with a certificate's. */
  spki: Uint8Array;
}

/** EC P-256 with SHA-256: the algorithm remora's CA and certificates use. */
export const EC_P256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** Generates an exportable EC P-256 key pair. */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(EC_P256, true, ["sign", "verify"]);
}

/** PEM text of a private key as PKCS#8 ("PRIVATE KEY"). */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/**
 * Reads a PEM private key (PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA
 * PRIVATE KEY"; EC P-256/P-384 or RSA) into a signing key. Throws an Error
 * with a short reason when the text is not one.
 */
export async function importPrivateKeyPem(pem: string): Promise<PrivateKey> {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new Error("no PEM private key found");
  }
  let k: nodeCrypto.KeyObject;
  try {
    k = nodeCrypto.createPrivateKey(pem);
  } catch (e) {
    throw new Error(`cannot parse private key: ${e instanceof Error ? e.message : String(e)}`);
  }
  const pkcs8 = new Uint8Array(k.export({ type: "pkcs8", format: "der" }));
  const spki = new Uint8Array(
    nodeCrypto.createPublicKey(k).export({ type: "spki", format: "der" }),
  );
  const type = k.asymmetricKeyType;
  if (type === "ec") {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === "prime256v1" || curve === "P-256"
      ? "P-256"
      : curve === "secp384r1" || curve === "P-384"
      ? "P-384"
      : undefined;
    if (namedCurve === undefined) throw new Error(`unsupported EC curve: ${curve}`);
    const hash = namedCurve === "P-256" ? "SHA-256" : "SHA-384";
    const key = await crypto.subtle.importKey(
      "pkcs8",
      pkcs8,
      { name: "ECDSA", namedCurve },
      false,
      [
        "sign",
      ],
    );
    return { key, signingAlgorithm: { name: "ECDSA", hash }, spki };
  }
  if (type === "rsa") {
    const alg = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const key = await crypto.subtle.importKey("pkcs8", pkcs8, alg, false, ["sign"]);
    return { key, signingAlgorithm: alg, spki };
  }
  throw new Error(`unsupported key type: ${type}`);
}

/** The certificates of a PEM text, in order. Throws when there are none or one does not parse. */
export function parseCertificates(pem: string): x509.X509Certificate[] {
  const blocks = x509.PemConverter.decodeWithHeaders(pem).filter((b) => b.type === "CERTIFICATE");
  if (blocks.length === 0) throw new Error("no PEM certificate found");
  return blocks.map((b, i) => {
    try {
      return new x509.X509Certificate(b.rawData);
    } catch (e) {
      throw new Error(
        `certificate ${i + 1} does not parse: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  });
}

/** The URI subject alternative names of a certificate. */
export function uriSans(cert: x509.X509Certificate): string[] {
  const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (ext === null) return [];
  return ext.names.items.filter((n) => n.type === "url").map((n) => n.value);
}

/** Whether two byte strings are equal. */
export function sameBytes(a: ArrayBuffer | Uint8Array, b: ArrayBuffer | Uint8Array): boolean {
  const x = a instanceof Uint8Array ? a : new Uint8Array(a);
  const y = b instanceof Uint8Array ? b : new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

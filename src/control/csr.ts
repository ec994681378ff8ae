/**
 * A workload's key and certificate signing request: a fresh EC P-256 key
 * made here (it never leaves the process, except into the proxy's own
 * 0600 cache file) and a PKCS#10 request signed with it, naming the SPIFFE
 * ID when the caller knows it (on renewal) and nothing otherwise (the CA
 * decides the ID from the bootstrap token). It does not send the request
 * (see `client.ts`).
 */

import { EC_P256, generateKeyPair, privateKeyPem, x509 } from "../identity/x509.ts";

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
}

/** Makes a key and a CSR for it, asking for `spiffeId` when given. */
export async function newKeyAndCsr(spiffeId?: string): Promise<KeyAndCsr> {
  const keys = await generateKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: EC_P256,
    extensions: spiffeId === undefined
      ? []
      : [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }], true)],
  });
  return { keyPem: await privateKeyPem(keys.privateKey), csrPem: csr.toString("pem") + "\n" };
}

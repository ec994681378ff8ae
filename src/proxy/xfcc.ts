/**
 * x-forwarded-client-cert, as Envoy sets it for Istio: the inbound side
 * tells the app who called over mTLS, in Envoy's format
 * (`By=<this workload's SPIFFE ID>;Hash=<SHA-256 of the peer certificate>;
 * Subject="";URI=<the peer's SPIFFE ID>`). A value the client sent itself is
 * never trusted: it is removed on both sides, and only the inbound side of an
 * mTLS connection adds its own.
 */

import type { HeaderList } from "../http/h1_head.ts";
import type { PeerInfo } from "../tls/mtls.ts";

const XFCC = "x-forwarded-client-cert";

export function setClientCertHeader(
  headers: HeaderList,
  inbound: boolean,
  peer: PeerInfo | undefined,
  self: string | undefined,
): void {
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i]![0] === XFCC) headers.splice(i, 1);
  if (!inbound || peer?.principal === undefined) return;
  headers.push([XFCC, clientCertValue(peer, self)]);
}

/** The value for each mTLS connection's peer, made once: every request on it carries the same. */
const values = new WeakMap<PeerInfo, { self: string | undefined; value: string }>();

function clientCertValue(peer: PeerInfo, self: string | undefined): string {
  const known = values.get(peer);
  if (known !== undefined && known.self === self) return known.value;
  const parts: string[] = [];
  if (self !== undefined) parts.push(`By=${self}`);
  if (peer.certHash !== undefined) parts.push(`Hash=${peer.certHash}`);
  parts.push(`Subject=""`, `URI=${peer.principal}`);
  const value = parts.join(";");
  values.set(peer, { self, value });
  return value;
}

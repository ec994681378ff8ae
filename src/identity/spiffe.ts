/**
 * SPIFFE IDs as Istio uses them: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
 *
 * Parsing is strict (the SPIFFE ID spec's character sets, no empty, "." or
 * ".." segments, no query, fragment, port or user info) so that an ID that
 * passes here is compared byte for byte everywhere else. It does not look at
 * certificates (see `identity.ts`).
 */

/** A workload identity in Istio's SPIFFE form. */
export interface SpiffeId {
  /** The whole ID, `spiffe://td/ns/ns/sa/sa`. */
  id: string;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

const _TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const _SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Checks a trust domain; returns why it is not one, or undefined. */
export function trustDomainProblem(td: string): string | undefined {
  if (td === "") return "trust domain is empty";
  if (td.length > 255) return "trust domain is longer than 255 characters";
  if (!_TRUST_DOMAIN.test(td)) {
    return `trust domain "${td}" may only hold lowercase letters, digits, ".", "-" and "_"`;
  }
  return undefined;
}

/** Parses an Istio SPIFFE ID; throws an Error saying what is wrong. */
export function parseSpiffeId(raw: string): SpiffeId {
  const bad = (why: string) => new Error(`"${raw}" is not a SPIFFE ID: ${why}`);
  if (!raw.startsWith("spiffe://")) throw bad("it must start with spiffe://");
  const rest = raw.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const problem = trustDomainProblem(trustDomain);
  if (problem !== undefined) throw bad(problem);
  const segments = slash === -1 ? [] : rest.slice(slash + 1).split("/");
  if (segments.length !== 4 || segments[0] !== "ns" || segments[2] !== "sa") {
    throw bad("the path must be /ns/<namespace>/sa/<service account>");
  }
  const namespace = segments[1]!;
  const serviceAccount = segments[3]!;
  for (const [what, s] of [["namespace", namespace], ["service account", serviceAccount]]) {
    if (!_SEGMENT.test(s!) || s === "." || s === "..") {
      throw bad(`${what} "${s}" must be letters, digits, ".", "-" or "_"`);
    }
  }
  return { id: raw, trustDomain, namespace, serviceAccount };
}

/** Formats an Istio SPIFFE ID. */
export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

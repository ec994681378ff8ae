/**
 * The security tables of one config for the workload this proxy serves:
 * PeerAuthentication modes (`peer_auth.ts`) and AuthorizationPolicy lists
 * (`authz.ts`), built once per config by `compileSecurity` and kept in
 * `RuntimeConfig.security`. The inbound path asks `peerAuthMode(t, port)`
 * when a connection arrives and `authorize(t, request)` per request (per
 * connection for opaque TCP). Policies are scoped as in Istio: those in the
 * workload's namespace, and those in the root namespace (mesh-wide, default
 * "istio-system"); a selector narrows either to workloads whose labels match.
 */

import type { Resource } from "../config/model.ts";
import { type AuthzTable, compileAuthz } from "./authz.ts";
import { compilePeerAuth, type PeerAuthTable, type SecurityWorkload } from "./peer_auth.ts";

export { authorize, type AuthzDecision, type AuthzRequest } from "./authz.ts";
export { type EffectiveMtlsMode, peerAuthMode } from "./peer_auth.ts";

export const DEFAULT_ROOT_NAMESPACE = "istio-system";

/**
 * Whether a resource in `namespace` applies to a workload of `scope`: from
 * the workload's own namespace, or mesh-wide from the root namespace.
 */
export function inScope(
  namespace: string,
  scope: { namespace: string; rootNamespace: string },
): boolean {
  return namespace === scope.namespace || namespace === scope.rootNamespace;
}

export interface SecurityTables {
  readonly rootNamespace: string;
  readonly workload: Readonly<SecurityWorkload>;
  readonly peer: PeerAuthTable;
  readonly authz: AuthzTable;
}

export interface SecurityOptions {
  /** Istio's meshConfig.rootNamespace (default "istio-system"). */
  rootNamespace?: string;
}

/** Compiles the PeerAuthentication and AuthorizationPolicy resources that apply to `workload`. */
export function compileSecurity(
  resources: readonly Resource[],
  workload: { namespace: string; labels: Readonly<Record<string, string>> },
  opts: SecurityOptions = {},
): SecurityTables {
  const rootNamespace = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const wl = Object.freeze({ namespace: workload.namespace, labels: { ...workload.labels } });
  return {
    rootNamespace,
    workload: wl,
    peer: compilePeerAuth(resources, wl, rootNamespace),
    authz: compileAuthz(resources, wl, rootNamespace),
  };
}

/**
 * PeerAuthentication for the workload this proxy serves: which mTLS mode its
 * inbound side enforces on each port (STRICT: mTLS only, PERMISSIVE: mTLS or
 * plaintext, DISABLE: plaintext, TLS is not terminated).
 *
 * Istio's composition (pilot/pkg/security/authn ComposePeerAuthentication):
 * - mesh-wide: a policy without selector (or with empty matchLabels) in the
 *   root namespace; namespace-wide: one without selector in the workload's
 *   namespace; workload: one in the workload's namespace whose matchLabels
 *   all match the workload's labels. A policy with a selector in the root
 *   namespace applies to nothing (Istio ignores it), and neither does one in
 *   another namespace.
 * - The narrowest level wins; a mode that is UNSET (or left out) inherits the
 *   next wider level; with nothing set the mode is PERMISSIVE.
 * - portLevelMtls (workload policies only, validation enforces it) overrides
 *   per port, UNSET inheriting the workload's effective mode. The port is the
 *   port the application listens on (the inbound original destination port).
 * - Several policies at one level: Istio keeps the oldest; remora keeps the
 *   first in config order.
 * Compiled once per config; `peerAuthMode` is one Map lookup. Here are no
 * sockets and no TLS: the inbound listener asks and enforces.
 */

import type { MtlsMode, PeerAuthentication, Resource } from "../config/model.ts";

export type EffectiveMtlsMode = "STRICT" | "PERMISSIVE" | "DISABLE";

export interface PeerAuthTable {
  /** Mode for ports without a port-level setting. */
  readonly mode: EffectiveMtlsMode;
  readonly ports: ReadonlyMap<number, EffectiveMtlsMode>;
  /** The policies that took part ("namespace/name"), for config dumps and logs. */
  readonly mesh: string | undefined;
  readonly namespace: string | undefined;
  readonly workload: string | undefined;
}

export interface SecurityWorkload {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

/** Whether a selector (absent or empty = everything) selects these labels. */
export function selects(
  matchLabels: Readonly<Record<string, string>> | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  if (matchLabels === undefined) return true;
  for (const k in matchLabels) if (labels[k] !== matchLabels[k]) return false;
  return true;
}

/** Builds the mode table of `workload` from every PeerAuthentication in `resources`. */
export function compilePeerAuth(
  resources: readonly Resource[],
  workload: SecurityWorkload,
  rootNamespace: string,
): PeerAuthTable {
  let mesh: PeerAuthentication | undefined;
  let ns: PeerAuthentication | undefined;
  let wl: PeerAuthentication | undefined;
  for (const r of resources) {
    if (r.kind !== "PeerAuthentication") continue;
    const sel = r.spec.selector?.matchLabels;
    const hasSelector = sel !== undefined && Object.keys(sel).length > 0;
    const rns = r.metadata.namespace;
    if (!hasSelector) {
      if (rns === rootNamespace) mesh ??= r;
      else if (rns === workload.namespace) ns ??= r;
    } else if (
      rns !== rootNamespace && rns === workload.namespace && selects(sel, workload.labels)
    ) {
      wl ??= r;
    }
  }
  let mode: EffectiveMtlsMode = "PERMISSIVE";
  for (const p of [mesh, ns, wl]) mode = _inherit(p?.spec.mtls?.mode, mode);
  const ports = new Map<number, EffectiveMtlsMode>();
  for (const [port, setting] of Object.entries(wl?.spec.portLevelMtls ?? {})) {
    ports.set(Number(port), _inherit(setting.mode, mode));
  }
  return { mode, ports, mesh: _name(mesh), namespace: _name(ns), workload: _name(wl) };
}

/** The mTLS mode inbound connections to `port` must meet. */
export function peerAuthMode(t: { readonly peer: PeerAuthTable }, port: number): EffectiveMtlsMode {
  return t.peer.ports.get(port) ?? t.peer.mode;
}

function _inherit(m: MtlsMode | undefined, parent: EffectiveMtlsMode): EffectiveMtlsMode {
  return m === undefined || m === "UNSET" ? parent : m;
}

function _name(p: PeerAuthentication | undefined): string | undefined {
  return p === undefined ? undefined : `${p.metadata.namespace}/${p.metadata.name}`;
}

/**
 * PeerAuthentication composition: mesh < namespace < workload precedence,
 * UNSET inheritance, portLevelMtls, selectors, the root namespace option, and
 * policies that apply to nothing (other namespaces, root with a selector).
 */

import assert from "node:assert/strict";
import { peerAuthMode } from "./compile_security.ts";
import { tables } from "./testutil_test.ts";

function pa(name: string, ns: string, body: string): string {
  return `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ${name}, namespace: ${ns}}
spec:
${body.trim().split("\n").map((l) => "  " + l).join("\n")}
---`;
}

const MESH_STRICT = pa("mesh", "istio-system", "mtls: {mode: STRICT}");
const MESH_DISABLE = pa("mesh", "istio-system", "mtls: {mode: DISABLE}");
const NS_PERMISSIVE = pa("ns", "default", "mtls: {mode: PERMISSIVE}");
const NS_UNSET = pa("ns", "default", "mtls: {mode: UNSET}");
const WL_STRICT = pa("wl", "default", "selector: {matchLabels: {app: b}}\nmtls: {mode: STRICT}");
const WL_OTHER = pa(
  "wl-other",
  "default",
  "selector: {matchLabels: {app: c}}\nmtls: {mode: DISABLE}",
);
const WL_PORTS = pa(
  "wl-ports",
  "default",
  `selector: {matchLabels: {app: b, version: v1}}
mtls: {mode: UNSET}
portLevelMtls:
  8080: {mode: DISABLE}
  9090: {mode: UNSET}
  9443: {mode: STRICT}`,
);

const CASES: Array<{
  name: string;
  yaml: string;
  labels?: Record<string, string>;
  namespace?: string;
  root?: string;
  want: Record<number, string>;
}> = [
  { name: "nothing: PERMISSIVE", yaml: "", want: { 80: "PERMISSIVE" } },
  { name: "mesh-wide STRICT", yaml: MESH_STRICT, want: { 80: "STRICT" } },
  {
    name: "namespace beats mesh",
    yaml: MESH_STRICT + NS_PERMISSIVE,
    want: { 80: "PERMISSIVE" },
  },
  { name: "namespace UNSET inherits mesh", yaml: MESH_STRICT + NS_UNSET, want: { 80: "STRICT" } },
  {
    name: "workload beats namespace and mesh",
    yaml: MESH_DISABLE + NS_PERMISSIVE + WL_STRICT,
    want: { 80: "STRICT" },
  },
  {
    name: "workload selector not matching",
    yaml: MESH_STRICT + WL_OTHER,
    want: { 80: "STRICT" },
  },
  {
    name: "mesh policy in another namespace than the root does nothing elsewhere",
    yaml: pa("x", "other", "mtls: {mode: STRICT}"),
    want: { 80: "PERMISSIVE" },
  },
  {
    name: "root namespace with a selector is ignored (as Istio)",
    yaml: pa("x", "istio-system", "selector: {matchLabels: {app: b}}\nmtls: {mode: STRICT}"),
    want: { 80: "PERMISSIVE" },
  },
  {
    name: "custom root namespace",
    yaml: pa("mesh", "mesh-root", "mtls: {mode: STRICT}") + MESH_DISABLE,
    root: "mesh-root",
    want: { 80: "STRICT" },
  },
  {
    name: "empty matchLabels is namespace-wide",
    yaml: pa("x", "default", "selector: {matchLabels: {}}\nmtls: {mode: DISABLE}"),
    want: { 80: "DISABLE" },
  },
  {
    name: "empty spec is UNSET: inherits",
    yaml: MESH_STRICT + pa("x", "default", "{}"),
    want: { 80: "STRICT" },
  },
  {
    name: "portLevelMtls: per port, UNSET inherits the workload's (inherited) mode",
    yaml: MESH_STRICT + NS_PERMISSIVE + WL_PORTS,
    labels: { app: "b", version: "v1" },
    want: { 80: "PERMISSIVE", 8080: "DISABLE", 9090: "PERMISSIVE", 9443: "STRICT" },
  },
  {
    name: "portLevelMtls of a policy that does not select the workload",
    yaml: MESH_STRICT + WL_PORTS,
    labels: { app: "b", version: "v2" },
    want: { 80: "STRICT", 8080: "STRICT" },
  },
  {
    name: "two workload policies: the first in config order wins",
    yaml: WL_STRICT +
      pa("wl2", "default", "selector: {matchLabels: {app: b}}\nmtls: {mode: DISABLE}"),
    want: { 80: "STRICT" },
  },
  {
    name: "workload in another namespace sees only mesh policies",
    yaml: MESH_DISABLE + NS_PERMISSIVE + WL_STRICT,
    namespace: "prod",
    want: { 80: "DISABLE" },
  },
];

for (const c of CASES) {
  Deno.test(`peerAuthMode: ${c.name}`, () => {
    const t = tables(
      c.yaml,
      { labels: c.labels ?? { app: "b" }, namespace: c.namespace ?? "default" },
      c.root === undefined ? {} : { rootNamespace: c.root },
    );
    for (const [port, mode] of Object.entries(c.want)) {
      assert.equal(peerAuthMode(t, Number(port)), mode, `port ${port}`);
    }
  });
}

Deno.test("peerAuthMode: the deciding policies are named", () => {
  const t = tables(MESH_STRICT + NS_PERMISSIVE + WL_STRICT);
  assert.equal(t.peer.mesh, "istio-system/mesh");
  assert.equal(t.peer.namespace, "default/ns");
  assert.equal(t.peer.workload, "default/wl");
});

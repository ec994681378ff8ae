/**
 * Validation of a Sidecar spec (Istio networking/v1 sidecar.proto). remora
 * supports only `outboundTrafficPolicy.mode` (ALLOW_ANY or REGISTRY_ONLY);
 * workloadSelector, ingress and egress listeners are errors. A mode left out
 * is REGISTRY_ONLY, the protobuf default, as in Istio. That only one Sidecar
 * is in a config is checked by `validate.ts`.
 */

import type { SidecarSpec } from "./model.ts";
import { type Ctx, enumOf, fields, join, type Obj, obj } from "./validate_fields.ts";

export function validateSidecarSpec(ctx: Ctx, spec: Obj, path: string): SidecarSpec | undefined {
  fields(ctx, spec, path, ["outboundTrafficPolicy"], [
    "workloadSelector",
    "ingress",
    "egress",
    "inboundConnectionPool",
  ]);
  const before = ctx.errors.length;
  const out: SidecarSpec = {};
  if (spec.outboundTrafficPolicy !== undefined) {
    const p = join(path, "outboundTrafficPolicy");
    const o = obj(ctx, spec.outboundTrafficPolicy, p);
    if (o !== undefined) {
      fields(ctx, o, p, ["mode"], ["egressProxy"]);
      const mode = o.mode === undefined
        ? "REGISTRY_ONLY"
        : enumOf(ctx, o.mode, join(p, "mode"), ["ALLOW_ANY", "REGISTRY_ONLY"] as const);
      if (mode !== undefined) out.outboundTrafficPolicy = { mode };
    }
  }
  return ctx.errors.length > before ? undefined : out;
}

/**
 * remora's own extensions, carried as `remora.dev/*` annotations in metadata
 * so that every spec stays exactly Istio's (an unknown spec field is still an
 * error). Other annotations are Kubernetes bookkeeping and are ignored; an
 * unknown `remora.dev/` annotation, or one on a kind it does not apply to, is
 * an error naming its path.
 *
 * - `remora.dev/hedge-delay` (VirtualService): request hedging. Either one
 *   duration for every HTTP route ("50ms"), or per named route
 *   ("reviews=50ms, ratings=20ms"). After that delay without a response head
 *   a second attempt goes to another endpoint; the first response wins and
 *   the other attempt is cancelled. Only for requests that can be replayed
 *   (GET, HEAD, OPTIONS without a body), and limited by the retry budget.
 */

import type { RemoraAnnotations, VirtualServiceSpec } from "./model.ts";
import { type Ctx, duration, isObj, mapKey } from "./validate_fields.ts";

const PREFIX = "remora.dev/";
export const HEDGE_DELAY = "remora.dev/hedge-delay";

/** Reads the `remora.dev/*` annotations of a document of `kind`. */
export function remoraAnnotations(
  ctx: Ctx,
  v: unknown,
  kind: string | undefined,
): RemoraAnnotations | undefined {
  if (!isObj(v)) return undefined; // the envelope check reports a wrong type
  const path = "metadata.annotations";
  let out: RemoraAnnotations | undefined;
  for (const [key, value] of Object.entries(v)) {
    if (!key.startsWith(PREFIX)) continue;
    const p = mapKey(path, key);
    if (key !== HEDGE_DELAY) {
      ctx.err(p, `unknown remora annotation, the known one is ${HEDGE_DELAY}`);
      continue;
    }
    if (kind !== "VirtualService") {
      ctx.err(p, "only applies to a VirtualService");
      continue;
    }
    if (typeof value !== "string") {
      ctx.err(p, `expected a string such as "50ms" or "route-a=50ms,route-b=20ms"`);
      continue;
    }
    const delays: Record<string, number> = {};
    let ok = true;
    for (const part of value.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
      const eq = part.indexOf("=");
      const name = eq === -1 ? "" : part.slice(0, eq).trim();
      if (eq !== -1 && name === "") {
        ctx.err(p, `expected route=duration, got "${part}"`);
        ok = false;
        continue;
      }
      const ms = duration(ctx, eq === -1 ? part : part.slice(eq + 1).trim(), p);
      if (ms === undefined) ok = false;
      else if (name in delays) {
        ctx.err(p, `route "${name}" is named twice`);
        ok = false;
      } else delays[name] = ms;
    }
    if (ok && Object.keys(delays).length === 0) {
      ctx.err(p, "must not be empty");
      ok = false;
    }
    if (ok) out = { hedgeDelayMs: delays };
  }
  return out;
}

/** Every route a hedge annotation names must be a named HTTP route of the VirtualService. */
export function checkHedgeRoutes(
  ctx: Ctx,
  remora: RemoraAnnotations,
  spec: VirtualServiceSpec,
): void {
  const names = new Set(spec.http.map((r) => r.name).filter((n) => n !== undefined));
  for (const name of Object.keys(remora.hedgeDelayMs ?? {})) {
    if (name !== "" && !names.has(name)) {
      ctx.err(
        mapKey("metadata.annotations", HEDGE_DELAY),
        `no HTTP route named "${name}" in this VirtualService`,
      );
    }
  }
}

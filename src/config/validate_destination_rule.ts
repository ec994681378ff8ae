/**
 * Validation of a DestinationRule spec (Istio networking/v1
 * destination_rule.proto): host, subsets (unique DNS-label names with label
 * selectors) and a traffic policy limited to `loadBalancer.simple` with
 * port-level overrides. Fields remora does not implement, such as
 * connectionPool or outlierDetection, are errors; `tls` is "not supported
 * yet" until mTLS lands. Whether subsets are referenced correctly is checked
 * across resources by `validate.ts`, not here.
 */

import type { DestinationRuleSpec, SimpleLB, Subset, TrafficPolicy } from "./model.ts";
import {
  type Ctx,
  enumOf,
  exportTo,
  fields,
  fqdn,
  hostName,
  isDnsLabel,
  isObj,
  join,
  labels,
  list,
  type Obj,
  obj,
  port,
  str,
} from "./validate_fields.ts";

const _SIMPLE = [
  "UNSPECIFIED",
  "ROUND_ROBIN",
  "LEAST_REQUEST",
  "RANDOM",
  "PASSTHROUGH",
  "LEAST_CONN",
] as const;

export function validateDestinationRuleSpec(
  ctx: Ctx,
  spec: Obj,
  path: string,
): DestinationRuleSpec | undefined {
  fields(ctx, spec, path, ["host", "trafficPolicy", "subsets", "exportTo"], ["workloadSelector"]);
  const before = ctx.errors.length;
  const hp = join(path, "host");
  const h = spec.host === undefined
    ? ctx.err(hp, "required")
    : hostName(ctx, spec.host, hp, { wildcard: true, allowIP: false });
  if (h === "*") ctx.err(hp, `host "*" is not allowed`);

  const tp = spec.trafficPolicy === undefined
    ? undefined
    : trafficPolicy(ctx, spec.trafficPolicy, join(path, "trafficPolicy"), true);

  const subsets: Subset[] = [];
  if (spec.subsets !== undefined) {
    const sp = join(path, "subsets");
    list(ctx, spec.subsets, sp)?.forEach((s, i) => {
      const p = `${sp}[${i}]`;
      const o = obj(ctx, s, p);
      if (o === undefined) return;
      fields(ctx, o, p, ["name", "labels", "trafficPolicy"]);
      const np = join(p, "name");
      const name = o.name === undefined ? ctx.err(np, "required") : str(ctx, o.name, np);
      if (name !== undefined && !isDnsLabel(name)) {
        ctx.err(np, `subset name must be a DNS label, got "${name}"`);
      } else if (name !== undefined && subsets.some((x) => x.name === name)) {
        ctx.err(np, `duplicate subset "${name}"`);
      }
      const l = o.labels === undefined ? {} : labels(ctx, o.labels, join(p, "labels"));
      const stp = o.trafficPolicy === undefined
        ? undefined
        : trafficPolicy(ctx, o.trafficPolicy, join(p, "trafficPolicy"), true);
      if (name === undefined || l === undefined) return;
      const sub: Subset = { name, labels: l };
      if (stp !== undefined) sub.trafficPolicy = stp;
      subsets.push(sub);
    });
  }
  const exp = spec.exportTo === undefined
    ? undefined
    : exportTo(ctx, spec.exportTo, join(path, "exportTo"));
  if (ctx.errors.length > before || h === undefined) return undefined;
  const out: DestinationRuleSpec = { host: fqdn(h, ctx.namespace), subsets };
  if (tp !== undefined) out.trafficPolicy = tp;
  if (exp !== undefined) out.exportTo = exp;
  return out;
}

/** A TrafficPolicy; `portLevel` allows portLevelSettings (not inside them). */
function trafficPolicy(
  ctx: Ctx,
  v: unknown,
  path: string,
  portLevel: boolean,
): TrafficPolicy | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(
    ctx,
    o,
    path,
    portLevel ? ["loadBalancer", "portLevelSettings"] : ["port", "loadBalancer"],
    portLevel
      ? ["connectionPool", "outlierDetection", "tunnel", "proxyProtocol", "retryBudget"]
      : ["connectionPool", "outlierDetection"],
    ["tls"],
  );
  const before = ctx.errors.length;
  const out: TrafficPolicy = {};
  if (o.loadBalancer !== undefined) {
    const lp = join(path, "loadBalancer");
    const lb = obj(ctx, o.loadBalancer, lp);
    if (lb !== undefined) {
      fields(ctx, lb, lp, ["simple"], [
        "consistentHash",
        "localityLbSetting",
        "warmupDurationSecs",
        "warmup",
      ]);
      // An empty loadBalancer is Istio's UNSPECIFIED; LEAST_CONN is its deprecated LEAST_REQUEST.
      const simple = lb.simple === undefined
        ? "UNSPECIFIED"
        : enumOf(ctx, lb.simple, join(lp, "simple"), _SIMPLE);
      if (simple !== undefined) {
        out.loadBalancer = {
          simple: (simple === "LEAST_CONN" ? "LEAST_REQUEST" : simple) as SimpleLB,
        };
      }
    }
  }
  if (portLevel && o.portLevelSettings !== undefined) {
    const pp = join(path, "portLevelSettings");
    const settings: NonNullable<TrafficPolicy["portLevelSettings"]> = [];
    list(ctx, o.portLevelSettings, pp)?.forEach((s, i) => {
      const p = `${pp}[${i}]`;
      const inner = trafficPolicy(ctx, s, p, false);
      if (!isObj(s)) return; // reported by trafficPolicy()
      const so = s;
      const portPath = join(p, "port");
      let n: number | undefined;
      if (so.port === undefined) ctx.err(portPath, "required");
      else {
        const po = obj(ctx, so.port, portPath);
        if (po !== undefined) {
          fields(ctx, po, portPath, ["number"]);
          n = po.number === undefined
            ? ctx.err(join(portPath, "number"), "required")
            : port(ctx, po.number, join(portPath, "number"));
        }
      }
      if (n !== undefined && settings.some((x) => x.port.number === n)) {
        ctx.err(join(portPath, "number"), `duplicate port ${n}`);
      }
      if (n === undefined || inner === undefined) return;
      const entry: NonNullable<TrafficPolicy["portLevelSettings"]>[number] = {
        port: { number: n },
      };
      if (inner.loadBalancer !== undefined) entry.loadBalancer = inner.loadBalancer;
      settings.push(entry);
    });
    out.portLevelSettings = settings;
  }
  return ctx.errors.length > before ? undefined : out;
}

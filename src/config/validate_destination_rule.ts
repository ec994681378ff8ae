/**
 * Validation of a DestinationRule spec (Istio networking/v1
 * destination_rule.proto): host, subsets (unique DNS-label names with label
 * selectors) and a traffic policy: `loadBalancer` (simple or consistentHash),
 * `connectionPool`, `outlierDetection` and `retryBudget` (those three in
 * `validate_traffic_policy.ts`), with port-level overrides. Fields remora does
 * not implement, such as tunnel or localityLbSetting, are errors; `tls` modes other
 * than ISTIO_MUTUAL and DISABLE are "not supported yet". Whether subsets are referenced correctly is checked
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
import {
  connectionPool,
  consistentHash,
  outlierDetection,
  retryBudget,
} from "./validate_traffic_policy.ts";

/** Traffic policy fields validated by validate_traffic_policy.ts. */
const POLICY_FIELDS = ["connectionPool", "outlierDetection"] as const;

/** connectionPool, outlierDetection and (not port-level) retryBudget, into `out`. */
function resiliencePolicy(
  ctx: Ctx,
  o: Obj,
  path: string,
  out: TrafficPolicy,
  portLevel: boolean,
): void {
  if (o.connectionPool !== undefined) {
    const cp = connectionPool(ctx, o.connectionPool, join(path, "connectionPool"));
    if (cp !== undefined) out.connectionPool = cp;
  }
  if (o.outlierDetection !== undefined) {
    const od = outlierDetection(ctx, o.outlierDetection, join(path, "outlierDetection"));
    if (od !== undefined) out.outlierDetection = od;
  }
  if (portLevel && o.retryBudget !== undefined) {
    const rb = retryBudget(ctx, o.retryBudget, join(path, "retryBudget"));
    if (rb !== undefined) out.retryBudget = rb;
  }
}

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

/**
 * ClientTLSSettings: ISTIO_MUTUAL (mTLS with the mesh identity) and DISABLE
 * are supported; SIMPLE and MUTUAL (TLS with certificates of your own) not yet.
 */
function clientTls(ctx: Ctx, v: unknown, path: string): TrafficPolicy["tls"] | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["mode"], [], [
    "sni",
    "clientCertificate",
    "privateKey",
    "caCertificates",
    "credentialName",
    "subjectAltNames",
    "insecureSkipVerify",
    "caCrl",
  ]);
  if (o.mode === undefined) {
    // Istio reads a tls without mode as DISABLE, plaintext: too quiet a way to turn mTLS off.
    ctx.err(
      join(path, "mode"),
      "required: ISTIO_MUTUAL or DISABLE (Istio would take a tls without mode as DISABLE, plaintext)",
    );
    return undefined;
  }
  const mode = enumOf(
    ctx,
    o.mode,
    join(path, "mode"),
    ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] as const,
  );
  if (mode === "SIMPLE" || mode === "MUTUAL") {
    ctx.err(
      join(path, "mode"),
      `${mode} (TLS with certificates of your own) is not supported yet; use ISTIO_MUTUAL or DISABLE`,
    );
    return undefined;
  }
  return mode === undefined ? undefined : { mode };
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
    portLevel
      ? ["loadBalancer", "portLevelSettings", "tls", ...POLICY_FIELDS, "retryBudget"]
      : ["port", "loadBalancer", "tls", ...POLICY_FIELDS],
    portLevel ? ["tunnel", "proxyProtocol"] : [],
  );
  const before = ctx.errors.length;
  const out: TrafficPolicy = {};
  if (o.loadBalancer !== undefined) {
    const lp = join(path, "loadBalancer");
    const lb = obj(ctx, o.loadBalancer, lp);
    if (lb !== undefined) {
      fields(ctx, lb, lp, ["simple", "consistentHash"], [
        "localityLbSetting",
        "warmupDurationSecs",
        "warmup",
      ]);
      // An empty loadBalancer is Istio's UNSPECIFIED; LEAST_CONN is its deprecated LEAST_REQUEST.
      const simple = lb.simple === undefined
        ? "UNSPECIFIED"
        : enumOf(ctx, lb.simple, join(lp, "simple"), _SIMPLE);
      if (lb.simple !== undefined && lb.consistentHash !== undefined) {
        ctx.err(join(lp, "consistentHash"), "cannot be used together with simple");
      } else if (lb.consistentHash !== undefined) {
        const ch = consistentHash(ctx, lb.consistentHash, join(lp, "consistentHash"));
        if (ch !== undefined) out.loadBalancer = { consistentHash: ch };
      } else if (simple !== undefined) {
        out.loadBalancer = {
          simple: (simple === "LEAST_CONN" ? "LEAST_REQUEST" : simple) as SimpleLB,
        };
      }
    }
  }
  if (o.tls !== undefined) {
    const tlsPolicy = clientTls(ctx, o.tls, join(path, "tls"));
    if (tlsPolicy !== undefined) out.tls = tlsPolicy;
  }
  resiliencePolicy(ctx, o, path, out, portLevel);
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
      if (inner.tls !== undefined) entry.tls = inner.tls;
      if (inner.connectionPool !== undefined) entry.connectionPool = inner.connectionPool;
      if (inner.outlierDetection !== undefined) entry.outlierDetection = inner.outlierDetection;
      settings.push(entry);
    });
    out.portLevelSettings = settings;
  }
  return ctx.errors.length > before ? undefined : out;
}

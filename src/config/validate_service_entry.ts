/**
 * Validation of a ServiceEntry spec (Istio networking/v1 service_entry.proto):
 * hosts, VIP addresses, ports, location, resolution, endpoints and exportTo,
 * with Istio's rules for how resolution and endpoints go together. Returns the
 * typed spec from model.ts (hosts resolved to FQDNs) or `undefined` after
 * recording errors. It does not check other resources (duplicate hosts across
 * entries are `validate.ts`'s).
 */

import type { PortProtocol, ServiceEntrySpec, ServicePort, WorkloadEntry } from "./model.ts";
import {
  type Ctx,
  enumOf,
  exportTo,
  fields,
  fqdn,
  hostName,
  int,
  isDnsLabel,
  isIP,
  join,
  labels,
  list,
  mapKey,
  nonEmptyStr,
  type Obj,
  obj,
  port,
  str,
} from "./validate_fields.ts";

const _PROTOCOLS: readonly PortProtocol[] = [
  "HTTP",
  "HTTP2",
  "GRPC",
  "HTTPS",
  "TLS",
  "TCP",
  "MONGO",
  "UNKNOWN",
];

export function validateServiceEntrySpec(
  ctx: Ctx,
  spec: Obj,
  path: string,
): ServiceEntrySpec | undefined {
  fields(
    ctx,
    spec,
    path,
    ["hosts", "addresses", "ports", "location", "resolution", "endpoints", "exportTo"],
    ["workloadSelector", "subjectAltNames"],
  );
  const before = ctx.errors.length;

  const hosts: string[] = [];
  const hp = join(path, "hosts");
  if (spec.hosts === undefined) ctx.err(hp, "at least one host is required");
  else {
    const l = list(ctx, spec.hosts, hp);
    if (l !== undefined && l.length === 0) ctx.err(hp, "at least one host is required");
    l?.forEach((h, i) => {
      const p = `${hp}[${i}]`;
      const name = hostName(ctx, h, p, { wildcard: true, allowIP: false });
      if (name === undefined) return;
      const full = fqdn(name, ctx.namespace);
      if (full === "*") ctx.err(p, `host "*" is not allowed in a ServiceEntry`);
      else if (hosts.includes(full)) ctx.err(p, `duplicate host "${full}"`);
      else hosts.push(full);
    });
  }

  const addresses: string[] = [];
  if (spec.addresses !== undefined) {
    const ap = join(path, "addresses");
    list(ctx, spec.addresses, ap)?.forEach((a, i) => {
      const p = `${ap}[${i}]`;
      const s = nonEmptyStr(ctx, a, p);
      if (s === undefined) return;
      if (s.includes("/")) ctx.err(p, `CIDR ranges are not supported yet, got "${s}"`);
      else if (!isIP(s)) ctx.err(p, `expected an IP address, got "${s}"`);
      else addresses.push(s.toLowerCase());
    });
  }

  const ports = _ports(ctx, spec.ports, join(path, "ports"));

  const location = spec.location === undefined ? "MESH_EXTERNAL" : enumOf(
    ctx,
    spec.location,
    join(path, "location"),
    ["MESH_EXTERNAL", "MESH_INTERNAL"] as const,
  );
  const resolution = spec.resolution === undefined ? "NONE" : enumOf(
    ctx,
    spec.resolution,
    join(path, "resolution"),
    [
      "NONE",
      "STATIC",
      "DNS",
      "DNS_ROUND_ROBIN",
    ] as const,
  );

  const endpoints: WorkloadEntry[] = [];
  const ep = join(path, "endpoints");
  if (spec.endpoints !== undefined) {
    const l = list(ctx, spec.endpoints, ep);
    if (l !== undefined && l.length > 0 && resolution === "NONE") {
      ctx.err(ep, "endpoints are not allowed with resolution NONE");
    } else {
      l?.forEach((e, i) => {
        const w = _endpoint(ctx, e, `${ep}[${i}]`, resolution, ports);
        if (w !== undefined) endpoints.push(w);
      });
    }
  }
  if (
    resolution === "STATIC" &&
    (spec.endpoints === undefined || (Array.isArray(spec.endpoints) && spec.endpoints.length === 0))
  ) {
    ctx.err(ep, "at least one endpoint is required with resolution STATIC");
  }
  if ((resolution === "DNS" || resolution === "DNS_ROUND_ROBIN") && endpoints.length === 0) {
    hosts.forEach((h, i) => {
      if (h.startsWith("*")) {
        ctx.err(`${hp}[${i}]`, `wildcard host needs endpoints with resolution ${resolution}`);
      }
    });
  }

  const exp = spec.exportTo === undefined
    ? undefined
    : exportTo(ctx, spec.exportTo, join(path, "exportTo"));

  if (
    ctx.errors.length > before || ports === undefined || location === undefined ||
    resolution === undefined
  ) {
    return undefined;
  }
  const out: ServiceEntrySpec = { hosts, addresses, ports, location, resolution, endpoints };
  if (exp !== undefined) out.exportTo = exp;
  return out;
}

function _ports(ctx: Ctx, v: unknown, path: string): ServicePort[] | undefined {
  if (v === undefined) return ctx.err(path, "at least one port is required");
  const l = list(ctx, v, path);
  if (l === undefined) return undefined;
  if (l.length === 0) return ctx.err(path, "at least one port is required");
  const out: ServicePort[] = [];
  l.forEach((x, i) => {
    const p = `${path}[${i}]`;
    const o = obj(ctx, x, p);
    if (o === undefined) return;
    fields(ctx, o, p, ["number", "protocol", "name", "targetPort"]);
    const n = o.number === undefined
      ? ctx.err(join(p, "number"), "required")
      : port(ctx, o.number, join(p, "number"));
    const name = o.name === undefined
      ? ctx.err(join(p, "name"), "required")
      : str(ctx, o.name, join(p, "name"));
    if (name !== undefined && !isDnsLabel(name)) {
      ctx.err(join(p, "name"), `port name must be a DNS label, got "${name}"`);
    }
    const protocol = o.protocol === undefined
      ? _protocolFromName(name ?? "")
      : enumOf(ctx, o.protocol, join(p, "protocol"), _PROTOCOLS);
    const target = o.targetPort === undefined
      ? undefined
      : port(ctx, o.targetPort, join(p, "targetPort"));
    if (n !== undefined && out.some((q) => q.number === n)) {
      ctx.err(join(p, "number"), `duplicate port ${n}`);
    }
    if (name !== undefined && out.some((q) => q.name === name)) {
      ctx.err(join(p, "name"), `duplicate port name "${name}"`);
    }
    if (n === undefined || name === undefined || protocol === undefined) return;
    const sp: ServicePort = { number: n, protocol, name };
    if (target !== undefined) sp.targetPort = target;
    out.push(sp);
  });
  return out.length === l.length ? out : undefined;
}

/** Istio's protocol selection by port name prefix ("http-web" is HTTP), else UNKNOWN (detected). */
function _protocolFromName(name: string): PortProtocol {
  const prefix = name.split("-")[0]!.toUpperCase();
  return _PROTOCOLS.find((p) => p === prefix) ?? "UNKNOWN";
}

function _endpoint(
  ctx: Ctx,
  v: unknown,
  path: string,
  resolution: string | undefined,
  ports: ServicePort[] | undefined,
): WorkloadEntry | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const before = ctx.errors.length;
  fields(ctx, o, path, [
    "address",
    "ports",
    "labels",
    "weight",
    "serviceAccount",
    "network",
    "locality",
  ]);
  const ap = join(path, "address");
  const address = o.address === undefined
    ? ctx.err(ap, "required")
    : nonEmptyStr(ctx, o.address, ap);
  if (address !== undefined) {
    if (address.startsWith("unix://")) {
      ctx.err(ap, "unix domain socket addresses are not supported");
    } else if (resolution === "STATIC" && !isIP(address)) {
      ctx.err(ap, `expected an IP address with resolution STATIC, got "${address}"`);
    } else if (!isIP(address)) hostName(ctx, address, ap, { wildcard: false, allowIP: true });
  }
  const epPorts: Record<string, number> = {};
  if (o.ports !== undefined) {
    const pp = join(path, "ports");
    const m = obj(ctx, o.ports, pp);
    for (const [k, val] of Object.entries(m ?? {})) {
      const n = port(ctx, val, mapKey(pp, k));
      if (n === undefined) continue;
      if (ports !== undefined && !ports.some((sp) => sp.name === k)) {
        ctx.err(mapKey(pp, k), `no service port is named "${k}"`);
      }
      epPorts[k] = n;
    }
  }
  const lbls = o.labels === undefined ? {} : labels(ctx, o.labels, join(path, "labels"));
  const weight = o.weight === undefined
    ? undefined
    : int(ctx, o.weight, join(path, "weight"), 0, 4294967295);
  const sa = o.serviceAccount === undefined
    ? undefined
    : nonEmptyStr(ctx, o.serviceAccount, join(path, "serviceAccount"));
  const network = o.network === undefined ? undefined : str(ctx, o.network, join(path, "network"));
  const locality = o.locality === undefined
    ? undefined
    : str(ctx, o.locality, join(path, "locality"));
  if (ctx.errors.length > before || address === undefined || lbls === undefined) return undefined;
  const w: WorkloadEntry = { address: address.toLowerCase(), ports: epPorts, labels: lbls };
  if (weight !== undefined) w.weight = weight;
  if (sa !== undefined) w.serviceAccount = sa;
  if (network !== undefined) w.network = network;
  if (locality !== undefined) w.locality = locality;
  return w;
}

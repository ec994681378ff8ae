/**
 * Validation of a VirtualService spec (Istio networking/v1
 * virtual_service.proto) for the mesh: hosts, gateways (any names; the sidecar
 * applies what is bound to "mesh"), HTTP
 * routes (match, weighted route, redirect, directResponse, rewrite, timeout,
 * retries, fault, header operations) and TCP routes. Host names come out
 * resolved to FQDNs in the resource's namespace. Destinations that name a
 * subset are recorded on the context; whether the subset exists is checked
 * across all resources by `validate.ts`, not here.
 */

import type {
  Destination,
  HeaderOperations,
  Headers_,
  HTTPDirectResponse,
  HTTPFaultInjection,
  HTTPMatchRequest,
  HTTPRedirect,
  HTTPRetry,
  HTTPRewrite,
  HTTPRoute,
  HTTPRouteDestination,
  L4MatchAttributes,
  RouteDestination,
  TCPRoute,
  VirtualServiceSpec,
} from "./model.ts";
import {
  bool,
  type Ctx,
  duration,
  exportTo,
  fields,
  fqdn,
  hostName,
  int,
  isDnsLabel,
  join,
  labels,
  list,
  mapKey,
  matchMap,
  num,
  type Obj,
  obj,
  port,
  str,
  stringList,
  stringMap,
  stringMatch,
} from "./validate_fields.ts";

export function validateVirtualServiceSpec(
  ctx: Ctx,
  spec: Obj,
  path: string,
): VirtualServiceSpec | undefined {
  fields(ctx, spec, path, ["hosts", "gateways", "http", "tcp", "exportTo"], ["tls"]);
  const before = ctx.errors.length;

  const hosts: string[] = [];
  const hp = join(path, "hosts");
  const hl = spec.hosts === undefined ? undefined : list(ctx, spec.hosts, hp);
  if (spec.hosts === undefined || hl?.length === 0) ctx.err(hp, "at least one host is required");
  hl?.forEach((h, i) => {
    const p = `${hp}[${i}]`;
    const name = hostName(ctx, h, p, { wildcard: true, allowIP: true });
    if (name === undefined) return;
    const full = fqdn(name, ctx.namespace);
    if (full === "*") ctx.err(p, `host "*" is not allowed for the mesh`);
    else if (hosts.includes(full)) ctx.err(p, `duplicate host "${full}"`);
    else hosts.push(full);
  });

  let gateways: string[] | undefined;
  if (spec.gateways !== undefined) {
    const gp = join(path, "gateways");
    // Other gateways are accepted: a sidecar applies the "mesh" part (compile.ts).
    gateways = stringList(ctx, spec.gateways, gp);
  }

  const http: HTTPRoute[] = [];
  if (spec.http !== undefined) {
    const p = join(path, "http");
    list(ctx, spec.http, p)?.forEach((r, i) => {
      const route = _httpRoute(ctx, r, `${p}[${i}]`);
      if (route !== undefined) http.push(route);
    });
  }
  const tcp: TCPRoute[] = [];
  if (spec.tcp !== undefined) {
    const p = join(path, "tcp");
    list(ctx, spec.tcp, p)?.forEach((r, i) => {
      const route = _tcpRoute(ctx, r, `${p}[${i}]`);
      if (route !== undefined) tcp.push(route);
    });
  }
  const noRoutes = (v: unknown) => v === undefined || (Array.isArray(v) && v.length === 0);
  if (noRoutes(spec.http) && noRoutes(spec.tcp) && spec.tls === undefined) {
    ctx.err(path, "http or tcp routes are required");
  }

  const exp = spec.exportTo === undefined
    ? undefined
    : exportTo(ctx, spec.exportTo, join(path, "exportTo"));
  if (ctx.errors.length > before) return undefined;
  const out: VirtualServiceSpec = { hosts, http, tcp };
  if (gateways !== undefined) out.gateways = gateways;
  if (exp !== undefined) out.exportTo = exp;
  return out;
}

function _httpRoute(ctx: Ctx, v: unknown, path: string): HTTPRoute | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(
    ctx,
    o,
    path,
    [
      "name",
      "match",
      "route",
      "redirect",
      "directResponse",
      "rewrite",
      "timeout",
      "retries",
      "fault",
      "headers",
    ],
    ["delegate", "mirror", "mirrors", "mirrorPercent", "mirrorPercentage", "corsPolicy"],
  );
  const before = ctx.errors.length;
  const out: HTTPRoute = { match: [], route: [] };
  if (o.name !== undefined) {
    const n = str(ctx, o.name, join(path, "name"));
    if (n !== undefined) out.name = n;
  }
  if (o.match !== undefined) {
    const mp = join(path, "match");
    list(ctx, o.match, mp)?.forEach((m, i) => {
      const r = _httpMatch(ctx, m, `${mp}[${i}]`);
      if (r !== undefined) out.match.push(r);
    });
  }
  const kinds = (["route", "redirect", "directResponse"] as const).filter((k) =>
    o[k] !== undefined
  );
  if (kinds.length === 0) ctx.err(path, "one of route, redirect or directResponse is required");
  for (const k of kinds.slice(1)) {
    ctx.err(join(path, k), `cannot be used together with ${kinds[0]}`);
  }
  if (o.rewrite !== undefined) {
    for (const k of ["redirect", "directResponse"] as const) {
      if (o[k] !== undefined) ctx.err(join(path, "rewrite"), `cannot be used together with ${k}`);
    }
  }

  if (o.route !== undefined) {
    const rp = join(path, "route");
    const l = list(ctx, o.route, rp);
    if (l?.length === 0) ctx.err(rp, "at least one destination is required");
    l?.forEach((d, i) => {
      const r = _httpRouteDestination(ctx, d, `${rp}[${i}]`);
      if (r !== undefined) out.route.push(r);
    });
    if (l !== undefined) _checkWeights(ctx, l, rp);
  }
  if (o.redirect !== undefined) {
    const r = _redirect(ctx, o.redirect, join(path, "redirect"));
    if (r !== undefined) out.redirect = r;
  }
  if (o.directResponse !== undefined) {
    const r = _directResponse(ctx, o.directResponse, join(path, "directResponse"));
    if (r !== undefined) out.directResponse = r;
  }
  if (o.rewrite !== undefined) {
    const r = _rewrite(ctx, o.rewrite, join(path, "rewrite"));
    if (r !== undefined) out.rewrite = r;
  }
  if (o.timeout !== undefined) {
    const t = duration(ctx, o.timeout, join(path, "timeout"));
    if (t !== undefined) out.timeoutMs = t;
  }
  if (o.retries !== undefined) {
    const r = _retries(ctx, o.retries, join(path, "retries"));
    if (r !== undefined) out.retries = r;
  }
  if (o.fault !== undefined) {
    const f = _fault(ctx, o.fault, join(path, "fault"));
    if (f !== undefined) out.fault = f;
  }
  if (o.headers !== undefined) {
    const h = _headers(ctx, o.headers, join(path, "headers"));
    if (h !== undefined) out.headers = h;
  }
  return ctx.errors.length > before ? undefined : out;
}

function _httpMatch(ctx: Ctx, v: unknown, path: string): HTTPMatchRequest | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(
    ctx,
    o,
    path,
    [
      "name",
      "uri",
      "scheme",
      "method",
      "authority",
      "headers",
      "withoutHeaders",
      "queryParams",
      "port",
      "ignoreUriCase",
      "sourceLabels",
      "gateways",
    ],
    ["sourceNamespace", "statPrefix"],
  );
  const before = ctx.errors.length;
  const out: HTTPMatchRequest = {};
  if (o.name !== undefined) {
    const n = str(ctx, o.name, join(path, "name"));
    if (n !== undefined) out.name = n;
  }
  for (const k of ["uri", "scheme", "method", "authority"] as const) {
    if (o[k] === undefined) continue;
    const m = stringMatch(ctx, o[k], join(path, k));
    if (m !== undefined) out[k] = m;
  }
  for (const k of ["headers", "withoutHeaders", "queryParams"] as const) {
    if (o[k] === undefined) continue;
    const m = matchMap(ctx, o[k], join(path, k), { noPrefix: k === "queryParams" });
    if (m !== undefined) out[k] = m;
  }
  if (o.port !== undefined) {
    const p = port(ctx, o.port, join(path, "port"));
    if (p !== undefined) out.port = p;
  }
  if (o.ignoreUriCase !== undefined) {
    const b = bool(ctx, o.ignoreUriCase, join(path, "ignoreUriCase"));
    if (b !== undefined) out.ignoreUriCase = b;
  }
  if (o.sourceLabels !== undefined) {
    const l = labels(ctx, o.sourceLabels, join(path, "sourceLabels"));
    if (l !== undefined) out.sourceLabels = l;
  }
  if (o.gateways !== undefined) {
    const g = stringList(ctx, o.gateways, join(path, "gateways"));
    if (g !== undefined) out.gateways = g;
  }
  return ctx.errors.length > before ? undefined : out;
}

function _destination(ctx: Ctx, v: unknown, path: string): Destination | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["host", "subset", "port"]);
  const before = ctx.errors.length;
  const hp = join(path, "host");
  const h = o.host === undefined
    ? ctx.err(hp, "required")
    : hostName(ctx, o.host, hp, { wildcard: false, allowIP: true });
  const out: Destination = { host: h === undefined ? "" : fqdn(h, ctx.namespace) };
  if (o.subset !== undefined) {
    const sp = join(path, "subset");
    const s = str(ctx, o.subset, sp);
    if (s !== undefined && !isDnsLabel(s)) {
      ctx.err(sp, `subset name must be a DNS label, got "${s}"`);
    } else if (s !== undefined) {
      out.subset = s;
      if (h !== undefined) ctx.subsetRefs.push({ path: sp, host: out.host, subset: s });
    }
  }
  if (o.port !== undefined) {
    const pp = join(path, "port");
    const po = obj(ctx, o.port, pp);
    if (po !== undefined) {
      fields(ctx, po, pp, ["number"]);
      const n = po.number === undefined
        ? ctx.err(join(pp, "number"), "required")
        : port(ctx, po.number, join(pp, "number"));
      if (n !== undefined) {
        out.port = { number: n };
        if (h !== undefined) {
          ctx.portRefs.push({ path: join(pp, "number"), host: out.host, port: n });
        }
      }
    }
  }
  return ctx.errors.length > before ? undefined : out;
}

function _httpRouteDestination(
  ctx: Ctx,
  v: unknown,
  path: string,
): HTTPRouteDestination | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["destination", "weight", "headers"]);
  const before = ctx.errors.length;
  const dp = join(path, "destination");
  const d = o.destination === undefined
    ? ctx.err(dp, "required")
    : _destination(ctx, o.destination, dp);
  const w = o.weight === undefined
    ? undefined
    : int(ctx, o.weight, join(path, "weight"), 0, 100, "a weight");
  const h = o.headers === undefined ? undefined : _headers(ctx, o.headers, join(path, "headers"));
  if (ctx.errors.length > before || d === undefined) return undefined;
  const out: HTTPRouteDestination = { destination: d };
  if (w !== undefined) out.weight = w;
  if (h !== undefined) out.headers = h;
  return out;
}

/**
 * Weights of one route's destinations: with one destination the weight may be
 * left out (it means 100); otherwise the weights, absent ones counting 0,
 * must sum to 100. Reported on the last destination's weight.
 */
function _checkWeights(ctx: Ctx, dests: unknown[], path: string): void {
  if (dests.length === 0) return;
  const weights = dests.map((
    d,
  ) => (typeof d === "object" && d !== null ? (d as Obj).weight : undefined));
  if (
    weights.some((w) =>
      w !== undefined && (typeof w !== "number" || !Number.isInteger(w) || w < 0 || w > 100)
    )
  ) {
    return; // already reported per destination
  }
  if (dests.length === 1 && weights[0] === undefined) return;
  const sum = weights.reduce<number>((a, w) => a + ((w as number | undefined) ?? 0), 0);
  if (sum !== 100) {
    ctx.err(`${path}[${dests.length - 1}].weight`, `weights must sum to 100, got ${sum}`);
  }
}

function _redirect(ctx: Ctx, v: unknown, path: string): HTTPRedirect | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["uri", "authority", "redirectCode"], ["port", "derivePort", "scheme"]);
  const before = ctx.errors.length;
  const out: HTTPRedirect = { redirectCode: 301 };
  if (o.uri !== undefined) {
    const s = str(ctx, o.uri, join(path, "uri"));
    if (s !== undefined) out.uri = s;
  }
  if (o.authority !== undefined) {
    const s = str(ctx, o.authority, join(path, "authority"));
    if (s !== undefined) out.authority = s;
  }
  if (o.uri === undefined && o.authority === undefined) {
    ctx.err(path, "uri or authority is required");
  }
  if (o.redirectCode !== undefined) {
    const c = int(ctx, o.redirectCode, join(path, "redirectCode"), 300, 399, "an HTTP status");
    if (c !== undefined) out.redirectCode = c;
  }
  return ctx.errors.length > before ? undefined : out;
}

function _directResponse(ctx: Ctx, v: unknown, path: string): HTTPDirectResponse | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["status", "body"]);
  const before = ctx.errors.length;
  const sp = join(path, "status");
  const status = o.status === undefined
    ? ctx.err(sp, "required")
    : int(ctx, o.status, sp, 200, 599, "an HTTP status");
  let body: string | undefined;
  if (o.body !== undefined) {
    const bp = join(path, "body");
    const b = obj(ctx, o.body, bp);
    if (b !== undefined) {
      fields(ctx, b, bp, ["string"], ["bytes"]);
      if (b.string === undefined && b.bytes === undefined) ctx.err(bp, "string is required");
      else if (b.string !== undefined) body = str(ctx, b.string, join(bp, "string"));
    }
  }
  if (ctx.errors.length > before || status === undefined) return undefined;
  const out: HTTPDirectResponse = { status };
  if (body !== undefined) out.body = body;
  return out;
}

function _rewrite(ctx: Ctx, v: unknown, path: string): HTTPRewrite | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["uri", "authority"], ["uriRegexRewrite"]);
  const before = ctx.errors.length;
  const out: HTTPRewrite = {};
  if (o.uri !== undefined) {
    const s = str(ctx, o.uri, join(path, "uri"));
    if (s !== undefined) out.uri = s;
  }
  if (o.authority !== undefined) {
    const s = str(ctx, o.authority, join(path, "authority"));
    if (s !== undefined) out.authority = s;
  }
  if (o.uri === undefined && o.authority === undefined && o.uriRegexRewrite === undefined) {
    ctx.err(path, "uri or authority is required");
  }
  return ctx.errors.length > before ? undefined : out;
}

const _RETRY_ON = new Set([
  "5xx",
  "gateway-error",
  "reset",
  "connect-failure",
  "retriable-4xx",
  "refused-stream",
  "retriable-status-codes",
  // gRPC status codes of a trailers-only response (Envoy's x-envoy-retry-grpc-on).
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
  "unavailable",
]);

function _retries(ctx: Ctx, v: unknown, path: string): HTTPRetry | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(
    ctx,
    o,
    path,
    ["attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"],
    ["retryIgnorePreviousHosts", "backoff"],
  );
  const before = ctx.errors.length;
  const ap = join(path, "attempts");
  // Left out, as 0: no retries (Istio turns the route's retry policy off then).
  const attempts = o.attempts === undefined ? 0 : int(ctx, o.attempts, ap, 0, 2147483647);
  const out: HTTPRetry = { attempts: attempts ?? 0 };
  if (o.perTryTimeout !== undefined) {
    const t = duration(ctx, o.perTryTimeout, join(path, "perTryTimeout"));
    if (t !== undefined) out.perTryTimeoutMs = t;
  }
  if (o.retryOn !== undefined) {
    const rp = join(path, "retryOn");
    const s = str(ctx, o.retryOn, rp);
    if (s !== undefined) {
      const items = s.split(",").map((x) => x.trim().toLowerCase());
      const bad = items.filter((x) => !_RETRY_ON.has(x) && !_isRetryStatus(x));
      if (bad.length > 0) {
        ctx.err(
          rp,
          `unknown retry condition${bad.length > 1 ? "s" : ""} ${
            bad.map((b) => `"${b}"`).join(", ")
          }`,
        );
      } else out.retryOn = items;
    }
  }
  if (o.retryRemoteLocalities !== undefined) {
    const b = bool(ctx, o.retryRemoteLocalities, join(path, "retryRemoteLocalities"));
    if (b !== undefined) out.retryRemoteLocalities = b;
  }
  return ctx.errors.length > before ? undefined : out;
}

function _isRetryStatus(s: string): boolean {
  return /^[1-5]\d\d$/.test(s);
}

function _percent(ctx: Ctx, o: Obj, path: string): number | undefined {
  if (o.percentage !== undefined && o.percent !== undefined) {
    return ctx.err(join(path, "percent"), "cannot be used together with percentage");
  }
  if (o.percentage !== undefined) {
    const pp = join(path, "percentage");
    const po = obj(ctx, o.percentage, pp);
    if (po === undefined) return undefined;
    fields(ctx, po, pp, ["value"]);
    return po.value === undefined ? 0 : num(ctx, po.value, join(pp, "value"), 0, 100);
  }
  if (o.percent !== undefined) {
    return int(ctx, o.percent, join(path, "percent"), 0, 100, "a percentage");
  }
  return 100; // Istio: "If left unspecified, all requests" are delayed / aborted.
}

function _fault(ctx: Ctx, v: unknown, path: string): HTTPFaultInjection | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["delay", "abort"]);
  const before = ctx.errors.length;
  if (o.delay === undefined && o.abort === undefined) ctx.err(path, "delay or abort is required");
  const out: HTTPFaultInjection = {};
  if (o.delay !== undefined) {
    const dp = join(path, "delay");
    const d = obj(ctx, o.delay, dp);
    if (d !== undefined) {
      fields(ctx, d, dp, ["fixedDelay", "percentage", "percent"], ["exponentialDelay"]);
      const fp = join(dp, "fixedDelay");
      const ms = d.fixedDelay === undefined
        ? (d.exponentialDelay === undefined ? ctx.err(fp, "required") : undefined)
        : duration(ctx, d.fixedDelay, fp);
      const pct = _percent(ctx, d, dp);
      if (ms !== undefined && pct !== undefined) out.delay = { fixedDelayMs: ms, percentage: pct };
    }
  }
  if (o.abort !== undefined) {
    const ap = join(path, "abort");
    const a = obj(ctx, o.abort, ap);
    if (a !== undefined) {
      fields(ctx, a, ap, ["httpStatus", "percentage", "percent"], ["grpcStatus", "http2Error"]);
      const sp = join(ap, "httpStatus");
      const status = a.httpStatus === undefined
        ? (a.grpcStatus === undefined && a.http2Error === undefined
          ? ctx.err(sp, "required")
          : undefined)
        : int(ctx, a.httpStatus, sp, 200, 599, "an HTTP status");
      const pct = _percent(ctx, a, ap);
      if (status !== undefined && pct !== undefined) {
        out.abort = { httpStatus: status, percentage: pct };
      }
    }
  }
  return ctx.errors.length > before ? undefined : out;
}

const _TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function _headers(ctx: Ctx, v: unknown, path: string): Headers_ | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["request", "response"]);
  const before = ctx.errors.length;
  const out: Headers_ = {};
  for (const k of ["request", "response"] as const) {
    if (o[k] === undefined) continue;
    const p = join(path, k);
    const ops = obj(ctx, o[k], p);
    if (ops === undefined) continue;
    fields(ctx, ops, p, ["set", "add", "remove"]);
    const res: HeaderOperations = {};
    for (const op of ["set", "add"] as const) {
      if (ops[op] === undefined) continue;
      const m = stringMap(ctx, ops[op], join(p, op));
      for (const name of Object.keys(m ?? {})) {
        if (!_TOKEN.test(name)) ctx.err(mapKey(join(p, op), name), `invalid header name "${name}"`);
      }
      if (m !== undefined) res[op] = m;
    }
    if (ops.remove !== undefined) {
      const rp = join(p, "remove");
      const l = stringList(ctx, ops.remove, rp);
      l?.forEach((name, i) => {
        if (!_TOKEN.test(name)) ctx.err(`${rp}[${i}]`, `invalid header name "${name}"`);
      });
      if (l !== undefined) res.remove = l;
    }
    out[k] = res;
  }
  return ctx.errors.length > before ? undefined : out;
}

function _tcpRoute(ctx: Ctx, v: unknown, path: string): TCPRoute | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["match", "route"]);
  const before = ctx.errors.length;
  const out: TCPRoute = { match: [], route: [] };
  if (o.match !== undefined) {
    const mp = join(path, "match");
    list(ctx, o.match, mp)?.forEach((m, i) => {
      const r = _l4Match(ctx, m, `${mp}[${i}]`);
      if (r !== undefined) out.match.push(r);
    });
  }
  const rp = join(path, "route");
  const l = o.route === undefined ? ctx.err(rp, "required") : list(ctx, o.route, rp);
  if (l?.length === 0) ctx.err(rp, "at least one destination is required");
  l?.forEach((d, i) => {
    const p = `${rp}[${i}]`;
    const dobj = obj(ctx, d, p);
    if (dobj === undefined) return;
    fields(ctx, dobj, p, ["destination", "weight"]);
    const dp = join(p, "destination");
    const dest = dobj.destination === undefined
      ? ctx.err(dp, "required")
      : _destination(ctx, dobj.destination, dp);
    const w = dobj.weight === undefined
      ? undefined
      : int(ctx, dobj.weight, join(p, "weight"), 0, 100, "a weight");
    if (dest === undefined) return;
    const rd: RouteDestination = { destination: dest };
    if (w !== undefined) rd.weight = w;
    out.route.push(rd);
  });
  if (l !== undefined) _checkWeights(ctx, l, rp);
  return ctx.errors.length > before ? undefined : out;
}

/**
 * An L4 match. `destinationSubnets` is refused for now: the runtime tables
 * hold one TCP route per virtual host and cannot choose by destination IP.
 */
function _l4Match(ctx: Ctx, v: unknown, path: string): L4MatchAttributes | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["port", "sourceLabels", "gateways"], ["sourceNamespace"], [
    "destinationSubnets",
  ]);
  const before = ctx.errors.length;
  const out: L4MatchAttributes = {};
  if (o.port !== undefined) {
    const p = port(ctx, o.port, join(path, "port"));
    if (p !== undefined) out.port = p;
  }
  if (o.sourceLabels !== undefined) {
    const l = labels(ctx, o.sourceLabels, join(path, "sourceLabels"));
    if (l !== undefined) out.sourceLabels = l;
  }
  if (o.gateways !== undefined) {
    const g = stringList(ctx, o.gateways, join(path, "gateways"));
    if (g !== undefined) out.gateways = g;
  }
  return ctx.errors.length > before ? undefined : out;
}

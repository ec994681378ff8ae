/**
 * Validation of the security.istio.io kinds remora enforces:
 * PeerAuthentication (selector, mtls.mode, portLevelMtls) and
 * AuthorizationPolicy (selector, action ALLOW/DENY/AUDIT, rules with
 * from.source, to.operation and when). What Istio defines but remora cannot
 * honour is an error naming the field: CUSTOM action and providers,
 * targetRef(s), request principals and request.auth.* (no JWT
 * authentication), remote IP blocks and remote.ip (no trusted
 * X-Forwarded-For), serviceAccounts, connection.sni, path templates. Values
 * are checked as Istio does (ports, CIDRs) plus a few mistakes that would
 * silently never match: a "*" in the middle of a value, a principal written
 * with "spiffe://", a path that does not start with "/" or "*". Semantics live
 * in `src/security/`; this module only checks and types.
 */

import { headerKeyName, WHEN_KEYS } from "../security/authz.ts";
import { parseCidr } from "../security/cidr.ts";
import type {
  AuthorizationPolicySpec,
  AuthzCondition,
  AuthzOperation,
  AuthzRule,
  AuthzSource,
  MtlsMode,
  PeerAuthenticationSpec,
  WorkloadSelector,
} from "./model.ts";
import {
  type Ctx,
  enumOf,
  fields,
  join,
  labels,
  list,
  mapKey,
  nonEmptyStr,
  type Obj,
  obj,
  typeName,
} from "./validate_fields.ts";

const _MODES: readonly MtlsMode[] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

export function validatePeerAuthenticationSpec(
  ctx: Ctx,
  spec: Obj,
  path: string,
): PeerAuthenticationSpec | undefined {
  const before = ctx.errors.length;
  fields(ctx, spec, path, ["selector", "mtls", "portLevelMtls"]);
  const out: PeerAuthenticationSpec = {};
  const selector = _selector(ctx, spec.selector, join(path, "selector"));
  if (selector !== undefined) out.selector = selector;
  if (spec.mtls !== undefined) {
    const p = join(path, "mtls");
    const m = obj(ctx, spec.mtls, p);
    if (m !== undefined) {
      fields(ctx, m, p, ["mode"]);
      const mode = m.mode === undefined ? "UNSET" : enumOf(ctx, m.mode, join(p, "mode"), _MODES);
      if (mode !== undefined) out.mtls = { mode };
    }
  }
  if (spec.portLevelMtls !== undefined) {
    const p = join(path, "portLevelMtls");
    const o = obj(ctx, spec.portLevelMtls, p);
    if (o !== undefined) {
      if (selector === undefined || Object.keys(selector.matchLabels).length === 0) {
        ctx.err(
          p,
          "needs a selector with matchLabels: Istio ignores port-level mTLS in mesh- and namespace-wide policies",
        );
      }
      if (Object.keys(o).length === 0) ctx.err(p, "must not be empty");
      const ports: Record<string, { mode: MtlsMode }> = {};
      for (const [k, v] of Object.entries(o)) {
        const kp = mapKey(p, k);
        if (!/^[1-9]\d{0,4}$/.test(k) || Number(k) > 65535) {
          ctx.err(kp, `expected a port number 1..65535 as key, got "${k}"`);
          continue;
        }
        const s = obj(ctx, v, kp);
        if (s === undefined) continue;
        fields(ctx, s, kp, ["mode"]);
        const mode = s.mode === undefined ? "UNSET" : enumOf(ctx, s.mode, join(kp, "mode"), _MODES);
        if (mode !== undefined) ports[String(Number(k))] = { mode };
      }
      out.portLevelMtls = ports;
    }
  }
  return ctx.errors.length > before ? undefined : out;
}

export function validateAuthorizationPolicySpec(
  ctx: Ctx,
  spec: Obj,
  path: string,
): AuthorizationPolicySpec | undefined {
  const before = ctx.errors.length;
  // provider is reported below with its reason.
  fields(ctx, spec, path, ["selector", "action", "rules", "provider"], ["targetRef", "targetRefs"]);
  if (spec.provider !== undefined) {
    ctx.err(join(path, "provider"), "not supported: remora has no CUSTOM (external) authorization");
  }
  const out: AuthorizationPolicySpec = { action: "ALLOW", rules: [] };
  const selector = _selector(ctx, spec.selector, join(path, "selector"));
  if (selector !== undefined) out.selector = selector;
  if (spec.action !== undefined) {
    const p = join(path, "action");
    if (typeof spec.action === "string" && spec.action.toUpperCase() === "CUSTOM") {
      ctx.err(
        p,
        "CUSTOM is not supported: remora has no external authorization, use ALLOW or DENY",
      );
    } else {
      const a = enumOf(ctx, spec.action, p, ["ALLOW", "DENY", "AUDIT"] as const);
      if (a !== undefined) out.action = a;
    }
  }
  if (spec.rules !== undefined && spec.rules !== null) {
    const p = join(path, "rules");
    list(ctx, spec.rules, p)?.forEach((r, i) => {
      const rule = _rule(ctx, r, `${p}[${i}]`);
      if (rule !== undefined) out.rules.push(rule);
    });
  }
  return ctx.errors.length > before ? undefined : out;
}

function _selector(ctx: Ctx, v: unknown, path: string): WorkloadSelector | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["matchLabels"]);
  if (o.matchLabels === undefined || o.matchLabels === null) return { matchLabels: {} };
  const l = labels(ctx, o.matchLabels, join(path, "matchLabels"));
  return l === undefined ? undefined : { matchLabels: l };
}

function _rule(ctx: Ctx, v: unknown, path: string): AuthzRule | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["from", "to", "when"]);
  const out: AuthzRule = {};
  const from = _nonEmptyList(ctx, o.from, join(path, "from"));
  if (from !== undefined) {
    out.from = [];
    from.forEach((f, i) => {
      const p = `${join(path, "from")}[${i}]`;
      const fo = obj(ctx, f, p);
      if (fo === undefined) return;
      fields(ctx, fo, p, ["source"]);
      const s = fo.source === undefined || fo.source === null
        ? ctx.err(join(p, "source"), "required")
        : _source(ctx, fo.source, join(p, "source"));
      if (s !== undefined) out.from!.push({ source: s });
    });
  }
  const to = _nonEmptyList(ctx, o.to, join(path, "to"));
  if (to !== undefined) {
    out.to = [];
    to.forEach((t, i) => {
      const p = `${join(path, "to")}[${i}]`;
      const to = obj(ctx, t, p);
      if (to === undefined) return;
      fields(ctx, to, p, ["operation"]);
      const op = to.operation === undefined || to.operation === null
        ? ctx.err(join(p, "operation"), "required")
        : _operation(ctx, to.operation, join(p, "operation"));
      if (op !== undefined) out.to!.push({ operation: op });
    });
  }
  const when = _nonEmptyList(ctx, o.when, join(path, "when"));
  if (when !== undefined) {
    out.when = [];
    when.forEach((w, i) => {
      const c = _condition(ctx, w, `${join(path, "when")}[${i}]`);
      if (c !== undefined) out.when!.push(c);
    });
  }
  return out;
}

function _nonEmptyList(ctx: Ctx, v: unknown, path: string): unknown[] | undefined {
  if (v === undefined || v === null) return undefined;
  const l = list(ctx, v, path);
  if (l !== undefined && l.length === 0) return ctx.err(path, "must not be empty, leave it out");
  return l;
}

type _ValueKind = "principal" | "string" | "ip" | "port" | "path";

function _source(ctx: Ctx, v: unknown, path: string): AuthzSource | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const supported = [
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
  ] as const;
  for (const k of ["requestPrincipals", "notRequestPrincipals"]) {
    if (o[k] !== undefined) {
      ctx.err(join(path, k), "not supported: remora has no request (JWT) authentication");
    }
  }
  for (const k of ["remoteIpBlocks", "notRemoteIpBlocks"]) {
    if (o[k] !== undefined) {
      ctx.err(
        join(path, k),
        "not supported: remora does not trust X-Forwarded-For for the client address, use ipBlocks",
      );
    }
  }
  fields(ctx, o, path, [
    ...supported,
    "requestPrincipals",
    "notRequestPrincipals",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
  ], ["serviceAccounts", "notServiceAccounts"]);
  const kinds: Record<(typeof supported)[number], _ValueKind> = {
    principals: "principal",
    notPrincipals: "principal",
    namespaces: "string",
    notNamespaces: "string",
    ipBlocks: "ip",
    notIpBlocks: "ip",
  };
  const out: AuthzSource = {};
  for (const k of supported) {
    const l = _values(ctx, o[k], join(path, k), kinds[k]);
    if (l !== undefined) out[k] = l;
  }
  if (Object.keys(out).length === 0 && !_hasAny(o)) ctx.err(path, "must not be empty");
  return out;
}

function _operation(ctx: Ctx, v: unknown, path: string): AuthzOperation | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const supported = [
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
  ] as const;
  fields(ctx, o, path, supported);
  const kinds: Record<(typeof supported)[number], _ValueKind> = {
    hosts: "string",
    notHosts: "string",
    ports: "port",
    notPorts: "port",
    methods: "string",
    notMethods: "string",
    paths: "path",
    notPaths: "path",
  };
  const out: AuthzOperation = {};
  for (const k of supported) {
    const l = _values(ctx, o[k], join(path, k), kinds[k]);
    if (l !== undefined) out[k] = l;
  }
  if (Object.keys(out).length === 0 && !_hasAny(o)) ctx.err(path, "must not be empty");
  return out;
}

/** Whether a mapping has any non-empty field (then its own errors are reported instead). */
function _hasAny(o: Obj): boolean {
  return Object.values(o).some((x) => !(Array.isArray(x) && x.length === 0) && x !== null);
}

function _condition(ctx: Ctx, v: unknown, path: string): AuthzCondition | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["key", "values", "notValues"]);
  const kp = join(path, "key");
  const key = o.key === undefined ? ctx.err(kp, "required") : nonEmptyStr(ctx, o.key, kp);
  if (key === undefined) return undefined;
  let kind: _ValueKind | undefined;
  if (key === "source.principal") kind = "principal";
  else if (key === "source.namespace") kind = "string";
  else if (key === "source.ip" || key === "destination.ip") kind = "ip";
  else if (key === "destination.port") kind = "port";
  else if (key.startsWith("request.headers")) {
    if (headerKeyName(key) === undefined) {
      return ctx.err(kp, `expected request.headers[<name>], got "${key}"`);
    }
    kind = "string";
  } else if (key.startsWith("request.auth.")) {
    return ctx.err(kp, `"${key}" is not supported: remora has no request (JWT) authentication`);
  } else if (key === "remote.ip") {
    return ctx.err(
      kp,
      `"remote.ip" is not supported: remora does not trust X-Forwarded-For, use source.ip`,
    );
  } else if (key === "connection.sni" || key.startsWith("experimental.")) {
    return ctx.err(kp, `"${key}" is not supported`);
  } else {
    return ctx.err(kp, `unknown key "${key}", expected one of ${WHEN_KEYS.join(", ")}`);
  }
  const values = _values(ctx, o.values, join(path, "values"), kind);
  const notValues = _values(ctx, o.notValues, join(path, "notValues"), kind);
  if (values === undefined && notValues === undefined) {
    if (_isEmpty(o.values) && _isEmpty(o.notValues)) {
      ctx.err(path, "one of values or notValues is required");
    }
    return undefined;
  }
  const out: AuthzCondition = { key };
  if (values !== undefined) out.values = values;
  if (notValues !== undefined) out.notValues = notValues;
  return out;
}

function _isEmpty(v: unknown): boolean {
  return v === undefined || v === null || (Array.isArray(v) && v.length === 0);
}

/** A list of values; an empty list is "not set", as in Istio (undefined, no error). */
function _values(ctx: Ctx, v: unknown, path: string, kind: _ValueKind): string[] | undefined {
  if (_isEmpty(v)) return undefined;
  const l = list(ctx, v, path);
  if (l === undefined) return undefined;
  const out: string[] = [];
  let ok = true;
  l.forEach((x, i) => {
    const s = _value(ctx, x, `${path}[${i}]`, kind);
    if (s === undefined) ok = false;
    else out.push(s);
  });
  return ok ? out : undefined;
}

function _value(ctx: Ctx, x: unknown, path: string, kind: _ValueKind): string | undefined {
  if (kind === "port") {
    const s = typeof x === "number" && Number.isInteger(x) ? String(x) : x;
    if (typeof s !== "string" || !/^\d{1,5}$/.test(s) || Number(s) > 65535) {
      return ctx.err(path, `expected a port number 0..65535 such as "8080", got ${typeName(x)}`);
    }
    return String(Number(s));
  }
  const s = nonEmptyStr(ctx, x, path);
  if (s === undefined) return undefined;
  if (kind === "ip") {
    const c = parseCidr(s);
    return typeof c === "string" ? ctx.err(path, c) : s;
  }
  if (kind === "path" && /\{\*\*?\}/.test(s)) {
    return ctx.err(
      path,
      `path templates ({*}, {**}) are not supported; use an exact path, a "prefix*" or a "*suffix", got "${s}"`,
    );
  }
  const both = s.length > 1 && s.startsWith("*") && s.endsWith("*");
  if (s !== "*" && (both || s.slice(1, -1).includes("*"))) {
    return ctx.err(
      path,
      `"*" is allowed only alone, at the start or at the end of a value, got "${s}"`,
    );
  }
  if (kind === "principal" && s.startsWith("spiffe://")) {
    return ctx.err(
      path,
      `principals are written without "spiffe://", e.g. "cluster.local/ns/default/sa/sleep", got "${s}"`,
    );
  }
  if (kind === "path") {
    if (!s.startsWith("/") && !s.startsWith("*")) {
      return ctx.err(path, `expected a path starting with "/" or "*", got "${s}"`);
    }
  }
  return s;
}

export const SECURITY_API_VERSIONS: readonly string[] = [
  "security.istio.io/v1",
  "security.istio.io/v1beta1",
];

/** Whether `kind` is one of the security.istio.io kinds validated here. */
export function isSecurityKind(kind: unknown): boolean {
  return kind === "PeerAuthentication" || kind === "AuthorizationPolicy";
}

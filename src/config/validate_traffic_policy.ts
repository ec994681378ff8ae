/**
 * Validation of the resilience parts of a DestinationRule traffic policy, with
 * Istio's field names and semantics (networking/v1 destination_rule.proto):
 * `connectionPool` (tcp.maxConnections, tcp.connectTimeout,
 * http.http1MaxPendingRequests, http.http2MaxRequests,
 * http.maxRequestsPerConnection, http.maxRetries, http.idleTimeout),
 * `outlierDetection` (consecutive5xxErrors, consecutiveGatewayErrors,
 * interval, baseEjectionTime, maxEjectionPercent, minHealthPercent),
 * `loadBalancer.consistentHash` (httpHeaderName, httpCookie, useSourceIp) and
 * `retryBudget` (percent, minRetryConcurrency). Every other field Istio
 * defines here is "not supported"; anything else is an unknown field. It
 * applies no defaults: `compile.ts` does, in one place.
 */

import type { ConnectionPoolSettings, ConsistentHash, OutlierDetection } from "./model.ts";
import {
  bool,
  type Ctx,
  duration,
  fields,
  int,
  join,
  nonEmptyStr,
  num,
  obj,
  str,
} from "./validate_fields.ts";

const _MAX_INT32 = 2147483647;

/** A protobuf Duration that may be "0s" (Istio allows zero where it means "off"). */
function _durationOrZero(ctx: Ctx, v: unknown, path: string): number | undefined {
  if (typeof v === "string" && /^0+(\.0+)?(ms|s|m|h)$/.test(v.trim())) return 0;
  return duration(ctx, v, path);
}

export function connectionPool(
  ctx: Ctx,
  v: unknown,
  path: string,
): ConnectionPoolSettings | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const before = ctx.errors.length;
  fields(ctx, o, path, ["tcp", "http"]);
  const out: ConnectionPoolSettings = {};
  if (o.tcp !== undefined) {
    const tp = join(path, "tcp");
    const t = obj(ctx, o.tcp, tp);
    if (t !== undefined) {
      fields(ctx, t, tp, ["maxConnections", "connectTimeout"], [
        "tcpKeepalive",
        "maxConnectionDuration",
        "idleTimeout",
      ]);
      const tcp: NonNullable<ConnectionPoolSettings["tcp"]> = {};
      if (t.maxConnections !== undefined) {
        const n = int(ctx, t.maxConnections, join(tp, "maxConnections"), 1, _MAX_INT32);
        if (n !== undefined) tcp.maxConnections = n;
      }
      if (t.connectTimeout !== undefined) {
        const ms = duration(ctx, t.connectTimeout, join(tp, "connectTimeout"));
        if (ms !== undefined) tcp.connectTimeoutMs = ms;
      }
      out.tcp = tcp;
    }
  }
  if (o.http !== undefined) {
    const hp = join(path, "http");
    const h = obj(ctx, o.http, hp);
    if (h !== undefined) {
      fields(
        ctx,
        h,
        hp,
        [
          "http1MaxPendingRequests",
          "http2MaxRequests",
          "maxRequestsPerConnection",
          "maxRetries",
          "idleTimeout",
        ],
        ["h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"],
      );
      const http: NonNullable<ConnectionPoolSettings["http"]> = {};
      for (
        const k of [
          "http1MaxPendingRequests",
          "http2MaxRequests",
          "maxRequestsPerConnection",
          "maxRetries",
        ] as const
      ) {
        if (h[k] === undefined) continue;
        // 0 is "unset" in Istio's proto (an int32 without a wrapper): the default applies.
        const n = int(ctx, h[k], join(hp, k), 0, _MAX_INT32);
        if (n !== undefined && n > 0) http[k] = n;
      }
      if (h.idleTimeout !== undefined) {
        const ms = duration(ctx, h.idleTimeout, join(hp, "idleTimeout"));
        if (ms !== undefined) http.idleTimeoutMs = ms;
      }
      out.http = http;
    }
  }
  return ctx.errors.length > before ? undefined : out;
}

export function outlierDetection(
  ctx: Ctx,
  v: unknown,
  path: string,
): OutlierDetection | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const before = ctx.errors.length;
  fields(
    ctx,
    o,
    path,
    [
      "consecutive5xxErrors",
      "consecutiveGatewayErrors",
      "interval",
      "baseEjectionTime",
      "maxEjectionPercent",
      "minHealthPercent",
    ],
    ["consecutiveErrors", "splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"],
  );
  const out: OutlierDetection = {};
  // UInt32Value in Istio: 0 turns the check off.
  if (o.consecutive5xxErrors !== undefined) {
    const n = int(ctx, o.consecutive5xxErrors, join(path, "consecutive5xxErrors"), 0, _MAX_INT32);
    if (n !== undefined) out.consecutive5xxErrors = n;
  }
  if (o.consecutiveGatewayErrors !== undefined) {
    const n = int(
      ctx,
      o.consecutiveGatewayErrors,
      join(path, "consecutiveGatewayErrors"),
      0,
      _MAX_INT32,
    );
    if (n !== undefined) out.consecutiveGatewayErrors = n;
  }
  if (o.interval !== undefined) {
    const ms = duration(ctx, o.interval, join(path, "interval"));
    if (ms !== undefined) out.intervalMs = ms;
  }
  if (o.baseEjectionTime !== undefined) {
    const ms = duration(ctx, o.baseEjectionTime, join(path, "baseEjectionTime"));
    if (ms !== undefined) out.baseEjectionTimeMs = ms;
  }
  if (o.maxEjectionPercent !== undefined) {
    const n = int(
      ctx,
      o.maxEjectionPercent,
      join(path, "maxEjectionPercent"),
      0,
      100,
      "a percentage",
    );
    if (n !== undefined) out.maxEjectionPercent = n;
  }
  if (o.minHealthPercent !== undefined) {
    const n = int(ctx, o.minHealthPercent, join(path, "minHealthPercent"), 0, 100, "a percentage");
    if (n !== undefined) out.minHealthPercent = n;
  }
  return ctx.errors.length > before ? undefined : out;
}

export function consistentHash(
  ctx: Ctx,
  v: unknown,
  path: string,
): ConsistentHash | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const before = ctx.errors.length;
  fields(ctx, o, path, ["httpHeaderName", "httpCookie", "useSourceIp"], [
    "httpQueryParameterName",
    "ringHash",
    "maglev",
    "minimumRingSize",
  ]);
  const keys = (["httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"] as const)
    .filter((k) => o[k] !== undefined);
  if (keys.length !== 1) {
    return ctx.err(
      path,
      keys.length === 0
        ? "exactly one of httpHeaderName, httpCookie or useSourceIp is required"
        : `exactly one hash key is allowed, got ${keys.join(" and ")}`,
    );
  }
  let out: ConsistentHash | undefined;
  if (o.httpHeaderName !== undefined) {
    const h = nonEmptyStr(ctx, o.httpHeaderName, join(path, "httpHeaderName"));
    if (h !== undefined) out = { httpHeaderName: h.toLowerCase() };
  } else if (o.httpCookie !== undefined) {
    const cp = join(path, "httpCookie");
    const c = obj(ctx, o.httpCookie, cp);
    if (c !== undefined) {
      fields(ctx, c, cp, ["name", "path", "ttl"]);
      const name = c.name === undefined
        ? ctx.err(join(cp, "name"), "required")
        : nonEmptyStr(ctx, c.name, join(cp, "name"));
      if (name !== undefined && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
        ctx.err(join(cp, "name"), `invalid cookie name "${name}"`);
      }
      const p = c.path === undefined ? undefined : str(ctx, c.path, join(cp, "path"));
      const ttl = c.ttl === undefined ? undefined : _durationOrZero(ctx, c.ttl, join(cp, "ttl"));
      if (name !== undefined) {
        const cookie: { name: string; path?: string; ttlMs?: number } = { name };
        if (p !== undefined) cookie.path = p;
        if (ttl !== undefined) cookie.ttlMs = ttl;
        out = { httpCookie: cookie };
      }
    }
  } else if (o.useSourceIp !== undefined) {
    const b = bool(ctx, o.useSourceIp, join(path, "useSourceIp"));
    if (b === false) ctx.err(join(path, "useSourceIp"), "must be true when set");
    else if (b === true) out = { useSourceIp: true };
  }
  return ctx.errors.length > before ? undefined : out;
}

export function retryBudget(
  ctx: Ctx,
  v: unknown,
  path: string,
): { percent?: number; minRetryConcurrency?: number } | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const before = ctx.errors.length;
  fields(ctx, o, path, ["percent", "minRetryConcurrency"]);
  const out: { percent?: number; minRetryConcurrency?: number } = {};
  if (o.percent !== undefined) {
    const n = num(ctx, o.percent, join(path, "percent"), 0, 100);
    if (n !== undefined) out.percent = n;
  }
  if (o.minRetryConcurrency !== undefined) {
    const n = int(ctx, o.minRetryConcurrency, join(path, "minRetryConcurrency"), 0, _MAX_INT32);
    if (n !== undefined) out.minRetryConcurrency = n;
  }
  return ctx.errors.length > before ? undefined : out;
}

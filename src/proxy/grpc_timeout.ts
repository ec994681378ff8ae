/**
 * A gRPC call's deadline, as Istio's sidecar keeps it: the client's
 * grpc-timeout header is the request's timeout, capped by the route's
 * timeout when the route has one (Istio sets Envoy's max_grpc_timeout to the
 * route timeout, 0 = no cap). The upstream is told the timeout it has, so a
 * gRPC server gives up when remora does. Shared by the HTTP/1 and HTTP/2 engines.
 */

const UNIT_MS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};

/**
 * A grpc-timeout value in milliseconds (at least 1), or undefined when it is
 * absent or malformed. The gRPC wire format: 1 to 8 digits and one of H M S m u n.
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value.trim());
  if (m === null) return undefined;
  return Math.max(1, Math.ceil(Number(m[1]) * UNIT_MS[m[2]!]!));
}

/**
 * The timeout, in ms, of a gRPC request with header `header` on a route whose
 * timeout is `routeMs` (undefined or 0: none). 0 means no timeout. A request
 * without a (valid) grpc-timeout has the route's timeout.
 */
export function grpcRequestTimeoutMs(
  routeMs: number | undefined,
  header: string | undefined,
): number {
  const route = routeMs !== undefined && routeMs > 0 ? routeMs : 0;
  const asked = parseGrpcTimeout(header) ?? 0;
  if (route > 0 && (asked === 0 || asked > route)) return route;
  return asked;
}

/** `ms` as a grpc-timeout value: whole milliseconds while they fit 8 digits, then seconds. */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  if (whole < 1e8) return `${whole}m`;
  const s = Math.ceil(whole / 1000);
  return s < 1e8 ? `${s}S` : `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}

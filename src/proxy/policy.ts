/**
 * Per-request policy helpers built on a route's precompiled policy: which
 * outcomes a retry policy retries, the backoff between attempts, header
 * operations, and the request id. Policy objects come from the config and are
 * never mutated; per-request state (attempt counts, timers) stays with the
 * engines.
 */

import type { HeaderOps, RetryPolicy } from "../config/runtime.ts";
import type { HeaderList } from "../http/h1_head.ts";

/**
 * Why an attempt failed before a usable response. "reset": the connection
 * ended; "remote-reset" and "refused-stream": the upstream reset the stream
 * (RST_STREAM), the latter as not processed, which is safe to retry.
 */
export type Failure =
  | "connect-failure"
  | "reset"
  | "remote-reset"
  | "refused-stream"
  | "timeout"
  | "overflow";

/**
 * The response flag and reset reason of a request that failed for `f`, as
 * Envoy names them (UF connection failure, UC connection termination, UR
 * remote reset or remote refused stream reset, UO overflow, UT timeout).
 */
export function failureFlag(f: Failure): { flag: string; reason: string } {
  switch (f) {
    case "connect-failure":
      return { flag: "UF", reason: "connection failure" };
    case "reset":
      return { flag: "UC", reason: "connection termination" };
    case "remote-reset":
      return { flag: "UR", reason: "remote reset" };
    case "refused-stream":
      return { flag: "UR", reason: "remote refused stream reset" };
    case "timeout":
      return { flag: "UT", reason: "timeout" };
    case "overflow":
      return { flag: "UO", reason: "overflow" };
  }
}

/** Envoy's local reply text for a request whose upstream failed for `f` before its response head. */
export function resetText(f: Failure, detail: string): string {
  return `upstream connect error or disconnect/reset before headers. reset reason: ${
    failureFlag(f).reason
  }, detail: ${detail}`;
}

/**
 * Whether a response head calls for a retry: by its status, or by the
 * grpc-status of a gRPC response that ended with its headers ("" for none).
 */
export function retriesStatus(p: RetryPolicy, status: number, grpcStatus = ""): boolean {
  if (p.statusCodes.has(status)) return true;
  if (grpcStatus !== "" && p.grpcCodes.size > 0 && p.grpcCodes.has(Number(grpcStatus))) return true;
  if (p.on5xx && status >= 500) return true;
  if (p.onGatewayError && (status === 502 || status === 503 || status === 504)) return true;
  if (p.onRetriable4xx && status === 409) return true;
  return false;
}

export function retriesFailure(p: RetryPolicy, f: Failure): boolean {
  switch (f) {
    case "connect-failure":
      return p.onConnectFailure || p.on5xx || p.onGatewayError || p.onReset;
    case "reset":
    case "remote-reset":
      return p.onReset || p.on5xx;
    case "refused-stream":
      return p.onRefusedStream || p.onReset || p.on5xx;
    case "timeout":
      // A per-try timeout is an upstream that did not answer: Envoy retries it under 5xx,
      // gateway-error and reset. (The route's timeout ends the request: never retried.)
      return p.on5xx || p.onGatewayError || p.onReset;
    case "overflow":
      // A circuit breaker said no: retrying would only add load.
      return false;
  }
}

/** Exponential backoff with full jitter: base 25ms, capped at 250ms. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const cap = Math.min(250, 25 * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * cap);
}

/** Applies set/add/remove operations to a header list in place. */
export function applyHeaderOps(headers: HeaderList, ops: HeaderOps | undefined): void {
  if (ops === undefined) return;
  if (ops.remove.length > 0) {
    for (let i = headers.length - 1; i >= 0; i--) {
      if (ops.remove.includes(headers[i]![0])) headers.splice(i, 1);
    }
  }
  for (const [name, value] of ops.set) {
    let found = false;
    for (let i = headers.length - 1; i >= 0; i--) {
      if (headers[i]![0] === name) {
        if (found) headers.splice(i, 1);
        else {
          headers[i] = [name, value];
          found = true;
        }
      }
    }
    if (!found) headers.push([name, value]);
  }
  for (const [name, value] of ops.add) headers.push([name, value]);
}

export function newRequestId(): string {
  return crypto.randomUUID();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The tracing and access log flags of `remora run`, and their checked values.
 * Defaults are Istio's: spans only when a collector endpoint is given, 1%
 * random sampling unless a Telemetry resource says otherwise, and access
 * logs off unless `--access-log` or a Telemetry `accessLogging` rule turns
 * them on. The objects they configure live in `telemetry/tracing.ts`.
 */

import type { AccessLogFormat } from "../telemetry/access_log.ts";
import { type FlagSpecs, type FlagValue, UsageError } from "./flags.ts";

export const TELEMETRY_FLAGS: FlagSpecs = {
  "otlp-endpoint": {
    kind: "string",
    arg: "URL",
    help: "Export spans over OTLP/HTTP JSON to this URL (e.g. http://collector:4318/v1/traces); " +
      "Telemetry provider otel",
  },
  "zipkin-endpoint": {
    kind: "string",
    arg: "URL",
    help: "Export spans as Zipkin v2 JSON to this URL (e.g. http://zipkin:9411/api/v2/spans); " +
      "Telemetry provider zipkin",
  },
  "trace-sampling": {
    kind: "string",
    arg: "PERCENT",
    default: "1",
    help: "Random sampling percentage 0..100 for requests that carry no sampling decision, " +
      "unless a Telemetry resource sets randomSamplingPercentage",
  },
  "access-log": {
    kind: "string",
    arg: "FORMAT",
    default: "off",
    help: "Access log lines on stdout: json, text (Envoy's default format) or off; " +
      "a Telemetry accessLogging rule turns them on (text unless json is given) or off",
  },
};

export interface TelemetryFlags {
  otlpEndpoint: string | undefined;
  zipkinEndpoint: string | undefined;
  samplingPercent: number;
  accessLog: AccessLogFormat | "off";
}

function _url(name: string, v: FlagValue): string | undefined {
  if (v === undefined) return undefined;
  const s = String(v);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new UsageError(`Flag --${name} takes an http:// or https:// URL, got "${s}"`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new UsageError(`Flag --${name} takes an http:// or https:// URL, got "${s}"`);
  }
  return s;
}

/** Checks the telemetry flags; a bad one is a `UsageError`. */
export function telemetryFlags(flags: Record<string, FlagValue>): TelemetryFlags {
  const pctRaw = String(flags["trace-sampling"] ?? "1");
  const pct = /^\d+(\.\d+)?$/.test(pctRaw) ? Number(pctRaw) : NaN;
  if (!(pct >= 0 && pct <= 100)) {
    throw new UsageError(`Flag --trace-sampling takes a percentage 0..100, got "${pctRaw}"`);
  }
  const al = String(flags["access-log"] ?? "off");
  if (al !== "json" && al !== "text" && al !== "off") {
    throw new UsageError(`Flag --access-log takes json, text or off, got "${al}"`);
  }
  return {
    otlpEndpoint: _url("otlp-endpoint", flags["otlp-endpoint"]),
    zipkinEndpoint: _url("zipkin-endpoint", flags["zipkin-endpoint"]),
    samplingPercent: pct,
    accessLog: al,
  };
}

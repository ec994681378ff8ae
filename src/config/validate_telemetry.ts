/**
 * Validation of a Telemetry spec (Istio telemetry.istio.io/v1 and v1alpha1,
 * telemetry.proto). remora supports, per rule:
 * - `tracing[]`: `match.mode`, `providers` (one, by name),
 *   `randomSamplingPercentage` (0..100), `disableSpanReporting`;
 * - `accessLogging[]`: `match.mode`, `providers` (one, by name), `disabled`.
 * Provider names stand for remora's exporters, whose endpoints come from
 * flags: tracing `otel` / `opentelemetry` (OTLP/HTTP, `--otlp-endpoint`) and
 * `zipkin` (`--zipkin-endpoint`); access logging `envoy` (stdout, format from
 * `--access-log`). `selector`, `targetRef(s)` (a remora config serves one
 * workload), `metrics` (Istio's standard metrics are fixed), `customTags`,
 * `useRequestIdForTraceSampling` and access log `filter` are errors. That a
 * config has at most one Telemetry is checked by `validate.ts`.
 */

import type {
  TelemetryAccessLogging,
  TelemetrySpec,
  TelemetryTracing,
  WorkloadMode,
} from "./model.ts";
import {
  bool,
  type Ctx,
  enumOf,
  fields,
  join,
  list,
  nonEmptyStr,
  num,
  type Obj,
  obj,
} from "./validate_fields.ts";

export const TELEMETRY_API_VERSIONS = ["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];

/** Tracing provider names and the exporter each stands for. */
export const TRACING_PROVIDERS: Readonly<Record<string, "otlp" | "zipkin">> = {
  otel: "otlp",
  opentelemetry: "otlp",
  zipkin: "zipkin",
};

/** Access log provider names (Istio's built-in stdout logger). */
export const ACCESS_LOG_PROVIDERS = ["envoy"];

const _MODES = ["CLIENT_AND_SERVER", "CLIENT", "SERVER"] as const;

export function validateTelemetrySpec(
  ctx: Ctx,
  spec: Obj,
  path: string,
): TelemetrySpec | undefined {
  fields(ctx, spec, path, ["tracing", "accessLogging"], [
    "selector",
    "targetRef",
    "targetRefs",
    "metrics",
  ]);
  const before = ctx.errors.length;
  const out: TelemetrySpec = { tracing: [], accessLogging: [] };
  if (spec.tracing !== undefined) {
    const p = join(path, "tracing");
    list(ctx, spec.tracing, p)?.forEach((t, i) => {
      const r = _tracing(ctx, t, `${p}[${i}]`);
      if (r !== undefined) out.tracing.push(r);
    });
  }
  if (spec.accessLogging !== undefined) {
    const p = join(path, "accessLogging");
    list(ctx, spec.accessLogging, p)?.forEach((a, i) => {
      const r = _accessLogging(ctx, a, `${p}[${i}]`);
      if (r !== undefined) out.accessLogging.push(r);
    });
  }
  return ctx.errors.length > before ? undefined : out;
}

function _tracing(ctx: Ctx, v: unknown, path: string): TelemetryTracing | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(
    ctx,
    o,
    path,
    ["match", "providers", "randomSamplingPercentage", "disableSpanReporting"],
    ["useRequestIdForTraceSampling", "enableIstioTags"],
    ["customTags"],
  );
  const out: TelemetryTracing = { mode: _mode(ctx, o.match, join(path, "match")) };
  const providers = _providers(
    ctx,
    o.providers,
    join(path, "providers"),
    (name) =>
      TRACING_PROVIDERS[name] !== undefined
        ? undefined
        : `unknown tracing provider "${name}", expected otel (--otlp-endpoint), opentelemetry ` +
          `(the same) or zipkin (--zipkin-endpoint)`,
  );
  if (providers !== undefined) out.providers = providers;
  if (o.randomSamplingPercentage !== undefined) {
    const pct = num(
      ctx,
      o.randomSamplingPercentage,
      join(path, "randomSamplingPercentage"),
      0,
      100,
    );
    if (pct !== undefined) out.randomSamplingPercentage = pct;
  }
  if (o.disableSpanReporting !== undefined) {
    const d = bool(ctx, o.disableSpanReporting, join(path, "disableSpanReporting"));
    if (d !== undefined) out.disableSpanReporting = d;
  }
  return out;
}

function _accessLogging(ctx: Ctx, v: unknown, path: string): TelemetryAccessLogging | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["match", "providers", "disabled"], ["filter"]);
  const out: TelemetryAccessLogging = { mode: _mode(ctx, o.match, join(path, "match")) };
  const providers = _providers(
    ctx,
    o.providers,
    join(path, "providers"),
    (name) =>
      ACCESS_LOG_PROVIDERS.includes(name)
        ? undefined
        : `unknown access log provider "${name}", expected envoy (stdout, format from --access-log)`,
  );
  if (providers !== undefined) out.providers = providers;
  if (o.disabled !== undefined) {
    const d = bool(ctx, o.disabled, join(path, "disabled"));
    if (d !== undefined) out.disabled = d;
  }
  return out;
}

function _mode(ctx: Ctx, v: unknown, path: string): WorkloadMode {
  if (v === undefined) return "CLIENT_AND_SERVER";
  const o = obj(ctx, v, path);
  if (o === undefined) return "CLIENT_AND_SERVER";
  fields(ctx, o, path, ["mode"]);
  if (o.mode === undefined) return "CLIENT_AND_SERVER";
  return enumOf(ctx, o.mode, join(path, "mode"), _MODES) ?? "CLIENT_AND_SERVER";
}

function _providers(
  ctx: Ctx,
  v: unknown,
  path: string,
  check: (name: string) => string | undefined,
): string[] | undefined {
  if (v === undefined) return undefined;
  const l = list(ctx, v, path);
  if (l === undefined) return undefined;
  if (l.length > 1) {
    ctx.err(path, `only one provider per rule is supported (as in Istio), got ${l.length}`);
    return undefined;
  }
  const names: string[] = [];
  l.forEach((p, i) => {
    const pp = `${path}[${i}]`;
    const o = obj(ctx, p, pp);
    if (o === undefined) return;
    fields(ctx, o, pp, ["name"]);
    const name = o.name === undefined
      ? ctx.err(join(pp, "name"), "required")
      : nonEmptyStr(ctx, o.name, join(pp, "name"));
    if (name === undefined) return;
    const problem = check(name);
    if (problem !== undefined) ctx.err(join(pp, "name"), problem);
    else names.push(name);
  });
  return names;
}

/**
 * Compiles the (at most one) validated Telemetry resource into the policy
 * each side of the proxy reads per request: for the outbound side (CLIENT)
 * and the inbound side (SERVER), the first tracing rule and the first access
 * logging rule whose `match.mode` covers that side. Values a rule leaves out
 * stay undefined, so that `telemetry/tracing.ts` fills them from flags
 * (sampling percentage, providers), as Istio fills them from MeshConfig.
 * Pure; no validation.
 */

import { inScope } from "../security/compile_security.ts";
import type { Resource, TelemetryAccessLogging, TelemetryTracing, WorkloadMode } from "./model.ts";

export interface TracingPolicy {
  /** Provider names; undefined = every exporter configured by flags. */
  providers: readonly string[] | undefined;
  randomSamplingPercentage: number | undefined;
  disableSpanReporting: boolean;
}

export interface AccessLogPolicy {
  providers: readonly string[] | undefined;
  disabled: boolean;
}

export interface SidePolicy {
  tracing: TracingPolicy | undefined;
  accessLogging: AccessLogPolicy | undefined;
}

/** Per side: `source` = outbound (CLIENT), `destination` = inbound (SERVER). */
export interface TelemetryPolicy {
  source: SidePolicy;
  destination: SidePolicy;
}

const _covers = (mode: WorkloadMode, side: "CLIENT" | "SERVER") =>
  mode === "CLIENT_AND_SERVER" || mode === side;

/**
 * `scope`: the workload's namespace and the root namespace. A Telemetry in
 * another namespace is not this workload's (as in Istio) and is left out.
 */
export function compileTelemetry(
  resources: readonly Resource[],
  scope: { namespace: string; rootNamespace: string },
): TelemetryPolicy {
  const t = resources.find((r) => r.kind === "Telemetry" && inScope(r.metadata.namespace, scope));
  const spec = t?.kind === "Telemetry" ? t.spec : { tracing: [], accessLogging: [] };
  const side = (s: "CLIENT" | "SERVER"): SidePolicy => ({
    tracing: _tracing(spec.tracing.find((r) => _covers(r.mode, s))),
    accessLogging: _accessLog(spec.accessLogging.find((r) => _covers(r.mode, s))),
  });
  return { source: side("CLIENT"), destination: side("SERVER") };
}

function _tracing(r: TelemetryTracing | undefined): TracingPolicy | undefined {
  if (r === undefined) return undefined;
  return {
    // An empty list is the list left out (proto3): the default providers.
    providers: r.providers?.length === 0 ? undefined : r.providers,
    randomSamplingPercentage: r.randomSamplingPercentage,
    disableSpanReporting: r.disableSpanReporting ?? false,
  };
}

function _accessLog(r: TelemetryAccessLogging | undefined): AccessLogPolicy | undefined {
  if (r === undefined) return undefined;
  return {
    providers: r.providers?.length === 0 ? undefined : r.providers,
    disabled: r.disabled ?? false,
  };
}

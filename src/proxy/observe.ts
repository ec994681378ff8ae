/**
 * Turns one finished exchange into its metrics record, the same way for the
 * HTTP/1 and HTTP/2 engines: reporter-dependent source and destination
 * labels, response flags joined as Envoy prints them ("-" when none).
 */

import type { Endpoint } from "../config/runtime.ts";
import type { Metrics, Reporter } from "../telemetry/metrics.ts";
import type { DestinationLabels } from "./target.ts";

/** The workload remora runs beside, for metrics labels. */
export interface SelfInfo {
  workload: string;
  namespace: string;
}

export interface Observer {
  metrics: Metrics;
  reporter: Reporter;
  self: SelfInfo;
}

export interface ExchangeFacts {
  labels: DestinationLabels;
  endpoint: Endpoint | undefined;
  status: number;
  flags: readonly string[];
  grpc: boolean;
  grpcStatus: string;
  startMs: number;
  requestBytes: number;
  responseBytes: number;
}

export function observe(o: Observer, x: ExchangeFacts): void {
  const source = o.reporter === "source";
  o.metrics.recordRequest({
    reporter: o.reporter,
    sourceWorkload: source ? o.self.workload : "unknown",
    sourceNamespace: source ? o.self.namespace : "unknown",
    sourcePrincipal: "unknown",
    destinationWorkload: source ? x.endpoint?.workload ?? "unknown" : o.self.workload,
    destinationNamespace: source ? x.endpoint?.namespace ?? "unknown" : o.self.namespace,
    destinationPrincipal: "unknown",
    destinationService: x.labels.service,
    destinationServiceName: x.labels.serviceName,
    destinationServiceNamespace: x.labels.serviceNamespace,
    destinationCluster: x.labels.cluster,
    responseCode: x.status,
    requestProtocol: x.grpc ? "grpc" : "http",
    grpcResponseStatus: x.grpcStatus,
    responseFlags: x.flags.length === 0 ? "-" : [...new Set(x.flags)].join(","),
    // As in Istio: the caller's side cannot know how the callee received it.
    connectionSecurityPolicy: source ? "unknown" : "none",
    durationMs: performance.now() - x.startMs,
    requestBytes: x.requestBytes,
    responseBytes: x.responseBytes,
  });
}

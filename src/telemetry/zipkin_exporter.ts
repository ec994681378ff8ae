/**
 * Zipkin v2 JSON encoding of finished spans (`POST /api/v2/spans`, a JSON
 * list of spans): timestamps and durations in microseconds, tags as
 * strings, the proxy as `localEndpoint` and the peer as `remoteEndpoint`.
 * Batching, the bounded queue and drops are `span_export.ts`.
 */

import {
  BatchExporter,
  type BatchOptions,
  type Encoder,
  type FinishedSpan,
  type SpanSource,
} from "./span_export.ts";

function endpoint(addr: string, port: number): Record<string, unknown> | undefined {
  if (addr === "" || addr === "unknown") return undefined;
  const ip = addr.startsWith("::ffff:") ? addr.slice(7) : addr;
  const out: Record<string, unknown> = ip.includes(":") ? { ipv6: ip } : { ipv4: ip };
  if (port > 0) out.port = port;
  return out;
}

export const zipkinJson: Encoder = {
  contentType: "application/json",
  encode(spans: readonly FinishedSpan[], source: SpanSource): string {
    return JSON.stringify(spans.map((sp) => {
      const tags: Record<string, string> = {
        "http.request.method": sp.method,
        "url.path": sp.urlPath,
        "server.address": sp.serverAddress,
        "network.protocol.version": sp.protocolVersion,
        "upstream_cluster": sp.upstreamCluster,
        "response_flags": sp.responseFlags,
        "guid:x-request-id": sp.requestId,
        "peer.principal": sp.peerPrincipal,
        "component": "proxy",
      };
      if (sp.status > 0) tags["http.response.status_code"] = String(sp.status);
      if (sp.peerAddress !== "") tags["network.peer.address"] = sp.peerAddress;
      if (sp.error) tags["error"] = sp.status > 0 ? String(sp.status) : "no response";
      const out: Record<string, unknown> = {
        traceId: sp.traceId,
        id: sp.spanId,
        kind: sp.kind,
        name: sp.name.toLowerCase(),
        timestamp: Math.round(sp.startEpochMs * 1000),
        duration: Math.max(1, Math.round(sp.durationMs * 1000)),
        localEndpoint: { serviceName: source.serviceName },
        tags,
      };
      if (sp.parentSpanId !== "") out.parentId = sp.parentSpanId;
      const remote = endpoint(sp.peerAddress, sp.peerPort);
      if (remote !== undefined) out.remoteEndpoint = remote;
      return out;
    }));
  },
};

/** A batching Zipkin v2 exporter to `url` (e.g. http://zipkin:9411/api/v2/spans). */
export function zipkinExporter(url: string, source: SpanSource, opts: BatchOptions): BatchExporter {
  return new BatchExporter("zipkin", url, zipkinJson, source, opts);
}

/**
 * The outbound pipeline: what the app sends goes through here.
 *
 *   accept + original destination (listener.ts)
 *     → skip detection for server-first destinations (well-known ports, ports
 *       a ServiceEntry declares TCP, destinations remembered as server-first)
 *     → detect, bounded by the detection timeout (detect.ts)
 *     → HTTP/1.x: http1.ts with OutboundRouter (absolute-form and CONNECT too)
 *     → HTTP/2 preface: http2.ts with OutboundRouter
 *     → TLS: tcp_proxy.ts, routed by its SNI (tls_hello.ts), else by address
 *     → opaque, or a silent client: tcp_proxy.ts with OutboundTcpRouter
 *       (redirected connections only; explicit-proxy clients must speak HTTP)
 *
 * Wiring only: every stage lives in src/proxy.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { detectWithin, SERVER_FIRST_PORTS, ServerFirstMemory } from "../proxy/detect.ts";
import { serveHttp1, writeLocal } from "../proxy/http1.ts";
import { LazyHttp2 } from "../proxy/http2_lazy.ts";
import type { SelfInfo } from "../proxy/observe.ts";
import { OutboundRouter } from "../proxy/outbound_router.ts";
import type { ConnPool } from "../proxy/pool.ts";
import { declaredProtocol, findByOriginalDst } from "../proxy/route_match.ts";
import { OutboundTcpRouter, serveTcp } from "../proxy/tcp_proxy.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import type { Telemetry } from "../telemetry/tracing.ts";
import type { BufConn } from "../net/buf_conn.ts";
import { readClientHello } from "../net/tls_hello.ts";
import type { ConnInfo } from "../proxy/http1.ts";
import { Listener } from "./listener.ts";

export interface OutboundOptions {
  /** One listener per address (127.0.0.1, and ::1 when IPv6 traffic is captured). */
  addresses: string[];
  port: number;
  getConfig(): RuntimeConfig;
  ownPorts: ReadonlySet<number>;
  metrics: Metrics;
  pool: ConnPool;
  self: SelfInfo;
  /** Tracing and access logs (telemetry/tracing.ts); none when absent. */
  telemetry?: Telemetry | undefined;
  detectionTimeoutMs: number;
  connectTimeoutMs: number;
  tcpIdleTimeoutMs: number;
}

const HTTP_PROTOCOLS: ReadonlySet<string> = new Set(["HTTP", "HTTP2", "GRPC"]);

export function startOutbound(o: OutboundOptions): { listeners: Listener[]; h2: LazyHttp2 } {
  const router = new OutboundRouter({ getConfig: o.getConfig, ownPorts: o.ownPorts });
  const observer = {
    metrics: o.metrics,
    reporter: "source" as const,
    self: o.self,
    telemetry: o.telemetry?.hook("source"),
  };
  const h2 = new LazyHttp2({ ...observer, router, pool: o.pool });
  // HTTP/1.1 requests to clusters declared HTTP2 or GRPC use h2's upstream sessions.
  const h1 = { ...observer, router, pool: o.pool, h2, explicitProxy: true };
  const memory = new ServerFirstMemory();
  const tcp = {
    ...observer,
    router: new OutboundTcpRouter(o.getConfig),
    pool: o.pool,
    idleTimeoutMs: o.tcpIdleTimeoutMs,
    memory,
  };
  const handle = async (c: BufConn, info: ConnInfo): Promise<void> => {
    const dst = info.originalDst;
    let waitMs = Infinity;
    if (dst !== undefined) {
      const found = findByOriginalDst(o.getConfig(), dst.host, dst.port);
      const declared = found === undefined ? "UNKNOWN" : declaredProtocol(found.vhost);
      if (
        declared === "TCP" || SERVER_FIRST_PORTS.has(dst.port) || memory.has(dst.host, dst.port)
      ) {
        return serveTcp(c, info, tcp, false);
      }
      // A port declared HTTP is HTTP whenever its client speaks (a pool may connect early),
      // as on Istio, where only undeclared ports are sniffed.
      if (!HTTP_PROTOCOLS.has(declared)) waitMs = o.detectionTimeoutMs;
    }
    // An explicit-proxy client (no original destination) always speaks first.
    const protocol = await detectWithin(c, waitMs);
    switch (protocol) {
      case "http1":
        return serveHttp1(c, info, h1);
      case "h2":
        return h2.serve(c, info);
      case "closed":
        return;
      case "tls":
        // TLS passes through untouched, routed by the server name it asks for.
        if (dst !== undefined) {
          return serveTcp(
            c,
            info,
            tcp,
            false,
            (await readClientHello(c, o.detectionTimeoutMs))?.sni,
          );
        }
        break;
      default:
        if (dst !== undefined) return serveTcp(c, info, tcp, protocol === "timeout");
    }
    await writeLocal(
      c,
      400,
      "remora: the outbound listener expects HTTP (set HTTP_PROXY to it)",
      [],
      false,
    )
      .catch(() => {});
  };
  const count = (n: number) => o.metrics.downstreamConnections.set({ listener: "outbound" }, n);
  const listeners: Listener[] = [];
  try {
    for (const address of o.addresses) {
      listeners.push(new Listener("outbound", address, o.port, handle, count));
    }
  } catch (e) {
    for (const l of listeners) l.close(0);
    throw e;
  }
  return { listeners, h2 };
}

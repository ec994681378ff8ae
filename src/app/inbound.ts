/**
 * The inbound pipeline: what arrives for the workload goes through here.
 *
 *   accept + original destination (listener.ts)
 *     → skip detection for server-first ports and remembered destinations
 *     → detect, bounded by the detection timeout (detect.ts)
 *     → HTTP/1.x: http1.ts with InboundRouter → the app on 127.0.0.1
 *     → HTTP/2 preface: http2.ts with InboundRouter
 *     → anything else: tcp_proxy.ts with InboundTcpRouter → the app
 * The app port is the original destination port of a redirected connection,
 * else --app-port.
 *
 * Wiring only: every stage lives in src/proxy.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { detectWithin, SERVER_FIRST_PORTS, ServerFirstMemory } from "../proxy/detect.ts";
import { serveHttp1 } from "../proxy/http1.ts";
import { Http2Engine } from "../proxy/http2.ts";
import { InboundRouter } from "../proxy/inbound_router.ts";
import type { SelfInfo } from "../proxy/observe.ts";
import type { ConnPool } from "../proxy/pool.ts";
import { InboundTcpRouter, serveTcp } from "../proxy/tcp_proxy.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import { Listener } from "./listener.ts";

export interface InboundOptions {
  address: string;
  port: number;
  appPort: number | undefined;
  getConfig(): RuntimeConfig;
  metrics: Metrics;
  pool: ConnPool;
  self: SelfInfo;
  detectionTimeoutMs: number;
  connectTimeoutMs: number;
  tcpIdleTimeoutMs: number;
}

export function startInbound(o: InboundOptions): { listener: Listener; h2: Http2Engine } {
  const router = new InboundRouter({ getConfig: o.getConfig, appPort: o.appPort });
  const observer = { metrics: o.metrics, reporter: "destination" as const, self: o.self };
  const h1 = { ...observer, router, pool: o.pool, explicitProxy: false };
  const h2 = new Http2Engine({ ...observer, router, connectTimeoutMs: o.connectTimeoutMs });
  const memory = new ServerFirstMemory();
  const tcp = {
    ...observer,
    router: new InboundTcpRouter(o.appPort),
    connectTimeoutMs: o.connectTimeoutMs,
    idleTimeoutMs: o.tcpIdleTimeoutMs,
    memory,
  };
  const listener = new Listener("inbound", o.address, o.port, async (c, info) => {
    const port = info.originalDst?.port ?? o.appPort;
    if (port !== undefined && (SERVER_FIRST_PORTS.has(port) || memory.has("127.0.0.1", port))) {
      return serveTcp(c, info, tcp, false);
    }
    const protocol = await detectWithin(c, o.detectionTimeoutMs);
    switch (protocol) {
      case "http1":
        return serveHttp1(c, info, h1);
      case "h2":
        h2.serve(c, info);
        return c.whenClosed;
      case "closed":
        return;
      default:
        return serveTcp(c, info, tcp, protocol === "timeout");
    }
  }, (n) => o.metrics.downstreamConnections.set({ listener: "inbound" }, n));
  return { listener, h2 };
}

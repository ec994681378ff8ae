/**
 * The inbound pipeline: what arrives for the workload goes through here.
 *
 *   accept (listener.ts) → detect (detect.ts)
 *     → HTTP/1.x: http1.ts with InboundRouter → the app on 127.0.0.1:<app port>
 *     → HTTP/2 preface: http2.ts with InboundRouter
 *     → anything else: opaque TCP relay to the app port (tcp_relay.ts)
 *
 * Wiring only: every stage lives in src/proxy.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { log } from "../log.ts";
import { serveHttp1 } from "../proxy/http1.ts";
import { Http2Engine } from "../proxy/http2.ts";
import { detect } from "../proxy/detect.ts";
import { InboundRouter } from "../proxy/inbound_router.ts";
import type { SelfInfo } from "../proxy/observe.ts";
import { connect, type ConnPool } from "../proxy/pool.ts";
import { relay } from "../proxy/tcp_relay.ts";
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
}

export function startInbound(o: InboundOptions): { listener: Listener; h2: Http2Engine } {
  const router = new InboundRouter({ getConfig: o.getConfig, appPort: o.appPort });
  const observer = { metrics: o.metrics, reporter: "destination" as const, self: o.self };
  const h1 = { ...observer, router, pool: o.pool, explicitProxy: false };
  const h2 = new Http2Engine({ ...observer, router });
  const listener = new Listener("inbound", o.address, o.port, async (c, info) => {
    const protocol = await detect(c);
    switch (protocol) {
      case "http1":
        return serveHttp1(c, info, h1);
      case "h2":
        h2.serve(c, info);
        return c.whenClosed;
      case "closed":
        return;
      default: {
        if (o.appPort === undefined) return;
        try {
          const app = await connect("127.0.0.1", o.appPort, 10_000);
          await relay(c, app);
        } catch (e) {
          log.debug("inbound TCP relay failed", { error: String(e) });
        }
      }
    }
  }, (n) => o.metrics.downstreamConnections.set({ listener: "inbound" }, n));
  return { listener, h2 };
}

/**
 * The outbound pipeline: what the app sends goes through here.
 *
 *   accept (listener.ts) → detect (detect.ts)
 *     → HTTP/1.x: http1.ts with OutboundRouter (absolute-form and CONNECT in explicit mode)
 *     → HTTP/2 preface: http2.ts with OutboundRouter
 *     → anything else: refused (explicit proxy mode speaks HTTP only)
 *
 * Wiring only: every stage lives in src/proxy.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { writeLocal } from "../proxy/http1.ts";
import { serveHttp1 } from "../proxy/http1.ts";
import { Http2Engine } from "../proxy/http2.ts";
import { detect } from "../proxy/detect.ts";
import type { SelfInfo } from "../proxy/observe.ts";
import { OutboundRouter } from "../proxy/outbound_router.ts";
import type { ConnPool } from "../proxy/pool.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import { Listener } from "./listener.ts";

export interface OutboundOptions {
  address: string;
  port: number;
  getConfig(): RuntimeConfig;
  ownPorts: ReadonlySet<number>;
  metrics: Metrics;
  pool: ConnPool;
  self: SelfInfo;
}

export function startOutbound(o: OutboundOptions): { listener: Listener; h2: Http2Engine } {
  const router = new OutboundRouter({ getConfig: o.getConfig, ownPorts: o.ownPorts });
  const observer = { metrics: o.metrics, reporter: "source" as const, self: o.self };
  const h1 = { ...observer, router, pool: o.pool, explicitProxy: true };
  const h2 = new Http2Engine({ ...observer, router });
  const listener = new Listener("outbound", o.address, o.port, async (c, info) => {
    switch (await detect(c)) {
      case "http1":
        return serveHttp1(c, info, h1);
      case "h2":
        h2.serve(c, info);
        return c.whenClosed;
      case "closed":
        return;
      default:
        await writeLocal(
          c,
          400,
          "remora: the outbound listener expects HTTP (set HTTP_PROXY to it)",
          [],
          false,
        )
          .catch(() => {});
    }
  }, (n) => o.metrics.downstreamConnections.set({ listener: "outbound" }, n));
  return { listener, h2 };
}

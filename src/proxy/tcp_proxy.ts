/**
 * Opaque TCP proxying: a connection that is not HTTP (or whose client stayed
 * silent: a server-first protocol) goes to the destination its listener's
 * TCP router picks, bytes relayed both ways with half-close, a connect
 * timeout and an idle timeout, and Istio's TCP metrics
 * (istio_tcp_connections_opened/closed_total, istio_tcp_sent/received_bytes_total).
 * When detection timed out and the server turns out to speak first, the
 * destination is remembered so that the next connection skips the wait.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { log } from "../log.ts";
import { authorize, logShadowPolicies } from "../security/authz.ts";
import type { BufConn } from "../net/buf_conn.ts";
import type { ServerFirstMemory } from "./detect.ts";
import { type ConnInfo, destinationIpOf } from "./http1.ts";
import { connectionRecord, type Observer, upstreamPrincipal } from "./observe.ts";
import { balancerFor } from "./balance.ts";
import type { ConnPool } from "./pool.ts";
import { findByOriginalDst, findVirtualHost, pickCluster } from "./route_match.ts";
import {
  BLACKHOLE,
  clusterLabels,
  type DestinationLabels,
  inboundLabels,
  meshedPeer,
  PASSTHROUGH,
  UNKNOWN_DESTINATION,
  type Upstream,
  upstreamOf,
} from "./target.ts";
import { relay } from "./tcp_relay.ts";

/** Where an opaque TCP connection goes. */
export interface TcpTarget {
  labels: DestinationLabels;
  next(previous: Upstream | undefined): Upstream | undefined;
}

/** A refusal's `flag` is its response flag: NR when nothing routes it, "-" for a policy's no. */
export type TcpDecision = TcpTarget | { refuse: string; labels: DestinationLabels; flag: string };

export interface TcpRouter {
  /** `sni` is the server name of a TLS ClientHello, when the client sent one. */
  route(info: ConnInfo, sni: string | undefined): TcpDecision;
}

export interface TcpProxyOptions extends Observer {
  router: TcpRouter;
  /** Dials upstreams (mTLS for meshed ones). */
  pool: ConnPool;
  idleTimeoutMs: number;
  memory: ServerFirstMemory;
}

/** Proxies one opaque TCP connection; `detectionTimedOut` says the client was silent. */
export async function serveTcp(
  c: BufConn,
  info: ConnInfo,
  opts: TcpProxyOptions,
  detectionTimedOut: boolean,
  sni?: string,
): Promise<void> {
  const startMs = performance.now();
  const d = opts.router.route(info, sni);
  const source = opts.reporter === "source";
  // Outbound, the identity a meshed upstream had to present; inbound, the verified caller's.
  const peerOf = (up: Upstream | undefined) =>
    source ? upstreamPrincipal(opts.self, up) : info.peer?.principal;
  const record = (labels: DestinationLabels, up: Upstream | undefined, flags: string) =>
    connectionRecord(opts, info, up, labels, flags);
  const logLine = (
    labels: DestinationLabels,
    up: Upstream | undefined,
    flags: string,
    received: number,
    sent: number,
  ) =>
    opts.telemetry?.onConnection({
      startMs,
      conn: info,
      upstream: up,
      cluster: labels.cluster,
      bytesReceived: received,
      bytesSent: sent,
      requestedServerName: sni,
      peerPrincipal: peerOf(up),
    }, flags);
  if ("refuse" in d) {
    log.debug("TCP connection refused", { reason: d.refuse });
    opts.metrics.tcpClosed(opts.metrics.tcpOpened(record(d.labels, undefined, d.flag)));
    logLine(d.labels, undefined, d.flag, 0, 0);
    c.close();
    return;
  }
  let upstream: BufConn | undefined;
  let up: Upstream | undefined;
  for (let attempt = 0; attempt < 2 && upstream === undefined; attempt++) {
    up = d.next(up);
    if (up === undefined) break;
    try {
      upstream = await opts.pool.dial(up, "istio");
    } catch (e) {
      log.debug("TCP upstream connect failed", {
        upstream: `${up.host}:${up.port}`,
        error: (e as Error).message,
      });
    }
  }
  if (upstream === undefined || up === undefined) {
    const flag = up === undefined ? "UH" : "UF";
    opts.metrics.tcpClosed(opts.metrics.tcpOpened(record(d.labels, up, flag)));
    logLine(d.labels, up, flag, 0, 0);
    c.close();
    return;
  }
  const labels = opts.metrics.tcpOpened(record(d.labels, up, "-"));
  const dst = info.originalDst;
  let clientSpoke = c.buffered > 0;
  let received = 0;
  let sent = 0;
  const counts = await relay(c, upstream, {
    idleTimeoutMs: opts.idleTimeoutMs,
    onBytes: (fromClient, toClient) => {
      received += fromClient;
      sent += toClient;
      if (fromClient > 0) clientSpoke = true;
      else if (toClient > 0 && !clientSpoke && detectionTimedOut && dst !== undefined) {
        // The server spoke first: next time, do not wait for the client.
        opts.memory.remember(dst.host, dst.port);
        log.info("server-first destination remembered; later connections skip detection", {
          destination: `${dst.host}:${dst.port}`,
        });
        clientSpoke = true;
      }
      opts.metrics.tcpBytes(labels, toClient, fromClient);
    },
  });
  if (counts.idleTimedOut) {
    log.debug("TCP connection idle timeout", { upstream: `${up.host}:${up.port}` });
  }
  opts.metrics.tcpClosed(labels);
  logLine(d.labels, up, "-", received, sent);
}

/** Outbound TCP: a ServiceEntry address's tcp route, else the original destination (ALLOW_ANY). */
export class OutboundTcpRouter implements TcpRouter {
  constructor(readonly getConfig: () => RuntimeConfig) {}

  route(info: ConnInfo, sni: string | undefined): TcpDecision {
    const dst = info.originalDst;
    if (dst === undefined) {
      return {
        refuse: "no original destination (the connection was not redirected)",
        labels: UNKNOWN_DESTINATION,
        flag: "NR",
      };
    }
    const cfg = this.getConfig();
    // TLS names its service (SNI); other TCP is known only by the address it went to.
    const found = findByOriginalDst(cfg, dst.host, dst.port);
    const vhost = (sni === undefined ? undefined : findVirtualHost(cfg, sni, dst.port)) ??
      (found?.endpoint === false ? found.vhost : undefined);
    const wc = vhost?.tcp === undefined ? undefined : pickCluster(vhost.tcp, Math.random());
    if (vhost !== undefined && wc !== undefined) {
      const cluster = wc.cluster;
      const labels = clusterLabels(cluster);
      if (cluster.passthrough) {
        const upstream: Upstream = {
          host: cluster.serviceHost,
          port: cluster.port || dst.port,
          endpoint: undefined,
        };
        // A host outside the registry is meshed only when a DestinationRule says ISTIO_MUTUAL.
        const meshed = meshedPeer(cluster, undefined);
        if (meshed !== undefined) upstream.meshed = meshed;
        return { labels, next: () => upstream };
      }
      const balancer = balancerFor(cluster);
      return {
        labels,
        next(previous) {
          const e = balancer.pick(previous?.endpoint);
          return e === undefined ? undefined : upstreamOf(cluster, e);
        },
      };
    }
    if (cfg.outboundTrafficPolicy === "REGISTRY_ONLY") {
      return {
        refuse: `no service entry for ${dst.host}:${dst.port} (REGISTRY_ONLY)`,
        labels: BLACKHOLE,
        flag: "NR",
      };
    }
    const upstream = { host: dst.host, port: dst.port, endpoint: undefined };
    return {
      labels: PASSTHROUGH,
      next: () => upstream,
    };
  }
}

/**
 * Inbound TCP: the app on 127.0.0.1 at the original port, else the app port,
 * once AuthorizationPolicy allows the connection (denied: closed).
 */
export class InboundTcpRouter implements TcpRouter {
  constructor(readonly appPort: number | undefined, readonly getConfig: () => RuntimeConfig) {}

  route(info: ConnInfo, _sni: string | undefined): TcpDecision {
    const port = info.originalDst?.port ?? this.appPort;
    if (port === undefined) {
      return { refuse: "no app port", labels: UNKNOWN_DESTINATION, flag: "NR" };
    }
    const decision = authorize(this.getConfig().security, {
      principal: info.peer?.principal?.replace(/^spiffe:\/\//, ""),
      sourceIp: info.remoteAddr,
      destinationIp: destinationIpOf(info),
      destinationPort: port,
    });
    logShadowPolicies(decision, { port });
    if (!decision.allowed) {
      return {
        refuse: `RBAC: access denied (${decision.reason})`,
        labels: inboundLabels(port),
        flag: "-",
      };
    }
    const upstream = { host: "127.0.0.1", port, endpoint: undefined };
    return { labels: inboundLabels(port), next: () => upstream };
  }
}

/**
 * The inbound pipeline: what arrives for the workload goes through here.
 *
 *   accept + original destination (listener.ts)
 *     → skip detection for server-first ports and remembered destinations
 *       (only where mTLS is off: mesh clients always speak first)
 *     → detect, bounded by the detection timeout (detect.ts)
 *     → TLS with the mesh's ALPN, or any TLS under STRICT: mTLS terminated
 *       (tls/mtls.ts), peer identity kept, then the stages below on the
 *       decrypted stream; plaintext under STRICT: refused
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
import { LazyHttp2 } from "../proxy/http2_lazy.ts";
import { InboundRouter } from "../proxy/inbound_router.ts";
import type { SelfInfo } from "../proxy/observe.ts";
import type { ConnPool } from "../proxy/pool.ts";
import { InboundTcpRouter, serveTcp } from "../proxy/tcp_proxy.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import type { Telemetry } from "../telemetry/tracing.ts";
import { log } from "../log.ts";
import type { BufConn } from "../net/buf_conn.ts";
import { readClientHello } from "../net/tls_hello.ts";
import type { Protocol } from "../proxy/detect.ts";
import type { ConnInfo } from "../proxy/http1.ts";
import { MESH_ALPN, type MeshIdentity, type PeerInfo, terminate } from "../tls/mtls.ts";
import { Listener } from "./listener.ts";

export interface InboundOptions {
  address: string;
  port: number;
  appPort: number | undefined;
  getConfig(): RuntimeConfig;
  metrics: Metrics;
  pool: ConnPool;
  self: SelfInfo;
  /** Tracing and access logs (telemetry/tracing.ts); none when absent. */
  telemetry?: Telemetry | undefined;
  detectionTimeoutMs: number;
  connectTimeoutMs: number;
  tcpIdleTimeoutMs: number;
  /** This workload's mesh identity; without one, inbound TLS is passed to the app untouched. */
  identity: MeshIdentity | undefined;
  /** PeerAuthentication mode for a port of this workload. */
  peerAuthMode(port: number): "STRICT" | "PERMISSIVE" | "DISABLE";
  /**
   * False while no config has come from the control server yet: connections
   * are closed unread, as a sidecar that has no listeners yet refuses them,
   * so the app is never served without the mesh's policies.
   */
  serving?(): boolean;
}

const warnedStrict = new Set<number>();

/** Once per port: PeerAuthentication STRICT applies, but remora has no identity to do mTLS with. */
function warnStrictWithoutIdentity(port: number): void {
  if (warnedStrict.has(port)) return;
  warnedStrict.add(port);
  log.warn(
    "PeerAuthentication STRICT applies but remora has no mesh identity (--identity-dir or --control): every connection to the port is refused",
    { port },
  );
}

export function startInbound(o: InboundOptions): { listener: Listener; h2: LazyHttp2 } {
  const router = new InboundRouter({ getConfig: o.getConfig, appPort: o.appPort });
  const observer = {
    metrics: o.metrics,
    reporter: "destination" as const,
    self: o.self,
    telemetry: o.telemetry?.hook("destination"),
  };
  const h2 = new LazyHttp2({ ...observer, router, pool: o.pool });
  // Inbound requests have no cluster, so HTTP/1.1 reaches the app as HTTP/1.1 and `h2` is unused.
  const h1 = { ...observer, router, pool: o.pool, h2, explicitProxy: false };
  const memory = new ServerFirstMemory();
  const tcp = {
    ...observer,
    router: new InboundTcpRouter(o.appPort, o.getConfig),
    pool: o.pool,
    idleTimeoutMs: o.tcpIdleTimeoutMs,
    memory,
  };
  const handle = async (c: BufConn, info: ConnInfo): Promise<void> => {
    if (o.serving?.() === false) {
      log.debug("connection refused: no config from the control server yet", {
        client: info.remoteAddr,
      });
      return;
    }
    const port = info.originalDst?.port ?? o.appPort ?? 0;
    const identity = o.identity;
    const policy = o.peerAuthMode(port);
    if (identity === undefined && policy === "STRICT") {
      // No identity, so no mTLS: STRICT can only refuse (it must not become plaintext).
      warnStrictWithoutIdentity(port);
      return;
    }
    const mode = identity === undefined ? "DISABLE" : policy;
    // Mesh clients speak first (TLS), so a server-first port skips detection only without mTLS.
    if (mode === "DISABLE" && (SERVER_FIRST_PORTS.has(port) || memory.has("127.0.0.1", port))) {
      return serveTcp(c, info, tcp, false);
    }
    const protocol = await detectWithin(c, o.detectionTimeoutMs);
    if (protocol === "closed") return;
    if (protocol === "tls" && identity !== undefined && mode !== "DISABLE") {
      const hello = await readClientHello(c, o.detectionTimeoutMs);
      const mesh = hello?.alpn.some((a) => MESH_ALPN.includes(a)) ?? false;
      // PERMISSIVE: TLS that is not the mesh's (the app's own) goes to the app untouched.
      if (mode === "STRICT" || mesh) return serveMtls(c, info, identity);
    } else if (mode === "STRICT") {
      log.debug("plaintext refused: PeerAuthentication STRICT", { port, client: info.remoteAddr });
      return;
    }
    return serveDetected(c, info, protocol);
  };
  const serveDetected = (
    c: BufConn,
    info: ConnInfo,
    protocol: Protocol | "timeout",
  ): Promise<void> => {
    switch (protocol) {
      case "http1":
        return serveHttp1(c, info, h1);
      case "h2":
        return h2.serve(c, info);
      case "closed":
        return Promise.resolve();
      default:
        return serveTcp(c, info, tcp, protocol === "timeout");
    }
  };
  const serveMtls = async (c: BufConn, info: ConnInfo, identity: MeshIdentity): Promise<void> => {
    let inner: { conn: BufConn; peer: PeerInfo };
    try {
      inner = await terminate(c, identity, { requireClientCert: true, timeoutMs: 10_000 });
    } catch (e) {
      o.metrics.tlsHandshakeFailed("inbound");
      log.info("inbound mTLS handshake refused", {
        client: info.remoteAddr,
        error: (e as Error).message,
      });
      return;
    }
    try {
      const withPeer: ConnInfo = { ...info, peer: inner.peer };
      const alpn = inner.peer.alpn;
      if (alpn.endsWith("h2")) return await serveDetected(inner.conn, withPeer, "h2");
      if (alpn.includes("http/1")) return await serveDetected(inner.conn, withPeer, "http1");
      return await serveDetected(
        inner.conn,
        withPeer,
        await detectWithin(inner.conn, o.detectionTimeoutMs),
      );
    } finally {
      inner.conn.close();
    }
  };
  const listener = new Listener(
    "inbound",
    o.address,
    o.port,
    handle,
    (n) => o.metrics.downstreamConnections.set({ listener: "inbound" }, n),
  );
  return { listener, h2 };
}

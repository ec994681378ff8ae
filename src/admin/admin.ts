/**
 * The admin, stats and health servers (not the data path).
 *
 * - admin, loopback only (15000): /ready, /config_dump, /logging (POST
 *   /logging?level= changes the level),
 *   /stats/prometheus;
 * - stats (15020): /stats/prometheus for scrapers;
 * - health (15021): /healthz/ready for probes.
 * Built on Deno.serve: these see a few requests a second, so convenience
 * beats the hand-written hot path here. The data path refuses requests to
 * these ports (see outbound_router.ts).
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { getLevel, isLevel, LEVELS, log, setLevel } from "../log.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import { describeResilience } from "../proxy/resilience_dump.ts";

export interface AdminState {
  getConfig(): RuntimeConfig;
  metrics: Metrics;
  ready(): boolean;
  /** Extra facts for /config_dump (listeners, reload errors). */
  describe(): Record<string, unknown>;
}

function text(status: number, body: string): Response {
  return new Response(body + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

async function prometheus(state: AdminState): Promise<Response> {
  return new Response(await state.metrics.render(), {
    headers: { "content-type": state.metrics.contentType },
  });
}

/** Envoy's names for the log levels remora has, accepted by /logging. */
const ENVOY_LEVELS: Record<string, string> = { trace: "debug", warning: "warn", critical: "error" };

/** The body of /config_dump: the active config and where it came from. */
export function configDump(state: AdminState): Record<string, unknown> {
  const cfg = state.getConfig();
  return {
    version: cfg.version,
    loadedAt: cfg.loadedAt.toISOString(),
    source: cfg.source,
    outboundTrafficPolicy: cfg.outboundTrafficPolicy,
    resources: cfg.resources.map(({ origin: _origin, ...r }) => r),
    clusters: [...cfg.clusters.values()].map((c) => ({
      name: c.name,
      lb: c.lb,
      protocol: c.protocol,
      passthrough: c.passthrough,
      endpoints: c.endpoints.map((e) => ({
        address: e.address,
        port: e.port,
        weight: e.weight,
        labels: e.labels,
        ...(e.serviceAccount === undefined ? {} : { serviceAccount: e.serviceAccount }),
      })),
      ...describeResilience(c),
    })),
    security: describeSecurity(cfg),
    ...state.describe(),
  };
}

/**
 * What protects this workload: the mTLS mode (per port where a port-level
 * setting applies) with the PeerAuthentication policies it came from, and
 * the AuthorizationPolicies that select it, by action.
 */
function describeSecurity(cfg: RuntimeConfig): Record<string, unknown> {
  const { peer, authz, workload, rootNamespace } = cfg.security;
  const names = (list: readonly { name: string }[]) => list.map((p) => p.name);
  return {
    workload: { namespace: workload.namespace, labels: workload.labels },
    rootNamespace,
    peerAuthentication: {
      mode: peer.mode,
      ...(peer.ports.size === 0 ? {} : { ports: Object.fromEntries(peer.ports) }),
      policies: {
        mesh: peer.mesh ?? null,
        namespace: peer.namespace ?? null,
        workload: peer.workload ?? null,
      },
    },
    authorizationPolicies: {
      deny: names(authz.deny),
      allow: names(authz.allow),
      audit: names(authz.audit),
      dryRun: { deny: names(authz.dryRun.deny), allow: names(authz.dryRun.allow) },
    },
  };
}

export function adminHandler(state: AdminState): (req: Request) => Promise<Response> | Response {
  return (req) => {
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/ready":
        return state.ready() ? text(200, "LIVE") : text(503, "NOT READY");
      case "/config_dump":
        return new Response(JSON.stringify(configDump(state), null, 2) + "\n", {
          headers: { "content-type": "application/json" },
        });
      case "/logging": {
        // remora has one logger: Envoy's per-logger form (paths=router:debug) cannot be honoured.
        if ([...url.searchParams.keys()].some((k) => k !== "level")) {
          return text(400, "remora has one logger: use /logging?level=LEVEL");
        }
        const asked = url.searchParams.get("level");
        if (asked === null) return text(200, `active level: ${getLevel()}`);
        const level = ENVOY_LEVELS[asked] ?? asked;
        // A change takes POST, as on Envoy's admin: a GET (a crawler, a
        // browser's prefetch) must not change anything.
        if (req.method !== "POST") {
          return text(405, `use POST /logging?level=${level} to change the level`);
        }
        if (!isLevel(level)) {
          return text(400, `Unknown log level "${asked}": use one of ${LEVELS.join(", ")}`);
        }
        setLevel(level);
        log.info("log level changed", { level });
        return text(200, `active level: ${level}`);
      }
      case "/stats/prometheus":
        return prometheus(state);
      default:
        return text(
          404,
          "remora admin: /ready /config_dump /logging (POST ?level= to change) /stats/prometheus",
        );
    }
  };
}

export function statsHandler(state: AdminState): (req: Request) => Promise<Response> | Response {
  return (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/stats/prometheus" || path === "/metrics") return prometheus(state);
    return text(404, "remora stats: /stats/prometheus");
  };
}

export function healthHandler(state: AdminState): (req: Request) => Response {
  return (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/healthz/ready") {
      return state.ready() ? text(200, "ready") : text(503, "not ready");
    }
    return text(404, "remora health: /healthz/ready");
  };
}

/** Starts a Deno.serve server (binding is synchronous: errors throw here). */
export function serve(
  hostname: string,
  port: number,
  handler: (req: Request) => Promise<Response> | Response,
): Deno.HttpServer<Deno.NetAddr> {
  try {
    return Deno.serve({ hostname, port, onListen: () => {} }, handler);
  } catch (e) {
    if (e instanceof Error) e.message = `${hostname}:${port}: ${e.message}`;
    throw e;
  }
}

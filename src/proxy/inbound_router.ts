/**
 * Inbound routing: every request received for the workload goes to the local
 * app on 127.0.0.1, at the original destination port of a connection that
 * iptables redirected, else at the app port (--app-port). Before that, the
 * path is normalized and the request authorized (AuthorizationPolicy: 403
 * "RBAC: access denied"), with the same normalized path forwarded. Istio
 * applies VirtualService routing on the caller's side, so none is applied
 * here; the Host header only names the destination service for metrics when
 * the config knows it.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { log } from "../log.ts";
import { authorize, logShadowPolicies } from "../security/authz.ts";
import { normalizePath } from "../security/normalize.ts";
import { findVirtualHost, type RequestView } from "./route_match.ts";
import {
  type Forward,
  type HttpRouter,
  inboundLabels,
  localReply,
  type RouteDecision,
  type Upstream,
} from "./target.ts";

export interface InboundRouterOptions {
  getConfig(): RuntimeConfig;
  /** The app's port on loopback; undefined means no app is configured. */
  appPort: number | undefined;
  appHost?: string;
}

export class InboundRouter implements HttpRouter {
  readonly #opts: InboundRouterOptions;

  constructor(opts: InboundRouterOptions) {
    this.#opts = opts;
  }

  route(req: RequestView): RouteDecision {
    // Redirected traffic goes to the app at the port it was sent to.
    const port = req.originalDst?.port ?? this.#opts.appPort;
    if (port === undefined) {
      return localReply(
        503,
        "remora: no app port is configured for inbound traffic (--app-port)",
        "NR",
      );
    }
    const cfg = this.#opts.getConfig();
    // Authorization sees the path the app will see (security/normalize.ts).
    const normalized = normalizePath(req.path);
    if (!normalized.ok) {
      return localReply(400, `remora: bad request path: ${normalized.reason}`, "");
    }
    const decision = authorize(cfg.security, {
      principal: req.principal === undefined
        ? undefined
        : req.principal.replace(/^spiffe:\/\//, ""),
      sourceIp: req.sourceIp,
      destinationIp: req.destinationIp,
      destinationPort: port,
      http: {
        method: req.method,
        path: normalized.path,
        host: req.authority,
        // Pseudo-headers as Envoy has them on both protocols, :path as normalized. `host` is
        // the authority on both too (HTTP/2 has no Host field): Envoy keeps Host only as
        // :authority, so its matcher on `host` never matches (istio/istio#23083); a DENY on it
        // here means what it says, for every client.
        header: (name) =>
          name === "host" ? req.authority : name.charCodeAt(0) !== 58 // ":"
            ? req.header(name)
            : name === ":path"
            ? normalized.path
            : name === ":authority"
            ? req.authority
            : name === ":method"
            ? req.method
            : name === ":scheme"
            ? req.scheme
            : undefined,
      },
    });
    logShadowPolicies(decision, { path: normalized.path });
    if (!decision.allowed) {
      log.debug("request denied", { reason: decision.reason, policy: decision.policy ?? "" });
      return localReply(403, "RBAC: access denied", "");
    }
    const vhost = findVirtualHost(cfg, req.host, req.port);
    const labels = vhost === undefined ? inboundLabels(port) : {
      service: vhost.serviceHost,
      serviceName: vhost.serviceName,
      serviceNamespace: vhost.namespace,
      cluster: `inbound|${port}||`,
    };
    const up: Upstream = { host: this.#opts.appHost ?? "127.0.0.1", port, endpoint: undefined };
    const forward: Forward = {
      kind: "forward",
      route: undefined,
      cluster: undefined,
      authority: undefined,
      path: normalized.path,
      labels,
      destination: { requestHeaders: undefined, responseHeaders: undefined },
      next: () => up,
      begin() {},
      end() {},
    };
    return forward;
  }
}

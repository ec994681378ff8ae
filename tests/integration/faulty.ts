/**
 * Upstreams that fail on purpose, and a bounded load generator, for the
 * resilience tests and `bench/resilience.ts`. All on 127.0.0.1.
 *
 * - `startFaulty(name, faults)`: an HTTP/1.1 server answering 200 unless a
 *   fault strikes: random 503s (`fail503` probability), connection resets
 *   (`reset` probability: the socket is destroyed before any response), a
 *   slow tail (`slowPct` of requests wait `slowMs`), every request delayed
 *   (`delayMs`), or a saturated server (`capacity` requests at once, the
 *   rest queued). Counts requests and the x-envoy-attempt-count values seen.
 * - `deadPort()`: a port nothing listens on (bound, then closed).
 * - `blackHole()`: a listener that accepts and never answers.
 * - `load(proxyPort, o)`: `total` requests through remora's outbound listener
 *   (explicit proxy, absolute-form) from `concurrency` keep-alive clients;
 *   bounded by `total` and by `timeoutMs` overall. Returns every status,
 *   latency and response flags header.
 */

import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";

export interface Faults {
  fail503?: number;
  reset?: number;
  slowPct?: number;
  slowMs?: number;
  delayMs?: number;
  /** Requests served at once; the rest wait in the upstream's own queue (a saturated server). */
  capacity?: number;
}

export interface Faulty {
  port: number;
  name: string;
  requests: number;
  /** x-envoy-attempt-count values seen, by value. */
  attempts: Map<string, number>;
  /** Changes the faults while running. */
  faults: Faults;
  close(): Promise<void>;
}

export async function startFaulty(name: string, faults: Faults = {}): Promise<Faulty> {
  const state: Faulty = {
    port: 0,
    name,
    requests: 0,
    attempts: new Map(),
    faults,
    close: () => Promise.resolve(),
  };
  let busy = 0;
  const queue: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    state.requests++;
    const a = req.headers["x-envoy-attempt-count"];
    if (typeof a === "string") state.attempts.set(a, (state.attempts.get(a) ?? 0) + 1);
    req.resume();
    req.on("end", () => {
      const f = state.faults;
      if (f.reset !== undefined && Math.random() < f.reset) {
        req.socket.destroy();
        return;
      }
      const send = (status: number) => {
        res.writeHead(status, { "content-type": "text/plain", "x-upstream": name });
        res.end(`${status} from ${name}\n`);
      };
      const status = f.fail503 !== undefined && Math.random() < f.fail503 ? 503 : 200;
      let wait = f.delayMs ?? 0;
      if (f.slowPct !== undefined && Math.random() * 100 < f.slowPct) wait += f.slowMs ?? 0;
      const serve = (done: () => void) => {
        if (wait > 0) {
          setTimeout(() => {
            send(status);
            done();
          }, wait);
        } else {
          send(status);
          done();
        }
      };
      if (f.capacity === undefined) return serve(() => {});
      const run = () => {
        busy++;
        serve(() => {
          busy--;
          queue.shift()?.();
        });
      };
      if (busy < f.capacity) run();
      else queue.push(run);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.port = (server.address() as AddressInfo).port;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

/** A port on 127.0.0.1 that refuses connections. */
export async function deadPort(): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await new Promise((r) => setTimeout(r, 10));
  return port;
}

/** A listener that accepts connections and never answers. */
export async function blackHole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    s.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface LoadOptions {
  host: string;
  path?: string;
  total: number;
  concurrency: number;
  /** Overall bound; requests not finished by then count as status 0. */
  timeoutMs: number;
  headers?: (i: number) => Record<string, string>;
}

export interface LoadResult {
  statuses: number[];
  latenciesMs: number[];
  /** Response headers of interest per request: x-upstream, x-envoy-overloaded. */
  upstreams: string[];
  overloaded: number;
  elapsedMs: number;
}

/** Sends `total` requests through remora (explicit proxy), `concurrency` at a time. */
export async function load(proxyPort: number, o: LoadOptions): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const out: LoadResult = {
    statuses: [],
    latenciesMs: [],
    upstreams: [],
    overloaded: 0,
    elapsedMs: 0,
  };
  const start = performance.now();
  const deadline = start + o.timeoutMs;
  let next = 0;
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = http.request({
        host: "127.0.0.1",
        port: proxyPort,
        method: "GET",
        path: `http://${o.host}${o.path ?? "/"}`,
        headers: { host: o.host, ...(o.headers?.(i) ?? {}) },
        agent,
        timeout: Math.max(1, deadline - performance.now()),
      });
      const done = (status: number, upstream: string) => {
        out.statuses.push(status);
        out.latenciesMs.push(performance.now() - t0);
        out.upstreams.push(upstream);
        resolve();
      };
      req.on("response", (res) => {
        if (res.headers["x-envoy-overloaded"] !== undefined) out.overloaded++;
        res.resume();
        res.on("end", () => done(res.statusCode ?? 0, String(res.headers["x-upstream"] ?? "")));
        res.on("error", () => done(0, ""));
      });
      req.on("timeout", () => req.destroy());
      req.on("error", () => done(0, ""));
      req.end();
    });
  const worker = async () => {
    while (next < o.total && performance.now() < deadline) await one(next++);
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  agent.destroy();
  out.elapsedMs = performance.now() - start;
  return out;
}

/** The p-th percentile (0..100) of `xs`. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** A ServiceEntry + DestinationRule (+ VirtualService) config for `host`, as YAML (JSON). */
export function meshYaml(o: {
  host: string;
  ports: number[];
  trafficPolicy?: unknown;
  http?: unknown[];
  annotations?: Record<string, string>;
}): string {
  const docs: unknown[] = [
    {
      apiVersion: "networking.istio.io/v1",
      kind: "ServiceEntry",
      metadata: { name: "svc" },
      spec: {
        hosts: [o.host],
        resolution: "STATIC",
        ports: [{ number: 80, name: "http", protocol: "HTTP" }],
        endpoints: o.ports.map((p, i) => ({
          address: "127.0.0.1",
          ports: { http: p },
          labels: { app: `e${i}` },
        })),
      },
    },
  ];
  if (o.trafficPolicy !== undefined) {
    docs.push({
      apiVersion: "networking.istio.io/v1",
      kind: "DestinationRule",
      metadata: { name: "svc" },
      spec: { host: o.host, trafficPolicy: o.trafficPolicy },
    });
  }
  if (o.http !== undefined) {
    docs.push({
      apiVersion: "networking.istio.io/v1",
      kind: "VirtualService",
      metadata: {
        name: "svc",
        ...(o.annotations === undefined ? {} : { annotations: o.annotations }),
      },
      spec: { hosts: [o.host], http: o.http },
    });
  }
  return docs.map((d) => JSON.stringify(d, null, 2)).join("\n---\n") + "\n";
}

/**
 * Upstream HTTP/1.1 connection pool, keyed by "host:port" (and the expected
 * peer identity for meshed upstreams, which are dialled with mTLS).
 *
 * Idle connections wait in a LIFO list with a pending read (see
 * `BufConn.watchIdle`), so one the upstream closed is dropped at once rather
 * than handed to the next request. Connecting has a timeout. It knows nothing
 * of HTTP; callers decide when a connection is clean enough to return.
 */

import { log } from "../log.ts";
import { BufConn } from "../net/buf_conn.ts";
import { tcpByteConn } from "../net/byte_conn.ts";
import { type MeshIdentity, MtlsError, originate } from "../tls/mtls.ts";
import { expectedPeerId, type Upstream } from "./target.ts";

/** Connecting to an upstream failed (refused, unreachable, timed out). */
export class ConnectError extends Error {
  override name = "ConnectError";
  constructor(message: string, readonly timedOut: boolean) {
    super(message);
  }
}

export interface PoolOptions {
  connectTimeoutMs: number;
  maxIdlePerHost: number;
  /** This workload's identity, for mTLS to meshed upstreams. */
  identity: MeshIdentity | undefined;
  /** Called when an mTLS handshake with an upstream fails, or it is not the identity expected. */
  onMtlsFailure?: () => void;
}

/**
 * Pooled connections are only shared between upstreams with the same
 * address and identity. The last key is kept: requests mostly go where the
 * one before went, and the same key string is hashed only once.
 */
function poolKey(up: Upstream): string {
  const m = up.meshed;
  const ns = m?.namespace;
  const sa = m === undefined ? undefined : m.serviceAccount ?? "*";
  const k = lastKey;
  if (k.host === up.host && k.port === up.port && k.ns === ns && k.sa === sa) return k.key;
  const key = m === undefined ? `${up.host}:${up.port}` : `${up.host}:${up.port}|${ns}/${sa}`;
  lastKey = { host: up.host, port: up.port, ns, sa, key };
  return key;
}

let lastKey: {
  host: string;
  port: number;
  ns: string | undefined;
  sa: string | undefined;
  key: string;
} = { host: "", port: -1, ns: undefined, sa: undefined, key: "" };

export class ConnPool {
  readonly #idle = new Map<string, BufConn[]>();
  readonly #opts: PoolOptions;

  constructor(opts: Partial<PoolOptions> = {}) {
    this.#opts = { connectTimeoutMs: 10_000, maxIdlePerHost: 128, identity: undefined, ...opts };
  }

  /**
   * An idle connection to the upstream if one is healthy, else a new one:
   * plain TCP, or mTLS for a meshed upstream (HTTP/1.1 ALPN).
   */
  async acquire(up: Upstream): Promise<{ conn: BufConn; reused: boolean }> {
    const key = poolKey(up);
    const list = this.#idle.get(key);
    while (list !== undefined && list.length > 0) {
      const c = list.pop()!;
      if (c.claim()) return { conn: c, reused: true };
      c.close();
    }
    return { conn: await this.dial(up, "istio-http/1.1"), reused: false };
  }

  /** A new connection to the upstream: mTLS with `alpn` when it is meshed, else plain TCP. */
  dial(up: Upstream, alpn: string): Promise<BufConn> {
    if (up.meshed === undefined) return connect(up.host, up.port, this.#opts.connectTimeoutMs);
    const identity = this.#opts.identity;
    if (identity === undefined) {
      return Promise.reject(
        new ConnectError(
          `${up.host}:${up.port} is in the mesh (mTLS) but remora has no identity: start it with --identity-dir`,
          false,
        ),
      );
    }
    const expectedId = expectedPeerId(identity.material.trustDomain, up.meshed);
    return originate(up.host, up.port, identity, { expectedId, alpn }, this.#opts.connectTimeoutMs)
      .catch(
        (e) => {
          // An identity mismatch or failed handshake is a connect failure (503 UF), never a plaintext retry.
          if (e instanceof MtlsError) this.#opts.onMtlsFailure?.();
          log.warn("mTLS to upstream failed", {
            upstream: `${up.host}:${up.port}`,
            error: (e as Error).message,
          });
          throw new ConnectError((e as Error).message, false);
        },
      );
  }

  /** Returns a connection whose last exchange ended cleanly. */
  release(up: Upstream, conn: BufConn): void {
    if (conn.closed || conn.eof || conn.buffered > 0) {
      conn.close();
      return;
    }
    const key = poolKey(up);
    let list = this.#idle.get(key);
    if (list === undefined) this.#idle.set(key, list = []);
    if (list.length >= this.#opts.maxIdlePerHost) {
      conn.close();
      return;
    }
    list.push(conn);
    conn.watchIdle(() => {
      const i = list.indexOf(conn);
      if (i !== -1) list.splice(i, 1);
      conn.close();
    });
  }

  closeAll(): void {
    for (const list of this.#idle.values()) for (const c of list) c.close();
    this.#idle.clear();
  }
}

/** Opens a TCP connection with a timeout. */
export async function connect(host: string, port: number, timeoutMs: number): Promise<BufConn> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: host, port, transport: "tcp" });
  try {
    const conn = await Promise.race([
      attempt,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new ConnectError(`Connect to ${host}:${port} timed out after ${timeoutMs}ms`, true),
            ),
          timeoutMs,
        );
      }),
    ]);
    conn.setNoDelay(true);
    return new BufConn(tcpByteConn(conn));
  } catch (e) {
    // A connect that finishes after the timeout must not leak.
    attempt.then((c) => c.close(), () => {});
    if (e instanceof ConnectError) throw e;
    throw new ConnectError(`Connect to ${host}:${port} failed: ${(e as Error).message}`, false);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Upstream HTTP/1.1 connection pool, keyed by "host:port".
 *
 * Idle connections wait in a LIFO list with a pending read (see
 * `BufConn.watchIdle`), so one the upstream closed is dropped at once rather
 * than handed to the next request. Connecting has a timeout. It knows nothing
 * of HTTP; callers decide when a connection is clean enough to return.
 */

import { BufConn } from "../net/buf_conn.ts";

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
}

export class ConnPool {
  readonly #idle = new Map<string, BufConn[]>();
  readonly #opts: PoolOptions;

  constructor(opts: Partial<PoolOptions> = {}) {
    this.#opts = { connectTimeoutMs: 10_000, maxIdlePerHost: 128, ...opts };
  }

  /** An idle connection to host:port if one is healthy, else a new one. */
  async acquire(host: string, port: number): Promise<{ conn: BufConn; reused: boolean }> {
    const key = host + ":" + port;
    const list = this.#idle.get(key);
    while (list !== undefined && list.length > 0) {
      const c = list.pop()!;
      if (c.claim()) return { conn: c, reused: true };
      c.close();
    }
    return { conn: await connect(host, port, this.#opts.connectTimeoutMs), reused: false };
  }

  /** Returns a connection whose last exchange ended cleanly. */
  release(host: string, port: number, conn: BufConn): void {
    if (conn.closed || conn.eof || conn.buffered > 0) {
      conn.close();
      return;
    }
    const key = host + ":" + port;
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
    return new BufConn(conn);
  } catch (e) {
    // A connect that finishes after the timeout must not leak.
    attempt.then((c) => c.close(), () => {});
    if (e instanceof ConnectError) throw e;
    throw new ConnectError(`Connect to ${host}:${port} failed: ${(e as Error).message}`, false);
  } finally {
    clearTimeout(timer);
  }
}

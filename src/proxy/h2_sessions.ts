/**
 * Upstream HTTP/2 sessions: one per upstream address and identity, dialled
 * through the connection pool (`pool.ts`: plaintext h2c, or mTLS with ALPN
 * istio-h2 to a meshed upstream, never a plaintext fallback). Shared by the
 * HTTP/2 engine (`http2.ts`) and by HTTP/1.1 requests to clusters declared
 * HTTP2 or GRPC (`h1_to_h2.ts`), so both kinds of client use the same
 * sessions.
 *
 * The peer's GOAWAY frames are kept from node:http2 (`h2_goaway_filter.ts`):
 * a session whose upstream said GOAWAY takes no new streams, and closes when
 * its last stream ends. Nothing here retries, times out or translates:
 * callers do.
 */

import http2 from "node:http2";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { GoawayFilter } from "../http/h2_goaway_filter.ts";
import type { BufConn } from "../net/buf_conn.ts";
import { duplexOf } from "../net/duplex.ts";
import { ConnectError, type ConnPool } from "./pool.ts";
import type { Upstream } from "./target.ts";

/**
 * The socket node:http2 gets: a Duplex over remora's connection with the
 * peer's GOAWAY frames taken out and reported to `onGoaway` (see
 * h2_goaway_filter.ts for why).
 */
export function h2Duplex(
  connecting: BufConn | Promise<BufConn>,
  opts: { clientPreface: boolean; onGoaway?: () => void },
): Duplex {
  const filter = new GoawayFilter(opts.clientPreface, opts.onGoaway);
  return duplexOf(connecting, (chunk) => filter.push(chunk));
}

const ACTIVE = Symbol("remora.activeStreams");
const DRAINING = Symbol("remora.draining");

/** Per upstream session: streams in flight, and whether the peer said GOAWAY. */
type Tracked = http2.ClientHttp2Session & { [ACTIVE]?: number; [DRAINING]?: boolean };

export class H2Sessions {
  readonly #pool: ConnPool;
  readonly #sessions = new Map<string, http2.ClientHttp2Session>();

  constructor(pool: ConnPool) {
    this.#pool = pool;
  }

  /**
   * Opens a stream to `up` on its session (a new session when there is none
   * open, or the one there is drains). Throws when node:http2 refuses the
   * headers; a failed connection shows as the stream's 'error'.
   */
  request(
    up: Upstream,
    headers: http2.OutgoingHttpHeaders,
    endStream: boolean,
  ): http2.ClientHttp2Stream {
    const session = this.#session(up);
    const stream = session.request(headers, { endStream });
    // A session the upstream is draining closes once its last stream is done.
    session[ACTIVE] = (session[ACTIVE] ?? 0) + 1;
    stream.on("close", () => {
      session[ACTIVE] = (session[ACTIVE] ?? 1) - 1;
      if (session[DRAINING] === true && session[ACTIVE] === 0 && !session.closed) session.close();
    });
    return stream;
  }

  close(): void {
    for (const s of this.#sessions.values()) s.close();
    this.#sessions.clear();
  }

  #session(up: Upstream): Tracked {
    const m = up.meshed;
    const key = m === undefined
      ? `${up.host}:${up.port}`
      : `${up.host}:${up.port}|${m.namespace}/${m.serviceAccount}`;
    const pooled = this.#sessions.get(key) as Tracked | undefined;
    if (pooled !== undefined && !pooled.closed && !pooled.destroyed) return pooled;
    const host = up.host.includes(":") ? `[${up.host}]` : up.host;
    const drop = () => {
      if (this.#sessions.get(key) === session) this.#sessions.delete(key);
    };
    const session = http2.connect(`http://${host}:${up.port}`, {
      // remora's own socket, so that the upstream's GOAWAY is seen here and not by node:http2.
      createConnection: () =>
        h2Duplex(this.#pool.dial(up, "istio-h2"), {
          clientPreface: false,
          onGoaway: () => {
            // The upstream takes no new streams here: new requests get a new session,
            // and this one closes when its last stream ends.
            drop();
            session[DRAINING] = true;
            if ((session[ACTIVE] ?? 0) === 0) session.close();
          },
        }) as unknown as Socket,
    }) as Tracked;
    session.on("error", drop);
    session.on("close", drop);
    this.#sessions.set(key, session);
    return session;
  }
}

/** Whether a stream's error is its session's failure to connect (refused, unreachable, mTLS). */
export function isConnectError(e: Error & { code?: string }): boolean {
  return e instanceof ConnectError || e.code === "ECONNREFUSED" || e.code === "ENOTFOUND" ||
    e.code === "EHOSTUNREACH" || /connect|refused/i.test(e.message);
}

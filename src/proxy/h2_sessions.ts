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
 * its last stream ends. Its streams above the GOAWAY's last stream id, which
 * the upstream will not process, are closed with REFUSED_STREAM, which callers
 * may retry ("refused-stream"), as Envoy's are. Nothing here retries, times
 * out or translates: callers do.
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
  opts: { clientPreface: boolean; onGoaway?: (lastStreamId: number) => void },
): Duplex {
  const filter = new GoawayFilter(opts.clientPreface, opts.onGoaway);
  return duplexOf(connecting, (chunk) => filter.push(chunk));
}

const OPEN = Symbol("remora.openStreams");
const REFUSED_STREAM = http2.constants.NGHTTP2_REFUSED_STREAM;
const DRAINING = Symbol("remora.draining");

/** Per upstream session: streams in flight, and whether the peer said GOAWAY. */
type Tracked = http2.ClientHttp2Session & {
  [OPEN]?: Set<http2.ClientHttp2Stream>;
  [DRAINING]?: boolean;
};
/** A stream's session, which node:http2 no longer shows once the stream has failed. */
const SESSION = Symbol("remora.session");
type Owned = http2.ClientHttp2Stream & { [SESSION]?: Tracked };

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
    (stream as Owned)[SESSION] = session;
    const open = session[OPEN] ??= new Set();
    open.add(stream);
    // A session the upstream is draining closes once its last stream is done.
    stream.on("close", () => {
      open.delete(stream);
      if (session[DRAINING] === true && open.size === 0 && !session.closed) session.close();
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
          onGoaway: (lastStreamId) => {
            // The upstream takes no new streams here: new requests get a new session,
            // and this one closes when its last stream ends.
            drop();
            session[DRAINING] = true;
            const open = session[OPEN];
            if (open === undefined || open.size === 0) return session.close();
            // Streams it will not process (above its last stream id, or not sent yet).
            for (const s of open) {
              if (s.id === undefined || s.id > lastStreamId) s.close(REFUSED_STREAM);
            }
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
  // A stream reset (NGHTTP2_REFUSED_STREAM among them) is not about connecting.
  if (e.code === "ERR_HTTP2_STREAM_ERROR") return false;
  return e instanceof ConnectError || e.code === "ECONNREFUSED" || e.code === "ENOTFOUND" ||
    e.code === "EHOSTUNREACH" || /connect|refused/i.test(e.message);
}

/**
 * Why an upstream stream failed before its response, from its 'error': its
 * connection did not open or ended, or the upstream reset the stream
 * (RST_STREAM, or refused by GOAWAY) while the session lives on.
 */
export function streamFailure(
  e: Error & { code?: string },
  stream: http2.ClientHttp2Stream,
): "connect-failure" | "reset" | "remote-reset" | "refused-stream" {
  if (isConnectError(e)) return "connect-failure";
  if (e.code !== "ERR_HTTP2_STREAM_ERROR") return "reset";
  if (e.message.includes("REFUSED_STREAM")) return "refused-stream";
  // A session the upstream is closing (it said GOAWAY) ends its streams with such errors too.
  const session = (stream as Owned)[SESSION];
  return session === undefined || session.destroyed || session[DRAINING] === true
    ? "reset"
    : "remote-reset";
}

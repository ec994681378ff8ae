/**
 * HTTP/2, loaded when first needed: the engine when the first HTTP/2
 * connection arrives, and the upstream HTTP/2 sessions (shared by the engine
 * and by the HTTP/1 engine's requests to clusters declared HTTP2 or GRPC)
 * when either first uses them. node:http2 costs a few MB of memory that a
 * sidecar whose traffic is all HTTP/1 never needs. The specifiers are
 * literal, so `deno compile` embeds them.
 */

import type { BufConn } from "../net/buf_conn.ts";
import type { H2Exchange, H2Request } from "./h1_to_h2.ts";
import type { H2Sessions } from "./h2_sessions.ts";
import type { ConnInfo, H2Upstreams } from "./http1.ts";
import type { Http2Engine, Http2Options } from "./http2.ts";
import type { Upstream } from "./target.ts";

export class LazyHttp2 implements H2Upstreams {
  readonly #opts: Http2Options;
  #sessions: Promise<H2Sessions> | undefined;
  #engine: Promise<Http2Engine> | undefined;
  #open: Promise<(up: Upstream, req: H2Request) => H2Exchange> | undefined;
  /** `#open`'s function once loaded, called without waiting. */
  #opened: ((up: Upstream, req: H2Request) => H2Exchange) | undefined;

  constructor(opts: Http2Options) {
    this.#opts = opts;
  }

  /** Serves an HTTP/2 connection; resolves when it has closed. */
  async serve(c: BufConn, info: ConnInfo): Promise<void> {
    this.#engine ??= Promise.all([import("./http2.ts"), this.#loadSessions()]).then(
      ([m, sessions]) => new m.Http2Engine(this.#opts, sessions),
    );
    (await this.#engine).serve(c, info);
    await c.whenClosed;
  }

  /** Opens an HTTP/1.1 request's stream to an HTTP/2 upstream (`h1_to_h2.ts`). */
  open(up: Upstream, req: H2Request): H2Exchange | Promise<H2Exchange> {
    if (this.#opened !== undefined) return this.#opened(up, req);
    this.#open ??= Promise.all([import("./h1_to_h2.ts"), this.#loadSessions()]).then(
      ([m, sessions]) => this.#opened = (u, r) => m.openStream(sessions, u, r),
    );
    return this.#open.then((f) => f(up, req));
  }

  close(): void {
    this.#sessions?.then((s) => s.close());
  }

  #loadSessions(): Promise<H2Sessions> {
    return this.#sessions ??= import("./h2_sessions.ts").then((m) =>
      new m.H2Sessions(this.#opts.pool)
    );
  }
}

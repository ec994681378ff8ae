/**
 * The HTTP/2 engine and its upstream sessions, loaded when the first HTTP/2
 * connection arrives: node:http2 costs a few MB of memory that a sidecar
 * whose traffic is all HTTP/1 never needs. The specifiers are literal, so
 * `deno compile` embeds them.
 */

import type { BufConn } from "../net/buf_conn.ts";
import type { H2Sessions } from "./h2_sessions.ts";
import type { ConnInfo } from "./http1.ts";
import type { Http2Engine, Http2Options } from "./http2.ts";

export class LazyHttp2 {
  readonly #opts: Http2Options;
  #sessions: Promise<H2Sessions> | undefined;
  #engine: Promise<Http2Engine> | undefined;

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

  close(): void {
    this.#sessions?.then((s) => s.close());
  }

  #loadSessions(): Promise<H2Sessions> {
    return this.#sessions ??= import("./h2_sessions.ts").then((m) =>
      new m.H2Sessions(this.#opts.pool)
    );
  }
}

/**
 * The HTTP/2 engine, loaded when the first HTTP/2 connection arrives:
 * node:http2 costs a few MB of memory that a sidecar whose traffic is all
 * HTTP/1 never needs. The specifier is literal, so `deno compile` embeds it.
 */

import type { BufConn } from "../net/buf_conn.ts";
import type { ConnInfo } from "./http1.ts";
import type { Http2Engine, Http2Options } from "./http2.ts";

export class LazyHttp2 {
  readonly #opts: Http2Options;
  #engine: Promise<Http2Engine> | undefined;

  constructor(opts: Http2Options) {
    this.#opts = opts;
  }

  /** Serves an HTTP/2 connection; resolves when it has closed. */
  async serve(c: BufConn, info: ConnInfo): Promise<void> {
    this.#engine ??= import("./http2.ts").then((m) => new m.Http2Engine(this.#opts));
    (await this.#engine).serve(c, info);
    await c.whenClosed;
  }

  close(): void {
    this.#engine?.then((e) => e.close());
  }
}

/**
 * A TCP accept loop shared by remora's proxy listeners: accepts, wraps each
 * connection in a `BufConn`, reads its original destination when iptables
 * redirected it (`net/ffi.ts`), tracks open connections (for metrics and for
 * draining on shutdown) and hands them to the listener's handler. It does not
 * know any protocol.
 */

import { log } from "../log.ts";
import { BufConn } from "../net/buf_conn.ts";
import { tcpByteConn } from "../net/byte_conn.ts";
import { originalDst, releaseConn } from "../net/ffi.ts";
import type { ConnInfo } from "../proxy/http1.ts";

export type ConnHandler = (c: BufConn, info: ConnInfo) => Promise<void>;

export class Listener {
  readonly name: string;
  readonly #listener: Deno.TcpListener;
  readonly #open = new Set<BufConn>();
  #closing = false;
  readonly #done: Promise<void>;

  constructor(
    name: string,
    hostname: string,
    port: number,
    handler: ConnHandler,
    onCount?: (n: number) => void,
  ) {
    this.name = name;
    try {
      this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (e) {
      // Say which listener: "Address already in use" alone names no port.
      if (e instanceof Error) e.message = `${name} listener on ${hostname}:${port}: ${e.message}`;
      throw e;
    }
    this.#done = this.#accept(handler, onCount);
  }

  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  get openConnections(): number {
    return this.#open.size;
  }

  async #accept(handler: ConnHandler, onCount?: (n: number) => void): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (this.#closing) return;
        log.warn("accept failed", { listener: this.name, error: String(e) });
        continue;
      }
      conn.setNoDelay(true);
      const c = new BufConn(tcpByteConn(conn));
      const remote = conn.remoteAddr as Deno.NetAddr;
      const dst = originalDst(conn);
      const info: ConnInfo = {
        remoteAddr: remote.hostname,
        remotePort: remote.port,
        localPort: this.addr.port,
        localAddr: (conn.localAddr as Deno.NetAddr).hostname,
        originalDst: dst === undefined ? undefined : { host: dst.hostname, port: dst.port },
      };
      this.#open.add(c);
      onCount?.(this.#open.size);
      handler(c, info).catch((e) =>
        log.warn("connection failed", { listener: this.name, error: String(e) })
      )
        .finally(() => {
          c.close();
          releaseConn(conn);
          this.#open.delete(c);
          onCount?.(this.#open.size);
        });
    }
  }

  /** Stops accepting; waits up to `drainMs` for open connections to finish, then closes them. */
  async close(drainMs = 0): Promise<void> {
    this.#closing = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#done;
    const until = Date.now() + drainMs;
    while (this.#open.size > 0 && Date.now() < until) {
      // Connections with no request in flight go now; the others finish theirs first.
      for (const c of this.#open) if (c.idle) c.close();
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const c of this.#open) c.close();
  }
}

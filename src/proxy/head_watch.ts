/**
 * Closes client connections that wait too long for their next request head,
 * as Envoy's timeouts do: one that started a head and has sent nothing more
 * for 5 minutes (Envoy's stream idle timeout), and a keep-alive connection
 * idle for 1 hour (its idle timeout), so that silent clients cannot hold
 * connections for ever. A coarse clock (a tick every TICK_MS) and one sweep
 * for all connections, instead of a timer per request: registering is one
 * Map write, with no clock read.
 */

/** What is watched: a client connection's buffered bytes, and closing it. */
export interface Watched {
  readonly buffered: number;
  close(): void;
}

export const TICK_MS = 5_000;

export class HeadWatch {
  readonly #since = new Map<Watched, number>();
  #tick = 0;

  /** `partialTicks`: limit with part of a head buffered; `idleTicks`: with nothing. */
  constructor(readonly partialTicks = 60, readonly idleTicks = 720) {}

  /** `c` waits for (more of) a head from now: its clock starts again. */
  waiting(c: Watched): void {
    this.#since.set(c, this.#tick);
  }

  /** `c` has its head, or is gone. */
  done(c: Watched): void {
    this.#since.delete(c);
  }

  get size(): number {
    return this.#since.size;
  }

  /** One tick: closes the connections that waited past their limit. */
  sweep(): void {
    this.#tick++;
    for (const [c, since] of this.#since) {
      if (this.#tick - since >= (c.buffered > 0 ? this.partialTicks : this.idleTicks)) {
        this.#since.delete(c);
        c.close();
      }
    }
  }

  /** Sweeps every TICK_MS without keeping the process alive. */
  start(): void {
    Deno.unrefTimer(setInterval(() => this.sweep(), TICK_MS));
  }
}

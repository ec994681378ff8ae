/**
 * Request hedging, a remora extension (annotation `remora.dev/hedge-delay` on
 * a VirtualService, see `config/validate_remora.ts`): when the first attempt
 * has not produced a response head after the delay, a second attempt starts
 * (on another endpoint, if the retry budget lets it); the first usable answer
 * wins and the other attempt is cancelled. Engines apply it only to requests
 * that can be replayed without side effects (GET, HEAD, OPTIONS, no body).
 *
 * This module is the race alone, generic over the attempt type, so that it
 * is tested without sockets; the engines supply how to start, judge and
 * cancel an attempt.
 */

/** One running attempt. */
export interface Racer<R> {
  promise: Promise<R>;
  /** Stops the attempt; its promise still settles (as a failure, usually). */
  cancel(): void;
}

export interface HedgeOptions<R> {
  delayMs: number;
  /** Starts the hedge; undefined when it may not run (budget, no other endpoint). */
  startHedge(): Racer<R> | undefined;
  /** Whether a result is a final answer (else the other attempt is awaited). */
  usable(r: R): boolean;
  /** Disposes of a result that lost (closes its connection). */
  discard(r: R): void;
}

export interface HedgeResult<R> {
  result: R;
  /** Whether a hedge was sent, and whether it was the one that answered. */
  hedged: boolean;
  hedgeWon: boolean;
}

/** Runs `first`, hedged after `delayMs`. */
export async function hedge<R>(first: Racer<R>, o: HedgeOptions<R>): Promise<HedgeResult<R>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const fired = new Promise<"hedge">((resolve) => {
    timer = setTimeout(() => resolve("hedge"), o.delayMs);
  });
  const early = await Promise.race([first.promise, fired]);
  clearTimeout(timer);
  if (early !== "hedge") return { result: early as R, hedged: false, hedgeWon: false };
  const second = o.startHedge();
  if (second === undefined) return { result: await first.promise, hedged: false, hedgeWon: false };

  // Whichever settles first with a usable answer wins; a failure waits for the other.
  const tagged = [
    first.promise.then((r) => ({ r, i: 0 })),
    second.promise.then((r) => ({ r, i: 1 })),
  ];
  const racers = [first, second];
  const a = await Promise.race(tagged);
  const other = 1 - a.i;
  if (o.usable(a.r)) {
    racers[other]!.cancel();
    tagged[other]!.then(({ r }) => o.discard(r));
    return { result: a.r, hedged: true, hedgeWon: a.i === 1 };
  }
  const b = await tagged[other]!;
  if (o.usable(b.r)) {
    o.discard(a.r);
    return { result: b.r, hedged: true, hedgeWon: b.i === 1 };
  }
  // Both failed: the later answer stands (the retry policy judges it).
  o.discard(a.r);
  return { result: b.r, hedged: true, hedgeWon: b.i === 1 };
}

/** Methods a hedge may repeat: safe and idempotent (RFC 9110 9.2). */
export function hedgeable(method: string): boolean {
  return method === "GET" || method === "HEAD" || method === "OPTIONS";
}

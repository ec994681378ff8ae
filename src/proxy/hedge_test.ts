/** The hedge race, with fake attempts: delay, first usable answer wins, loser cancelled. */
import assert from "node:assert/strict";
import { hedge, type Racer } from "./hedge.ts";

function attempt(ms: number, value: string) {
  const state = { cancelled: false };
  const { promise, resolve } = Promise.withResolvers<string>();
  const t = setTimeout(() => resolve(value), ms);
  const racer: Racer<string> = {
    promise,
    cancel: () => {
      state.cancelled = true;
      clearTimeout(t);
      resolve("cancelled");
    },
  };
  return { racer, state };
}

const opts = (second: Racer<string> | undefined, discarded: string[] = []) => ({
  delayMs: 20,
  startHedge: () => second,
  usable: (r: string) => r.startsWith("ok"),
  discard: (r: string) => void discarded.push(r),
});

Deno.test("a fast first answer sends no hedge", async () => {
  const first = attempt(1, "ok-first");
  let started = false;
  const r = await hedge(first.racer, {
    ...opts(undefined),
    startHedge: () => (started = true, undefined),
  });
  assert.deepEqual(r, { result: "ok-first", hedged: false, hedgeWon: false });
  assert.equal(started, false);
});

Deno.test("a slow first answer is beaten by the hedge, and cancelled", async () => {
  const first = attempt(500, "ok-first");
  const second = attempt(5, "ok-second");
  const r = await hedge(first.racer, opts(second.racer));
  assert.deepEqual(r, { result: "ok-second", hedged: true, hedgeWon: true });
  assert.equal(first.state.cancelled, true);
});

Deno.test("a failed hedge waits for the first; no budget means no hedge", async () => {
  const first = attempt(40, "ok-first");
  const second = attempt(1, "error");
  const discarded: string[] = [];
  const r = await hedge(first.racer, opts(second.racer, discarded));
  assert.deepEqual(r, { result: "ok-first", hedged: true, hedgeWon: false });
  assert.deepEqual(discarded, ["error"]);
  const lone = attempt(40, "ok-lone");
  assert.deepEqual(await hedge(lone.racer, opts(undefined)), {
    result: "ok-lone",
    hedged: false,
    hedgeWon: false,
  });
});

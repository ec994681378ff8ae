import assert from "node:assert/strict";
import { HeadWatch } from "./head_watch.ts";

function conn(buffered: number) {
  return {
    buffered,
    closed: false,
    close() {
      this.closed = true;
    },
  };
}

Deno.test("HeadWatch: a partial head is closed after its limit, an idle connection after a longer one", () => {
  const w = new HeadWatch(2, 5);
  const partial = conn(10);
  const idle = conn(0);
  w.waiting(partial);
  w.waiting(idle);
  w.sweep();
  assert.equal(partial.closed, false);
  w.sweep();
  assert.equal(partial.closed, true, "two ticks with part of a head");
  for (let i = 0; i < 2; i++) w.sweep();
  assert.equal(idle.closed, false);
  w.sweep();
  assert.equal(idle.closed, true, "five ticks idle");
  assert.equal(w.size, 0);
});

Deno.test("HeadWatch: progress restarts the clock, and a head that arrived is no longer watched", () => {
  const w = new HeadWatch(2, 5);
  const slow = conn(10);
  w.waiting(slow);
  w.sweep();
  w.waiting(slow); // more bytes came
  w.sweep();
  assert.equal(slow.closed, false);
  w.sweep();
  assert.equal(slow.closed, true);
  const served = conn(10);
  w.waiting(served);
  w.done(served);
  for (let i = 0; i < 10; i++) w.sweep();
  assert.equal(served.closed, false);
});

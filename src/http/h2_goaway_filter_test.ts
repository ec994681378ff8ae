import assert from "node:assert/strict";
import { GoawayFilter } from "./h2_goaway_filter.ts";

function frame(type: number, payload: number[]): number[] {
  const n = payload.length;
  return [n >> 16, (n >> 8) & 0xff, n & 0xff, type, 0, 0, 0, 0, 1, ...payload];
}

const PREFACE = [...new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")];
const SETTINGS = frame(0x4, []);
const HEADERS = frame(0x1, [0x82, 0x86, 0x84]);
const GOAWAY = frame(0x7, [0, 0, 0, 5, 0, 0, 0, 0]);
const DATA = frame(0x0, [1, 2, 3, 4, 5]);

Deno.test("GOAWAY frames are removed and reported, everything else passes, at any split", () => {
  const input = new Uint8Array([...PREFACE, ...SETTINGS, ...HEADERS, ...GOAWAY, ...DATA]);
  const want = new Uint8Array([...PREFACE, ...SETTINGS, ...HEADERS, ...DATA]);
  for (let step = 1; step <= input.length; step++) {
    let goaways = 0;
    const f = new GoawayFilter(true, () => goaways++);
    const out: number[] = [];
    for (let i = 0; i < input.length; i += step) {
      for (const piece of f.push(input.subarray(i, i + step))) out.push(...piece);
    }
    assert.deepEqual(new Uint8Array(out), want, `chunks of ${step}`);
    assert.equal(goaways, 1);
  }
});

Deno.test("without a client preface (client side), frames start at once", () => {
  let goaways = 0;
  const f = new GoawayFilter(false, () => goaways++);
  const out = f.push(new Uint8Array([...SETTINGS, ...GOAWAY]));
  assert.deepEqual(out.flatMap((p) => [...p]), SETTINGS);
  assert.equal(goaways, 1);
});

Deno.test("the GOAWAY's last stream id is reported (reserved bit cleared), at any split; a short frame reports the largest id", () => {
  const goaway = (id: number[]) => frame(0x7, [...id, 0, 0, 0, 0]);
  const input = new Uint8Array([
    ...SETTINGS,
    ...goaway([0x80, 0, 1, 3]),
    ...DATA,
    ...frame(0x7, [0, 0]),
    ...frame(0x7, []),
    ...goaway([0x7f, 0xff, 0xff, 0xff]),
  ]);
  for (let step = 1; step <= input.length; step++) {
    const ids: number[] = [];
    const f = new GoawayFilter(false, (id) => ids.push(id));
    const out: number[] = [];
    for (let i = 0; i < input.length; i += step) {
      for (const piece of f.push(input.subarray(i, i + step))) out.push(...piece);
    }
    assert.deepEqual(out, [...SETTINGS, ...DATA], `chunks of ${step}`);
    assert.deepEqual(ids, [259, 0x7fffffff, 0x7fffffff, 0x7fffffff], `chunks of ${step}`);
  }
});

import assert from "node:assert/strict";
import type { HeaderList } from "../http/h1_head.ts";
import {
  extract,
  type Found,
  inject,
  newRootTraceparent,
  newSpanId,
  newTraceId,
  parseB3Single,
  parseTraceparent,
} from "./trace_context.ts";

const TID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SID = "00f067aa0ba902b7";

const none: Found = {
  traceparent: undefined,
  tracestate: undefined,
  b3: undefined,
  b3TraceId: undefined,
  b3SpanId: undefined,
  b3Sampled: undefined,
  b3Flags: undefined,
};

Deno.test("traceparent: valid values parse, with the sampled flag", () => {
  assert.deepEqual(parseTraceparent(`00-${TID}-${SID}-01`), {
    traceId: TID,
    parentSpanId: SID,
    sampled: true,
  });
  assert.equal(parseTraceparent(`00-${TID}-${SID}-00`)?.sampled, false);
  // A future version may append fields after a dash.
  assert.equal(parseTraceparent(`cc-${TID}-${SID}-01-what-the-future-holds`)?.traceId, TID);
});

Deno.test("traceparent: malformed values are ignored", () => {
  for (
    const bad of [
      "",
      "garbage",
      `00-${TID}-${SID}`,
      `00-${TID}-${SID}-01-extra`, // version 00 has exactly four fields
      `ff-${TID}-${SID}-01`, // forbidden version
      `00-${"0".repeat(32)}-${SID}-01`, // all-zero trace id
      `00-${TID}-${"0".repeat(16)}-01`, // all-zero span id
      `00-${TID.toUpperCase()}-${SID}-01`, // upper case
      `00-${TID.slice(1)}x-${SID}-01`,
      `00_${TID}_${SID}_01`,
      `00-${TID}-${SID}-zz`,
      `cc-${TID}-${SID}-01x`,
    ]
  ) {
    assert.equal(parseTraceparent(bad), undefined, bad);
  }
});

Deno.test("b3 single: all forms, malformed ignored", () => {
  assert.deepEqual(parseB3Single(`${TID}-${SID}-1-${"a".repeat(16)}`), {
    traceId: TID,
    spanId: SID,
    sampled: true,
    short: false,
  });
  assert.deepEqual(parseB3Single(`${SID}-${SID}`), {
    traceId: "0000000000000000" + SID,
    spanId: SID,
    sampled: undefined,
    short: true,
  });
  assert.equal(parseB3Single(`${TID}-${SID}-d`)?.sampled, true);
  assert.equal(parseB3Single("0")?.sampled, false);
  for (const bad of ["", "x", `${TID}`, `${TID}-${SID}-7`, `${TID}-zz`, `${TID}-${SID}-1-bad`]) {
    assert.equal(parseB3Single(bad), undefined, bad);
  }
});

Deno.test("extract: W3C wins, then b3 single, then b3 multi; bad headers fall through", () => {
  const w3c = extract({ ...none, traceparent: `00-${TID}-${SID}-01`, tracestate: "a=1", b3: "0" });
  assert.equal(w3c.format, "w3c");
  assert.equal(w3c.traceState, "a=1");
  const fallback = extract({ ...none, traceparent: "bad", b3: `${TID}-${SID}-0` });
  assert.equal(fallback.format, "b3single");
  assert.equal(fallback.sampled, false);
  const multi = extract({ ...none, b3TraceId: SID, b3SpanId: SID, b3Sampled: "true" });
  assert.equal(multi.format, "b3multi");
  assert.equal(multi.traceId, "0000000000000000" + SID);
  assert.equal(multi.shortTraceId, true);
  assert.equal(multi.sampled, true);
  const debug = extract({ ...none, b3TraceId: TID, b3SpanId: SID, b3Flags: "1" });
  assert.equal(debug.sampled, true);
  // A decision without ids is still a decision.
  const deny = extract({ ...none, b3Sampled: "0" });
  assert.equal(deny.traceId, "");
  assert.equal(deny.sampled, false);
  const broken = extract({ ...none, b3TraceId: "nothex", b3SpanId: SID });
  assert.equal(broken.format, "none");
  assert.equal(broken.traceId, "");
  assert.equal(broken.sampled, undefined);
});

Deno.test("inject: replaces every trace header, writes W3C and the B3 format asked for", () => {
  const headers: HeaderList = [
    ["host", "a"],
    ["traceparent", "x"],
    ["x-b3-traceid", "y"],
    ["b3", "z"],
    ["accept", "*/*"],
  ];
  const ctx = {
    traceId: "0000000000000000" + SID,
    spanId: "1111111111111111",
    parentSpanId: SID,
    sampled: true,
    traceState: "k=v",
    shortTraceId: true,
  };
  inject(headers, ctx, "b3multi", true);
  assert.deepEqual(headers, [
    ["host", "a"],
    ["accept", "*/*"],
    ["traceparent", `00-0000000000000000${SID}-1111111111111111-01`],
    ["tracestate", "k=v"],
    ["x-b3-traceid", SID],
    ["x-b3-spanid", "1111111111111111"],
    ["x-b3-parentspanid", SID],
    ["x-b3-sampled", "1"],
  ]);
  const single: HeaderList = [];
  inject(single, { ...ctx, sampled: false, traceState: "" }, "b3single", false);
  assert.deepEqual(single, [
    ["traceparent", `00-0000000000000000${SID}-1111111111111111-00`],
    ["b3", `${SID}-1111111111111111-0-${SID}`],
  ]);
});

Deno.test("ids: right length, hex, distinct", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const t = newTraceId();
    const s = newSpanId();
    assert.match(t, /^[0-9a-f]{32}$/);
    assert.match(s, /^[0-9a-f]{16}$/);
    seen.add(t);
  }
  assert.equal(seen.size, 2000);
});

Deno.test("root traceparent: version 00, fresh non-zero ids, unsampled, across pool refills", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const tp = newRootTraceparent();
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-00$/.exec(tp);
    assert.ok(m, tp);
    assert.notEqual(m[1], "0".repeat(32));
    assert.notEqual(m[2], "0".repeat(16));
    // What a receiver reads back is the same context, unsampled.
    const ex = extract({ ...none, traceparent: tp });
    assert.equal(ex.traceId, m[1]);
    assert.equal(ex.parentSpanId, m[2]);
    assert.equal(ex.sampled, false);
    seen.add(m[1]!).add(m[2]!);
  }
  assert.equal(seen.size, 2000);
});

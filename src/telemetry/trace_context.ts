/**
 * Trace context propagation: reads W3C Trace Context (`traceparent`,
 * `tracestate`) and B3 (multi-header `x-b3-*` and single `b3`) from a request's
 * header list, and writes the context of the next hop back into it.
 *
 * Parsing is strict and never throws: a malformed header is ignored, as if it
 * were absent (W3C Trace Context §3.2.2, B3's "invalid means none"), so a bad
 * client can start a new trace but cannot break the request. W3C wins over B3
 * when both are valid. Trace ids are kept as 32 lower-case hex digits; a
 * 64-bit B3 trace id is left-padded with zeros and written back in its short
 * form so that B3 peers see the id they sent.
 *
 * Ids come from a pool of random hex digits refilled 4 KiB at a time, so a
 * new id is one string slice. This module does not decide sampling or build
 * spans (that is `tracing.ts`).
 */

import type { HeaderList } from "../http/h1_head.ts";

/** How the incoming context was written, so that the next hop gets the same. */
/** "b3both": single `b3` and the `x-b3-*` headers (a single header came in, Zipkin is on). */
export type Format = "none" | "w3c" | "b3multi" | "b3single" | "b3both";

/** A context read from a request. */
export interface Extracted {
  format: Format;
  /** 32 lower-case hex digits, or "" when the request carried no usable context. */
  traceId: string;
  /** The caller's span id (16 hex digits), our span's parent; "" when none. */
  parentSpanId: string;
  /** The caller's sampling decision; undefined when it made none. */
  sampled: boolean | undefined;
  /** W3C tracestate, passed on unchanged with a valid traceparent ("" when none). */
  traceState: string;
  /** The trace id was 64-bit in B3 (written back in 16 digits). */
  shortTraceId: boolean;
}

const HEX = /^[0-9a-f]+$/;
const ZERO_16 = "0000000000000000";
const ZERO_32 = ZERO_16 + ZERO_16;

function isHexId(s: string, len: number): boolean {
  return s.length === len && HEX.test(s) && s !== (len === 16 ? ZERO_16 : ZERO_32);
}

/** Parses a traceparent value; undefined when it is not valid (version 00 rules, future versions leniently). */
export function parseTraceparent(
  value: string,
): { traceId: string; parentSpanId: string; sampled: boolean } | undefined {
  const v = value.trim();
  if (v.length < 55) return undefined;
  const version = v.slice(0, 2);
  if (!HEX.test(version) || version === "ff") return undefined;
  if (version === "00" ? v.length !== 55 : v.length > 55 && v[55] !== "-") return undefined;
  if (v[2] !== "-" || v[35] !== "-" || v[52] !== "-") return undefined;
  const traceId = v.slice(3, 35);
  const parentSpanId = v.slice(36, 52);
  const flags = v.slice(53, 55);
  if (!isHexId(traceId, 32) || !isHexId(parentSpanId, 16) || !HEX.test(flags)) return undefined;
  return { traceId, parentSpanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

function parseB3Sampled(v: string): boolean | undefined {
  switch (v.trim().toLowerCase()) {
    case "1":
    case "true":
    case "d":
      return true;
    case "0":
    case "false":
      return false;
    default:
      return undefined;
  }
}

/** A B3 trace id: 16 or 32 hex digits; returned as 32. */
function b3TraceId(v: string): string | undefined {
  const s = v.trim().toLowerCase();
  if (s.length === 16 && isHexId(s, 16)) return ZERO_16 + s;
  if (s.length === 32 && isHexId(s, 32)) return s;
  return undefined;
}

/** Parses a single `b3` header: `{trace}-{span}[-{sampled}[-{parent}]]`, or just `{sampled}`. */
export function parseB3Single(
  value: string,
): { traceId: string; spanId: string; sampled: boolean | undefined; short: boolean } | {
  traceId: "";
  spanId: "";
  sampled: boolean;
  short: false;
} | undefined {
  const v = value.trim().toLowerCase();
  const parts = v.split("-");
  if (parts.length === 1) {
    const sampled = parseB3Sampled(parts[0]!);
    return sampled === undefined ? undefined : { traceId: "", spanId: "", sampled, short: false };
  }
  if (parts.length > 4) return undefined;
  const traceId = b3TraceId(parts[0]!);
  const spanId = parts[1]!;
  if (traceId === undefined || !isHexId(spanId, 16)) return undefined;
  let sampled: boolean | undefined;
  if (parts.length >= 3) {
    sampled = parseB3Sampled(parts[2]!);
    if (sampled === undefined) return undefined;
  }
  if (parts.length === 4 && !isHexId(parts[3]!, 16)) return undefined;
  return { traceId, spanId, sampled, short: parts[0]!.length === 16 };
}

/** The trace headers found in one pass over a header list. */
export interface Found {
  traceparent: string | undefined;
  tracestate: string | undefined;
  b3: string | undefined;
  b3TraceId: string | undefined;
  b3SpanId: string | undefined;
  b3Sampled: string | undefined;
  b3Flags: string | undefined;
}

/** Decides the incoming context from the headers found. */
export function extract(f: Found): Extracted {
  if (f.traceparent !== undefined) {
    const tp = parseTraceparent(f.traceparent);
    if (tp !== undefined) {
      return {
        format: "w3c",
        traceId: tp.traceId,
        parentSpanId: tp.parentSpanId,
        sampled: tp.sampled,
        traceState: f.tracestate ?? "",
        // B3 beside it (a remora upstream writes both) keeps its 64-bit form.
        shortTraceId: tp.traceId.startsWith(ZERO_16) &&
          (f.b3TraceId?.trim().length === 16 || f.b3?.trim().indexOf("-") === 16),
      };
    }
  }
  if (f.b3 !== undefined) {
    const b = parseB3Single(f.b3);
    if (b !== undefined) {
      return {
        format: "b3single",
        traceId: b.traceId,
        parentSpanId: b.spanId,
        sampled: b.sampled,
        traceState: "",
        shortTraceId: b.short,
      };
    }
  }
  const debug = f.b3Flags?.trim() === "1";
  const sampled = debug
    ? true
    : f.b3Sampled === undefined
    ? undefined
    : parseB3Sampled(f.b3Sampled);
  if (f.b3TraceId !== undefined && f.b3SpanId !== undefined) {
    const traceId = b3TraceId(f.b3TraceId);
    const spanId = f.b3SpanId.trim().toLowerCase();
    if (traceId !== undefined && isHexId(spanId, 16)) {
      return {
        format: "b3multi",
        traceId,
        parentSpanId: spanId,
        sampled,
        traceState: "",
        shortTraceId: f.b3TraceId.trim().length === 16,
      };
    }
  }
  // A sampling decision alone (x-b3-sampled: 0) is still a decision.
  return {
    format: sampled !== undefined ? "b3multi" : "none",
    traceId: "",
    parentSpanId: "",
    sampled,
    traceState: "",
    shortTraceId: false,
  };
}

/** Whether `name` (lower-case) is a trace header that `inject` replaces. */
export function isTraceHeader(name: string): boolean {
  switch (name) {
    case "traceparent":
    case "tracestate":
    case "b3":
    case "x-b3-traceid":
    case "x-b3-spanid":
    case "x-b3-parentspanid":
    case "x-b3-sampled":
    case "x-b3-flags":
      return true;
    default:
      return false;
  }
}

/** What the next hop is told. */
export interface Outgoing {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  sampled: boolean;
  traceState: string;
  shortTraceId: boolean;
}

/**
 * Removes every trace header from `headers` (when `hadAny`) and appends the
 * next hop's: `traceparent` (+ `tracestate`) always, and B3 in the format
 * the request used (multi-header when `b3` is "b3multi", single when
 * "b3single", both when "b3both", none when "none").
 */
export function inject(
  headers: HeaderList,
  ctx: Outgoing,
  b3: Format,
  hadAny: boolean,
): void {
  if (hadAny) {
    let w = 0;
    for (let r = 0; r < headers.length; r++) {
      const h = headers[r]!;
      if (!isTraceHeader(h[0])) headers[w++] = h;
    }
    headers.length = w;
  }
  const flags = ctx.sampled ? "-01" : "-00";
  headers.push(["traceparent", "00-" + ctx.traceId + "-" + ctx.spanId + flags]);
  if (ctx.traceState !== "") headers.push(["tracestate", ctx.traceState]);
  if (b3 === "b3multi" || b3 === "b3both") {
    headers.push(["x-b3-traceid", ctx.shortTraceId ? ctx.traceId.slice(16) : ctx.traceId]);
    headers.push(["x-b3-spanid", ctx.spanId]);
    if (ctx.parentSpanId !== "") headers.push(["x-b3-parentspanid", ctx.parentSpanId]);
    headers.push(["x-b3-sampled", ctx.sampled ? "1" : "0"]);
  }
  if (b3 === "b3single" || b3 === "b3both") {
    const t = ctx.shortTraceId ? ctx.traceId.slice(16) : ctx.traceId;
    headers.push([
      "b3",
      t + "-" + ctx.spanId + (ctx.sampled ? "-1" : "-0") +
      (ctx.parentSpanId !== "" ? "-" + ctx.parentSpanId : ""),
    ]);
  }
}

// ------------------------------------------------------------------ random ids

// Random ids are cut from a pool of W3C traceparent texts,
// "00-<32 hex trace id>-<16 hex span id>-00", made 32 records at a time
// (hex by table, decoded once). Most requests start a trace that is not
// sampled; their next hop is sent one record as it is: one slice, a flat
// string the head writer copies without flattening a concatenation first.
// A trace id or a span id alone is a slice of a record. A block lives until
// its last slice is dropped: 32 records are used up in well under a
// millisecond under load, so a block dies young; blocks of 170 lived long
// enough to be promoted to the old generation, about 2 MB/s of its garbage.
const RECORD = 55;
const RECORD_RANDOM = 24; // 16 bytes of trace id, 8 of span id
const RECORDS = 32;
const HEX_CODES = new TextEncoder().encode("0123456789abcdef");
const poolBytes = new Uint8Array(RECORDS * RECORD_RANDOM);
const poolAscii = new Uint8Array(RECORDS * RECORD);
const asciiDecoder = new TextDecoder();
/** "00-", dashes and "-00" in place; the hex digits are written over the rest. */
const RECORD_FRAME = new TextEncoder().encode(`00-${ZERO_32}-${ZERO_16}-00`);
let pool = "";
let nextRecord = RECORDS;

function allZero(b: Uint8Array, at: number, n: number): boolean {
  for (let i = at; i < at + n; i++) if (b[i] !== 0) return false;
  return true;
}

function putHex(from: number, n: number, to: number): void {
  for (let i = 0; i < n; i++) {
    const b = poolBytes[from + i]!;
    poolAscii[to + 2 * i] = HEX_CODES[b >> 4]!;
    poolAscii[to + 2 * i + 1] = HEX_CODES[b & 15]!;
  }
}

function refill(): void {
  crypto.getRandomValues(poolBytes);
  for (let r = 0; r < RECORDS; r++) {
    const b = r * RECORD_RANDOM;
    const a = r * RECORD;
    // All-zero ids are invalid (W3C Trace Context 3.2.2.3, 3.2.2.4).
    if (allZero(poolBytes, b, 16)) poolBytes[b + 15] = 1;
    if (allZero(poolBytes, b + 16, 8)) poolBytes[b + 23] = 1;
    poolAscii.set(RECORD_FRAME, a);
    putHex(b, 16, a + 3);
    putHex(b + 16, 8, a + 36);
  }
  pool = asciiDecoder.decode(poolAscii);
  nextRecord = 0;
}

/** Where the next unused record starts in `pool`. */
function takeRecord(): number {
  if (nextRecord === RECORDS) refill();
  return RECORD * nextRecord++;
}

/**
 * The `traceparent` of a new, unsampled root context:
 * "00-<new trace id>-<new span id>-00", as one flat string.
 */
export function newRootTraceparent(): string {
  const a = takeRecord();
  return pool.slice(a, a + RECORD);
}

/** A new random span id (16 hex digits, never all zeros). */
export function newSpanId(): string {
  const a = takeRecord() + 36;
  return pool.slice(a, a + 16);
}

/** A new random trace id (32 hex digits, never all zeros). */
export function newTraceId(): string {
  const a = takeRecord() + 3;
  return pool.slice(a, a + 32);
}

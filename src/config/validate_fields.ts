/**
 * Field-level building blocks shared by the per-kind validators: a context
 * that collects `ConfigError`s with their field paths, typed readers for
 * strings, integers, durations, enums, label maps and string matchers, the
 * allowed-fields check that turns every unsupported field into an error, and
 * Istio's host name rules (`fqdn`). Each reader records an error and returns
 * `undefined` when the value is wrong, so callers keep going and every error
 * is collected. It knows no resource kind; the `validate_<kind>.ts` modules do.
 */

import { parseDurationMs } from "../cli/flags.ts";
import type { StringMatch } from "./model.ts";
import { re2Input, translateRe2 } from "./translate_re2.ts";

/** One validation error, located by file, document and field path. */
export interface ConfigError {
  file: string;
  /** 0-based document index in the file; -1 when the error is about the whole file. */
  index: number;
  kind?: string;
  name?: string;
  /** Field path such as `spec.http[0].route[1].weight`; "" for the document itself. */
  path: string;
  /** Lower-case start (it follows a colon), no final period. */
  message: string;
  /** 1-based line, for YAML syntax errors. */
  line?: number;
}

export type Obj = Record<string, unknown>;

/** Collects errors for one document; `kind`/`name` label them once known. */
export class Ctx {
  readonly errors: ConfigError[];
  readonly file: string;
  readonly index: number;
  readonly namespace: string;
  kind: string | undefined;
  name: string | undefined;
  /** Route destinations naming a subset, checked against DestinationRules later. */
  readonly subsetRefs: Array<{ path: string; host: string; subset: string }> = [];
  /** Route destinations naming a port, checked against ServiceEntry ports later. */
  readonly portRefs: Array<{ path: string; host: string; port: number }> = [];

  constructor(errors: ConfigError[], file: string, index: number, namespace: string) {
    this.errors = errors;
    this.file = file;
    this.index = index;
    this.namespace = namespace;
    this.kind = undefined;
    this.name = undefined;
  }

  err(path: string, message: string): undefined {
    const e: ConfigError = { file: this.file, index: this.index, path, message };
    if (this.kind !== undefined) e.kind = this.kind;
    if (this.name !== undefined) e.name = this.name;
    this.errors.push(e);
    return undefined;
  }

  /** A short "file document N" reference for messages about another document. */
  where(): string {
    return `${this.file} document ${this.index + 1}`;
  }
}

export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  switch (typeof v) {
    case "string":
      return `a string "${v.length > 40 ? v.slice(0, 40) + "..." : v}"`;
    case "number":
      return `the number ${v}`;
    case "boolean":
      return `${v}`;
    case "object":
      return "a mapping";
    default:
      return typeof v;
  }
}

export function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

/** Path of a map entry: `labels.app`, or `labels["app.kubernetes.io/name"]` for odd keys. */
export function mapKey(path: string, key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? join(path, key) : `${path}[${JSON.stringify(key)}]`;
}

export function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function obj(ctx: Ctx, v: unknown, path: string): Obj | undefined {
  if (isObj(v)) return v;
  return ctx.err(path, `expected a mapping, got ${typeName(v)}`);
}

export function list(ctx: Ctx, v: unknown, path: string): unknown[] | undefined {
  if (Array.isArray(v)) return v;
  return ctx.err(path, `expected a list, got ${typeName(v)}`);
}

export function str(ctx: Ctx, v: unknown, path: string): string | undefined {
  if (typeof v === "string") return v;
  return ctx.err(path, `expected a string, got ${typeName(v)}`);
}

export function nonEmptyStr(ctx: Ctx, v: unknown, path: string): string | undefined {
  const s = str(ctx, v, path);
  if (s === "") return ctx.err(path, "must not be empty");
  return s;
}

export function bool(ctx: Ctx, v: unknown, path: string): boolean | undefined {
  if (typeof v === "boolean") return v;
  return ctx.err(path, `expected true or false, got ${typeName(v)}`);
}

export function int(
  ctx: Ctx,
  v: unknown,
  path: string,
  min: number,
  max: number,
  what = "an integer",
): number | undefined {
  if (typeof v !== "number" || !Number.isInteger(v)) {
    return ctx.err(path, `expected ${what} ${min}..${max}, got ${typeName(v)}`);
  }
  if (v < min || v > max) return ctx.err(path, `expected ${what} ${min}..${max}, got ${v}`);
  return v;
}

export function port(ctx: Ctx, v: unknown, path: string): number | undefined {
  return int(ctx, v, path, 1, 65535, "a port");
}

export function num(
  ctx: Ctx,
  v: unknown,
  path: string,
  min: number,
  max: number,
): number | undefined {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    return ctx.err(path, `expected a number ${min}..${max}, got ${typeName(v)}`);
  }
  if (v < min || v > max) return ctx.err(path, `expected a number ${min}..${max}, got ${v}`);
  return v;
}

/** The longest a timer can wait (2^31-1 ms, about 24.8 days); longer ones would fire at once. */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * A protobuf Duration as Istio writes it: "10s", "1.5s", "250ms", "1m", "1h",
 * or a sum such as "1m30s". Must be at least 1ms, as Istio requires. Longer
 * than MAX_DURATION_MS counts as MAX_DURATION_MS: in effect no limit, where a
 * timer given more would overflow and fire at once.
 */
export function duration(ctx: Ctx, v: unknown, path: string): number | undefined {
  if (typeof v !== "string") {
    return ctx.err(path, `expected a duration such as 250ms, 10s or 1m, got ${typeName(v)}`);
  }
  const ms = parseDurationMs(v);
  if (ms === undefined) {
    return ctx.err(path, `expected a duration such as 250ms, 10s or 1m, got "${v}"`);
  }
  if (ms < 1) return ctx.err(path, `duration must be at least 1ms, got "${v}"`);
  return Math.min(ms, MAX_DURATION_MS);
}

/**
 * Whether routes bound to `gateways` are a sidecar's: none named (the
 * default), or "mesh" among them. Others are ingress gateways' business.
 */
export function boundToMesh(gateways: readonly string[] | undefined): boolean {
  return gateways === undefined || gateways.length === 0 || gateways.includes("mesh");
}

/** An enum value; matched case-insensitively, returned upper-case. */
export function enumOf<T extends string>(
  ctx: Ctx,
  v: unknown,
  path: string,
  values: readonly T[],
): T | undefined {
  if (typeof v === "string") {
    const up = v.toUpperCase();
    const hit = values.find((x) => x === up);
    if (hit !== undefined) return hit;
  }
  return ctx.err(path, `expected one of ${values.join(", ")}, got ${typeName(v)}`);
}

/**
 * Checks that `o` has only `supported` fields. A field Istio defines but remora
 * does not implement (`istio`) is "not supported" ("not supported yet" when in
 * `notYet`); anything else is an unknown field, with a suggestion for typos.
 */
export function fields(
  ctx: Ctx,
  o: Obj,
  path: string,
  supported: readonly string[],
  istio: readonly string[] = [],
  notYet: readonly string[] = [],
): void {
  for (const key of Object.keys(o)) {
    if (supported.includes(key)) continue;
    const p = join(path, key);
    if (notYet.includes(key)) ctx.err(p, "not supported yet");
    else if (istio.includes(key)) ctx.err(p, "not supported");
    else {
      const guess = _suggest(key, [...supported, ...istio, ...notYet]);
      ctx.err(p, guess === undefined ? "unknown field" : `unknown field, did you mean ${guess}?`);
    }
  }
}

function _suggest(key: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[_-]/g, "");
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = norm(c) === norm(key) ? 0 : _distance(key.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best;
}

function _distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(cur + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

const _LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;
const _LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

/** A Kubernetes label map: string keys ([prefix/]name) to string values. */
export function labels(ctx: Ctx, v: unknown, path: string): Record<string, string> | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const out: Record<string, string> = {};
  let ok = true;
  for (const [k, val] of Object.entries(o)) {
    const p = mapKey(path, k);
    const slash = k.lastIndexOf("/");
    const prefix = slash === -1 ? undefined : k.slice(0, slash);
    const name = slash === -1 ? k : k.slice(slash + 1);
    if (!_LABEL_NAME.test(name) || (prefix !== undefined && !isDnsSubdomain(prefix))) {
      ok = false;
      ctx.err(p, `invalid label key "${k}"`);
      continue;
    }
    if (typeof val !== "string") {
      ok = false;
      ctx.err(p, `expected a string label value, got ${typeName(val)}`);
      continue;
    }
    if (!_LABEL_VALUE.test(val) || val.length > 63) {
      ok = false;
      ctx.err(p, `invalid label value "${val}"`);
      continue;
    }
    out[k] = val;
  }
  return ok ? out : undefined;
}

/** A map of string to string (header values, endpoint ports are separate). */
export function stringMap(ctx: Ctx, v: unknown, path: string): Record<string, string> | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const out: Record<string, string> = {};
  let ok = true;
  for (const [k, val] of Object.entries(o)) {
    if (typeof val !== "string") {
      ok = false;
      ctx.err(mapKey(path, k), `expected a string, got ${typeName(val)}`);
    } else out[k] = val;
  }
  return ok ? out : undefined;
}

export function stringList(ctx: Ctx, v: unknown, path: string): string[] | undefined {
  const l = list(ctx, v, path);
  if (l === undefined) return undefined;
  const out: string[] = [];
  let ok = true;
  l.forEach((x, i) => {
    const s = nonEmptyStr(ctx, x, `${path}[${i}]`);
    if (s === undefined) ok = false;
    else out.push(s);
  });
  return ok ? out : undefined;
}

/** exportTo: ".", "*", "~" or namespace names. Accepted; remora serves one workload. */
export function exportTo(ctx: Ctx, v: unknown, path: string): string[] | undefined {
  const l = stringList(ctx, v, path);
  if (l === undefined) return undefined;
  let ok = true;
  l.forEach((s, i) => {
    if (s !== "." && s !== "*" && s !== "~" && !isDnsLabel(s)) {
      ok = false;
      ctx.err(`${path}[${i}]`, `expected ".", "*", "~" or a namespace name, got "${s}"`);
    }
  });
  return ok ? l : undefined;
}

const _DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return _DNS_LABEL.test(s);
}

export function isDnsSubdomain(s: string): boolean {
  return s.length <= 253 && s.split(".").every((l) => _DNS_LABEL.test(l));
}

export function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 &&
    parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

export function isIPv6(s: string): boolean {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || !s.includes(":")) return false;
  try {
    new URL(`http://[${s}]/`);
    return true;
  } catch {
    return false;
  }
}

export function isIP(s: string): boolean {
  return isIPv4(s) || isIPv6(s);
}

/**
 * Resolves a host as Istio does: a short name without dots ("reviews") is
 * qualified in `namespace` ("reviews.<ns>.svc.cluster.local"); FQDNs, IP
 * addresses, "*" and wildcards ("*.example.com") are kept as written.
 * Always lower-case.
 */
export function fqdn(host: string, namespace: string): string {
  const h = host.toLowerCase();
  if (h === "*" || h.includes(".") || isIP(h)) return h;
  return `${h}.${namespace}.svc.cluster.local`;
}

/**
 * Checks a host name as written in a spec: a DNS name, optionally with a
 * leading "*." wildcard, or an IP address when `allowIP`. Returns it lower-cased.
 */
export function hostName(
  ctx: Ctx,
  v: unknown,
  path: string,
  opts: { wildcard: boolean; allowIP: boolean },
): string | undefined {
  const s = nonEmptyStr(ctx, v, path);
  if (s === undefined) return undefined;
  const h = s.toLowerCase();
  if (isIP(h)) return opts.allowIP ? h : ctx.err(path, `IP address not allowed here, got "${s}"`);
  if (h === "*" || h.startsWith("*.")) {
    if (!opts.wildcard) return ctx.err(path, `wildcard host not allowed here, got "${s}"`);
    if (h === "*") return h;
    if (!isDnsSubdomain(h.slice(2))) return ctx.err(path, `invalid host name "${s}"`);
    return h;
  }
  if (!isDnsSubdomain(h)) return ctx.err(path, `invalid host name "${s}"`);
  return h;
}

/**
 * Whether V8's linear-time regexp engine is on (`--v8-flags=
 * --enable-experimental-regexp-engine`, which `deno task start`, `deno task
 * compile` and the tests pass). RE2, Istio's engine, matches in linear time;
 * V8's default engine backtracks, and a pattern such as `(a+)+$` against a
 * long path would stall the proxy for seconds.
 */
export const LINEAR_REGEX: boolean = (() => {
  try {
    new RegExp("a", "l");
    return true;
  } catch {
    return false;
  }
})();

/**
 * An Istio regex compiled for matching: RE2's meaning, full match. `test`
 * takes a value as it arrives (bytes, one character each) and reads it as
 * UTF-8, as RE2 does.
 */
export class Re2RegExp {
  /** The Istio pattern. */
  readonly source: string;
  /** Whether V8's linear-time engine runs it. */
  readonly linear: boolean;
  readonly #re: RegExp;
  /** For text with surrogate pairs, when `#re` leaves out what they need. */
  readonly #astral: RegExp | undefined;

  constructor(source: string, re: RegExp, astral: RegExp | undefined) {
    this.source = source;
    this.#re = re;
    this.#astral = astral;
    this.linear = re.flags.includes("l") && (astral?.flags.includes("l") ?? true);
  }

  test(value: string): boolean {
    const text = re2Input(value);
    if (this.#astral !== undefined && _SURROGATE.test(text)) return this.#astral.test(text);
    return this.#re.test(text);
  }
}

const _SURROGATE = /[\ud800-\udfff]/;

/**
 * Compiles an Istio regex, written in RE2 syntax, as a full-string match:
 * `translateRe2` turns it into JavaScript with RE2's meaning (or gives RE2's
 * reason to refuse it, or remora's for `\C`), wrapped here in `^(?:...)$`.
 *
 * With V8's linear-time engine on (`LINEAR_REGEX`, as remora always runs),
 * every pattern runs on it, as RE2 runs in linear time; one it cannot take is
 * refused, never left to the backtracking engine, where a shape such as
 * `(a|a){1,64}` against a long header would stall the proxy. Without it (a
 * runtime started without the flag) a repeated group that repeats inside it
 * is refused, the shape whose backtracking explodes.
 */
export function compileRegex(source: string): Re2RegExp | string {
  const t = translateRe2(source);
  if (typeof t === "string") return t;
  if (!LINEAR_REGEX && hasNestedRepetition(t.source)) {
    return "a repeated group that repeats inside it cannot be matched in linear time; remove the nesting";
  }
  try {
    const re = _fullMatch(t.bmpSource);
    return new Re2RegExp(source, re, t.bmpSource === t.source ? undefined : _fullMatch(t.source));
  } catch (e) {
    const m = e instanceof Error ? e.message : String(e);
    return m.replace(/^Invalid regular expression: /, "");
  }
}

function _fullMatch(pattern: string): RegExp {
  const full = `^(?:${pattern})$`;
  if (!LINEAR_REGEX) return new RegExp(full);
  try {
    return new RegExp(full, "l");
  } catch {
    throw new Error(
      "it cannot be matched in linear time here (V8's linear-time engine refuses it)",
    );
  }
}

/** Whether a group that holds a quantifier is itself quantified, as in `(a+)+` or `(x{2,900})*`. */
export function hasNestedRepetition(source: string): boolean {
  // For each open group: whether a quantifier appeared inside it.
  const stack: boolean[] = [];
  let inClass = false;
  let lastClosedHeld = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === "\\") {
      i++;
      lastClosedHeld = false;
      continue;
    }
    if (inClass) {
      if (c === "]") inClass = false;
      continue;
    }
    if (c === "[") {
      inClass = true;
      lastClosedHeld = false;
    } else if (c === "(") {
      stack.push(false);
      lastClosedHeld = false;
    } else if (c === ")") {
      lastClosedHeld = stack.pop() ?? false;
      if (lastClosedHeld && stack.length > 0) stack[stack.length - 1] = true;
      continue;
    } else if (c === "*" || c === "+" || c === "{") {
      if (lastClosedHeld) return true;
      if (stack.length > 0) stack[stack.length - 1] = true;
    }
    // `?` is an option or syntax (`(?:`, lazy `+?`): it repeats nothing.
    lastClosedHeld = false;
  }
  return false;
}

/**
 * An Istio StringMatch: exactly one of exact, prefix, regex; regexes must
 * compile. `noPrefix` refuses prefix (query parameters in Istio); `presence`
 * takes `{}` (or null, as `name:` with no value parses) as "the name is
 * present", as Istio's headers, withoutHeaders and queryParams do.
 */
export function stringMatch(
  ctx: Ctx,
  v: unknown,
  path: string,
  opts: { noPrefix?: boolean; presence?: boolean } = {},
): StringMatch | undefined {
  if (opts.presence && v === null) return { present: true };
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  fields(ctx, o, path, ["exact", "prefix", "regex"]);
  const present = (["exact", "prefix", "regex"] as const).filter((k) => o[k] !== undefined);
  if (present.length === 0 && opts.presence && Object.keys(o).length === 0) {
    return { present: true };
  }
  if (present.length !== 1) {
    return ctx.err(
      path,
      present.length === 0
        ? `exactly one of exact, prefix or regex is required${
          opts.presence ? " ({} matches any value)" : ""
        }`
        : `exactly one of exact, prefix or regex is allowed, got ${present.join(" and ")}`,
    );
  }
  const k = present[0]!;
  const s = str(ctx, o[k], join(path, k));
  if (s === undefined) return undefined;
  if (k === "exact") return { exact: s };
  if (k === "prefix") {
    if (opts.noPrefix) {
      return ctx.err(join(path, k), "prefix match is not supported here, use exact or regex");
    }
    return { prefix: s };
  }
  const re = compileRegex(s);
  if (typeof re === "string") return ctx.err(join(path, k), `invalid regex "${s}": ${re}`);
  return { regex: s };
}

/** A map of names to StringMatch (headers, queryParams). */
export function matchMap(
  ctx: Ctx,
  v: unknown,
  path: string,
  opts: { noPrefix?: boolean } = {},
): Record<string, StringMatch> | undefined {
  const o = obj(ctx, v, path);
  if (o === undefined) return undefined;
  const out: Record<string, StringMatch> = {};
  let ok = true;
  for (const [k, val] of Object.entries(o)) {
    if (k === "" || /[\s:]/.test(k.replace(/^:/, ""))) {
      ok = false;
      ctx.err(mapKey(path, k), `invalid name "${k}"`);
      continue;
    }
    const m = stringMatch(ctx, val, mapKey(path, k), { ...opts, presence: true });
    if (m === undefined) ok = false;
    else out[k] = m;
  }
  return ok ? out : undefined;
}

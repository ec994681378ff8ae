/**
 * Translates a regular expression in RE2 syntax, the syntax of Istio's
 * `regex` fields (Envoy runs them with RE2), into a JavaScript pattern that
 * means the same on UTF-16 text and needs no flag, so V8's linear-time
 * engine can run it. Case-insensitive parts are spelled out letter by letter
 * (`(?i)k` → `[Kk\u212a]`) and every class becomes explicit code points
 * (`[[:alpha:]]`, `\pL`, `\W`), since that engine takes neither `i` nor `u`.
 *
 * Supported, with RE2's meaning: literals and `.`; classes `[...]` and
 * `[^...]` with POSIX names (`[[:alpha:]]`, `[[:^digit:]]`); `\d \s \w` and
 * their negations (ASCII, as in RE2); `\pL`, `\p{Greek}`, `\PL`, `\p{^Greek}`
 * (general categories, scripts, `Any`); escapes `\a \f \t \n \r \v`, octal
 * `\123`, hex `\x7F` and `\x{10FFFF}`, `\.` for any punctuation, `\Q...\E`;
 * anchors `^ $` (of the text, or of a line under `(?m)`), `\A \z`, `\b \B`;
 * groups `(...)`, `(?:...)`, `(?P<name>...)`, `(?<name>...)`; flags `i m s U`
 * as `(?i)`, `(?-s)`, `(?i:...)`; repetitions `* + ? {n} {n,} {n,m}` (counts
 * up to 1000) and their lazy forms.
 *
 * Refused: what RE2 refuses, with its reason (`\Z`, lookaround,
 * backreferences, `(?#...)`, unknown escapes), and `\C`, one byte, which RE2
 * accepts but which cannot be matched in decoded text. `re2Input` turns the
 * bytes of a header value or path into the text RE2 sees. It does not anchor
 * (`compileRegex` in `validate_fields.ts` makes the match a full one) and does
 * not compile the result.
 */

import {
  caseFold,
  type CodePointSet,
  complement,
  MAX_CODE_POINT,
  normalize,
  unicodeProperty,
  union,
  utf16Pattern,
} from "./code_point_set.ts";

export interface Re2Translation {
  /** The JavaScript pattern, unanchored, to compile without flags (`l` aside). */
  source: string;
  /**
   * The same for text without surrogate pairs (no code point above U+FFFF),
   * where large Unicode classes leave out their astral part, which costs V8's
   * linear-time engine at every character; `source` itself when no class does.
   */
  bmpSource: string;
}

/**
 * The largest count V8's linear-time engine takes in `{n,m}`; larger ones are
 * written out (`_unrolled`), which it runs in linear time all the same.
 */
const _LINEAR_MAX_COUNT = 16;

/**
 * `unit{lo,hi}` (hi -1: no upper bound) written out: `lo` copies, then
 * `unit*` or `hi - lo` nested optional copies (`(?:u(?:u)?)?`). RE2's cap on
 * counts (1000, nested ones multiplied) bounds the copies.
 */
function _unrolled(unit: string, lo: number, hi: number): string {
  let out = unit.repeat(lo);
  if (hi === -1) return out + unit + "*";
  let rest = "";
  for (let i = 0; i < hi - lo; i++) rest = `(?:${unit}${rest})?`;
  out += rest;
  return out === "" ? "(?:)" : out;
}

/** The JavaScript equivalent of an RE2 pattern, or why there is none. */
export function translateRe2(pattern: string): Re2Translation | string {
  try {
    return new _Translator(pattern).run();
  } catch (e) {
    if (e instanceof _Re2Error) return e.message;
    throw e;
  }
}

/**
 * The text RE2 sees in a header value or path that arrives as bytes, one
 * character per byte (as remora's HTTP/1 parser and node:http2 give them):
 * bytes above 0x7F are decoded as UTF-8, the encoding RE2 reads. A byte that
 * starts no well-formed sequence becomes a lone surrogate, which no
 * translated pattern matches, as RE2 matches no stray byte (RE2's `.` does
 * take a few malformed three- and four-byte forms, overlong or surrogate;
 * here those match nothing either). A string holding a character above
 * U+00FF is text already and is returned as it is.
 */
export function re2Input(bytes: string): string {
  if (!_NON_ASCII.test(bytes)) return bytes;
  const b = new Uint8Array(bytes.length);
  for (let k = 0; k < bytes.length; k++) {
    const c = bytes.charCodeAt(k);
    if (c > 0xff) return bytes;
    b[k] = c;
  }
  try {
    return _UTF8.decode(b);
  } catch {
    return _decodeMalformed(b);
  }
}

const _NON_ASCII = /[\u0080-\uffff]/;
const _UTF8 = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 with malformed bytes, each of those as U+DC80..U+DCFF. */
function _decodeMalformed(b: Uint8Array): string {
  const units: number[] = [];
  for (let k = 0; k < b.length;) {
    const c = b[k]!;
    const [n, min] = _sequence(c);
    let cp = n === 0 ? c : c & (0x3f >> n);
    let ok = n >= 0;
    for (let j = 1; ok && j <= n; j++) {
      const d = b[k + j];
      ok = d !== undefined && (d & 0xc0) === 0x80;
      cp = (cp << 6) | ((d ?? 0) & 0x3f);
    }
    ok &&= cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok) {
      units.push(0xdc00 + c);
      k++;
    } else if (cp > 0xffff) {
      units.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
      k += n + 1;
    } else {
      units.push(cp);
      k += n + 1;
    }
  }
  let s = "";
  for (let k = 0; k < units.length; k += 8192) {
    s += String.fromCharCode(...units.slice(k, k + 8192));
  }
  return s;
}

/** For a lead byte: how many continuation bytes follow (-1: none can) and the least code point. */
function _sequence(lead: number): [number, number] {
  if (lead < 0x80) return [0, 0];
  if (lead >= 0xc2 && lead <= 0xdf) return [1, 0x80];
  if (lead >= 0xe0 && lead <= 0xef) return [2, 0x800];
  if (lead >= 0xf0 && lead <= 0xf4) return [3, 0x10000];
  return [-1, 0];
}

class _Re2Error extends Error {}

interface _Flags {
  /** Case-insensitive. */
  i: boolean;
  /** `^` and `$` match at line boundaries too. */
  m: boolean;
  /** `.` matches `\n`. */
  s: boolean;
  /** Repetitions are lazy unless followed by `?`. */
  U: boolean;
}

interface _Term {
  src: string;
  /** `src` for text without surrogate pairs. */
  bmp: string;
  /** Whether a quantifier may follow `src` as it is. */
  atom: boolean;
  /** The product of the counted repetitions it holds (RE2 caps it at 1000). */
  weight: number;
}

interface _Frame {
  /** The flags before the group opened, restored when it closes. */
  outer: _Flags;
  /** Finished alternatives. */
  alts: _Term[][];
  /** The alternative being read. */
  terms: _Term[];
}

const _MAX_REPEAT = 1000;
const _ANY: CodePointSet = [[0, MAX_CODE_POINT]];
const _ANY_BUT_NEWLINE: CodePointSet = [[0, 9], [11, MAX_CODE_POINT]];

const _PERL_CLASSES: ReadonlyMap<string, CodePointSet> = new Map([
  ["d", [[0x30, 0x39]]],
  ["s", [[9, 10], [12, 13], [32, 32]]],
  ["w", [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]],
]);

const _POSIX_CLASSES: ReadonlyMap<string, CodePointSet> = new Map<string, CodePointSet>([
  ["alnum", [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]]],
  ["alpha", [[0x41, 0x5a], [0x61, 0x7a]]],
  ["ascii", [[0, 0x7f]]],
  ["blank", [[9, 9], [32, 32]]],
  ["cntrl", [[0, 0x1f], [0x7f, 0x7f]]],
  ["digit", [[0x30, 0x39]]],
  ["graph", [[0x21, 0x7e]]],
  ["lower", [[0x61, 0x7a]]],
  ["print", [[0x20, 0x7e]]],
  ["punct", [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]]],
  ["space", [[9, 13], [32, 32]]],
  ["upper", [[0x41, 0x5a]]],
  ["word", [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]],
  ["xdigit", [[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]]],
]);

/** RE2's general categories; its `C` leaves out unassigned code points (`Cn`). */
const _CATEGORIES = new Set([
  "Cc",
  "Cf",
  "Co",
  "Cs",
  "L",
  "Ll",
  "Lm",
  "Lo",
  "Lt",
  "Lu",
  "M",
  "Mc",
  "Me",
  "Mn",
  "N",
  "Nd",
  "Nl",
  "No",
  "P",
  "Pc",
  "Pd",
  "Pe",
  "Pf",
  "Pi",
  "Po",
  "Ps",
  "S",
  "Sc",
  "Sk",
  "Sm",
  "So",
  "Z",
  "Zl",
  "Zp",
  "Zs",
]);

/** Script long names of four letters; any other four-letter name is an alias (Grek), which RE2 lacks. */
const _FOUR_LETTER_SCRIPTS = new Set([
  "Ahom",
  "Cham",
  "Kawi",
  "Lisu",
  "Miao",
  "Modi",
  "Newa",
  "Thai",
  "Toto",
]);

/** The code points of an RE2 Unicode class name (`L`, `Greek`, `Any`), or undefined. */
function _unicodeClass(name: string): CodePointSet | undefined {
  if (name === "Any") return _ANY;
  if (name === "C") return union(...["Cc", "Cf", "Co", "Cs"].map((c) => unicodeProperty(c) ?? []));
  if (_CATEGORIES.has(name)) return unicodeProperty(name);
  if (!/^[A-Z][A-Za-z]*(?:_[A-Z][A-Za-z]*)*$/.test(name)) return undefined;
  if (/^[A-Z][a-z]{3}$/.test(name) && !_FOUR_LETTER_SCRIPTS.has(name)) return undefined;
  return unicodeProperty(`Script=${name}`);
}

function _hex(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

function _isDigit(c: number | undefined): boolean {
  return c !== undefined && c >= 0x30 && c <= 0x39;
}

function _isAlnum(c: number): boolean {
  return _isDigit(c) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

function _join(alts: readonly (readonly _Term[])[], key: "src" | "bmp"): string {
  return alts.map((terms) => terms.map((t) => t[key]).join("")).join("|");
}

/** One pass over the pattern, as RE2's parser reads it; errors are thrown as `_Re2Error`. */
class _Translator {
  readonly #p: readonly number[];
  #i = 0;
  #flags: _Flags = { i: false, m: false, s: false, U: false };
  readonly #stack: _Frame[] = [];
  #frame: _Frame = { outer: this.#flags, alts: [], terms: [] };
  /** The repetition operator just read, when the last thing read was one. */
  #lastRepeat: string | undefined;

  constructor(pattern: string) {
    const cps: number[] = [];
    for (const ch of pattern) {
      const cp = ch.codePointAt(0)!;
      if (cp >= 0xd800 && cp <= 0xdfff) throw new _Re2Error("invalid UTF-8: a lone surrogate");
      cps.push(cp);
    }
    this.#p = cps;
  }

  run(): Re2Translation {
    const p = this.#p;
    while (this.#i < p.length) {
      const c = p[this.#i]!;
      const lastRepeat = this.#lastRepeat;
      this.#lastRepeat = undefined;
      switch (c) {
        case 0x28: // (
          this.#open();
          break;
        case 0x7c: // |
          this.#frame.alts.push(this.#frame.terms);
          this.#frame.terms = [];
          this.#i++;
          break;
        case 0x29: // )
          this.#close();
          break;
        case 0x5e: // ^
        case 0x24: // $
          // Under (?m) these are line anchors; the values matched (header values, paths,
          // query values, authorities) never hold a line break (HTTP forbids it and paths
          // refuse it), so a line is the text: the text's anchors, which the linear engine runs.
          this.#i++;
          this.#push(c === 0x5e ? "^" : "$", false);
          break;
        case 0x2e: // .
          this.#i++;
          this.#pushSet(this.#flags.s ? _ANY : _ANY_BUT_NEWLINE);
          break;
        case 0x5b: // [
          this.#pushSet(this.#class());
          break;
        case 0x2a: // *
        case 0x2b: // +
        case 0x3f: // ?
          this.#i++;
          this.#repeat(String.fromCharCode(c), this.#i - 1, lastRepeat);
          break;
        case 0x7b: { // {
          const start = this.#i;
          const counted = this.#countedRepetition();
          if (counted === undefined) {
            this.#i++;
            this.#literal(c);
          } else this.#repeat(counted, start, lastRepeat);
          break;
        }
        case 0x5c: // \
          this.#escape();
          break;
        default:
          this.#i++;
          this.#literal(c);
      }
    }
    if (this.#stack.length > 0) throw new _Re2Error(`missing ): ${this.#slice(0, p.length)}`);
    this.#frame.alts.push(this.#frame.terms);
    const alts = this.#frame.alts;
    return {
      source: _join(alts, "src"),
      bmpSource: _join(alts, "bmp"),
    };
  }

  #slice(from: number, to: number): string {
    return String.fromCodePoint(...this.#p.slice(from, to));
  }

  #push(src: string, atom: boolean, weight = 1, bmp = src): void {
    this.#frame.terms.push({ src, bmp, atom, weight });
  }

  #pushSet(set: CodePointSet): void {
    this.#push(utf16Pattern(set), true, 1, utf16Pattern(set, true));
  }

  #literal(cp: number): void {
    const set: CodePointSet = [[cp, cp]];
    this.#pushSet(this.#flags.i ? caseFold(set) : set);
  }

  /** A class such as `\d` or `[:alpha:]`, case-folded under `(?i)`, or its complement. */
  #named(set: CodePointSet, negated: boolean): CodePointSet {
    const folded = this.#flags.i ? caseFold(set) : set;
    return negated ? complement(folded) : folded;
  }

  /** `(`: a group, a named group, or flags; `#i` is at the parenthesis. */
  #open(): void {
    const p = this.#p;
    const start = this.#i;
    if (p[start + 1] !== 0x3f) {
      this.#i++;
      this.#enter();
      return;
    }
    const c1 = p[start + 2];
    const c2 = p[start + 3];
    const lookbehind = c1 === 0x3c && (c2 === 0x3d || c2 === 0x21);
    if (c1 === 0x3d || c1 === 0x21 || lookbehind) {
      throw new _Re2Error("lookaround is not supported by RE2");
    }
    if ((c1 === 0x50 && c2 === 0x3c) || c1 === 0x3c) {
      // (?P<name>...) or (?<name>...): the name is checked; nothing reads captures here.
      const from = c1 === 0x50 ? start + 4 : start + 3;
      const end = p.indexOf(0x3e, from);
      if (end === -1) {
        throw new _Re2Error(`invalid named capture group: ${this.#slice(start, p.length)}`);
      }
      const name = this.#slice(from, end);
      if (!/^[\p{L}\p{M}\p{Nd}\p{Pc}]+$/u.test(name)) {
        throw new _Re2Error(`invalid named capture group: ${this.#slice(start, end + 1)}`);
      }
      this.#i = end + 1;
      this.#enter();
      return;
    }
    const flags = { ...this.#flags };
    let negated = false;
    let sawFlag = false;
    for (let t = start + 2;;) {
      const c = p[t++];
      switch (c) {
        case 0x69: // i
        case 0x6d: // m
        case 0x73: // s
        case 0x55: // U
          flags[String.fromCharCode(c) as keyof _Flags] = !negated;
          sawFlag = true;
          continue;
        case 0x2d: // -
          if (negated) break;
          negated = true;
          sawFlag = false;
          continue;
        case 0x3a: // :
        case 0x29: // )
          if (negated && !sawFlag) break;
          this.#i = t;
          if (c === 0x3a) this.#enter();
          this.#flags = flags;
          return;
      }
      throw new _Re2Error(
        `invalid or unsupported Perl syntax: ${this.#slice(start, Math.min(t, p.length))}`,
      );
    }
  }

  #enter(): void {
    this.#stack.push(this.#frame);
    this.#frame = { outer: this.#flags, alts: [], terms: [] };
  }

  #close(): void {
    const parent = this.#stack.pop();
    if (parent === undefined) throw new _Re2Error(`unexpected ): ${this.#slice(0, this.#i + 1)}`);
    this.#i++;
    const group = this.#frame;
    group.alts.push(group.terms);
    const weight = Math.max(1, ...group.alts.flat().map((t) => t.weight));
    this.#flags = group.outer;
    this.#frame = parent;
    this.#push(`(?:${_join(group.alts, "src")})`, true, weight, `(?:${_join(group.alts, "bmp")})`);
  }

  /** `{n}`, `{n,}` or `{n,m}` as RE2 reads them (no leading zeros), else undefined: `{` is a literal. */
  #countedRepetition(): string | undefined {
    const p = this.#p;
    let j = this.#i + 1;
    const int = (): number | undefined => {
      if (!_isDigit(p[j]) || (p[j] === 0x30 && _isDigit(p[j + 1]))) return undefined;
      let n = 0;
      while (_isDigit(p[j])) {
        if (n >= 100_000_000) return undefined;
        n = n * 10 + p[j++]! - 0x30;
      }
      return n;
    };
    const lo = int();
    if (lo === undefined) return undefined;
    let hi: number | undefined = lo;
    let op = `{${lo}}`;
    if (p[j] === 0x2c) {
      j++;
      if (p[j] === 0x7d) {
        hi = -1;
        op = `{${lo},}`;
      } else {
        hi = int();
        if (hi === undefined) return undefined;
        op = `{${lo},${hi}}`;
      }
    }
    if (p[j] !== 0x7d) return undefined;
    this.#i = j + 1;
    if (lo > _MAX_REPEAT || hi > _MAX_REPEAT || (hi !== -1 && hi < lo)) {
      throw new _Re2Error(`bad repetition operator: ${op}`);
    }
    return op;
  }

  /** Applies `op` (`*`, `+`, `?`, `{n,m}`, read from `start`; `#i` is past it) to the last term. */
  #repeat(op: string, start: number, lastRepeat: string | undefined): void {
    let lazy = false;
    if (this.#p[this.#i] === 0x3f) {
      lazy = true;
      this.#i++;
    }
    const text = this.#slice(start, this.#i);
    if (lastRepeat !== undefined) {
      throw new _Re2Error(`bad repetition operator: ${lastRepeat}${text}`);
    }
    const t = this.#frame.terms.pop();
    if (t === undefined) throw new _Re2Error(`missing argument to repetition operator: ${text}`);
    let weight = t.weight;
    let unroll: { lo: number; hi: number } | undefined;
    if (op.startsWith("{")) {
      const [lo = 0, hi = lo] = op.slice(1, -1).split(",").map((n) => n === "" ? -1 : Number(n));
      const most = hi === -1 ? lo : hi;
      if (most > 0) weight *= most;
      if (most >= 2 && weight > _MAX_REPEAT) {
        throw new _Re2Error(
          `bad repetition operator: ${text} (nested counted repetitions multiply past ${_MAX_REPEAT})`,
        );
      }
      if (most > _LINEAR_MAX_COUNT) unroll = { lo, hi };
    }
    if (this.#flags.U) lazy = !lazy;
    const unit = (src: string) => (t.atom ? src : `(?:${src})`);
    // Greedy or lazy makes no difference to a full match, the only use of these patterns.
    const wrap = unroll === undefined
      ? (src: string) => unit(src) + `${op}${lazy ? "?" : ""}`
      : (src: string) => _unrolled(unit(src), unroll!.lo, unroll!.hi);
    this.#push(wrap(t.src), false, weight, wrap(t.bmp));
    this.#lastRepeat = text;
  }

  /** `\`, outside a class: an assertion, `\Q...\E`, a class or one character. */
  #escape(): void {
    const p = this.#p;
    const c = p[this.#i + 1];
    switch (c) {
      case 0x62: // \b
      case 0x42: // \B
        this.#i += 2;
        this.#push(c === 0x62 ? "\\b" : "\\B", false);
        return;
      case 0x41: // \A: start of text (JavaScript's ^ without the m flag)
        this.#i += 2;
        this.#push("^", false);
        return;
      case 0x7a: // \z: end of text
        this.#i += 2;
        this.#push("$", false);
        return;
      case 0x43: // \C
        throw new _Re2Error(
          "\\C (any single byte) is not supported: remora matches the decoded text, not its bytes",
        );
      case 0x51: // \Q...\E
        this.#i += 2;
        while (this.#i < p.length) {
          if (p[this.#i] === 0x5c && p[this.#i + 1] === 0x45) {
            this.#i += 2;
            break;
          }
          this.#literal(p[this.#i++]!);
        }
        return;
      case 0x70: // \p
      case 0x50: // \P
        this.#pushSet(this.#unicodeClass());
        return;
    }
    const perl = this.#perlClass();
    if (perl !== undefined) this.#pushSet(perl);
    else this.#literal(this.#escapedChar());
  }

  /** `\d \s \w \D \S \W` at `#i`, or undefined. */
  #perlClass(): CodePointSet | undefined {
    const c = this.#p[this.#i + 1];
    if (c === undefined) return undefined;
    const name = String.fromCodePoint(c);
    const set = _PERL_CLASSES.get(name.toLowerCase());
    if (set === undefined) return undefined;
    this.#i += 2;
    return this.#named(set, name !== name.toLowerCase());
  }

  /** `\pL`, `\p{Greek}`, `\PL`, `\p{^Greek}` at `#i`. */
  #unicodeClass(): CodePointSet {
    const p = this.#p;
    const start = this.#i;
    let negated = p[start + 1] === 0x50;
    this.#i = start + 2;
    const c = p[this.#i];
    let name: string;
    if (c === undefined) {
      throw new _Re2Error(`unknown Unicode class: ${this.#slice(start, p.length)}`);
    }
    if (c !== 0x7b) {
      name = String.fromCodePoint(c);
      this.#i++;
    } else {
      const end = p.indexOf(0x7d, this.#i + 1);
      if (end === -1) throw new _Re2Error(`unknown Unicode class: ${this.#slice(start, p.length)}`);
      name = this.#slice(this.#i + 1, end);
      this.#i = end + 1;
    }
    if (name.startsWith("^")) {
      negated = !negated;
      name = name.slice(1);
    }
    const set = _unicodeClass(name);
    if (set === undefined) {
      throw new _Re2Error(`unknown Unicode class: ${this.#slice(start, this.#i)}`);
    }
    return this.#named(set, negated);
  }

  /** `[...]` at `#i`. */
  #class(): CodePointSet {
    const p = this.#p;
    const start = this.#i++;
    const missing = () => new _Re2Error(`missing closing ]: ${this.#slice(start, p.length)}`);
    let negated = false;
    if (p[this.#i] === 0x5e) {
      negated = true;
      this.#i++;
    }
    const parts: CodePointSet[] = [];
    // `]` first is a member, not the end.
    for (let first = true; this.#i < p.length && (p[this.#i] !== 0x5d || first); first = false) {
      const c = p[this.#i];
      const left = p.length - this.#i;
      if (c === 0x5b && p[this.#i + 1] === 0x3a && left > 2) {
        const posix = this.#posixClass();
        if (posix !== undefined) {
          parts.push(posix);
          continue;
        }
      }
      if (c === 0x5c && (p[this.#i + 1] === 0x70 || p[this.#i + 1] === 0x50) && left > 2) {
        parts.push(this.#unicodeClass());
        continue;
      }
      if (c === 0x5c) {
        const perl = this.#perlClass();
        if (perl !== undefined) {
          parts.push(perl);
          continue;
        }
      }
      const from = this.#i;
      const lo = this.#classChar(missing);
      let hi = lo;
      if (p.length - this.#i >= 2 && p[this.#i] === 0x2d && p[this.#i + 1] !== 0x5d) {
        this.#i++;
        hi = this.#classChar(missing);
        if (hi < lo) {
          throw new _Re2Error(`invalid character class range: ${this.#slice(from, this.#i)}`);
        }
      }
      const range: CodePointSet = [[lo, hi]];
      parts.push(this.#flags.i ? caseFold(range) : range);
    }
    if (this.#i >= p.length) throw missing();
    this.#i++;
    const set = normalize(parts.flat());
    return negated ? complement(set) : set;
  }

  #classChar(missing: () => _Re2Error): number {
    const c = this.#p[this.#i];
    if (c === undefined) throw missing();
    if (c === 0x5c) return this.#escapedChar();
    this.#i++;
    return c;
  }

  /** `[:alpha:]` or `[:^alpha:]` at `#i` (RE2 looks for the closing `:]` anywhere after), or undefined. */
  #posixClass(): CodePointSet | undefined {
    const p = this.#p;
    let q = this.#i + 2;
    while (q <= p.length - 2 && !(p[q] === 0x3a && p[q + 1] === 0x5d)) q++;
    if (q > p.length - 2) return undefined;
    const text = this.#slice(this.#i, q + 2);
    const negated = text[2] === "^";
    const set = _POSIX_CLASSES.get(text.slice(negated ? 3 : 2, -2));
    if (set === undefined) throw new _Re2Error(`unknown POSIX class: ${text}`);
    this.#i = q + 2;
    return this.#named(set, negated);
  }

  /** One escaped character at `#i` (octal, hex, C escapes, punctuation). */
  #escapedChar(): number {
    const p = this.#p;
    const start = this.#i;
    const c = p[start + 1];
    if (c === undefined) throw new _Re2Error("trailing backslash at end of expression");
    this.#i = start + 2;
    const bad = () => new _Re2Error(`invalid escape sequence: ${this.#slice(start, this.#i)}`);
    const isOctal = (d: number | undefined) => d !== undefined && d >= 0x30 && d <= 0x37;
    // \1 to \9 alone are backreferences; \1 to \7 before another octal digit, and \0, are octal.
    if (c >= 0x31 && c <= 0x39 && !(c <= 0x37 && isOctal(p[this.#i]))) {
      throw new _Re2Error("backreferences are not supported by RE2");
    }
    if (isOctal(c)) {
      let code = c - 0x30;
      for (let k = 0; k < 2 && isOctal(p[this.#i]); k++) code = code * 8 + p[this.#i++]! - 0x30;
      return code;
    }
    switch (c) {
      case 0x78: { // \x
        if (p[this.#i] === 0x7b) {
          this.#i++;
          let code = 0;
          let digits = 0;
          for (;;) {
            const h = p[this.#i];
            if (h === undefined) throw bad();
            this.#i++;
            if (h === 0x7d) break;
            const v = _hex(h);
            if (v < 0) throw bad();
            code = code * 16 + v;
            digits++;
            if (code > MAX_CODE_POINT) throw bad();
          }
          if (digits === 0) throw bad();
          return code;
        }
        const h1 = _hex(p[this.#i]);
        const h2 = _hex(p[this.#i + 1]);
        this.#i = Math.min(this.#i + 2, p.length);
        if (h1 < 0 || h2 < 0) throw bad();
        return h1 * 16 + h2;
      }
      case 0x6e: // \n
        return 10;
      case 0x72: // \r
        return 13;
      case 0x74: // \t
        return 9;
      case 0x61: // \a
        return 7;
      case 0x66: // \f
        return 12;
      case 0x76: // \v
        return 11;
    }
    if (c < 0x80 && !_isAlnum(c)) return c;
    throw bad();
  }
}

/**
 * Sets of Unicode code points, as sorted and disjoint `[lo, hi]` ranges, and
 * the JavaScript pattern that matches one member of a set in UTF-16 text
 * without the `u` flag, so that V8's linear-time engine can run it (it takes
 * neither `u` nor `i`). `translate_re2.ts` builds RE2's character classes
 * here: `[a-z]`, `\pL`, `[[:alpha:]]`, `\W`, and case-insensitive letters.
 *
 * Unicode data comes from V8's own tables, read on first use and kept: the
 * members of a general category or script (`\p{...}` under `u`), and the
 * case-folding orbits (the code points that `/x/iu` equates, which are
 * Unicode's simple case folding, as RE2's `(?i)` uses). It parses no
 * patterns.
 */

/** An inclusive range of code points. */
export type Range = readonly [number, number];
/** Sorted, disjoint, non-adjacent ranges. */
export type CodePointSet = readonly Range[];

export const MAX_CODE_POINT = 0x10ffff;
const _SURROGATES: Range = [0xd800, 0xdfff];

/** The set of the given ranges, in any order, overlapping or not. */
export function normalize(ranges: Iterable<Range>): CodePointSet {
  const sorted = [...ranges].filter(([lo, hi]) => lo <= hi).sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

export function union(...sets: CodePointSet[]): CodePointSet {
  return normalize(sets.flat());
}

/** Every code point (0 to U+10FFFF) not in `set`. */
export function complement(set: CodePointSet): CodePointSet {
  const out: Range[] = [];
  let next = 0;
  for (const [lo, hi] of set) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

export function has(set: CodePointSet, cp: number): boolean {
  let a = 0;
  let b = set.length - 1;
  while (a <= b) {
    const m = (a + b) >> 1;
    const [lo, hi] = set[m]!;
    if (cp < lo) b = m - 1;
    else if (cp > hi) a = m + 1;
    else return true;
  }
  return false;
}

/**
 * `set` with every code point that simple case folding equates with one of
 * its members: `k` brings `K` and the Kelvin sign, `σ` brings `Σ` and `ς`.
 */
export function caseFold(set: CodePointSet): CodePointSet {
  const added: Range[] = [];
  const asciiOnly = set.length === 0 || set[set.length - 1]![1] <= 0x7f;
  if (asciiOnly) {
    for (const [lo, hi] of set) {
      for (let cp = lo; cp <= hi; cp++) {
        for (const o of _ASCII_ORBITS.get(cp) ?? []) added.push([o, o]);
      }
    }
    return added.length === 0 ? set : union(set, added);
  }
  for (const [cp, orbit] of _orbits()) {
    if (has(set, cp)) { for (const o of orbit) added.push([o, o]); }
  }
  return added.length === 0 ? set : union(set, added);
}

/**
 * The code points of a Unicode property as JavaScript names it after `\p{`
 * (`Lu`, `Script=Greek`), or undefined when V8 does not know it. `name` must
 * be letters, digits, `_` and `=` only.
 */
export function unicodeProperty(name: string): CodePointSet | undefined {
  const known = _properties.get(name);
  if (known !== undefined) return known;
  if (!/^[A-Za-z0-9_=]+$/.test(name)) return undefined;
  let re: RegExp;
  try {
    re = new RegExp(`\\p{${name}}+`, "gu");
  } catch {
    return undefined;
  }
  const out: Range[] = [];
  for (const m of _allCodePoints().matchAll(re)) {
    const end = m.index + m[0].length;
    out.push([_codePointAt(m.index), _codePointAt(end - (end > _ASTRAL_START ? 2 : 1))]);
  }
  // A run may span the surrogates, which the text leaves out; utf16Pattern
  // drops them again.
  const set = normalize(out);
  _properties.set(name, set);
  return set;
}

/**
 * A JavaScript pattern (no flags) that matches exactly one member of `set`
 * in well-formed UTF-16 text: one code unit, or a surrogate pair for a code
 * point above U+FFFF. Surrogate code points are left out (decoded text holds
 * none). The result is one atom: a quantifier can follow it.
 *
 * With `bmpText`, the pattern is for text without surrogate pairs, and the
 * part for code points above U+FFFF is left out when it takes more than one
 * alternative: V8's linear-time engine pays for every alternative at every
 * character, and the astral letters of `\pL` alone take about two hundred.
 */
export function utf16Pattern(set: CodePointSet, bmpText = false): string {
  const ranges = _subtract(set, _SURROGATES);
  const bmp: Range[] = [];
  const astral: Range[] = [];
  for (const [lo, hi] of ranges) {
    if (lo <= 0xffff) bmp.push([lo, Math.min(hi, 0xffff)]);
    if (hi >= 0x10000) astral.push([Math.max(lo, 0x10000), hi]);
  }
  const parts: string[] = [];
  if (bmp.length === 1 && bmp[0]![0] === bmp[0]![1]) parts.push(_escape(bmp[0]![0]));
  else if (bmp.length > 0) parts.push(_class(bmp));
  const blocks = _surrogateBlocks(astral);
  if (!bmpText || blocks.length === 1) {
    for (const [his, los] of blocks) parts.push(_units([his]) + _units(los));
  }
  if (parts.length === 0) return "[]";
  // One class or one BMP character is an atom; a surrogate pair is two.
  if (parts.length === 1 && bmp.length > 0) return parts[0]!;
  return `(?:${parts.join("|")})`;
}

const _ASCII_ORBITS: ReadonlyMap<number, readonly number[]> = (() => {
  const m = new Map<number, number[]>();
  for (let c = 0x41; c <= 0x5a; c++) {
    m.set(c, [c + 0x20]);
    m.set(c + 0x20, [c]);
  }
  // The two ASCII letters whose orbits reach past ASCII.
  for (const [a, b, other] of [[0x4b, 0x6b, 0x212a], [0x53, 0x73, 0x17f]] as const) {
    m.set(a, [b, other]);
    m.set(b, [a, other]);
  }
  return m;
})();

let _orbitTable: Map<number, readonly number[]> | undefined;

/** For each code point whose case folding orbit has other members: those members. */
function _orbits(): Map<number, readonly number[]> {
  if (_orbitTable !== undefined) return _orbitTable;
  const parent = new Map<number, number>();
  const find = (x: number): number => {
    let r = x;
    while (parent.get(r) !== undefined && parent.get(r) !== r) r = parent.get(r)!;
    parent.set(x, r);
    return r;
  };
  const join = (a: number, b: number) => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(ra, rb);
  };
  // Every member of a non-trivial orbit changes under upper- or lower-casing;
  // V8's `/x/iu` (simple case folding, as RE2) confirms each candidate pair.
  for (const [lo, hi] of unicodeProperty("Changes_When_Casemapped") ?? []) {
    for (let cp = lo; cp <= hi; cp++) {
      const s = String.fromCodePoint(cp);
      for (const t of [s.toLowerCase(), s.toUpperCase()]) {
        const other = t.codePointAt(0)!;
        if (t.length !== String.fromCodePoint(other).length || other === cp) continue;
        if (new RegExp(`^\\u{${cp.toString(16)}}$`, "iu").test(t)) join(cp, other);
      }
    }
  }
  const groups = new Map<number, number[]>();
  for (const cp of parent.keys()) {
    const r = find(cp);
    const g = groups.get(r);
    if (g === undefined) groups.set(r, [cp]);
    else g.push(cp);
  }
  const table = new Map<number, readonly number[]>();
  for (const g of groups.values()) {
    if (g.length < 2) continue;
    for (const cp of g) table.set(cp, g.filter((o) => o !== cp));
  }
  _orbitTable = table;
  return table;
}

const _properties = new Map<string, CodePointSet>();

// Every code point but the surrogates, in order: U+0000..U+D7FF and
// U+E000..U+FFFF one unit each, then U+10000.. as surrogate pairs.
const _ASTRAL_START = 0xd800 + 0x2000;

function _allCodePoints(): string {
  const units = new Uint16Array(_ASTRAL_START + 0x100000 * 2);
  for (let i = 0; i < 0xd800; i++) units[i] = i;
  for (let i = 0xd800; i < _ASTRAL_START; i++) units[i] = i + 0x800;
  let j = _ASTRAL_START;
  for (let cp = 0x10000; cp <= MAX_CODE_POINT; cp++) {
    const v = cp - 0x10000;
    units[j++] = 0xd800 + (v >> 10);
    units[j++] = 0xdc00 + (v & 0x3ff);
  }
  return new TextDecoder("utf-16le").decode(units);
}

/** The code point starting at `index` of `_allCodePoints()`. */
function _codePointAt(index: number): number {
  if (index < 0xd800) return index;
  if (index < _ASTRAL_START) return index + 0x800;
  return 0x10000 + ((index - _ASTRAL_START) >> 1);
}

function _subtract(set: CodePointSet, [a, b]: Range): CodePointSet {
  const out: Range[] = [];
  for (const [lo, hi] of set) {
    if (hi < a || lo > b) out.push([lo, hi]);
    else {
      if (lo < a) out.push([lo, a - 1]);
      if (hi > b) out.push([b + 1, hi]);
    }
  }
  return out;
}

/**
 * Astral ranges as blocks of (high surrogates, low surrogates): each block
 * matches a high surrogate in its range followed by a low surrogate in its
 * set. Each high surrogate has one block, shared with its neighbours when
 * they take the same lows: the fewer blocks, the fewer alternatives.
 */
function _surrogateBlocks(astral: readonly Range[]): Array<[Range, CodePointSet]> {
  const lows = new Map<number, Range[]>();
  const add = (h: number, l1: number, l2: number) => {
    const ls = lows.get(h);
    if (ls === undefined) lows.set(h, [[l1, l2]]);
    else ls.push([l1, l2]);
  };
  for (const [lo, hi] of astral) {
    const [h1, l1] = _pair(lo);
    const [h2, l2] = _pair(hi);
    if (h1 === h2) add(h1, l1, l2);
    else {
      add(h1, l1, 0xdfff);
      for (let h = h1 + 1; h < h2; h++) add(h, 0xdc00, 0xdfff);
      add(h2, 0xdc00, l2);
    }
  }
  const blocks: Array<[Range, CodePointSet, string]> = [];
  for (const [h, ls] of [...lows].sort((a, b) => a[0] - b[0])) {
    const set = normalize(ls);
    const key = set.join(" ");
    const last = blocks[blocks.length - 1];
    if (last !== undefined && last[2] === key && last[0][1] + 1 === h) last[0] = [last[0][0], h];
    else blocks.push([[h, h], set, key]);
  }
  return blocks.map(([his, los]) => [his, los]);
}

function _pair(cp: number): [number, number] {
  const v = cp - 0x10000;
  return [0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff)];
}

/** One code unit in `units`. */
function _units(units: CodePointSet): string {
  if (units.length === 1 && units[0]![0] === units[0]![1]) return _escape(units[0]![0]);
  return _class(units);
}

function _class(ranges: readonly Range[]): string {
  let s = "[";
  for (const [lo, hi] of ranges) {
    s += _escape(lo);
    if (hi === lo + 1) s += _escape(hi);
    else if (hi > lo) s += `-${_escape(hi)}`;
  }
  return `${s}]`;
}

function _escape(cu: number): string {
  // Letters, digits and punctuation that mean nothing in a pattern or a class.
  if (
    (cu >= 0x30 && cu <= 0x39) || (cu >= 0x41 && cu <= 0x5a) || (cu >= 0x61 && cu <= 0x7a) ||
    " !\"#%&',/:;<=>@_`~".includes(String.fromCharCode(cu))
  ) {
    return String.fromCharCode(cu);
  }
  if (cu <= 0xff) return `\\x${cu.toString(16).padStart(2, "0")}`;
  return `\\u${cu.toString(16).padStart(4, "0")}`;
}

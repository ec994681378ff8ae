/**
 * Tests of code point sets: range arithmetic, case folding (ASCII shortcut
 * and Unicode table agree), Unicode properties read from V8, and the UTF-16
 * patterns, checked by matching every kind of code point they must or must
 * not match.
 */

import assert from "node:assert/strict";
import {
  caseFold,
  type CodePointSet,
  complement,
  has,
  MAX_CODE_POINT,
  normalize,
  unicodeProperty,
  union,
  utf16Pattern,
} from "./code_point_set.ts";

Deno.test("ranges: normalize merges overlapping and adjacent ones; complement and has", () => {
  assert.deepEqual(normalize([[5, 9], [1, 3], [4, 4], [20, 18], [8, 12]]), [[1, 12]]);
  assert.deepEqual(union([[1, 2]], [[4, 5]], [[3, 3]]), [[1, 5]]);
  assert.deepEqual(complement([[0, 9], [11, 20]]), [[10, 10], [21, MAX_CODE_POINT]]);
  assert.deepEqual(complement([]), [[0, MAX_CODE_POINT]]);
  assert.deepEqual(complement(complement([[3, 7]])), [[3, 7]]);
  const set = normalize([[1, 3], [10, 10], [0x10000, 0x10ffff]]);
  assert.ok(has(set, 2) && has(set, 10) && has(set, 0x10400));
  assert.ok(!has(set, 0) && !has(set, 4) && !has(set, 11));
});

Deno.test("caseFold adds the simple case folding orbit of each member", () => {
  const k: CodePointSet = [[0x6b, 0x6b]];
  assert.deepEqual(caseFold(k), [[0x4b, 0x4b], [0x6b, 0x6b], [0x212a, 0x212a]]);
  // Past ASCII the Unicode table answers; it agrees on k.
  const kAndE = caseFold([[0x6b, 0x6b], [0xe9, 0xe9]]);
  for (const cp of [0x4b, 0x6b, 0x212a, 0xc9, 0xe9]) assert.ok(has(kAndE, cp), cp.toString(16));
  assert.ok(!has(kAndE, 0x65));
  const sigma = caseFold([[0x3c3, 0x3c3]]);
  assert.deepEqual(sigma, [[0x3a3, 0x3a3], [0x3c2, 0x3c3]]);
  // Dotted capital I has no simple folding; dotless i folds to nothing either.
  assert.deepEqual(caseFold([[0x130, 0x130]]), [[0x130, 0x130]]);
  assert.deepEqual(caseFold([[0x131, 0x131]]), [[0x131, 0x131]]);
  assert.deepEqual(caseFold([[0x31, 0x39]]), [[0x31, 0x39]]);
});

Deno.test("unicodeProperty reads V8's tables once; unknown names are undefined", () => {
  const lu = unicodeProperty("Lu")!;
  assert.ok(has(lu, 0x41) && has(lu, 0x3a9) && has(lu, 0x10400));
  assert.ok(!has(lu, 0x61));
  assert.equal(unicodeProperty("Lu"), lu);
  const greek = unicodeProperty("Script=Greek")!;
  assert.ok(has(greek, 0x3b1) && !has(greek, 0x61));
  assert.equal(unicodeProperty("NoSuchProperty"), undefined);
  assert.equal(unicodeProperty("L}|x"), undefined);
});

Deno.test("utf16Pattern matches one member, code points above U+FFFF as surrogate pairs", () => {
  const full = (set: CodePointSet, bmpText = false) =>
    new RegExp(`^${utf16Pattern(set, bmpText)}$`);
  assert.equal(utf16Pattern([[0x61, 0x61]]), "a");
  assert.equal(utf16Pattern([[0x2e, 0x2e]]), "\\x2e");
  assert.equal(utf16Pattern([]), "[]");
  const aToC = full([[0x61, 0x63]]);
  assert.ok(aToC.test("b") && !aToC.test("d"));
  const astral = full([[0x1f600, 0x1f64f]]);
  assert.ok(astral.test("\u{1f610}") && !astral.test("\u{1f650}") && !astral.test("\ud83d"));
  const wide = normalize([[0x61, 0x61], [0x10000, 0x10010], [0x10400, 0x10400], [
    0x20000,
    0x2a6df,
  ]]);
  const wideRe = full(wide);
  for (const cp of [0x61, 0x10005, 0x10400, 0x20000, 0x2a6df]) {
    assert.ok(wideRe.test(String.fromCodePoint(cp)), cp.toString(16));
  }
  for (const cp of [0x62, 0x10011, 0x10401, 0x2a6e0]) {
    assert.ok(!wideRe.test(String.fromCodePoint(cp)), cp.toString(16));
  }
  // For text without surrogate pairs, several astral blocks are left out; the BMP stays.
  assert.equal(utf16Pattern(wide, true), "a");
  assert.equal(utf16Pattern([[0x1f600, 0x1f600]], true), utf16Pattern([[0x1f600, 0x1f600]]));
  // Surrogates are never members: decoded text holds none, and a pair is one code point.
  const any = full([[0, MAX_CODE_POINT]]);
  assert.ok(any.test("\u{10ffff}") && any.test("\0") && !any.test("\ud800") && !any.test("\udc80"));
});

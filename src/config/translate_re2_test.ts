/**
 * Tests of the RE2 to JavaScript translation: each RE2 construct matched in
 * full against texts it must and must not match (as RE2 would), through both
 * translated patterns (for any text and for text without surrogate pairs),
 * compiled for V8's linear-time engine whenever the translation says it can
 * be; then the patterns RE2 refuses and the one remora refuses (`\C`), and
 * the decoding of request bytes.
 */

import assert from "node:assert/strict";
import { re2Input, translateRe2 } from "./translate_re2.ts";
import { LINEAR_REGEX } from "./validate_fields.ts";

/** A full-match tester for `pattern`, checking that both translations agree. */
function re2(pattern: string): (text: string) => boolean {
  const t = translateRe2(pattern);
  if (typeof t === "string") assert.fail(`${JSON.stringify(pattern)} refused: ${t}`);
  const flags = LINEAR_REGEX ? "l" : "";
  const full = new RegExp(`^(?:${t.source})$`, flags);
  const bmp = new RegExp(`^(?:${t.bmpSource})$`, flags);
  return (text) => {
    const got = full.test(text);
    if (!/[\ud800-\udfff]/.test(text)) assert.equal(bmp.test(text), got, `bmpSource on ${text}`);
    return got;
  };
}

function check(pattern: string, yes: readonly string[], no: readonly string[]): void {
  const test = re2(pattern);
  for (const s of yes) {
    assert.ok(test(s), `${JSON.stringify(pattern)} should match ${JSON.stringify(s)}`);
  }
  for (const s of no) {
    assert.ok(!test(s), `${JSON.stringify(pattern)} should not match ${JSON.stringify(s)}`);
  }
}

function refused(pattern: string, reason: RegExp): void {
  const t = translateRe2(pattern);
  assert.equal(typeof t, "string", `${JSON.stringify(pattern)} should be refused`);
  assert.match(t as string, reason, pattern);
}

Deno.test("\\A and \\z anchor the text; RE2 has no \\Z", () => {
  // JavaScript reads \z as the letter z.
  check("/z/a\\z", ["/z/a"], ["/z/az", "/z/a\n"]);
  check("\\A/a", ["/a"], ["A/a"]);
  check("a\\z|b", ["a", "b"], ["az"]);
  refused("/a\\Z", /invalid escape sequence: \\Z/);
});

Deno.test("POSIX classes inside brackets, negated with [:^...:]", () => {
  check("/posix/[[:alpha:]]+", ["/posix/abc", "/posix/XyZ"], ["/posix/ab1", "/posix/", "/posix/é"]);
  const classes: Array<[string, string, string]> = [
    ["digit", "7", "a"],
    ["alnum", "b", "_"],
    ["upper", "Q", "q"],
    ["lower", "q", "Q"],
    ["space", "\v", "a"],
    ["punct", "~", "a"],
    ["xdigit", "F", "g"],
    ["word", "_", "-"],
    ["blank", "\t", "\n"],
    ["cntrl", "\x7f", " "],
    ["graph", "!", " "],
    ["print", " ", "\t"],
    ["ascii", "\x00", "é"],
  ];
  for (const [name, member, other] of classes) {
    check(`[[:${name}:]]`, [member], [other]);
    check(`[[:^${name}:]]`, [other], [member]);
  }
  check("[^[:digit:]x]", ["a"], ["1", "x"]);
  check("[[:digit:][:upper:]_]+", ["A1_"], ["a"]);
  // Outside brackets it is an ordinary class of ':', 'a', 'l', 'p', 'h'.
  check("[:alpha:]", [":", "h"], ["b"]);
  refused("[[:alfa:]]", /unknown POSIX class: \[:alfa:\]/);
});

Deno.test("flag groups: a leading (?i), scoped (?i:...), (?-i), (?s), (?m) and (?U)", () => {
  // JavaScript refuses (?i) with "Invalid group".
  check("(?i)/api/.*", ["/api/x", "/API/x", "/Api/"], ["/apx/", "/ap"]);
  check("(?i:ab)c", ["abc", "ABc", "aBc"], ["abC"]);
  check("a(?i)b|c", ["aB", "C"], ["AB"]);
  check("(?i)a(?-i)b", ["Ab"], ["AB"]);
  check("(?i)a(?-i:b)c", ["AbC"], ["ABC"]);
  check("(a(?i)b)c", ["aBc"], ["aBC"]);
  check("(?i)[a-c]+", ["AbC"], ["d"]);
  check("(?i)[^a]", ["b"], ["a", "A"]);
  // (?s): . matches \n; without it, everything else, \r included.
  check(".", ["\r", "é"], ["\n"]);
  check("(?s).", ["\n"], []);
  check("(?s:a.)b.", ["a\nbc"], ["a\nb\n"]);
  // (?m): ^ and $ at line boundaries; the values matched never hold a line break (HTTP forbids
  // it), so they are the text's anchors.
  check("(?m)^ab$", ["ab"], ["xab", "abx"]);
  check("(?m)a$\\n^b", [], ["a\nb"]);
  check("a$\\n^b", [], ["a\nb"]);
  check("(?m)a$.b", [], ["a\rb"]);
  // (?U) swaps greedy and lazy; a full match is the same either way.
  check("(?U)a+b*?", ["aab", "a"], ["b"]);
  check("(?im-s:A.)", ["a\u212a"], ["a\n"]);
  refused("(?x)a", /invalid or unsupported Perl syntax: \(\?x/);
  refused("(?i-)a", /invalid or unsupported Perl syntax/);
  refused("(?#note)a", /invalid or unsupported Perl syntax/);
});

Deno.test("(?i) folds case as RE2 does: Unicode simple case folding", () => {
  check("(?i)k", ["k", "K", "\u212a"], ["x"]);
  check("(?i)s", ["s", "S", "\u017f"], []);
  check("(?i)σ", ["σ", "Σ", "ς"], []);
  check("(?i)é", ["É"], ["e"]);
  // Full folding (ß to ss) is not simple folding.
  check("(?i)straße", ["STRAẞE", "straße"], ["STRASSE", "strasse"]);
  check("(?i)\\w", ["\u212a", "\u017f"], ["é"]);
  check("(?i)\\W", ["!"], ["\u212a"]);
  check("(?i)[[:upper:]]", ["a", "\u017f"], ["1"]);
  check("(?i)\\p{Lu}", ["a", "ω"], ["1"]);
  check("(?i)\\P{Lu}", ["1"], ["a", "Ω"]);
});

Deno.test("named groups (?P<name>...) and (?<name>...)", () => {
  check("(?P<ver>v[0-9]+)/(?<rest>.*)", ["v1/x"], ["x/v1"]);
  check("(?P<a>x)(?P<a>y)", ["xy"], []);
  refused("(?P<a-b>x)", /invalid named capture group/);
  refused("(?P<a", /invalid named capture group/);
  refused("(?P=a)", /invalid or unsupported Perl syntax/);
});

Deno.test("\\Q...\\E quotes its text", () => {
  check("\\Q.*+?[](){}|^$\\E", [".*+?[](){}|^$"], ["x"]);
  check("a\\Q.b\\E+", ["a.bbb"], ["a.b.b"]);
  check("(?i)\\Qab\\E", ["AB"], []);
  check("\\Q.*", [".*"], ["ab"]);
});

Deno.test("Unicode classes: \\pL, \\p{Greek}, \\PL, \\p{^Greek}, Any", () => {
  check("\\pL+", ["héllo", "Ωmega", "日本"], ["a1", "a-b"]);
  check("\\p{Greek}+", ["αβγ", "Ω"], ["abc", "aβ"]);
  check("\\P{Greek}+", ["abc"], ["β"]);
  check("\\p{^Greek}", ["a"], ["β"]);
  check("\\P{^Greek}", ["β"], ["a"]);
  check("\\p{Nd}+", ["123", "٣"], ["½"]);
  check("\\pN+", ["½"], ["a"]);
  check("[\\p{Lu}\\d]+", ["A1", "Ω"], ["a"]);
  check("[^\\pL]", ["1"], ["a"]);
  check("\\p{Any}", ["\n", "\u{1f600}"], []);
  check("\\p{Latin}", ["é"], ["α"]);
  check("\\p{Cyrillic}\\p{Han}", ["Я字"], []);
  check("\\p{Thai}", ["ก"], ["a"]);
  // RE2's C leaves out unassigned code points.
  check("\\p{C}", ["\x07", "\u200b"], ["\u0378"]);
  // RE2 knows short category names and long script names, no aliases.
  refused("\\p{Letter}", /unknown Unicode class: \\p\{Letter\}/);
  refused("\\p{Grek}", /unknown Unicode class/);
  refused("\\p{Script=Greek}", /unknown Unicode class/);
  refused("\\pX", /unknown Unicode class: \\pX/);
  refused("\\p{L", /unknown Unicode class/);
});

Deno.test("Perl classes are ASCII, \\s without \\v; \\b is an ASCII word boundary", () => {
  check("\\d+", ["0123456789"], ["٣"]);
  check("\\w+", ["aZ0_"], ["é", "-"]);
  check("\\s+", [" \t\n\f\r"], ["\v", "\u00a0"]);
  check("\\D\\S\\W", ["a!é"], ["1 a"]);
  check("[\\d-]+", ["1-2"], ["a"]);
  check("a\\b.*", ["a b", "a"], ["ab"]);
  check("a\\B.*", ["ab"], ["a b"]);
});

Deno.test("escapes: C escapes, octal, hex, punctuation; unknown ones refused", () => {
  check("\\a\\f\\t\\n\\r\\v", ["\x07\f\t\n\r\v"], []);
  check("\\141\\060\\0", ["a0\0"], []);
  check("\\12", ["\n"], []);
  check("\\x41\\x{42}\\x{1F600}", ["AB\u{1f600}"], []);
  check("\\.\\-\\_\\/\\{", [".-_/{"], []);
  check("[\\]\\\\]+", ["]\\"], []);
  refused("\\q", /invalid escape sequence: \\q/);
  refused("\\x{110000}", /invalid escape sequence/);
  refused("\\x4", /invalid escape sequence/);
  refused("\\é", /invalid escape sequence/);
  refused("[\\b]", /invalid escape sequence: \\b/);
  refused("a\\", /trailing backslash/);
});

Deno.test("\\C (one byte) is refused: the text is matched decoded", () => {
  refused("a\\C", /\\C \(any single byte\) is not supported/);
});

Deno.test("lookaround and backreferences are refused, as RE2 has neither", () => {
  for (const p of ["(?=a)a", "(?!a)b", "(?<=a)b", "(?<!a)b"]) refused(p, /lookaround/);
  for (const p of ["(a)\\1", "\\9", "(a)\\8"]) refused(p, /backreferences/);
});

Deno.test("repetitions: counts up to 1000, lazy forms, quantified anchors; stacked ones refused", () => {
  check("a{2}", ["aa"], ["a", "aaa"]);
  check("a{2,}", ["aa", "aaaa"], ["a"]);
  check("a{2,3}?b", ["aab", "aaab"], ["ab"]);
  check("(ab){0}c", ["c"], ["abc"]);
  // Not a repetition: a literal brace, as in RE2.
  check("a{,2}", ["a{,2}"], ["aa"]);
  check("a{01}", ["a{01}"], ["a"]);
  check("{", ["{"], []);
  check("a}", ["a}"], []);
  check("x*?y+?z??", ["xyz", "y"], []);
  // RE2 lets an empty-width assertion repeat; JavaScript needs a group.
  check("^*a\\b+", ["a"], []);
  check("(a*)*", ["aa", ""], ["b"]);
  check("\u{1f600}+", ["\u{1f600}\u{1f600}"], ["\u{1f600}\ude00"]);
  refused("a{1001}", /bad repetition operator: \{1001\}/);
  refused("a{3,2}", /bad repetition operator: \{3,2\}/);
  refused("(a{100}){100}", /nested counted repetitions multiply past 1000/);
  refused("a**", /bad repetition operator: \*\*/);
  refused("a+{2}", /bad repetition operator: \+\{2\}/);
  refused("*a", /missing argument to repetition operator: \*/);
  refused("(+)", /missing argument to repetition operator: \+/);
  refused("a|*", /missing argument to repetition operator/);
  // Counts past what V8's linear engine takes (16) are written out, so that it runs them.
  assert.equal((translateRe2("a{2,3}") as { source: string }).source, "a{2,3}");
  assert.equal(
    (translateRe2("a{18,20}") as { source: string }).source,
    `${"a".repeat(18)}(?:a(?:a)?)?`,
  );
  assert.equal((translateRe2("b{17,}") as { source: string }).source, `${"b".repeat(17)}b*`);
  const many = re2("(x|y){1,64}");
  assert.equal(many("xy".repeat(32)), true);
  assert.equal(many("xy".repeat(32) + "x"), false);
  assert.equal(many(""), false);
});

Deno.test("classes: ] first is a member, - at either end, ranges by code point", () => {
  check("[]a]+", ["]a"], ["b"]);
  check("[^]a]", ["b"], ["]", "a"]);
  check("[-a]+[a-]+", ["-a-a"], ["b"]);
  check("[a-c-e]+", ["b-e"], ["d"]);
  check("[α-γ]", ["β"], ["δ"]);
  check("[\\x{1F600}-\\x{1F64F}]", ["\u{1f610}"], ["\u{1f650}", "a"]);
  check("[^a]", ["\u{1f600}", "\n"], ["a"]);
  check("[[]", ["["], []);
  refused("[a-", /missing closing \]: \[a-/);
  refused("[]", /missing closing \]/);
  refused("[z-a]", /invalid character class range: z-a/);
  refused("[a-\\d]", /invalid escape sequence: \\d/);
});

Deno.test("a code point above U+FFFF is one character, as in RE2", () => {
  check("a.b", ["a\u{1f600}b"], ["a\u{1f600}\u{1f600}b"]);
  check("..", ["\u{1f600}\u{1f600}"], ["\u{1f600}"]);
  check("[^x]{2}", ["\u{1f600}y"], ["\u{1f600}"]);
  check("\\pL", ["\u{10400}"], ["\u{1f600}"]);
  check("\\PL", ["\u{1f600}"], ["\u{10400}"]);
  check("(?i)\u{10400}", ["\u{10428}"], []);
});

Deno.test("groups must balance", () => {
  check("(a|b)(|c)", ["a", "bc"], ["ab"]);
  check("(?:)", [""], ["a"]);
  refused("(a", /missing \): \(a/);
  refused("a)", /unexpected \): a\)/);
});

Deno.test("re2Input reads a value's bytes as UTF-8, as RE2 does", () => {
  const bytes = (s: string) => String.fromCharCode(...new TextEncoder().encode(s));
  assert.equal(re2Input("/plain?a=1"), "/plain?a=1");
  assert.equal(re2Input(bytes("café")), "café");
  assert.equal(re2Input(bytes("\u{1f600}")), "\u{1f600}");
  // A byte that starts no well-formed sequence becomes a lone surrogate, which no pattern matches.
  assert.equal(re2Input("a\xffb"), "a\udcffb");
  assert.equal(re2Input("\xc3(\xc3\xa9\x80"), "\udcc3(é\udc80");
  assert.equal(re2Input("\xed\xa0\x80\xc0\x80"), "\udced\udca0\udc80\udcc0\udc80");
  const dot = re2(".");
  assert.ok(!dot("\udcff"));
  assert.ok(!re2("[^a]")("\udc80"));
  // Text already (a character above U+00FF) is left as it is.
  assert.equal(re2Input("é\u0100"), "é\u0100");
});

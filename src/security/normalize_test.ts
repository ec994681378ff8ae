/**
 * Path normalization table: what each spelling becomes (or why it is
 * refused), including every bypass spelling of /admin the issue lists, and
 * the things Istio does not normalize either (case, ";" parameters).
 */

import assert from "node:assert/strict";
import { normalizeBasePath, normalizePath } from "./normalize.ts";

const OK: Array<[raw: string, want: string]> = [
  // Already normal: returned as is.
  ["/", "/"],
  ["/admin", "/admin"],
  ["/a/b.c/d-e_f~g", "/a/b.c/d-e_f~g"],
  ["/admin?x=1&y=/../z", "/admin?x=1&y=/../z"],
  ["*", "*"],
  // Bypass spellings of /admin.
  ["/admin/", "/admin/"],
  ["//admin", "/admin"],
  ["///admin//", "/admin/"],
  ["/./admin", "/admin"],
  ["/admin/.", "/admin/"],
  ["/foo/../admin", "/admin"],
  ["/foo/bar/../../admin", "/admin"],
  ["/%61dmin", "/admin"],
  ["/%61%64%6D%69%6e", "/admin"],
  ["/admin%2F", "/admin/"],
  ["/admin%2f", "/admin/"],
  ["/%2Fadmin", "/admin"],
  ["/%5Cadmin", "/admin"],
  ["/%5cadmin%5c", "/admin/"],
  ["/\\admin", "/admin"],
  ["/foo\\..\\admin", "/admin"],
  ["/%2e/admin", "/admin"],
  ["/foo/%2E%2E/admin", "/admin"],
  ["/foo%2F..%2Fadmin", "/admin"],
  ["/foo/..", "/"],
  ["/foo/../", "/"],
  ["/admin/..?q=1", "/?q=1"],
  ["//admin?a=%2F..", "/admin?a=%2F.."],
  // Not changed (as in Istio; see docs/path_normalization.md).
  ["/ADMIN", "/ADMIN"],
  ["/admin;x", "/admin;x"],
  ["/admin;x/", "/admin;x/"],
  ["/.well-known/x", "/.well-known/x"],
  ["/a/...", "/a/..."],
  ["/a..b/c", "/a..b/c"],
  // Reserved and other encodings stay encoded, hex upper-cased; one decoding pass only.
  ["/a%3bb", "/a%3Bb"],
  ["/a%20b", "/a%20b"],
  ["/a%252Fb", "/a%252Fb"],
  ["/caf%C3%A9", "/caf%C3%A9"],
  ["/a%3F/b", "/a%3F/b"],
];

const BAD: Array<[raw: string, reason: RegExp]> = [
  ["/admin%00", /%00/],
  ["/a%2", /percent-encoding/],
  ["/a%zz", /percent-encoding "%zz"/],
  ["/a%", /percent-encoding/],
  ["/..", /above the root/],
  ["/../admin", /above the root/],
  ["/%2e%2e/admin", /above the root/],
  ["/a/../../admin", /above the root/],
  ["/a%2F..%2F..%2Fadmin", /above the root/],
  ["\\admin", /must start with/],
  ["admin", /must start with/],
  ["http://x/admin", /must start with/],
  ["", /must start with/],
  ["/a b", /invalid character/],
  ["/a\tb", /invalid character/],
  ["/caf\u00e9", /invalid character/],
  ["/a\x00b", /invalid character/],
  ["/a#frag", /fragment/],
  ["/a?q#frag", /fragment/],
];

for (const [raw, want] of OK) {
  Deno.test(`normalizePath ${JSON.stringify(raw)} → ${JSON.stringify(want)}`, () => {
    assert.deepEqual(normalizePath(raw), { ok: true, path: want });
  });
}

for (const [raw, reason] of BAD) {
  Deno.test(`normalizePath refuses ${JSON.stringify(raw)}`, () => {
    const r = normalizePath(raw);
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.reason, reason);
  });
}

Deno.test("normalizePath is idempotent on every accepted spelling", () => {
  for (const [raw] of OK) {
    const once = normalizePath(raw);
    assert.ok(once.ok);
    assert.deepEqual(normalizePath(once.path), once, raw);
  }
});

Deno.test("normalizeBasePath: Istio's default (BASE) for outbound: dot segments and unreserved escapes, %2F and // kept", () => {
  const ok = (raw: string, want: string) => {
    const r = normalizeBasePath(raw);
    assert.deepEqual(r, { ok: true, path: want }, raw);
  };
  ok("/direct", "/direct");
  ok("/x/../direct", "/direct");
  ok("/a/./b", "/a/b");
  ok("/a//b", "/a//b");
  ok("/groups/a%2fb/issues", "/groups/a%2Fb/issues");
  ok("/%7euser/%2e%2e/x", "/x");
  ok("/../a", "/a");
  ok("/a/b/..", "/a/");
  ok("/a\\b", "/a/b");
  ok("/a/../b?q=/../x", "/b?q=/../x");
  ok("*", "*");
  for (const bad of ["/a/%00", "/a/%zz", "/a#frag"]) {
    assert.equal(normalizeBasePath(bad).ok, false, bad);
  }
});

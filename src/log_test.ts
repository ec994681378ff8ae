import assert from "node:assert/strict";
import { log, printable } from "./log.ts";
import { formatConfigError } from "./config/validate.ts";

function captured(fn: () => void): string[] {
  const lines: string[] = [];
  const original = console.error;
  console.error = (s: string) => lines.push(s);
  try {
    fn();
  } finally {
    console.error = original;
  }
  return lines;
}

Deno.test("log lines cannot be forged by line breaks or terminal escapes in their text", () => {
  const forged = "a\n2026-01-01T00:00:00Z info  config reloaded \x1b[31mFAKE\x9b";
  const lines = captured(() => {
    log.warn(`config refused: ${forged}`, { name: forged, plain: "x\x1by" });
    console.error(formatConfigError({ file: forged, index: -1, path: "", message: "bad" }));
  });
  assert.equal(lines.length, 2);
  for (const l of lines) {
    for (const c of ["\n", "\r", "\x1b", "\x9b"]) assert.ok(!l.includes(c), JSON.stringify(l));
  }
  assert.match(
    lines[0]!,
    /config refused: a\\n2026-01-01T00:00:00Z info {2}config reloaded \\u001b\[31mFAKE\\u009b/,
  );
  assert.match(lines[0]!, / name="a\\n2026.*\\u001b\[31mFAKE\\u009b"/);
  assert.match(lines[0]!, / plain="x\\u001by"/);
  assert.equal(printable("plain text, no escapes"), "plain text, no escapes");
  assert.equal(printable("tab\there"), "tab\\there");
});

import assert from "node:assert/strict";
import { parseDurationMs, parseFlags } from "./flags.ts";

Deno.test("parseDurationMs reads single units and Go-style sums; anything else is undefined", () => {
  assert.equal(parseDurationMs("250ms"), 250);
  assert.equal(parseDurationMs("1.5s"), 1500);
  assert.equal(parseDurationMs("2h"), 7_200_000);
  assert.equal(parseDurationMs("1h30m"), 5_400_000);
  assert.equal(parseDurationMs("1m30s"), 90_000);
  for (const bad of ["", "10", "1d", "1h 30m", "-1s", "s", "1.s"]) {
    assert.equal(parseDurationMs(bad), undefined, bad);
  }
});

Deno.test("parseFlags: a DIR value loses its trailing slashes; / stays", () => {
  const specs = { out: { kind: "string", arg: "DIR", help: "" } } as const;
  assert.equal(parseFlags(["--out", "ca/"], specs).flags["out"], "ca");
  assert.equal(parseFlags(["--out", "ca//"], specs).flags["out"], "ca");
  assert.equal(parseFlags(["--out", "/"], specs).flags["out"], "/");
});

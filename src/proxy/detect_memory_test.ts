import assert from "node:assert/strict";
import { ServerFirstMemory } from "./detect.ts";

Deno.test("server-first memory remembers, expires and stays bounded", () => {
  let now = 0;
  const m = new ServerFirstMemory(2, 1000, () => now);
  m.remember("10.0.0.1", 3306);
  assert.ok(m.has("10.0.0.1", 3306));
  assert.ok(!m.has("10.0.0.1", 3307));
  now = 1001;
  assert.ok(!m.has("10.0.0.1", 3306), "expired");
  m.remember("a", 1);
  m.remember("b", 2);
  m.remember("c", 3);
  assert.equal(m.size, 2);
  assert.ok(!m.has("a", 1), "the oldest went first");
  assert.ok(m.has("c", 3));
});

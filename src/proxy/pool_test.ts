import assert from "node:assert/strict";
import { ConnPool } from "./pool.ts";
import type { Upstream } from "./target.ts";

Deno.test("pool: an idle connection goes back only to a request for the same address", async () => {
  const listeners = [0, 1].map(() => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const accepted: Deno.Conn[] = [];
  const serving = listeners.map(async (l) => {
    for await (const c of l) accepted.push(c);
  });
  const up = (i: number): Upstream => ({
    host: "127.0.0.1",
    port: listeners[i]!.addr.port,
    endpoint: undefined,
  });
  const pool = new ConnPool({ connectTimeoutMs: 2000 });
  try {
    const a = await pool.acquire(up(0));
    assert.equal(a.reused, false);
    pool.release(up(0), a.conn);
    const b = await pool.acquire(up(1));
    assert.equal(b.reused, false, "another port gets its own connection");
    assert.notEqual(b.conn, a.conn);
    pool.release(up(1), b.conn);
    // New Upstream objects for the same addresses find their idle connections.
    const a2 = await pool.acquire(up(0));
    const b2 = await pool.acquire(up(1));
    assert.deepEqual([a2.reused, a2.conn === a.conn], [true, true]);
    assert.deepEqual([b2.reused, b2.conn === b.conn], [true, true]);
    a2.conn.close();
    b2.conn.close();
  } finally {
    pool.closeAll();
    for (const l of listeners) l.close();
    await Promise.allSettled(serving);
    for (const c of accepted) c.close();
  }
});

/**
 * Resilience through a real `remora run`, against upstreams that fail on
 * purpose (`faulty.ts`): retries over random 503s, outlier ejection of a dead
 * endpoint and of a black hole, circuit breaking (503 UO at once instead of a
 * queue), the retry budget bounding load amplification, hedging, consistent
 * hashing, and what /config_dump and the metrics show. Every load loop is
 * bounded in count and time; assertions are about behaviour, not timings
 * (those are measured by `bench/resilience.ts`).
 */

import assert from "node:assert/strict";
import { blackHole, deadPort, type Faulty, load, meshYaml, startFaulty } from "./faulty.ts";
import { get, parseMetrics, type Remora, scrape, startRemora, sumMetric } from "./harness.ts";

const HOST = "svc.example.internal";
const CLUSTER = `outbound|80||${HOST}`;

async function withRemora(
  yaml: string,
  fn: (r: Remora, file: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-resilience-" });
  let r: Remora | undefined;
  try {
    await Deno.writeTextFile(`${dir}/mesh.yaml`, yaml);
    r = await startRemora(["--config", `${dir}/mesh.yaml`]);
    await fn(r, `${dir}/mesh.yaml`);
  } finally {
    await r?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function closeAll(ups: Array<{ close(): Promise<void> }>): Promise<void> {
  for (const u of ups) await u.close();
}

async function metric(r: Remora, name: string, labels: Record<string, string> = {}) {
  return sumMetric(parseMetrics(await scrape(r)), name, labels);
}

const UNRELATED = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: unrelated }
spec:
  hosts: [unrelated.example.internal]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.9 }]
`;

const RETRIES = { attempts: 3, retryOn: "5xx,reset,connect-failure" };

Deno.test("retries: 30% random 503s from one of three endpoints still give >= 99.5% success", async () => {
  const ups = [
    await startFaulty("a", { fail503: 0.3 }),
    await startFaulty("b"),
    await startFaulty("c"),
  ];
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: ups.map((u) => u.port),
      http: [{ route: [{ destination: { host: HOST } }], retries: RETRIES }],
    });
    await withRemora(yaml, async (r) => {
      const res = await load(r.outbound, {
        host: HOST,
        total: 900,
        concurrency: 8,
        timeoutMs: 30_000,
      });
      const ok = res.statuses.filter((s) => s === 200).length;
      assert.ok(ok / 900 >= 0.995, `success ${ok}/900`);
      assert.ok(
        (ups[0]!.attempts.get("2") ?? 0) + (ups[1]!.attempts.get("2") ?? 0) +
            (ups[2]!.attempts.get("2") ?? 0) > 0,
        "retries carry x-envoy-attempt-count: 2",
      );
      assert.ok((await metric(r, "remora_retries_total", { cluster: CLUSTER })) > 0);
    });
  } finally {
    await closeAll(ups);
  }
});

Deno.test("outlier detection: a dead endpoint is ejected and traffic shifts; /config_dump shows it", async () => {
  const ups = [await startFaulty("a"), await startFaulty("b")];
  const dead = await deadPort();
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: [dead, ...ups.map((u) => u.port)],
      trafficPolicy: {
        outlierDetection: {
          consecutive5xxErrors: 2,
          baseEjectionTime: "30s",
          maxEjectionPercent: 50,
        },
      },
    });
    await withRemora(yaml, async (r, file) => {
      const first = await load(r.outbound, {
        host: HOST,
        total: 30,
        concurrency: 1,
        timeoutMs: 20_000,
      });
      assert.ok(
        first.statuses.filter((s) => s === 503).length <= 2,
        "at most 2 failures before ejection",
      );
      const after = await load(r.outbound, {
        host: HOST,
        total: 60,
        concurrency: 4,
        timeoutMs: 20_000,
      });
      assert.deepEqual(
        new Set(after.statuses),
        new Set([200]),
        "no traffic to the ejected endpoint",
      );
      assert.deepEqual(new Set(after.upstreams), new Set(["a", "b"]));
      assert.equal(await metric(r, "remora_outlier_ejections_total", { cluster: CLUSTER }), 1);
      const dump = JSON.parse((await get(r.admin, "/config_dump")).body);
      const c = dump.clusters.find((x: { name: string }) => x.name === CLUSTER);
      assert.equal(c.policy.outlierDetection.consecutive5xx, 2);
      const ejected = c.state.outlier.find((h: { ejected: boolean }) => h.ejected);
      assert.equal(ejected.address, `127.0.0.1:${dead}`);

      // A reload that leaves this cluster as it was keeps its ejection.
      const version = dump.version;
      await Deno.writeTextFile(file, `${yaml}\n---\n${UNRELATED}`);
      const deadline = Date.now() + 10_000;
      while (JSON.parse((await get(r.admin, "/config_dump")).body).version === version) {
        assert.ok(Date.now() < deadline, "the reload within 10s");
        await new Promise((res) => setTimeout(res, 100));
      }
      const later = await load(r.outbound, {
        host: HOST,
        total: 20,
        concurrency: 2,
        timeoutMs: 20_000,
      });
      assert.deepEqual(new Set(later.statuses), new Set([200]), "still ejected after the reload");
      assert.equal(await metric(r, "remora_outlier_ejections_total", { cluster: CLUSTER }), 1);
    });
  } finally {
    await closeAll(ups);
  }
});

Deno.test("a black hole times out per try (UT), is retried elsewhere, then ejected", async () => {
  const ups = [await startFaulty("a")];
  const hole = await blackHole();
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: [hole.port, ups[0]!.port],
      trafficPolicy: {
        outlierDetection: {
          consecutiveGatewayErrors: 1,
          baseEjectionTime: "30s",
          maxEjectionPercent: 50,
        },
      },
      http: [{
        route: [{ destination: { host: HOST } }],
        retries: { attempts: 2, perTryTimeout: "200ms", retryOn: "5xx,reset,connect-failure" },
      }],
    });
    await withRemora(yaml, async (r) => {
      const res = await load(r.outbound, {
        host: HOST,
        total: 20,
        concurrency: 2,
        timeoutMs: 20_000,
      });
      assert.deepEqual(new Set(res.statuses), new Set([200]));
      assert.deepEqual(new Set(res.upstreams), new Set(["a"]));
      assert.equal(await metric(r, "remora_outlier_ejections_total", { cluster: CLUSTER }), 1);
    });
  } finally {
    await closeAll([...ups, hole]);
  }
});

Deno.test("overload: connectionPool limits answer 503 UO at once instead of queueing", async () => {
  const ups = [await startFaulty("slow", { delayMs: 400 })];
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: [ups[0]!.port],
      trafficPolicy: {
        connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } },
      },
    });
    await withRemora(yaml, async (r) => {
      const res = await load(r.outbound, {
        host: HOST,
        total: 10,
        concurrency: 10,
        timeoutMs: 10_000,
      });
      const ok = res.statuses.filter((s) => s === 200).length;
      const uo = res.statuses.filter((s) => s === 503).length;
      assert.equal(ok + uo, 10);
      assert.ok(ok >= 2 && uo >= 6, `200: ${ok}, 503: ${uo}`);
      assert.equal(res.overloaded, uo, "every refusal says x-envoy-overloaded");
      assert.ok(ups[0]!.requests <= ok, "refused requests never reached the upstream");
      const samples = parseMetrics(await scrape(r));
      assert.equal(sumMetric(samples, "remora_upstream_overflow_total", { cluster: CLUSTER }), uo);
      assert.equal(sumMetric(samples, "istio_requests_total", { response_flags: "UO" }), uo);
    });
  } finally {
    await closeAll(ups);
  }
});

Deno.test("the retry budget bounds load amplification when every request fails", async () => {
  const ups: Faulty[] = [await startFaulty("down", { fail503: 1 })];
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: [ups[0]!.port],
      http: [{
        route: [{ destination: { host: HOST } }],
        retries: { attempts: 5, retryOn: "5xx" },
      }],
    });
    await withRemora(yaml, async (r) => {
      const n = 300;
      const res = await load(r.outbound, {
        host: HOST,
        total: n,
        concurrency: 30,
        timeoutMs: 30_000,
      });
      assert.deepEqual(new Set(res.statuses), new Set([503]));
      const amplification = ups[0]!.requests / n;
      // Without a budget every request would be sent 6 times.
      assert.ok(amplification < 2, `upstream requests / client requests = ${amplification}`);
      assert.ok(
        (await metric(r, "remora_retry_overflow_total", { cluster: CLUSTER, limit: "budget" })) > 0,
      );
    });
  } finally {
    await closeAll(ups);
  }
});

Deno.test("hedging: a slow first attempt is overtaken by a hedge; the budget and metrics see it", async () => {
  const ups = [
    await startFaulty("a", { slowPct: 20, slowMs: 1000 }),
    await startFaulty("b", { slowPct: 20, slowMs: 1000 }),
  ];
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: ups.map((u) => u.port),
      annotations: { "remora.dev/hedge-delay": "50ms" },
      http: [{ route: [{ destination: { host: HOST } }] }],
    });
    await withRemora(yaml, async (r) => {
      const res = await load(r.outbound, {
        host: HOST,
        total: 100,
        concurrency: 4,
        timeoutMs: 20_000,
      });
      assert.deepEqual(new Set(res.statuses), new Set([200]));
      const samples = parseMetrics(await scrape(r));
      assert.ok(sumMetric(samples, "remora_hedges_total", { cluster: CLUSTER }) > 0);
      assert.ok(sumMetric(samples, "remora_hedge_wins_total", { cluster: CLUSTER }) > 0);
      const hedged = (ups[0]!.attempts.get("2") ?? 0) + (ups[1]!.attempts.get("2") ?? 0);
      assert.ok(hedged > 0, "hedges carry x-envoy-attempt-count: 2");
    });
  } finally {
    await closeAll(ups);
  }
});

Deno.test("consistentHash by header keeps a user on one endpoint", async () => {
  const ups = [await startFaulty("a"), await startFaulty("b"), await startFaulty("c")];
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: ups.map((u) => u.port),
      trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: "x-user" } } },
    });
    await withRemora(yaml, async (r) => {
      const res = await load(r.outbound, {
        host: HOST,
        total: 90,
        concurrency: 3,
        timeoutMs: 10_000,
        headers: (i) => ({ "x-user": `user-${i % 9}` }),
      });
      const byUser = new Map<number, Set<string>>();
      // Requests finish out of order across workers: compare per user by index mod 9 of each worker's sequence.
      res.upstreams.forEach((u) => assert.ok(["a", "b", "c"].includes(u)));
      for (let i = 0; i < 9; i++) {
        const seen = new Set<string>();
        for (let k = 0; k < 5; k++) {
          const one = await load(r.outbound, {
            host: HOST,
            total: 1,
            concurrency: 1,
            timeoutMs: 5_000,
            headers: () => ({ "x-user": `user-${i}` }),
          });
          seen.add(one.upstreams[0]!);
        }
        byUser.set(i, seen);
      }
      for (const [i, seen] of byUser) assert.equal(seen.size, 1, `user-${i} saw ${[...seen]}`);
      assert.ok(new Set([...byUser.values()].map((s) => [...s][0])).size > 1, "users spread");
    });
  } finally {
    await closeAll(ups);
  }
});

Deno.test("hedging: a client that leaves has both attempts' upstream connections closed", async () => {
  // Two endpoints that accept and never answer; each counts connections that were closed.
  const holes = [0, 1].map(() => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const state = { accepted: 0, closed: 0 };
    const serving = (async () => {
      for await (const c of l) {
        state.accepted++;
        (async () => {
          const buf = new Uint8Array(4096);
          while ((await c.read(buf)) !== null) { /* requests are never answered */ }
        })().catch(() => {}).finally(() => {
          state.closed++;
          c.close();
        });
      }
    })().catch(() => {});
    return { l, state, serving, port: (l.addr as Deno.NetAddr).port };
  });
  try {
    const yaml = meshYaml({
      host: HOST,
      ports: holes.map((h) => h.port),
      annotations: { "remora.dev/hedge-delay": "50ms" },
      http: [{ route: [{ destination: { host: HOST } }] }],
    });
    await withRemora(yaml, async (r) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: r.outbound });
      await c.write(
        new TextEncoder().encode(`GET http://${HOST}/x HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`),
      );
      // Past the hedge delay, so both attempts are out; the client then leaves.
      for (let i = 0; i < 50 && holes.some((h) => h.state.accepted === 0); i++) {
        await new Promise((ok) => setTimeout(ok, 20));
      }
      assert.deepEqual(holes.map((h) => h.state.accepted), [1, 1], "the attempt and its hedge");
      c.close();
      // The client is checked on after half a second of waiting: both upstreams are let go.
      for (let i = 0; i < 100 && holes.some((h) => h.state.closed === 0); i++) {
        await new Promise((ok) => setTimeout(ok, 20));
      }
      assert.deepEqual(holes.map((h) => h.state.closed), [1, 1]);
    });
  } finally {
    for (const h of holes) {
      h.l.close();
      await h.serving;
    }
  }
});

/**
 * Resilience measurements through a real `remora run` against upstreams that
 * fail on purpose (tests/integration/faulty.ts), each scenario with and
 * without the feature, printed as one table. Bounded: every scenario sends a
 * fixed number of requests within a time limit, on 127.0.0.1 only.
 *
 *   deno run -A bench/resilience.ts
 */

import {
  blackHole,
  deadPort,
  type Faulty,
  load,
  meshYaml,
  percentile,
  startFaulty,
} from "../tests/integration/faulty.ts";
import { type Remora, startRemora } from "../tests/integration/harness.ts";

const HOST = "svc.example.internal";

async function withRemora<T>(yaml: string, fn: (r: Remora) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "remora-bench-" });
  await Deno.writeTextFile(`${dir}/mesh.yaml`, yaml);
  const r = await startRemora(["--config", `${dir}/mesh.yaml`]);
  try {
    return await fn(r);
  } finally {
    await r.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const rows: string[][] = [];
const row = (...cells: Array<string | number>) => rows.push(cells.map(String));
const pct = (n: number, d: number) => `${((100 * n) / d).toFixed(2)}%`;
const ms = (x: number) => `${x.toFixed(1)} ms`;
const route = (
  extra: Record<string, unknown> = {},
) => [{ route: [{ destination: { host: HOST } }], ...extra }];

// 1. Retries: 30% random 503s from one of three endpoints.
{
  const ups = [
    await startFaulty("a", { fail503: 0.3 }),
    await startFaulty("b"),
    await startFaulty("c"),
  ];
  for (const retries of [undefined, { attempts: 3, retryOn: "5xx" }]) {
    const yaml = meshYaml({
      host: HOST,
      ports: ups.map((u) => u.port),
      http: route(retries ? { retries } : {}),
    });
    const res = await withRemora(
      yaml,
      (r) => load(r.outbound, { host: HOST, total: 3000, concurrency: 16, timeoutMs: 60_000 }),
    );
    const ok = res.statuses.filter((s) => s === 200).length;
    row(
      "30% 503 on 1 of 3",
      retries ? "retries 3" : "no retries",
      `success ${pct(ok, res.statuses.length)}`,
      `p99 ${ms(percentile(res.latenciesMs, 99))}`,
    );
  }
  for (const u of ups) await u.close();
}

// 2. A dead endpoint and a black hole among three, outlier detection on/off.
{
  const ups = [await startFaulty("a"), await startFaulty("b")];
  const hole = await blackHole();
  const dead = await deadPort();
  for (
    const od of [undefined, {
      consecutiveGatewayErrors: 2,
      baseEjectionTime: "30s",
      maxEjectionPercent: 67,
    }]
  ) {
    const yaml = meshYaml({
      host: HOST,
      ports: [dead, hole.port, ...ups.map((u) => u.port)],
      ...(od ? { trafficPolicy: { outlierDetection: od } } : {}),
      http: route({
        retries: { attempts: 2, perTryTimeout: "100ms", retryOn: "5xx,connect-failure,reset" },
      }),
    });
    const res = await withRemora(
      yaml,
      (r) => load(r.outbound, { host: HOST, total: 2000, concurrency: 16, timeoutMs: 60_000 }),
    );
    const ok = res.statuses.filter((s) => s === 200).length;
    row(
      "dead + black hole of 4",
      od ? "outlier detection" : "no outlier detection",
      `success ${pct(ok, res.statuses.length)}`,
      `p50 ${ms(percentile(res.latenciesMs, 50))} p99 ${ms(percentile(res.latenciesMs, 99))}`,
    );
  }
  for (const u of ups) await u.close();
  await hole.close();
}

// 3. Overload: a saturated upstream (4 at once, 10 ms each: 400 req/s) offered 64 concurrent clients.
{
  const up = await startFaulty("slow", { delayMs: 10, capacity: 4 });
  for (
    const cp of [undefined, { tcp: { maxConnections: 4 }, http: { http1MaxPendingRequests: 4 } }]
  ) {
    const yaml = meshYaml({
      host: HOST,
      ports: [up.port],
      ...(cp ? { trafficPolicy: { connectionPool: cp } } : {}),
    });
    const res = await withRemora(
      yaml,
      (r) => load(r.outbound, { host: HOST, total: 2000, concurrency: 64, timeoutMs: 60_000 }),
    );
    const okLat = res.latenciesMs.filter((_, i) => res.statuses[i] === 200);
    const uoLat = res.latenciesMs.filter((_, i) => res.statuses[i] === 503);
    row(
      "saturated upstream, 64 clients",
      cp ? "maxConnections 4, pending 4" : "no limits",
      `200: ${okLat.length} p99 ${ms(percentile(okLat, 99))}`,
      uoLat.length === 0 ? "no 503 UO" : `503 UO: ${uoLat.length} p99 ${ms(percentile(uoLat, 99))}`,
    );
  }
  await up.close();
}

// 4. Retry budget: the upstream fails 100%, attempts 5; budget default vs effectively off.
{
  for (const budget of [undefined, { percent: 100, minRetryConcurrency: 100000 }]) {
    const up: Faulty = await startFaulty("down", { fail503: 1 });
    const yaml = meshYaml({
      host: HOST,
      ports: [up.port],
      ...(budget ? { trafficPolicy: { retryBudget: budget } } : {}),
      http: route({ retries: { attempts: 5, retryOn: "5xx" } }),
    });
    const n = 2000;
    await withRemora(
      yaml,
      (r) => load(r.outbound, { host: HOST, total: n, concurrency: 32, timeoutMs: 60_000 }),
    );
    row(
      "upstream fails 100%, attempts 5",
      budget ? "budget off (100%, floor 100000)" : "default budget (20%, floor 3)",
      `upstream/client requests ${(up.requests / n).toFixed(2)}`,
      "",
    );
    await up.close();
  }
}

// 5. Hedging against a slow tail: 5% of requests take 250 ms.
{
  const ups = [
    await startFaulty("a", { slowPct: 5, slowMs: 250 }),
    await startFaulty("b", { slowPct: 5, slowMs: 250 }),
  ];
  for (const hedge of [undefined, "20ms"]) {
    const yaml = meshYaml({
      host: HOST,
      ports: ups.map((u) => u.port),
      http: route(),
      ...(hedge ? { annotations: { "remora.dev/hedge-delay": hedge } } : {}),
    });
    const before = ups[0]!.requests + ups[1]!.requests;
    const n = 2000;
    const res = await withRemora(
      yaml,
      (r) => load(r.outbound, { host: HOST, total: n, concurrency: 8, timeoutMs: 60_000 }),
    );
    const sent = ups[0]!.requests + ups[1]!.requests - before;
    row(
      "5% of requests +250 ms",
      hedge ? `hedge after ${hedge}` : "no hedging",
      `p50 ${ms(percentile(res.latenciesMs, 50))} p99 ${ms(percentile(res.latenciesMs, 99))}`,
      `upstream/client ${(sent / n).toFixed(2)}`,
    );
  }
  for (const u of ups) await u.close();
}

const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join(" | "));

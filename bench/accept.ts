/**
 * What finding an accepted connection's descriptor costs (`originalDst`,
 * which every accepted connection goes through), with N other sockets open.
 * Usage: deno run -A bench/accept.ts [N=1000]
 * Opens N/2 loopback connection pairs, then accepts 20 more one at a time,
 * each closed and released before the next, as a sidecar under churn does.
 */
import { fdProbes, originalDst, releaseConn } from "../src/net/ffi.ts";

const n = Number(Deno.args[0] ?? 1000);
if (!(n >= 0)) throw new Error(`usage: deno run -A bench/accept.ts [N], got "${Deno.args[0]}"`);
const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const port = (l.addr as Deno.NetAddr).port;
const keep: Deno.Conn[] = [];
for (let i = 0; i < n / 2; i++) {
  const c = Deno.connect({ hostname: "127.0.0.1", port });
  keep.push(await l.accept(), await c);
}
const times: number[] = [];
for (let i = 0; i < 20; i++) {
  const c = Deno.connect({ hostname: "127.0.0.1", port });
  const s = await l.accept();
  const t0 = performance.now();
  originalDst(s);
  times.push(performance.now() - t0);
  s.close();
  releaseConn(s);
  (await c).close();
}
times.sort((a, b) => a - b);
console.log(
  `${n} other sockets open: originalDst median ${times[10]!.toFixed(3)} ms, ` +
    `slowest ${
      times[19]!.toFixed(3)
    } ms (the first: a full scan); ${fdProbes()} probes for 20 accepts`,
);
for (const c of keep) c.close();
l.close();

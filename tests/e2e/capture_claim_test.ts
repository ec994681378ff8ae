/**
 * Who owns a pod's capture rules, for real: a `remora run --capture` owns
 * the capture of its network namespace while it lives. A second `run
 * --capture`, or `remora iptables install|uninstall`, in that namespace is
 * refused and changes nothing; the owner keeps capturing; a sidecar in
 * another namespace is not blocked; and when the owner is killed (SIGKILL,
 * as a crashed container) a restarted one claims the capture and replaces
 * the stale rules.
 *
 * Pods are network namespaces made by tests/e2e/pods.ts (pod names
 * claim-*); traffic goes from pod claim-p to an HTTP server in pod claim-q
 * and to loopback only. Pods are destroyed in `finally`.
 */

import assert from "node:assert/strict";
import {
  createPods,
  hostExec,
  type Pods,
  prepareDenoDir,
  PYTHON3,
  remoraArgv,
  REPO_ROOT,
  skipUnlessNetns,
  type Spawned,
} from "./pods.ts";

const ignore = skipUnlessNetns("capture ownership tests", [
  "ip",
  "setpriv",
  "curl",
  "iptables-save",
  "iptables-restore",
  "python3",
]);

/** Flags giving a second sidecar in the same pod ports of its own. */
const OTHER_PORTS = [
  "--outbound-port",
  "32301",
  "--inbound-port",
  "32306",
  "--admin-port",
  "32300",
  "--stats-port",
  "32320",
  "--health-port",
  "32321",
];

/** Sums the values of the series of `metric` whose labels include all of `labels`. */
function sum(scrape: string, metric: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of scrape.split("\n")) {
    if (!line.startsWith(metric + "{")) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      total += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return total;
}

interface World {
  pods: Pods;
  /** `remora run --capture --workload NAME ...flags` in `pod`, as uid 1337 with CAP_NET_ADMIN. */
  sidecar(pod: string, name: string, flags?: string[]): Spawned;
  /** `remora iptables ...args` in `pod`, as root. */
  iptables(pod: string, args: string[]): ReturnType<Pods["exec"]>;
  /** iptables-save of `pod`, without comments and counters. */
  save(pod: string): Promise<string>;
  /** An HTTP GET from pod claim-p's app to claim-q's server: "q" when it went through. */
  get(): Promise<string>;
  /** Requests that the sidecar whose stats port is `statsPort` saw leave as `workload`. */
  seen(statsPort: number, workload: string): Promise<number>;
}

/** Pods claim-p (with the sidecars) and claim-q (an HTTP server); destroyed after `fn`. */
async function withWorld(fn: (w: World) => Promise<void>): Promise<void> {
  const denoDir = await prepareDenoDir();
  const pods = await createPods(["claim-p", "claim-q"]);
  const www = await Deno.makeTempDir({ prefix: "remora-e2e-claim-" });
  try {
    await Deno.writeTextFile(`${www}/name.txt`, "q");
    await hostExec(["chmod", "-R", "a+rX", www], { check: true });
    const q = pods.pod("claim-q");
    await pods.spawn("claim-q", [
      PYTHON3,
      "-m",
      "http.server",
      "--bind",
      "0.0.0.0",
      "8080",
      "--directory",
      www,
    ]).waitForOutput("Serving HTTP");
    const curl = (pod: string, url: string) =>
      pods.exec(pod, ["curl", "-sS", "--max-time", "10", url], { timeoutMs: 15_000 });
    await fn({
      pods,
      sidecar: (pod, name, flags = []) =>
        pods.spawn(pod, remoraArgv(["run", "--capture", "--workload", name, ...flags]), {
          uid: 1337,
          caps: ["net_admin"],
          env: { DENO_DIR: denoDir },
          cwd: REPO_ROOT,
        }),
      iptables: (pod, args) =>
        pods.exec(pod, remoraArgv(["iptables", ...args]), { cwd: REPO_ROOT }),
      async save(pod) {
        const r = await pods.exec(pod, ["iptables-save"], { check: true });
        return r.stdout.split("\n").filter((l) => !l.startsWith("#"))
          .map((l) => l.replace(/\[\d+:\d+\]/, "[0:0]")).join("\n");
      },
      async get() {
        const r = await curl("claim-p", `http://${q.ip}:8080/name.txt`);
        return r.code === 0 ? r.stdout : `failed: ${r.stderr.trim()}`;
      },
      async seen(statsPort, workload) {
        const r = await curl("claim-p", `http://127.0.0.1:${statsPort}/stats/prometheus`);
        assert.equal(r.code, 0, r.stderr);
        return sum(r.stdout, "istio_requests_total", {
          reporter: "source",
          source_workload: workload,
        });
      },
    });
  } finally {
    await pods.destroy();
    await Deno.remove(www, { recursive: true });
  }
}

/** The exit status of `s` once it exits by itself, or a failure after `ms` (it is stopped). */
async function exited(s: Spawned, ms: number): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms));
  const status = await Promise.race([s.status, late]);
  clearTimeout(timer);
  if (status !== undefined) return status;
  await s.stop(2_000);
  throw new Error(`Process in pod ${s.pod} did not exit in ${ms} ms:\n${s.output()}`);
}

Deno.test({
  name:
    "capture ownership: a second run --capture and iptables install/uninstall are refused while the owner lives; it keeps capturing",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withWorld(async (w) => {
      const owner = w.sidecar("claim-p", "owner");
      // Another namespace's sidecar is not blocked by this one's claim.
      const neighbour = w.sidecar("claim-q", "neighbour");
      await owner.waitForOutput(/capture rules installed/, 60_000);
      await neighbour.waitForOutput(/capture rules installed/, 60_000);
      const rules = await w.save("claim-p");
      assert.match(rules, /-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001/);
      const ownerNamed = new RegExp(
        `remora run --capture \\(pid ${owner.pid}\\) owns the capture of this network namespace \\(net:\\[\\d+\\]\\)`,
      );

      const second = w.sidecar("claim-p", "second", OTHER_PORTS);
      const st = await exited(second, 60_000);
      assert.equal(st.code, 1, second.output());
      assert.match(second.output(), /remora: cannot start with --capture: /);
      assert.match(second.output(), ownerNamed);
      assert.match(second.output(), /stop it first .*or run this sidecar without --capture/);
      assert.doesNotMatch(second.output(), /listening on/, "it did not even listen");
      assert.equal(await w.save("claim-p"), rules);

      for (const args of [["install", "--exclude-inbound-ports", "22"], ["uninstall"]]) {
        const r = await w.iptables("claim-p", args);
        assert.equal(r.code, 1, `iptables ${args[0]}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, new RegExp(`iptables ${args[0]} refused: `));
        assert.match(r.stderr, ownerNamed);
        assert.match(r.stderr, /nothing was changed/);
        assert.equal(await w.save("claim-p"), rules);
      }
      // Reading the rules is no change: status and print still answer.
      assert.equal((await w.iptables("claim-p", ["status"])).code, 0);

      // The owner still captures: the app's plain request goes through it.
      const before = await w.seen(15020, "owner");
      assert.equal(await w.get(), "q");
      assert.equal(await w.seen(15020, "owner"), before + 1);

      await owner.stop(10_000);
      assert.match(owner.output(), /capture rules removed/);
      assert.doesNotMatch(await w.save("claim-p"), /REMORA_/);
      await neighbour.stop(10_000);
    });
  },
});

Deno.test({
  name:
    "capture ownership: after the owner is killed (SIGKILL) a new run --capture claims the capture and replaces its stale rules",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withWorld(async (w) => {
      const first = w.sidecar("claim-p", "first");
      await first.waitForOutput(/capture rules installed/, 60_000);
      assert.equal(await w.get(), "q");
      assert.equal(await w.seen(15020, "first"), 1);
      // The claim is held while it lives...
      const refused = await w.iptables("claim-p", ["install"]);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, new RegExp(`\\(pid ${first.pid}\\) owns the capture`));

      // ...and its death ends it, leaving its rules behind as a crash does.
      Deno.kill(first.pid, "SIGKILL");
      await exited(first, 10_000);
      assert.doesNotMatch(first.output(), /capture rules removed/);
      assert.match(await w.save("claim-p"), /--to-ports 15001/);
      assert.match(await w.get(), /^failed: /, "stale rules send the app to a dead port");

      const restarted = w.sidecar("claim-p", "restarted", OTHER_PORTS);
      await restarted.waitForOutput(/capture rules installed/, 60_000);
      const rules = await w.save("claim-p");
      assert.match(rules, /-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 32301/);
      assert.doesNotMatch(rules, /--to-ports 15001/);
      assert.equal(await w.get(), "q");
      assert.equal(await w.seen(32320, "restarted"), 1);

      await restarted.stop(10_000);
      assert.match(restarted.output(), /capture rules removed/);
      assert.doesNotMatch(await w.save("claim-p"), /REMORA_/);
    });
  },
});

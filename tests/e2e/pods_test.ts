/**
 * Self-test of the pods harness: pods reach each other over the bridge, a
 * process runs as uid 1337 in a pod, and destroy() leaves nothing behind.
 */

import assert from "node:assert/strict";
import {
  cleanupStale,
  createPods,
  hostExec,
  prepareDenoDir,
  PYTHON3,
  REPO_ROOT,
  skipUnlessNetns,
} from "./pods.ts";

const ignore = skipUnlessNetns("pods harness tests", ["ip", "setpriv", "curl", "python3"]);

async function namespaces(): Promise<string[]> {
  const r = await hostExec(["ip", "netns", "list"], { check: true });
  return r.stdout.split("\n").map((l) => l.split(" ")[0]!).filter((n) => n !== "");
}

Deno.test({
  name: "pods: two pods reach each other over the bridge; curl an http.server in the other pod",
  ignore,
  async fn() {
    await cleanupStale();
    const pods = await createPods(["a", "b"]);
    try {
      const a = pods.pod("a");
      const b = pods.pod("b");
      assert.match(a.ip, /^10\.250\.\d+\.10$/);
      assert.match(b.ip, /^10\.250\.\d+\.11$/);
      const server = pods.spawn("b", [
        PYTHON3,
        "-m",
        "http.server",
        "--bind",
        b.ip,
        "18080",
        "--directory",
        `${REPO_ROOT}/tests/e2e`,
      ]);
      await server.waitForOutput("Serving HTTP");
      const r = await pods.exec("a", [
        "curl",
        "-sS",
        "--max-time",
        "5",
        `http://${b.ip}:18080/pods.ts`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /createPods/);
      // IPv6 too, and no route leaves the pod.
      const r6 = await pods.exec("a", [
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `http://[${b.ip6}]:18080/`,
      ]);
      assert.notEqual(r6.code, 0, "the server listens on IPv4 only");
      const routes = await pods.exec("a", ["ip", "route", "show", "default"], { check: true });
      assert.equal(routes.stdout.trim(), "");
      const st = await server.stop();
      assert.ok(st.signal === "SIGTERM" || st.code !== 0 || st.success);
    } finally {
      await pods.destroy();
    }
  },
});

Deno.test({
  name: "pods: a process runs as uid 1337 in a pod, deno included",
  ignore,
  async fn() {
    const pods = await createPods(["solo"]);
    try {
      const id = await pods.exec("solo", ["id", "-u"], { uid: 1337, check: true });
      assert.equal(id.stdout.trim(), "1337");
      const DENO_DIR = await prepareDenoDir();
      const remora = pods.spawn(
        "solo",
        [Deno.execPath(), "run", "-A", `${REPO_ROOT}/main.ts`, "version"],
        { uid: 1337, env: { DENO_DIR }, cwd: REPO_ROOT },
      );
      const st = await remora.status;
      assert.equal(st.code, 0, remora.output());
      assert.match(remora.output(), /remora \d/);
    } finally {
      await pods.destroy();
    }
  },
});

Deno.test({
  name: "pods: destroy() kills processes, deletes every namespace, and can be called twice",
  ignore,
  async fn() {
    const pods = await createPods(["x", "y", "z"], { subnet: 77 });
    const ours = [pods.bridgeNs, ...pods.pods.map((p) => p.ns)];
    let sleeper;
    try {
      assert.deepEqual(pods.pods.map((p) => p.ip), [
        "10.250.77.10",
        "10.250.77.11",
        "10.250.77.12",
      ]);
      for (const ns of ours) assert.ok((await namespaces()).includes(ns), ns);
      sleeper = pods.spawn("z", ["sleep", "60"]);
      // A refused connection proves z answered across the bridge (ping may be absent).
      const connect = "import socket; s = socket.socket(); s.settimeout(3); " +
        "print(s.connect_ex(('10.250.77.12', 1)))";
      const refused = await pods.exec("x", [PYTHON3, "-c", connect], { check: true });
      assert.equal(refused.stdout.trim(), "111", "ECONNREFUSED from pod z");
    } finally {
      await pods.destroy();
      await pods.destroy();
    }
    const st = await sleeper!.status;
    assert.equal(st.success, false);
    const left = await namespaces();
    for (const ns of ours) assert.ok(!left.includes(ns), `${ns} is left behind`);
  },
});

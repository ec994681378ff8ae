/**
 * End-to-end transparent capture: pods are network namespaces on a bridge,
 * each with its app and a remora running as uid 1337 behind iptables rules
 * that `remora iptables install` put there (as an init container would). The
 * apps do nothing special; real clients (curl, python sockets) show traffic
 * going through the caller's outbound sidecar and the callee's inbound one,
 * proved by each side's metrics.
 *
 * Pods: a (client), b and c (servers), d (server outside the mesh for the
 * excluded-CIDR check, and the `run --capture` scenario).
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

const ignore = skipUnlessNetns("capture end-to-end tests", [
  "ip",
  "setpriv",
  "curl",
  "iptables",
  "python3",
]);

const PEER = `${REPO_ROOT}/tests/testdata/tcp_peer.py`;

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

function stripCounters(save: string): string {
  return save.split("\n").filter((l) => !l.startsWith("#")).map((l) =>
    l.replace(/\[\d+:\d+\]/, "[0:0]")
  )
    .join("\n");
}

interface World {
  pods: Pods;
  vip: string;
  sidecars: Map<string, Spawned>;
  scrape(pod: string): Promise<string>;
}

async function startWorld(): Promise<World> {
  const denoDir = await prepareDenoDir();
  const pods = await createPods(["a", "b", "c", "d"]);
  const sidecars = new Map<string, Spawned>();
  try {
    const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => pods.pod(n));
    const vip = b!.ip.replace(/\.\d+$/, ".200");
    const www = await Deno.makeTempDir({ prefix: "remora-e2e-www-" });
    await Deno.chmod(www, 0o755);
    for (const p of [b!, c!, d!]) {
      await Deno.mkdir(`${www}/${p.name}`);
      await Deno.writeTextFile(`${www}/${p.name}/name.txt`, p.name);
      await hostExec(["chmod", "-R", "a+rX", www]);
      for (const port of ["8080", "7777"]) {
        pods.spawn(p.name, [
          PYTHON3,
          "-m",
          "http.server",
          "--bind",
          "0.0.0.0",
          port,
          "--directory",
          `${www}/${p.name}`,
        ])
          .waitForOutput("Serving HTTP").catch(() => {});
      }
    }
    const greet = pods.spawn("b", [PYTHON3, PEER, "greet-server", "0.0.0.0", "2525", "b"]);
    const greet3306 = pods.spawn("b", [PYTHON3, PEER, "greet-server", "0.0.0.0", "3306", "b"]);
    const echo = pods.spawn("b", [PYTHON3, PEER, "echo-server", "0.0.0.0", "9000"]);
    await Promise.all([greet, greet3306, echo].map((s) => s.waitForOutput("listening on")));
    // TLS servers on b and c whose certificates name them, for SNI routing.
    for (const p of [b!, c!]) {
      const dir = `${www}/${p.name}`;
      await hostExec([
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        `/CN=${p.name}`,
        "-keyout",
        `${dir}/tls.key`,
        "-out",
        `${dir}/tls.crt`,
      ], { check: true });
      await hostExec(["chmod", "-R", "a+rX", dir]);
      pods.spawn(p.name, [
        "openssl",
        "s_server",
        "-accept",
        "8443",
        "-cert",
        `${dir}/tls.crt`,
        "-key",
        `${dir}/tls.key`,
        "-www",
      ]);
    }

    // A's routes: a VIP in the pods' subnet, split 80/20 over b and c.
    const config = `${www}/a-mesh.yaml`;
    await Deno.writeTextFile(
      config,
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web }
spec:
  hosts: [web.mesh.internal]
  addresses: [${vip}]
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: 8080 }]
  resolution: STATIC
  endpoints:
    - { address: ${b!.ip}, labels: { app: b, version: v1 } }
    - { address: ${c!.ip}, labels: { app: c, version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: web }
spec:
  host: web.mesh.internal
  subsets: [{ name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: [web.mesh.internal]
  http:
    - route:
        - { destination: { host: web.mesh.internal, subset: v1 }, weight: 80 }
        - { destination: { host: web.mesh.internal, subset: v2 }, weight: 20 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: tls }
spec:
  hosts: [tls.mesh.internal]
  ports: [{ number: 8443, name: tls, protocol: TLS }]
  resolution: STATIC
  endpoints: [{ address: ${c!.ip}, labels: { app: c } }]
`,
    );
    await hostExec(["chmod", "a+r", config]);

    // Rules first (root, like an init container), then the sidecar as uid 1337.
    for (const p of [a!, b!, c!]) {
      const extra = p.name === "a"
        ? ["--exclude-outbound-ports", "7777", "--exclude-outbound-cidrs", `${d!.ip}/32`]
        : [];
      const r = await pods.exec(p.name, remoraArgv(["iptables", "install", ...extra]), {
        cwd: REPO_ROOT,
      });
      assert.equal(r.code, 0, `iptables install in ${p.name}: ${r.stderr}`);
      const args = [
        "run",
        "--workload",
        p.name,
        "--log-level",
        "debug",
        "--detection-timeout",
        "300ms",
      ];
      if (p.name === "a") args.push("--config", config);
      const s = pods.spawn(p.name, remoraArgv(args), {
        uid: 1337,
        env: { DENO_DIR: denoDir },
        cwd: REPO_ROOT,
      });
      sidecars.set(p.name, s);
    }
    await Promise.all(
      [...sidecars.values()].map((s) => s.waitForOutput(/health listening/, 60_000)),
    );
    return {
      pods,
      vip,
      sidecars,
      async scrape(pod: string) {
        const r = await pods.exec(pod, [
          "curl",
          "-sS",
          "--max-time",
          "5",
          "http://127.0.0.1:15020/stats/prometheus",
        ]);
        assert.equal(r.code, 0, r.stderr);
        return r.stdout;
      },
    };
  } catch (e) {
    await pods.destroy();
    throw e;
  }
}

Deno.test({
  name: "capture: pods talk through their sidecars without knowing it",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const w = await startWorld();
    const { pods } = w;
    const [b, c, d] = ["b", "c", "d"].map((n) => pods.pod(n));
    const curl = (pod: string, ...args: string[]) =>
      pods.exec(pod, ["curl", "-sS", "--max-time", "10", ...args]);
    try {
      await t.step(
        "a plain curl from a to b goes through a's outbound and b's inbound sidecar",
        async () => {
          const r = await curl("a", `http://${b!.ip}:8080/name.txt`);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, "b");
          const atA = await w.scrape("a");
          assert.ok(
            sum(atA, "istio_requests_total", {
              reporter: "source",
              source_workload: "a",
              response_code: "200",
            }) >= 1,
            atA,
          );
          const atB = await w.scrape("b");
          assert.ok(
            sum(atB, "istio_requests_total", {
              reporter: "destination",
              destination_workload: "b",
              response_code: "200",
            }) >= 1,
            atB,
          );
        },
      );

      await t.step("a ServiceEntry VIP splits 80/20 over endpoints in two pods", async () => {
        const n = 400;
        const urls = Array.from({ length: n }, () => `http://${w.vip}/name.txt`);
        const r = await pods.exec("a", ["curl", "-sS", "--max-time", "60", "-w", "\\n", ...urls], {
          timeoutMs: 90_000,
        });
        assert.equal(r.code, 0, r.stderr);
        const names = r.stdout.split("\n").filter((l) => l !== "");
        assert.equal(names.length, n);
        const toB = names.filter((x) => x === "b").length;
        const toC = names.filter((x) => x === "c").length;
        assert.equal(toB + toC, n);
        // 80/20 over 400 requests: one standard deviation is 2 points.
        assert.ok(Math.abs((100 * toB) / n - 80) <= 8, `b got ${toB} of ${n}`);
        const atA = await w.scrape("a");
        assert.ok(
          sum(atA, "istio_requests_total", { destination_service: "web.mesh.internal" }) >= n,
          atA,
        );
      });

      await t.step(
        "a client that connects to a port declared HTTP and speaks late is still served as HTTP",
        async () => {
          const before = sum(await w.scrape("a"), "istio_requests_total", {
            destination_service: "web.mesh.internal",
          });
          // Silent for twice the detection timeout (300ms), as a pooled client that connects early.
          const late = [
            "import socket, time",
            `s = socket.create_connection(("${w.vip}", 80))`,
            "time.sleep(0.6)",
            "s.sendall(b'GET /name.txt HTTP/1.1\\r\\nHost: web.mesh.internal\\r\\nConnection: close\\r\\n\\r\\n')",
            "data = b''",
            "while True:",
            "    chunk = s.recv(4096)",
            "    if not chunk: break",
            "    data += chunk",
            "print(data.decode().split('\\r\\n')[0])",
          ].join("\n");
          const r = await pods.exec("a", [PYTHON3, "-c", late]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout.trim(), "HTTP/1.1 200 OK");
          // Counted as an HTTP request of the service, not relayed as opaque TCP.
          const after = sum(await w.scrape("a"), "istio_requests_total", {
            destination_service: "web.mesh.internal",
          });
          assert.equal(after, before + 1);
        },
      );

      await t.step("a server-first protocol works, and its destination is remembered", async () => {
        for (let i = 0; i < 2; i++) {
          const r = await pods.exec("a", [PYTHON3, PEER, "greet-client", b!.ip, "2525"]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout.trim(), "220 b ready\n250 b got HELO x");
        }
        assert.match(w.sidecars.get("a")!.output(), /server-first.*2525|2525.*server-first/);
        // A well-known server-first port skips detection altogether.
        const r = await pods.exec("a", [PYTHON3, PEER, "greet-client", b!.ip, "3306"]);
        assert.equal(r.stdout.trim(), "220 b ready\n250 b got HELO x", r.stderr);
      });

      await t.step(
        "an opaque binary protocol is relayed byte for byte, with TCP metrics",
        async () => {
          const r = await pods.exec("a", [PYTHON3, PEER, "echo-client", b!.ip, "9000", "300000"]);
          assert.equal(r.code, 0, r.stdout + r.stderr);
          assert.equal(r.stdout.trim(), "echo ok 300000");
          const atA = await w.scrape("a");
          assert.ok(
            sum(atA, "istio_tcp_connections_opened_total", { reporter: "source" }) >= 1,
            atA,
          );
          assert.ok(sum(atA, "istio_tcp_sent_bytes_total", { reporter: "source" }) >= 300000, atA);
          assert.ok(
            sum(atA, "istio_tcp_received_bytes_total", { reporter: "source" }) >= 300000,
            atA,
          );
          const atB = await w.scrape("b");
          assert.ok(
            sum(atB, "istio_tcp_connections_closed_total", { reporter: "destination" }) >= 1,
            atB,
          );
        },
      );

      await t.step("TLS passes through untouched, routed by its SNI", async () => {
        const hello = async (sni: string) => {
          const r = await pods.exec("a", [
            "openssl",
            "s_client",
            "-connect",
            `${b!.ip}:8443`,
            "-servername",
            sni,
            "-brief",
          ], { stdin: "", timeoutMs: 15_000 });
          return r.stdout + r.stderr;
        };
        // The name of a ServiceEntry routes to its endpoint (c), whatever address was dialled.
        assert.match(await hello("tls.mesh.internal"), /Peer certificate: CN ?= ?c/);
        // Any other name goes where the app sent it (b).
        assert.match(await hello("other.example"), /Peer certificate: CN ?= ?b/);
        const atA = await w.scrape("a");
        assert.ok(
          sum(atA, "istio_tcp_connections_opened_total", {
            destination_service: "tls.mesh.internal",
          }) >= 1,
        );
      });

      await t.step("an excluded port and an excluded CIDR bypass a's sidecar", async () => {
        const before = sum(await w.scrape("a"), "istio_requests_total", { reporter: "source" });
        const p = await curl("a", `http://${c!.ip}:7777/name.txt`);
        assert.equal(p.stdout, "c", p.stderr);
        const x = await curl("a", `http://${d!.ip}:8080/name.txt`);
        assert.equal(x.stdout, "d", x.stderr);
        const after = sum(await w.scrape("a"), "istio_requests_total", { reporter: "source" });
        assert.equal(after, before, "a's sidecar saw none of them");
      });

      await t.step("uninstall restores iptables-save exactly", async () => {
        const fresh = await createPods(["x"]);
        try {
          const before = stripCounters((await fresh.exec("x", ["iptables-save"])).stdout);
          const i = await fresh.exec("x", remoraArgv(["iptables", "install"]), { cwd: REPO_ROOT });
          assert.equal(i.code, 0, i.stderr);
          assert.match((await fresh.exec("x", ["iptables-save"])).stdout, /REMORA_OUTPUT/);
          const u = await fresh.exec("x", remoraArgv(["iptables", "uninstall"]), {
            cwd: REPO_ROOT,
          });
          assert.equal(u.code, 0, u.stderr);
          assert.equal(stripCounters((await fresh.exec("x", ["iptables-save"])).stdout), before);
        } finally {
          await fresh.destroy();
        }
      });

      await t.step(
        "run --capture installs the rules on start and removes them on SIGTERM",
        async () => {
          const before = stripCounters((await pods.exec("d", ["iptables-save"])).stdout);
          const denoDir = await prepareDenoDir();
          const s = pods.spawn("d", remoraArgv(["run", "--capture", "--workload", "d"]), {
            uid: 1337,
            caps: ["net_admin"],
            env: { DENO_DIR: denoDir },
            cwd: REPO_ROOT,
          });
          await s.waitForOutput(/capture rules installed/, 60_000);
          assert.match((await pods.exec("d", ["iptables-save"])).stdout, /-j REMORA_OUTPUT/);
          const r = await curl("d", `http://${b!.ip}:8080/name.txt`);
          assert.equal(r.stdout, "b", r.stderr);
          const atD = await w.scrape("d");
          assert.ok(
            sum(atD, "istio_requests_total", { reporter: "source", source_workload: "d" }) >= 1,
            atD,
          );
          await s.stop(10_000);
          assert.match(s.output(), /capture rules removed/);
          assert.equal(stripCounters((await pods.exec("d", ["iptables-save"])).stdout), before);
        },
      );

      await t.step(
        "IPv6: original destinations on both listeners, through run --capture --ipv6",
        async () => {
          const v6 = await createPods(["e", "f"]);
          try {
            const denoDir = await prepareDenoDir();
            const f = v6.pod("f");
            const www = await Deno.makeTempDir({ prefix: "remora-e2e-www6-" });
            await Deno.writeTextFile(`${www}/name.txt`, "f");
            await hostExec(["chmod", "-R", "a+rX", www]);
            await v6.spawn("f", [
              PYTHON3,
              "-m",
              "http.server",
              "--bind",
              "::",
              "8080",
              "--directory",
              www,
            ])
              .waitForOutput("Serving HTTP");
            const sidecars = ["e", "f"].map((n) =>
              v6.spawn(n, remoraArgv(["run", "--capture", "--ipv6", "--workload", n]), {
                uid: 1337,
                caps: ["net_admin"],
                env: { DENO_DIR: denoDir },
                cwd: REPO_ROOT,
              })
            );
            await Promise.all(
              sidecars.map((s) => s.waitForOutput(/capture rules installed/, 60_000)),
            );
            const r = await v6.exec("e", [
              "curl",
              "-sS",
              "--max-time",
              "10",
              `http://[${f.ip6}]:8080/name.txt`,
            ]);
            assert.equal(r.stdout, "f", r.stderr);
            const scrape = async (pod: string) =>
              (await v6.exec(pod, [
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:15020/stats/prometheus",
              ]))
                .stdout;
            const atE = await scrape("e");
            assert.ok(
              sum(atE, "istio_requests_total", { reporter: "source", source_workload: "e" }) >= 1,
              atE,
            );
            const atF = await scrape("f");
            assert.ok(
              sum(atF, "istio_requests_total", {
                reporter: "destination",
                destination_workload: "f",
              }) >= 1,
              atF,
            );
            await Promise.all(sidecars.map((s) => s.stop(10_000)));
            assert.doesNotMatch((await v6.exec("e", ["ip6tables-save"])).stdout, /REMORA_/);
          } finally {
            await v6.destroy();
          }
        },
      );
    } finally {
      await pods.destroy();
    }
  },
});

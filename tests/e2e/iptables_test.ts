/**
 * `remora iptables` for real: each test makes its own network namespace,
 * runs remora's CLI inside it (`ip netns exec NS deno run -A main.ts
 * iptables ...`) and compares `iptables-save` before and after. The
 * namespace is deleted in `finally`, even when the test fails. Skipped when
 * not root or when ip/iptables are absent; `print` runs anywhere.
 */

import assert from "node:assert/strict";
import {
  type CaptureOptions,
  defaultCaptureOptions,
  renderRules,
} from "../../src/capture/iptables.ts";
import {
  createPods,
  deleteNamespace,
  type ExecOptions,
  type ExecResult,
  hostExec,
  makeNamespace,
  nsExec,
  prepareDenoDir,
  PYTHON3,
  remoraArgv,
  REPO_ROOT,
  skipUnlessNetns,
} from "./pods.ts";

const ignore = skipUnlessNetns("iptables namespace tests", [
  "ip",
  "iptables-save",
  "iptables-restore",
]);
const ignore6 = ignore ||
  skipUnlessNetns("ip6tables namespace tests", ["ip6tables-save", "ip6tables-restore"]);

async function withNamespace(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = await makeNamespace("ipt");
  try {
    await fn(ns);
  } finally {
    await deleteNamespace(ns);
  }
}

/** `remora iptables ...args` inside `ns`. */
function remora(ns: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return nsExec(ns, remoraArgv(["iptables", ...args]), { cwd: REPO_ROOT, ...opts });
}

async function ok(ns: string, args: string[]): Promise<ExecResult> {
  const r = await remora(ns, args);
  assert.equal(r.code, 0, `remora iptables ${args.join(" ")}: ${r.stderr}`);
  return r;
}

/** iptables-save (or ip6tables-save) without comments and counters. */
async function save(ns: string, family: 4 | 6 = 4): Promise<string> {
  const r = await nsExec(ns, [family === 4 ? "iptables-save" : "ip6tables-save"], { check: true });
  return r.stdout.split("\n").filter((l) => !l.startsWith("#")).join("\n")
    .replaceAll(/\[\d+:\d+\]/g, "[0:0]");
}

async function sh(ns: string, script: string): Promise<void> {
  await nsExec(ns, ["sh", "-ec", script], { check: true });
}

/** Rules of others, in nat and filter, that install and uninstall must not touch. */
const OTHERS = `
iptables -t filter -A INPUT -p tcp --dport 22 -j ACCEPT
iptables -t filter -N FOO
iptables -t filter -A FOO -s 10.9.9.9 -j DROP
iptables -t filter -A OUTPUT -j FOO
iptables -t nat -A PREROUTING -p tcp --dport 99 -j REDIRECT --to-ports 100
iptables -t nat -A OUTPUT -p udp --dport 53 -j RETURN
iptables -t nat -N OTHER
iptables -t nat -A OTHER -d 10.8.0.0/16 -j RETURN
iptables -t nat -A OUTPUT -j OTHER
iptables -t nat -A POSTROUTING -o eth9 -j MASQUERADE
iptables -t nat -N REMORA_MINE
iptables -t nat -A REMORA_MINE -d 10.7.0.0/16 -j RETURN
iptables -t nat -A OUTPUT -j REMORA_MINE
`;

Deno.test({
  name: "iptables install: remora's chains and jumps, exactly the printed rules",
  ignore,
  async fn() {
    await withNamespace(async (ns) => {
      const flags = [
        "--include-inbound-ports",
        "80,8080",
        "--exclude-outbound-cidrs",
        "10.0.0.0/8",
      ];
      const r = await ok(ns, ["install", ...flags]);
      assert.match(r.stdout, /capture rules installed \(IPv4\)/);
      const after = (await save(ns)).split("\n");
      for (
        const c of ["REMORA_INBOUND", "REMORA_IN_REDIRECT", "REMORA_OUTPUT", "REMORA_REDIRECT"]
      ) {
        assert.ok(after.includes(`:${c} - [0:0]`), c);
      }
      const printed = (await ok(ns, ["print", ...flags])).stdout.split("\n");
      const rules = printed.filter((l) => l.startsWith("-A "));
      assert.ok(rules.includes("-A PREROUTING -p tcp -j REMORA_INBOUND"));
      assert.ok(rules.includes("-A OUTPUT -p tcp -j REMORA_OUTPUT"));
      // iptables-save prints exactly the printed rule lines, in the same order.
      assert.deepEqual(after.filter((l) => l.startsWith("-A ")), rules);
      assert.equal((await remora(ns, ["status"])).code, 0);
    });
  },
});

Deno.test({
  name: "iptables install twice changes nothing; other flags replace remora's rules",
  ignore,
  async fn() {
    await withNamespace(async (ns) => {
      await sh(ns, OTHERS);
      await ok(ns, ["install"]);
      const once = await save(ns);
      await ok(ns, ["install"]);
      assert.equal(await save(ns), once);

      await ok(ns, ["install", "--include-inbound-ports", "80", "--proxy-uid", "2000"]);
      const other = (await save(ns)).split("\n");
      assert.ok(other.includes("-A REMORA_INBOUND -p tcp -m tcp --dport 80 -j REMORA_IN_REDIRECT"));
      assert.ok(!other.includes("-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT"));
      assert.ok(!other.some((l) => l.includes("--uid-owner 1337")));
      assert.equal(other.filter((l) => l.includes("-j REMORA_INBOUND")).length, 1);
      assert.equal(other.filter((l) => l.includes("-j REMORA_OUTPUT")).length, 1);

      await ok(ns, ["install"]);
      assert.equal(await save(ns), once);
    });
  },
});

Deno.test({
  name: "iptables uninstall restores iptables-save exactly, others' rules untouched and in order",
  ignore,
  async fn() {
    // A fresh namespace: iptables-nft had no nat table before install.
    await withNamespace(async (ns) => {
      const before = await save(ns);
      await ok(ns, ["install"]);
      assert.notEqual(await save(ns), before);
      const r = await ok(ns, ["uninstall"]);
      assert.match(r.stdout, /capture rules removed/);
      assert.equal(await save(ns), before);
      assert.equal((await remora(ns, ["status"])).code, 1);
    });
    // Rules of others in nat and filter, before and after remora's jumps.
    await withNamespace(async (ns) => {
      await sh(ns, OTHERS);
      const before = await save(ns);
      await ok(ns, ["install", "--exclude-inbound-ports", "22"]);
      await sh(ns, "iptables -t nat -A OUTPUT -p tcp --dport 7 -j RETURN");
      await ok(ns, ["uninstall"]);
      const saved = await save(ns);
      const natSection = saved.slice(saved.indexOf("*nat"));
      const nat = natSection.slice(0, natSection.indexOf("COMMIT")).split("\n")
        .filter((l) => l.startsWith("-A OUTPUT"));
      assert.deepEqual(nat, [
        "-A OUTPUT -p udp -m udp --dport 53 -j RETURN",
        "-A OUTPUT -j OTHER",
        // A user's chain that merely starts with REMORA_ is not remora's: it stays, jump and all.
        "-A OUTPUT -j REMORA_MINE",
        "-A OUTPUT -p tcp -m tcp --dport 7 -j RETURN",
      ]);
      await sh(ns, "iptables -t nat -D OUTPUT -p tcp --dport 7 -j RETURN");
      assert.equal(await save(ns), before);
    });
  },
});

Deno.test({
  name: "iptables uninstall with nothing installed exits 0 and changes nothing",
  ignore,
  async fn() {
    await withNamespace(async (ns) => {
      const fresh = await save(ns);
      await ok(ns, ["uninstall"]);
      assert.equal(await save(ns), fresh);
      await sh(ns, OTHERS);
      const before = await save(ns);
      await ok(ns, ["uninstall"]);
      await ok(ns, ["uninstall"]);
      assert.equal(await save(ns), before);
    });
  },
});

Deno.test({
  name: "iptables: a missing iptables binary is a clear error, exit 1, nothing changed",
  ignore: ignore6,
  async fn() {
    await withNamespace(async (ns) => {
      await sh(ns, OTHERS);
      const before = await save(ns);
      const before6 = await save(ns, 6);
      // PATH without /usr/sbin: no iptables at all.
      const r = await remora(ns, ["install"], { env: { PATH: "/usr/bin:/bin" } });
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /iptables-save: not found on PATH; install iptables \(apt-get install iptables\)/,
      );
      assert.match(r.stderr, /nothing was changed/);
      assert.equal(await save(ns), before);

      // iptables present but not ip6tables: --ipv6 fails before changing anything.
      const bin = await Deno.makeTempDir({ prefix: "remora-path-" });
      try {
        for (const b of ["iptables-save", "iptables-restore"]) {
          await Deno.symlink(`/usr/sbin/${b}`, `${bin}/${b}`);
        }
        const path = { PATH: `${bin}:/usr/bin:/bin` };
        const r6 = await remora(ns, ["install", "--ipv6"], { env: path });
        assert.equal(r6.code, 1, r6.stderr);
        assert.match(r6.stderr, /Cannot run ip6tables-save: not found on PATH/);
        assert.equal(await save(ns), before);

        // ip6tables-save but no ip6tables-restore: IPv4 is applied first, then rolled back.
        await Deno.symlink("/usr/sbin/ip6tables-save", `${bin}/ip6tables-save`);
        const rb = await remora(ns, ["install", "--ipv6"], { env: path });
        assert.equal(rb.code, 1, rb.stderr);
        assert.match(rb.stderr, /Cannot run ip6tables-restore: not found on PATH/);
        assert.match(rb.stderr, /nothing was changed/);
        assert.equal(await save(ns), before);
        assert.equal(await save(ns, 6), before6);
      } finally {
        await Deno.remove(bin, { recursive: true });
      }
    });
  },
});

Deno.test({
  name: "iptables: without CAP_NET_ADMIN a clear error, exit 1, nothing changed",
  ignore,
  async fn() {
    const capsh = (await hostExec(["sh", "-c", "command -v capsh"])).success;
    await withNamespace(async (ns) => {
      await sh(ns, OTHERS);
      const before = await save(ns);
      /** remora's CLI in the namespace without CAP_NET_ADMIN: capsh when present, else as nobody. */
      const run = async (args: string[]) => {
        const argv = remoraArgv(["iptables", ...args]);
        if (capsh) {
          const drop = ["capsh", "--drop=cap_net_admin", "--", "-c", 'exec "$@"', "sh"];
          return await nsExec(ns, [...drop, ...argv], { cwd: REPO_ROOT });
        }
        const DENO_DIR = await prepareDenoDir();
        return await nsExec(ns, argv, { uid: 65534, env: { DENO_DIR }, cwd: REPO_ROOT });
      };
      const r = await run(["install"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /needs root or CAP_NET_ADMIN/);
      assert.match(r.stderr, /Permission denied/);
      assert.match(r.stderr, /nothing was changed/);
      assert.equal(await save(ns), before);

      await ok(ns, ["install"]);
      const installed = await save(ns);
      const u = await run(["uninstall"]);
      assert.equal(u.code, 1, u.stderr);
      assert.match(u.stderr, /CAP_NET_ADMIN/);
      assert.equal(await save(ns), installed);
    });
  },
});

Deno.test({
  name: "iptables --ipv6: ip6tables rules installed and removed, IPv4 and IPv6 restored",
  ignore: ignore6,
  async fn() {
    await withNamespace(async (ns) => {
      await sh(ns, "ip6tables -t nat -A OUTPUT -p udp --dport 53 -j RETURN\n" + OTHERS);
      const before = await save(ns);
      const before6 = await save(ns, 6);
      const flags = ["--ipv6", "--exclude-outbound-cidrs", "10.0.0.0/8,fd00::/8"];
      await ok(ns, ["install", ...flags]);
      const v6 = (await save(ns, 6)).split("\n");
      assert.ok(v6.includes(":REMORA_OUTPUT - [0:0]"));
      assert.ok(v6.includes("-A REMORA_OUTPUT -d ::1/128 -j RETURN"));
      assert.ok(v6.includes("-A REMORA_OUTPUT -d fd00::/8 -j RETURN"));
      assert.ok(!v6.some((l) => l.includes("10.0.0.0")));
      assert.ok((await save(ns)).includes("-A REMORA_OUTPUT -d 10.0.0.0/8 -j RETURN"));
      const twice = await save(ns, 6);
      await ok(ns, ["install", ...flags]);
      assert.equal(await save(ns, 6), twice);
      assert.equal((await remora(ns, ["status", "--ipv6"])).code, 0);
      await ok(ns, ["uninstall", "--ipv6"]);
      assert.equal(await save(ns), before);
      assert.equal(await save(ns, 6), before6);
    });
    // A fresh namespace: no nat table in either family before, none after.
    await withNamespace(async (ns) => {
      const [before, before6] = [await save(ns), await save(ns, 6)];
      await ok(ns, ["install", "--ipv6"]);
      await ok(ns, ["uninstall", "--ipv6"]);
      assert.equal(await save(ns), before);
      assert.equal(await save(ns, 6), before6);
    });
  },
});

Deno.test({
  name: "iptables: rules rejected by iptables-restore are reported with its stderr",
  ignore,
  async fn() {
    await withNamespace(async (ns) => {
      const before = await save(ns);
      const bin = await Deno.makeTempDir({ prefix: "remora-path-" });
      try {
        await Deno.writeTextFile(
          `${bin}/iptables-restore`,
          "#!/bin/sh\ncat >/dev/null\necho 'iptables-restore: line 9 failed' >&2\nexit 1\n",
        );
        await Deno.chmod(`${bin}/iptables-restore`, 0o755);
        const r = await remora(ns, ["install"], {
          env: { PATH: `${bin}:${Deno.env.get("PATH")}` },
        });
        assert.equal(r.code, 1, r.stderr);
        assert.match(
          r.stderr,
          /iptables-restore rejected the rules \(exit 1\): iptables-restore: line 9 failed/,
        );
        assert.match(r.stderr, /\d+ {2}-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001/);
        assert.equal(await save(ns), before);
      } finally {
        await Deno.remove(bin, { recursive: true });
      }
    });
  },
});

Deno.test("iptables print: exactly renderRules, no root needed; bad flags exit 2 naming the flag", async () => {
  const run = (args: string[]) => hostExec(remoraArgv(["iptables", ...args]), { cwd: REPO_ROOT });
  const flags = [
    "--include-inbound-ports",
    "80,443",
    "--exclude-inbound-ports=22",
    "--exclude-outbound-cidrs",
    "10.0.0.0/8,fd00::/8",
    "--exclude-outbound-ports",
    "25",
    "--proxy-gid",
    "1337",
    "--ipv6",
  ];
  const opts: CaptureOptions = {
    ...defaultCaptureOptions(),
    proxyGid: 1337,
    includeInboundPorts: [80, 443],
    excludeInboundPorts: [22],
    excludeOutboundCidrs: ["10.0.0.0/8", "fd00::/8"],
    excludeOutboundPorts: [25],
    ipv6: true,
  };
  const r = await run(["print", ...flags]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, renderRules(opts, 4) + renderRules(opts, 6));
  const plain = await run(["print"]);
  assert.equal(plain.stdout, renderRules(defaultCaptureOptions(), 4));

  const bad: Array<[string[], RegExp]> = [
    [
      ["print", "--include-inbound-ports", "15006"],
      /--include-inbound-ports: 15006 is the inbound port/,
    ],
    [
      ["print", "--include-inbound-ports", "80,x"],
      /--include-inbound-ports takes ports 1\.\.65535, got "x"/,
    ],
    [["print", "--include-inbound-ports", "*,80"], /--include-inbound-ports takes \* alone/],
    [["print", "--inbound-port", "abc"], /--inbound-port takes a port/],
    [
      ["print", "--exclude-outbound-cidrs", "10.0.0.0/40"],
      /--exclude-outbound-cidrs: "10.0.0.0\/40" is not/,
    ],
    [["print", "--exclude-outbound-cidrs", "fd00::/8"], /needs --ipv6/],
    [["print", "--proxy-uid", "-5"], /--proxy-uid takes an id/],
    [["install", "--bogus"], /Unknown flag: --bogus/],
    [["uninstall", "--inbound-port", "1"], /Unknown flag: --inbound-port/],
    [["frobnicate"], /Unknown iptables command: frobnicate/],
  ];
  for (const [args, re] of bad) {
    const b = await run(args);
    assert.equal(b.code, 2, `${args.join(" ")}: ${b.stderr}`);
    assert.match(b.stderr, re);
  }
  for (const sub of ["install", "uninstall", "print", "status"]) {
    const h = await run([sub, "--help"]);
    assert.equal(h.code, 0);
    assert.match(h.stdout, new RegExp(`Usage: remora iptables ${sub}`));
  }
  assert.match((await run(["--help"])).stdout, /install .*\n.*uninstall/);
});

/** Listens on each PORT=REPLY pair, answers every connection with REPLY and closes. */
const ECHO_NAME = `
import socket, sys, threading
def serve(port, reply):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(reply.encode() + b"\\n")
        c.close()
for arg in sys.argv[1:]:
    port, reply = arg.split("=")
    threading.Thread(target=serve, args=(int(port), reply), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

const ASK = "import socket, sys\n" +
  "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n" +
  "print(s.recv(100).decode().strip())";

Deno.test({
  name:
    "iptables: installed rules capture an app's traffic both ways, not the proxy's nor own ports",
  ignore: ignore || skipUnlessNetns("capture traffic test", ["python3", "setpriv"]),
  async fn() {
    const pods = await createPods(["a", "b"]);
    try {
      const b = pods.pod("b");
      const ask = async (from: string, host: string, port: number, uid?: number) => {
        const r = await pods.exec(from, [PYTHON3, "-c", ASK, host, String(port)], {
          ...(uid === undefined ? {} : { uid }),
          timeoutMs: 5_000,
        });
        return r.success ? r.stdout.trim() : `failed: ${r.stderr.trim()}`;
      };
      const install = (pod: string, flags: string[] = []) =>
        pods.exec(pod, remoraArgv(["iptables", "install", ...flags]), {
          cwd: REPO_ROOT,
          check: true,
        });
      const echoA = pods.spawn("a", [PYTHON3, "-c", ECHO_NAME, "15001=a-outbound"]);
      const echoB = pods.spawn("b", [
        PYTHON3,
        "-c",
        ECHO_NAME,
        "8080=b-app",
        "9090=b-excluded",
        "15006=b-inbound",
        "15021=b-health",
      ]);
      await Promise.all([echoA.waitForOutput("ready"), echoB.waitForOutput("ready")]);
      await install("a");
      await install("b", ["--exclude-inbound-ports", "9090"]);
      // a's app goes to a's outbound listener; a's proxy (uid 1337) goes out as is.
      assert.equal(await ask("a", b.ip, 8080), "a-outbound");
      assert.equal(await ask("a", b.ip, 8080, 1337), "b-inbound");
      // b captures inbound traffic to its app port, not to excluded or own ports.
      assert.equal(await ask("a", b.ip, 9090, 1337), "b-excluded");
      assert.equal(await ask("a", b.ip, 15021, 1337), "b-health");
      // The proxy calling its own pod's address goes to its inbound side; the app does not.
      assert.equal(await ask("b", b.ip, 8080, 1337), "b-inbound");
      assert.equal(await ask("b", b.ip, 8080), "b-app");
      // Loopback is never captured.
      assert.equal(await ask("b", "127.0.0.1", 8080), "b-app");
      await pods.exec("b", remoraArgv(["iptables", "uninstall"]), { cwd: REPO_ROOT, check: true });
      assert.equal(await ask("a", b.ip, 8080, 1337), "b-app");
    } finally {
      await pods.destroy();
    }
  },
});

Deno.test({
  name: "iptables uninstall without --ipv6 also removes what install --ipv6 put in ip6tables",
  ignore: ignore6,
  async fn() {
    await withNamespace(async (ns) => {
      const before6 = await save(ns, 6);
      await ok(ns, ["install", "--ipv6"]);
      assert.match(await save(ns, 6), /REMORA_OUTPUT/);
      const r = await ok(ns, ["uninstall"]);
      assert.match(r.stdout, /capture rules removed \(IPv4 and IPv6\)/);
      assert.equal(await save(ns, 6), before6, "no IPv6 rule left redirecting to nothing");
      const again = await ok(ns, ["uninstall"]);
      assert.match(again.stdout, /capture rules removed \(IPv4\)/);
    });
  },
});

Deno.test({
  name:
    "iptables install without --ipv6 replaces an earlier --ipv6 install whole; status shows IPv6 rules whenever there are any",
  ignore: ignore6,
  async fn() {
    await withNamespace(async (ns) => {
      const before6 = await save(ns, 6);
      await ok(ns, ["install", "--ipv6", "--exclude-inbound-ports", "22"]);
      // Without --ipv6, status still shows the IPv6 rules.
      const shown = await ok(ns, ["status"]);
      assert.match(shown.stdout, /^IPv6: installed/m);
      assert.match(shown.stdout.slice(shown.stdout.indexOf("IPv6:")), /--dport 22 -j RETURN/);

      const r = await ok(ns, ["install", "--exclude-inbound-ports", "23"]);
      assert.match(
        r.stdout,
        /capture rules installed \(IPv4\); IPv6 rules of an earlier install removed/,
      );
      assert.equal(await save(ns, 6), before6, "no IPv6 capture left with the old exclusions");
      const v4 = await save(ns);
      assert.match(v4, /--dport 23 -j RETURN/);
      assert.doesNotMatch(v4, /--dport 22 -j RETURN/);
      const now = await ok(ns, ["status"]);
      assert.doesNotMatch(now.stdout, /IPv6/);

      // A leftover part of IPv6 capture is shown too, and is not "installed".
      await ok(ns, ["install", "--ipv6"]);
      await nsExec(ns, [
        "ip6tables",
        "-t",
        "nat",
        "-D",
        "OUTPUT",
        "-p",
        "tcp",
        "-j",
        "REMORA_OUTPUT",
      ], {
        check: true,
      });
      const partly = await remora(ns, ["status"]);
      assert.equal(partly.code, 1, partly.stdout);
      assert.match(partly.stdout, /^IPv4: installed/m);
      assert.match(partly.stdout, /^IPv6: partly installed/m);
    });
  },
});

Deno.test({
  name:
    "iptables install without --ipv6 that cannot remove earlier IPv6 rules changes nothing, IPv4 included",
  ignore: ignore6,
  async fn() {
    await withNamespace(async (ns) => {
      await ok(ns, ["install", "--ipv6", "--exclude-inbound-ports", "22"]);
      const [before, before6] = [await save(ns), await save(ns, 6)];
      // ip6tables-save but no ip6tables-restore: IPv4 is applied first, then rolled back.
      const bin = await Deno.makeTempDir({ prefix: "remora-path-" });
      try {
        for (const b of ["iptables-save", "iptables-restore", "ip6tables-save"]) {
          await Deno.symlink(`/usr/sbin/${b}`, `${bin}/${b}`);
        }
        const r = await remora(ns, ["install", "--exclude-inbound-ports", "23"], {
          env: { PATH: `${bin}:/usr/bin:/bin` },
        });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /Cannot run ip6tables-restore: not found on PATH/);
        assert.match(r.stderr, /nothing was changed/);
        assert.equal(await save(ns), before);
        assert.equal(await save(ns, 6), before6);
      } finally {
        await Deno.remove(bin, { recursive: true });
      }
    });
  },
});

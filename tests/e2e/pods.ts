/**
 * End-to-end harness: "pods" as Linux network namespaces.
 *
 * `createPods(["a", "b"])` makes one namespace per pod plus a bridge
 * namespace holding a Linux bridge, joins each pod to it with a veth pair
 * (`eth0` in the pod), gives pod i the address 10.250.<n>.(i+10)/24 (and
 * fd00:250:<n>::(i+10)/64) and brings `lo` up. No default route and no route
 * leaving the namespaces is ever added: traffic stays between the pods'
 * addresses and loopback. Commands run in a pod with `ip netns exec`,
 * optionally as another uid through `setpriv` (uid 1337 for remora).
 * `destroy()` kills every process the harness started (and any other left in
 * the namespaces) and deletes the namespaces; it is safe to call twice, and
 * an unload/SIGINT/SIGTERM hook does the same if a test run dies.
 * `cleanupStale()` removes namespaces left by an earlier run that crashed.
 *
 * Needs root, `ip` (iproute2) and `setpriv` (util-linux); tests check
 * `netnsSupport()` and skip otherwise. It does not install iptables rules;
 * tests do that with `remora iptables install` inside a pod.
 */

/** The repository root (where main.ts is). */
export const REPO_ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/**
 * A python3 that any uid can run: /usr/bin/python3 when present (a pyenv
 * shim under /root is not executable for uid 1337), else python3 from PATH.
 */
export const PYTHON3: string = (() => {
  try {
    Deno.statSync("/usr/bin/python3");
    return "/usr/bin/python3";
  } catch {
    return "python3";
  }
})();

/** Namespace names this harness makes: remora-t-<pid>-<rand>-<pod> and remora-br-<pid>-<rand>. */
const _NS_RE = /^remora-(?:t|br)-(\d+)-/;

export interface ExecOptions {
  /** Run as this uid (via setpriv); gid defaults to the same number. */
  uid?: number;
  gid?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string;
  /** Kill the command after this long (default 20 s). */
  timeoutMs?: number;
  /** Throw when the command exits non-zero. */
  check?: boolean;
}

export interface ExecResult {
  code: number;
  success: boolean;
  stdout: string;
  stderr: string;
}

export interface SpawnOptions {
  uid?: number;
  gid?: number;
  /** Capabilities to keep as that uid, e.g. ["net_admin"]. */
  caps?: string[];
  env?: Record<string, string>;
  cwd?: string;
}

/** A long-running process in a pod. */
export interface Spawned {
  pod: string;
  pid: number;
  /** Everything it wrote so far, stdout and stderr interleaved (last 1 MiB). */
  output(): string;
  /** Waits until the output matches; throws with the output after `timeoutMs` (default 10 s). */
  waitForOutput(pattern: string | RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 2 s); resolves with the exit status. */
  stop(graceMs?: number): Promise<Deno.CommandStatus>;
  /** Resolves when the process has exited and its output is read. */
  readonly status: Promise<Deno.CommandStatus>;
}

export interface Pod {
  name: string;
  /** Its network namespace. */
  ns: string;
  /** Its IPv4 address on eth0. */
  ip: string;
  /** Its IPv6 address on eth0. */
  ip6: string;
}

export interface PodsOptions {
  /** n in 10.250.n.0/24 (1..254); random by default. */
  subnet?: number;
}

export interface Pods {
  pods: Pod[];
  /** The namespace holding the bridge. */
  bridgeNs: string;
  pod(name: string): Pod;
  exec(pod: string, cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(pod: string, cmd: string[], opts?: SpawnOptions): Spawned;
  destroy(): Promise<void>;
}

/** Why namespace tests cannot run here, or undefined when they can. */
export function netnsSupport(binaries: string[] = ["ip", "setpriv"]): string | undefined {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  if (Deno.uid() !== 0) return "network namespace tests need root";
  for (const b of binaries) {
    if (_which(b) === undefined) return `${b} is not installed (not found on PATH)`;
  }
  return undefined;
}

/** Logs why tests are skipped; returns true when they are (for `Deno.test({ ignore })`). */
export function skipUnlessNetns(what: string, binaries?: string[]): boolean {
  const why = netnsSupport(binaries);
  if (why !== undefined) console.warn(`skipping ${what}: ${why}`);
  return why !== undefined;
}

function _which(bin: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const st = Deno.statSync(`${dir}/${bin}`);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0) return `${dir}/${bin}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Running commands

const _dec = new TextDecoder();

/** Runs a command on the host (not in a pod); used for `ip` itself. */
export async function hostExec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [bin, ...args] = cmd;
  const child = new Deno.Command(bin!, {
    args,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    signal: AbortSignal.timeout(opts.timeoutMs ?? 20_000),
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const r = {
    code: out.code,
    success: out.success,
    stdout: _dec.decode(out.stdout),
    stderr: _dec.decode(out.stderr),
  };
  if (opts.check && !r.success) {
    throw new Error(`Command failed (exit ${r.code}): ${cmd.join(" ")}: ${r.stderr.trim()}`);
  }
  return r;
}

/** The argv that runs `cmd` in namespace `ns`, as `uid` when given. */
export function nsArgv(
  ns: string,
  cmd: string[],
  opts: { uid?: number; gid?: number; caps?: string[] } = {},
) {
  // Capabilities kept across the uid change (e.g. net_admin for iptables) go in as ambient ones.
  const caps = (opts.caps ?? []).map((c) => `+${c}`).join(",");
  const priv = opts.uid === undefined ? [] : [
    "setpriv",
    "--reuid",
    String(opts.uid),
    "--regid",
    String(opts.gid ?? opts.uid),
    "--clear-groups",
    ...(caps === "" ? [] : ["--inh-caps", caps, "--ambient-caps", caps]),
  ];
  return ["ip", "netns", "exec", ns, ...priv, ...cmd];
}

/** Runs `cmd` inside namespace `ns`. */
export function nsExec(ns: string, cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return hostExec(nsArgv(ns, cmd, opts), opts);
}

/** argv for remora's CLI: `deno run -A <repo>/main.ts ...args`. */
export function remoraArgv(args: string[]): string[] {
  return [Deno.execPath(), "run", "-A", `${REPO_ROOT}/main.ts`, ...args];
}

function _spawn(pod: string, ns: string, cmd: string[], opts: SpawnOptions): Spawned {
  const [bin, ...args] = nsArgv(ns, cmd, opts);
  const child = new Deno.Command(bin!, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
  }).spawn();
  let buf = "";
  const read = async (s: ReadableStream<Uint8Array>) => {
    const d = new TextDecoder();
    for await (const chunk of s) {
      buf += d.decode(chunk, { stream: true });
      if (buf.length > 1 << 20) buf = buf.slice(-(1 << 20));
    }
  };
  const readers = Promise.all([read(child.stdout), read(child.stderr)]);
  let exited = false;
  const status = Promise.all([child.status, readers]).then(([s]) => {
    exited = true;
    return s;
  });
  const spawned: Spawned = {
    pod,
    pid: child.pid,
    status,
    output: () => buf,
    async waitForOutput(pattern, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      const hit = () => typeof pattern === "string" ? buf.includes(pattern) : pattern.test(buf);
      while (!hit()) {
        if (exited) {
          throw new Error(`Process in pod ${pod} exited before printing ${pattern}:\n${buf}`);
        }
        if (Date.now() > deadline) {
          throw new Error(
            `Process in pod ${pod} did not print ${pattern} in ${timeoutMs} ms:\n${buf}`,
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      return buf;
    },
    async stop(graceMs = 2_000) {
      if (!exited) _kill(child, "SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await Promise.race([
        status.then(() => false),
        new Promise<boolean>((r) => timer = setTimeout(() => r(true), graceMs)),
      ]);
      clearTimeout(timer);
      if (timedOut) _kill(child, "SIGKILL");
      return await status;
    },
  };
  _live.children.add(child);
  status.finally(() => _live.children.delete(child));
  return spawned;
}

function _kill(child: Deno.ChildProcess, sig: Deno.Signal) {
  try {
    child.kill(sig);
  } catch {
    // already gone
  }
}

// ---------------------------------------------------------------------------
// Namespaces, and cleaning them up whatever happens

const _live = {
  namespaces: new Set<string>(),
  children: new Set<Deno.ChildProcess>(),
  hooked: false,
};

const _onSignal = () => {
  _cleanupSync();
  Deno.exit(130);
};

function _register(ns: string) {
  _live.namespaces.add(ns);
  if (!_live.hooked) {
    _live.hooked = true;
    Deno.addSignalListener("SIGINT", _onSignal);
    Deno.addSignalListener("SIGTERM", _onSignal);
  }
}

function _unregister(ns: string) {
  _live.namespaces.delete(ns);
  if (_live.hooked && _live.namespaces.size === 0) {
    _live.hooked = false;
    Deno.removeSignalListener("SIGINT", _onSignal);
    Deno.removeSignalListener("SIGTERM", _onSignal);
  }
}

let _unloadHooked = false;
function _hookUnload() {
  if (_unloadHooked) return;
  _unloadHooked = true;
  globalThis.addEventListener("unload", () => _cleanupSync());
}

/** Last-resort cleanup for unload and signals: synchronous. */
function _cleanupSync() {
  for (const c of _live.children) _kill(c, "SIGKILL");
  for (const ns of _live.namespaces) _deleteNamespaceSync(ns);
  _live.namespaces.clear();
  if (_denoDir !== undefined) {
    try {
      Deno.removeSync(_denoDir, { recursive: true });
    } catch {
      // gone already
    }
  }
}

function _deleteNamespaceSync(ns: string) {
  try {
    const pids = new Deno.Command("ip", { args: ["netns", "pids", ns], stderr: "null" })
      .outputSync();
    for (const p of _dec.decode(pids.stdout).split(/\s+/).filter((s) => /^\d+$/.test(s))) {
      try {
        Deno.kill(Number(p), "SIGKILL");
      } catch {
        // exited
      }
    }
    new Deno.Command("ip", { args: ["netns", "del", ns], stderr: "null" }).outputSync();
  } catch {
    // best effort
  }
}

/** Kills every process in `ns` and deletes it; no error when it does not exist. */
export async function deleteNamespace(ns: string): Promise<void> {
  const pids = await hostExec(["ip", "netns", "pids", ns]);
  for (const p of pids.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
    try {
      Deno.kill(Number(p), "SIGKILL");
    } catch {
      // exited
    }
  }
  const del = await hostExec(["ip", "netns", "del", ns]);
  if (!del.success && !/No such file|not found|Cannot remove/i.test(del.stderr)) {
    throw new Error(`Cannot delete network namespace ${ns}: ${del.stderr.trim()}`);
  }
  _unregister(ns);
}

function _rand(): string {
  return crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36).slice(0, 5);
}

/**
 * Makes an empty network namespace with `lo` up, named
 * remora-t-<pid>-<rand>[-<tag>], registered for cleanup on crash. Delete it
 * with `deleteNamespace`.
 */
export async function makeNamespace(tag?: string): Promise<string> {
  return await _addNs(`remora-t-${Deno.pid}-${_rand()}${tag === undefined ? "" : `-${tag}`}`);
}

async function _addNs(ns: string): Promise<string> {
  _hookUnload();
  await hostExec(["ip", "netns", "add", ns], { check: true });
  _register(ns);
  await hostExec(["ip", "-n", ns, "link", "set", "lo", "up"], { check: true });
  return ns;
}

/**
 * Deletes remora-t-* and remora-br-* namespaces whose creating process is
 * gone (a crashed earlier run). Namespaces of live runs are left alone.
 * Returns the names deleted.
 */
export async function cleanupStale(): Promise<string[]> {
  const list = await hostExec(["ip", "netns", "list"], { check: true });
  const deleted: string[] = [];
  for (const line of list.stdout.split("\n")) {
    const ns = line.split(" ")[0] ?? "";
    const m = _NS_RE.exec(ns);
    if (m === null) continue;
    const pid = Number(m[1]);
    // This process's own namespaces may belong to a test in another worker.
    if (pid === Deno.pid) continue;
    let alive = true;
    try {
      Deno.statSync(`/proc/${pid}`);
    } catch {
      alive = false;
    }
    if (alive) continue;
    await deleteNamespace(ns);
    deleted.push(ns);
  }
  return deleted;
}

let _staleCleaned = false;

/**
 * Makes the pods; see the module doc. The first call in a process also runs
 * `cleanupStale()`. Cleans up after itself if it fails halfway.
 */
export async function createPods(names: string[], opts: PodsOptions = {}): Promise<Pods> {
  if (!_staleCleaned) {
    _staleCleaned = true;
    await cleanupStale();
  }
  for (const n of names) {
    if (!/^[a-z0-9][a-z0-9-]{0,20}$/.test(n)) {
      throw new Error(`Pod name "${n}" must be 1..21 of a-z, 0-9 and -`);
    }
  }
  if (new Set(names).size !== names.length) throw new Error("Pod names must be unique");
  if (names.length > 200) throw new Error("At most 200 pods");
  const subnet = opts.subnet ?? 1 + (crypto.getRandomValues(new Uint8Array(1))[0]! % 254);
  if (!(Number.isInteger(subnet) && subnet >= 1 && subnet <= 254)) {
    throw new Error(`subnet must be 1..254, got ${subnet}`);
  }
  const run = `${Deno.pid}-${_rand()}`;
  const bridgeNs = `remora-br-${run}`;
  const made: string[] = [];
  const pods: Pod[] = [];
  const spawned: Spawned[] = [];
  let destroyed = false;
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all(spawned.map((s) => s.stop(500)));
    for (const ns of made.reverse()) await deleteNamespace(ns);
  };
  const ip = (...args: string[]) => hostExec(["ip", ...args], { check: true });
  try {
    made.push(await _addNs(bridgeNs));
    await ip("-n", bridgeNs, "link", "add", "br0", "type", "bridge");
    await ip("-n", bridgeNs, "link", "set", "br0", "up");
    for (const [i, name] of names.entries()) {
      const ns = await _addNs(`remora-t-${run}-${name}`);
      made.push(ns);
      const host = i + 10;
      const port = `veth${i}`;
      await ip(
        "-n",
        bridgeNs,
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns,
      );
      await ip("-n", bridgeNs, "link", "set", port, "master", "br0", "up");
      const pod = { name, ns, ip: `10.250.${subnet}.${host}`, ip6: `fd00:250:${subnet}::${host}` };
      await ip("-n", ns, "addr", "add", `${pod.ip}/24`, "dev", "eth0");
      await ip("-n", ns, "-6", "addr", "add", `${pod.ip6}/64`, "dev", "eth0", "nodad");
      await ip("-n", ns, "link", "set", "eth0", "up");
      pods.push(pod);
    }
  } catch (e) {
    await destroy();
    throw e;
  }
  const pod = (name: string) => {
    const p = pods.find((p) => p.name === name);
    if (p === undefined) throw new Error(`No pod named ${name}`);
    return p;
  };
  return {
    pods,
    bridgeNs,
    pod,
    exec: (name, cmd, o = {}) => nsExec(pod(name).ns, cmd, o),
    spawn(name, cmd, o = {}) {
      if (destroyed) throw new Error("Pods are destroyed");
      const s = _spawn(name, pod(name).ns, cmd, o);
      spawned.push(s);
      return s;
    },
    destroy,
  };
}

// ---------------------------------------------------------------------------
// Running remora as uid 1337

let _denoDir: string | undefined;
let _denoDirReady: Promise<string> | undefined;

/**
 * A DENO_DIR that any uid can read, with main.ts's dependencies cached in it,
 * for running remora as uid 1337 (root's deno cache is not readable to it).
 * Also makes the repo's node_modules world-readable. Made once per process,
 * removed when the process exits. Pass it as `env: { DENO_DIR }`.
 */
export function prepareDenoDir(): Promise<string> {
  _denoDirReady ??= (async () => {
    _hookUnload();
    const dir = await Deno.makeTempDir({ prefix: "remora-denodir-" });
    _denoDir = dir;
    await Deno.chmod(dir, 0o755);
    await hostExec([Deno.execPath(), "cache", `${REPO_ROOT}/main.ts`], {
      env: { DENO_DIR: dir },
      cwd: REPO_ROOT,
      timeoutMs: 120_000,
      check: true,
    });
    await hostExec(["chmod", "-R", "a+rX", dir], { check: true });
    try {
      await Deno.stat(`${REPO_ROOT}/node_modules`);
      await hostExec(["chmod", "-R", "a+rX", `${REPO_ROOT}/node_modules`], { check: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return dir;
  })();
  return _denoDirReady;
}

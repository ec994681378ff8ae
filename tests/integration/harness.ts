/**
 * Test harness for integration tests: starts remora as a real process on
 * ephemeral ports (parsing the "listening on" lines it prints), starts real
 * upstream servers, and runs real clients (curl). Every process started here
 * is stopped by the returned handle's `stop()`, which tests call in
 * `finally`; every wait is bounded.
 */

import http from "node:http";
import type { AddressInfo } from "node:net";

const ROOT = new URL("../../", import.meta.url).pathname;

export interface Remora {
  outbound: number;
  inbound: number;
  admin: number;
  stats: number;
  health: number;
  pid: number;
  /** Everything remora printed on stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

/** Starts `remora run` with all ports ephemeral unless given in `args`. */
export async function startRemora(args: string[] = [], timeoutMs = 30_000): Promise<Remora> {
  const defaults: Record<string, string> = {
    "--outbound-port": "0",
    "--inbound-port": "0",
    "--admin-port": "0",
    "--stats-port": "0",
    "--health-port": "0",
  };
  const all = [...args];
  for (const [k, v] of Object.entries(defaults)) if (!args.includes(k)) all.push(k, v);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, "run", ...all],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let err = "";
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of child.stderr) err += decoder.decode(chunk, { stream: true });
  })().catch(() => {});
  const ports: Record<string, number> = {};
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const deadline = Date.now() + timeoutMs;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, 8000);
    await child.status;
    clearTimeout(timer);
    reader.cancel().catch(() => {});
  };
  try {
    while (Object.keys(ports).length < 5) {
      if (Date.now() > deadline) throw new Error(`remora did not start in ${timeoutMs}ms:\n${err}`);
      const r = await Promise.race([
        reader.read(),
        new Promise<{ done: true; value: undefined }>((res) =>
          setTimeout(
            () => res({ done: true, value: undefined }),
            Math.max(1, deadline - Date.now()),
          )
        ),
      ]);
      if (r.done) {
        if (Date.now() > deadline) continue;
        throw new Error(`remora exited before listening:\n${err}`);
      }
      buffered += r.value;
      for (const m of buffered.matchAll(/remora: (\w+) listening on [^\s]*:(\d+)/g)) {
        ports[m[1]!] = Number(m[2]);
      }
    }
  } catch (e) {
    await stop();
    throw e;
  }
  // Keep draining stdout so that the child never blocks on a full pipe.
  (async () => {
    for (;;) if ((await reader.read()).done) break;
  })().catch(() => {});
  return {
    outbound: ports.outbound!,
    inbound: ports.inbound!,
    admin: ports.admin!,
    stats: ports.stats!,
    health: ports.health!,
    pid: child.pid,
    stderr: () => err,
    stop,
  };
}

/** What the echo upstream saw of one request. */
export interface Echo {
  server: string;
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  bodyBytes: number;
}

export interface Upstream {
  port: number;
  name: string;
  /** Requests seen and TCP connections accepted. */
  requests: number;
  connections: number;
  close(): Promise<void>;
}

/**
 * An HTTP/1.1 echo upstream. Paths: /status/N answers N, /delay/MS waits,
 * /bytes/N sends N bytes, /fail-first/N/KEY answers 503 to the first N
 * requests with that key; anything else echoes the request as JSON.
 */
export async function startUpstream(name: string): Promise<Upstream> {
  const failures = new Map<string, number>();
  const state = { requests: 0, connections: 0 };
  const server = http.createServer((req, res) => {
    state.requests++;
    let bodyBytes = 0;
    req.on("data", (c: Uint8Array) => bodyBytes += c.length);
    req.on("end", () => {
      const url = req.url ?? "/";
      const parts = url.split("?")[0]!.split("/");
      const send = (status: number, body: string | Uint8Array, type = "text/plain") => {
        res.writeHead(status, { "content-type": type, "x-upstream": name });
        res.end(body);
      };
      if (parts[1] === "status") return send(Number(parts[2]), `status ${parts[2]} from ${name}\n`);
      if (parts[1] === "delay") {
        setTimeout(() => send(200, `delayed ${parts[2]} from ${name}\n`), Number(parts[2]));
        return;
      }
      if (parts[1] === "bytes") return send(200, new Uint8Array(Number(parts[2])).fill(120));
      if (parts[1] === "fail-first") {
        const key = parts[3] ?? "";
        const n = failures.get(key) ?? 0;
        failures.set(key, n + 1);
        if (n < Number(parts[2])) return send(503, `failure ${n + 1} from ${name}\n`);
        return send(200, `ok after ${n} failures from ${name}\n`);
      }
      const echo: Echo = {
        server: name,
        method: req.method ?? "",
        url,
        headers: req.headers,
        bodyBytes,
      };
      send(200, JSON.stringify(echo), "application/json");
    });
  });
  server.on("connection", () => state.connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    name,
    get requests() {
      return state.requests;
    },
    get connections() {
      return state.connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface CurlResult {
  code: number;
  status: number;
  body: string;
  headers: string;
}

/** Runs curl; `-w` is used to read the status, response headers go to a separate buffer. */
export async function curl(
  args: string[],
  opts: { timeoutS?: number; stdin?: string } = {},
): Promise<CurlResult> {
  const tmp = await Deno.makeTempFile();
  try {
    const out = await new Deno.Command("curl", {
      args: [
        "-sS",
        "--max-time",
        String(opts.timeoutS ?? 20),
        "-D",
        tmp,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: opts.stdin === undefined ? "null" : "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const nl = text.lastIndexOf("\n");
    return {
      code: out.code,
      status: Number(text.slice(nl + 1)),
      body: text.slice(0, nl),
      headers: await Deno.readTextFile(tmp),
    };
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

/** Writes a temp config file and returns its path. */
export async function writeConfig(yaml: string, dir?: string): Promise<string> {
  const d = dir ?? await Deno.makeTempDir({ prefix: "remora-test-" });
  const path = `${d}/config.yaml`;
  await Deno.writeTextFile(path, yaml);
  return path;
}

/** Fetches a text body from a loopback port (admin, stats, health). */
export async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** Polls `check` until it returns true or the time is up. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 5000,
): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return await check();
}

/**
 * Test harness for integration tests: starts remora as a real process on
 * ephemeral ports (parsing the "listening on" lines it prints), starts real
 * upstream servers, and runs real clients (curl). Every process started here
 * is stopped by the returned handle's `stop()`, which tests call in
 * `finally`; every wait is bounded.
 */

import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { BufConn } from "../../src/net/buf_conn.ts";
import { tcpByteConn } from "../../src/net/byte_conn.ts";
import { h2Duplex } from "../../src/proxy/h2_sessions.ts";

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
  /** Everything remora printed on stdout so far (the "listening on" lines first). */
  stdout(): string;
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
    args: [
      "run",
      "-A",
      "--v8-flags=--max-semi-space-size=4,--min-semi-space-size=4,--single-threaded-gc,--enable-experimental-regexp-engine",
      `${ROOT}main.ts`,
      "run",
      ...all,
    ],
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
  const stop = () => stopChild(child, reader, 8000);
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
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      buffered += r.value;
    }
  })().catch(() => {});
  return {
    outbound: ports.outbound!,
    inbound: ports.inbound!,
    admin: ports.admin!,
    stats: ports.stats!,
    health: ports.health!,
    pid: child.pid,
    stderr: () => err,
    stdout: () => buffered,
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
  opts: { timeoutS?: number; stdin?: string | Uint8Array } = {},
): Promise<CurlResult> {
  const tmp = await Deno.makeTempFile();
  try {
    const out = await runCommand("curl", [
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
    ], opts.stdin === undefined ? {} : { stdin: opts.stdin });
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

/**
 * A ServiceEntry named `name` for `host` port 80, declared `protocol`, with
 * one STATIC endpoint on 127.0.0.1 per port in `ports`.
 */
export function serviceEntryYaml(
  name: string,
  host: string,
  ports: number[],
  protocol = "HTTP",
): string {
  const portName = protocol.toLowerCase();
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name} }
spec:
  hosts: [${host}]
  ports: [{ number: 80, name: ${portName}, protocol: ${protocol} }]
  resolution: STATIC
  endpoints:
${ports.map((p) => `  - { address: 127.0.0.1, ports: { ${portName}: ${p} } }`).join("\n")}
`;
}

/** A loopback port that nothing listens on (bound, then closed). */
export function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A TCP server on loopback that hands each connection to `onConn`; `close` ends it and them. */
export function startRawServer(
  onConn: (c: Deno.Conn) => Promise<void>,
): { port: number; close(): Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const serving = (async () => {
    for await (const c of l) {
      open.add(c);
      onConn(c).catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (l.addr as Deno.NetAddr).port,
    close: async () => {
      l.close();
      for (const c of open) {
        try {
          c.close();
        } catch {
          // closed already
        }
      }
      await serving;
    },
  };
}

/** A server-first peer (SMTP-like): greets every connection and keeps it open. */
export function startGreeter(): { port: number; close(): Promise<void> } {
  return startRawServer(async (c) => {
    await c.write(new TextEncoder().encode("220 smtp.example ESMTP ready\r\n"));
  });
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

/** What the HTTP/2 echo upstream saw of one request. */
export interface H2Echo {
  server: string;
  method: string;
  path: string;
  authority: string;
  headers: Record<string, string | string[] | undefined>;
  bodyBytes: number;
}

export interface H2Upstream {
  port: number;
  name: string;
  /** Streams seen and HTTP/2 sessions (TCP connections) accepted. */
  requests: number;
  sessions: number;
  close(): Promise<void>;
}

/**
 * An h2c (prior knowledge) echo upstream on node:http2. Paths: /status/N
 * answers N, /delay/MS waits, /bytes/N sends N bytes, /trailers sends a body
 * and then trailers x-checksum and x-trailer; anything else echoes the request
 * as JSON, including the number of request body bytes it received.
 */
export function startH2Upstream(name: string): Promise<H2Upstream> {
  const state = { requests: 0, sessions: 0 };
  const server = http2.createServer();
  server.on("session", () => state.sessions++);
  server.on("stream", (raw, headers) => {
    // With @grpc/grpc-js in the type graph, npm's @types/node types this stream as Http2Stream.
    const stream = raw as http2.ServerHttp2Stream;
    state.requests++;
    stream.on("error", () => {});
    let bodyBytes = 0;
    stream.on("data", (c: Uint8Array) => bodyBytes += c.length);
    stream.on("end", () => {
      if (stream.destroyed) return;
      const path = String(headers[":path"] ?? "/");
      const parts = path.split("?")[0]!.split("/");
      const send = (status: number, body: string | Uint8Array, type = "text/plain") => {
        if (stream.destroyed) return;
        stream.respond({ ":status": status, "content-type": type, "x-upstream": name });
        stream.end(body);
      };
      if (parts[1] === "status") return send(Number(parts[2]), `status ${parts[2]} from ${name}\n`);
      if (parts[1] === "delay") {
        const t = setTimeout(
          () => send(200, `delayed ${parts[2]} from ${name}\n`),
          Number(parts[2]),
        );
        stream.on("close", () => clearTimeout(t));
        return;
      }
      if (parts[1] === "bytes") return send(200, new Uint8Array(Number(parts[2])).fill(120));
      if (parts[1] === "trailers") {
        stream.respond({ ":status": 200, "content-type": "text/plain", "x-upstream": name }, {
          waitForTrailers: true,
        });
        stream.on("wantTrailers", () => {
          stream.sendTrailers({ "x-checksum": "abc123", "x-trailer": `from ${name}` });
        });
        stream.end(`body before trailers from ${name}\n`);
        return;
      }
      const echo: H2Echo = {
        server: name,
        method: String(headers[":method"]),
        path,
        authority: String(headers[":authority"] ?? ""),
        headers: { ...headers },
        bodyBytes,
      };
      send(200, JSON.stringify(echo), "application/json");
    });
  });
  const listening = listenH2(server);
  return Promise.resolve({
    port: listening.port,
    name,
    get requests() {
      return state.requests;
    },
    get sessions() {
      return state.sessions;
    },
    close: () => listening.close(),
  });
}

/**
 * Serves `server` (node:http2) on an ephemeral loopback port, with the peer's
 * GOAWAY frames kept from node:http2 as remora keeps them
 * (src/http/h2_goaway_filter.ts): Deno's node:http2 can abort the process on a
 * received GOAWAY, and remora says GOAWAY to the upstream sessions it retires.
 * `close` ends the server's sessions and their connections.
 */
export function listenH2(server: http2.Http2Server): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  const conns = new Set<Deno.TcpConn>();
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      conn.setNoDelay(true);
      const socket = h2Duplex(new BufConn(tcpByteConn(conn)), { clientPreface: true });
      socket.on("error", () => {});
      socket.on("close", () => conns.delete(conn));
      server.emit("connection", socket);
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    close: async () => {
      for (const s of sessions) s.destroy();
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await accepting;
    },
  };
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, killing it after `timeoutMs`. */
export async function exec(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; stdin?: Uint8Array } = {},
): Promise<ExecResult> {
  const child = new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: opts.stdin === undefined ? "null" : "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, opts.timeoutMs ?? 30_000);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(opts.stdin).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    const d = new TextDecoder();
    return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** A helper server process that printed "port N" when it was ready. */
export interface ServerProcess {
  port: number;
  /** Everything it printed on stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

/** Debian's Python, where python3-grpcio and python3-websockets are installed. */
export const PYTHON = "/usr/bin/python3";

/** The tests/testdata directory. */
export const TESTDATA = `${ROOT}tests/testdata/`;

/**
 * Starts a helper server (e.g. a Python script in tests/testdata) and waits
 * for its "port N" line on stdout; `stop()` terminates it.
 */
export async function startServerProcess(
  cmd: string,
  args: string[],
  timeoutMs = 15_000,
): Promise<ServerProcess> {
  const child = new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let err = "";
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of child.stderr) err += decoder.decode(chunk, { stream: true });
  })().catch(() => {});
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = () => stopChild(child, reader, 5000);
  let out = "";
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const m = /^port (\d+)$/m.exec(out);
      if (m !== null) {
        (async () => {
          for (;;) if ((await reader.read()).done) break;
        })().catch(() => {});
        return { port: Number(m[1]), stderr: () => err, stop };
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${cmd} ${args.join(" ")} did not start:\n${err}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        reader.read(),
        new Promise<{ done: true; value: undefined }>((res) => {
          timer = setTimeout(() => res({ done: true, value: undefined }), left);
        }),
      ]);
      clearTimeout(timer);
      if (r.done) {
        if (Date.now() >= deadline) continue;
        throw new Error(`${cmd} ${args.join(" ")} exited before it was ready:\n${err}`);
      }
      out += r.value;
    }
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Reads remora's Prometheus text from its stats port. */
export async function scrape(r: Remora): Promise<string> {
  return (await get(r.stats, "/stats/prometheus")).body;
}

export interface CommandResult {
  code: number;
  stdout: Uint8Array;
  stderr: string;
}

/**
 * Runs a command to completion, optionally feeding `stdin`, and kills it
 * (SIGKILL) when it outlives `timeoutMs`.
 */
export async function runCommand(
  cmd: string,
  args: string[],
  opts: { stdin?: string | Uint8Array; timeoutMs?: number; cwd?: string } = {},
): Promise<CommandResult> {
  const child = new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: opts.stdin === undefined ? "null" : "piped",
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    env: { NO_COLOR: "1" },
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, opts.timeoutMs ?? 60_000);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      const data = typeof opts.stdin === "string"
        ? new TextEncoder().encode(opts.stdin)
        : opts.stdin;
      await w.write(data).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs curl on many URLs in one invocation (one keep-alive connection to the
 * proxy, or several with `--parallel` in `args`), discarding bodies, and
 * returns one `-w` line per URL (default: the status code).
 */
export async function curlLines(
  args: string[],
  urls: string[],
  opts: { timeoutS?: number; format?: string } = {},
): Promise<string[]> {
  const out = await runCommand("curl", [
    "-s",
    "--max-time",
    String(opts.timeoutS ?? 30),
    "-w",
    (opts.format ?? "%{http_code}") + "\\n",
    ...args,
    ...urls.flatMap((u) => ["-o", "/dev/null", u]),
  ], { timeoutMs: (opts.timeoutS ?? 30) * 1000 + 5000 });
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "");
}

/** A parsed HTTP/1.1 response read off a raw connection. */
export interface RawResponse {
  status: number;
  /** Header names lower-cased, in order. */
  headers: Array<[string, string]>;
  body: Uint8Array;
  text: string;
  header(name: string): string | undefined;
}

/**
 * A raw HTTP/1.1 client connection (Deno.connect), for keep-alive request
 * sequences, malformed requests and exact header checks. Every read is
 * bounded by `timeoutMs`.
 */
export class RawConn {
  readonly #conn: Deno.TcpConn;
  #buf = new Uint8Array(0);
  #eof = false;
  #pending: Promise<Uint8Array | null> | undefined;
  readonly timeoutMs: number;

  private constructor(conn: Deno.TcpConn, timeoutMs: number) {
    this.#conn = conn;
    this.timeoutMs = timeoutMs;
  }

  static async open(port: number, timeoutMs = 10_000): Promise<RawConn> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port, transport: "tcp" });
    return new RawConn(conn, timeoutMs);
  }

  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    // A read that timed out stays pending and is picked up by the next fill.
    if (this.#pending === undefined) {
      const chunk = new Uint8Array(64 * 1024);
      this.#pending = this.#conn.read(chunk).then(
        (n) => n === null ? null : chunk.subarray(0, n),
        () => null,
      );
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      this.#pending,
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), this.timeoutMs)),
    ]);
    clearTimeout(timer);
    if (n === "timeout") throw new Error(`RawConn: no data within ${this.timeoutMs}ms`);
    this.#pending = undefined;
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const next = new Uint8Array(this.#buf.length + n.length);
    next.set(this.#buf);
    next.set(n, this.#buf.length);
    this.#buf = next;
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  async #line(): Promise<string> {
    for (;;) {
      const i = this.#buf.indexOf(10);
      if (i !== -1) return new TextDecoder().decode(this.#take(i + 1)).replace(/\r?\n$/, "");
      if (!(await this.#fill())) throw new Error("RawConn: connection closed mid-line");
    }
  }

  async #exactly(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      if (!(await this.#fill())) throw new Error("RawConn: connection closed mid-body");
    }
    return this.#take(n);
  }

  /**
   * Reads one response. `bodiless` for HEAD requests; 1xx interim responses
   * are skipped unless `interim` is set.
   */
  async readResponse(opts: { bodiless?: boolean; interim?: boolean } = {}): Promise<RawResponse> {
    for (;;) {
      const statusLine = await this.#line();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
      if (m === null) throw new Error(`RawConn: bad status line "${statusLine}"`);
      const status = Number(m[1]);
      const headers: Array<[string, string]> = [];
      for (;;) {
        const l = await this.#line();
        if (l === "") break;
        const c = l.indexOf(":");
        headers.push([l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim()]);
      }
      const header = (name: string) => headers.find(([n]) => n === name)?.[1];
      if (status >= 100 && status < 200 && status !== 101 && !opts.interim) continue;
      let body: Uint8Array = new Uint8Array(0);
      const te = header("transfer-encoding");
      const cl = header("content-length");
      if (opts.bodiless || status === 204 || status === 304 || status < 200) {
        // No body.
      } else if (te !== undefined && /chunked/i.test(te)) {
        const parts: Uint8Array[] = [];
        for (;;) {
          const size = parseInt(await this.#line(), 16);
          if (size === 0) {
            while ((await this.#line()) !== "");
            break;
          }
          parts.push(await this.#exactly(size));
          await this.#line();
        }
        const total = parts.reduce((a, p) => a + p.length, 0);
        body = new Uint8Array(total);
        let off = 0;
        for (const p of parts) body.set(p, off), off += p.length;
      } else if (cl !== undefined) {
        body = await this.#exactly(Number(cl));
      } else {
        while (await this.#fill());
        body = this.#take(this.#buf.length);
      }
      return { status, headers, body, text: new TextDecoder().decode(body), header };
    }
  }

  /** Resolves true when the peer closes the connection within the timeout. */
  async closedByPeer(): Promise<boolean> {
    try {
      while (await this.#fill());
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Sends raw bytes on a new connection and reads one response. */
export async function rawRequest(
  port: number,
  request: string | Uint8Array,
  opts: { bodiless?: boolean; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const c = await RawConn.open(port, opts.timeoutMs);
  try {
    await c.write(request);
    return await c.readResponse(opts);
  } finally {
    c.close();
  }
}

/** Peak resident set size (VmHWM) of a process in kB. */
export async function peakRssKb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  if (m === null) throw new Error(`No VmHWM in /proc/${pid}/status`);
  return Number(m[1]);
}

/** One sample of a Prometheus text exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition format into samples (comments skipped). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
    }
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Sums samples named `name` whose labels include all of `match`. */
export function sumMetric(
  samples: readonly Sample[],
  name: string,
  match: Record<string, string> = {},
): number {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function stopChild(
  child: Deno.ChildProcess,
  reader: ReadableStreamDefaultReader<string>,
  graceMs: number,
): Promise<void> {
  const kill = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  };
  kill("SIGTERM");
  const timer = setTimeout(() => kill("SIGKILL"), graceMs);
  await child.status;
  clearTimeout(timer);
  reader.cancel().catch(() => {});
}

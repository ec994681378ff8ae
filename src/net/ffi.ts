/**
 * Socket facts Deno does not expose, read through libc with FFI, and the two
 * memory calls `app/memory.ts` makes. This is the only module that talks FFI.
 *
 * `originalDst(conn)` returns the destination a connection had before an
 * iptables REDIRECT (SO_ORIGINAL_DST, IPv4 and IPv6). Deno gives no file
 * descriptor for a connection, so the descriptor is found by matching
 * `getpeername`/`getsockname` of the process's open sockets against the
 * connection's addresses, likeliest first (`FdFinder`); `releaseConn` tells
 * it a connection closed. When FFI is unavailable (no
 * --allow-ffi, no libc) it says so once and reports no original destination.
 */

import { log } from "../log.ts";

const SOL_IP = 0;
const SOL_IPV6 = 41;
const SO_ORIGINAL_DST = 80;
const AF_INET = 2;
const AF_INET6 = 10;

const SYMBOLS = {
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32" },
  madvise: { parameters: ["usize", "usize", "i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

let libc: Libc | null | undefined;

function open(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    libc = Deno.dlopen("libc.so.6", SYMBOLS);
  } catch (e) {
    log.warn(
      "FFI is unavailable; original destinations of redirected connections cannot be read and memory is not trimmed",
      {
        error: (e as Error).message,
      },
    );
    libc = null;
  }
  return libc;
}

export interface SockAddr {
  hostname: string;
  port: number;
  family: 4 | 6;
}

/** The port of a sockaddr_in or sockaddr_in6 (the same place in both, network order). */
function portOf(b: Uint8Array): number {
  return (b[2]! << 8) | b[3]!;
}

/** Decodes a sockaddr_in / sockaddr_in6; IPv4-mapped IPv6 becomes IPv4. */
export function decodeSockaddr(b: Uint8Array): SockAddr | undefined {
  const family = b[0]! | (b[1]! << 8);
  const port = portOf(b);
  if (family === AF_INET) {
    return { hostname: `${b[4]}.${b[5]}.${b[6]}.${b[7]}`, port, family: 4 };
  }
  if (family === AF_INET6) {
    const a = b.subarray(8, 24);
    const mapped = a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff;
    if (mapped) return { hostname: `${a[12]}.${a[13]}.${a[14]}.${a[15]}`, port, family: 4 };
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((a[i]! << 8) | a[i + 1]!).toString(16));
    return { hostname: compressV6(groups), port, family: 6 };
  }
  return undefined;
}

function compressV6(groups: string[]): string {
  // Longest run of zero groups becomes "::" (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best === -1) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

function normalize(host: string): string {
  return host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host.toLowerCase();
}

function sockaddrOf(
  lib: Libc,
  fn: "getpeername" | "getsockname",
  fd: number,
): SockAddr | undefined {
  const buf = new Uint8Array(128);
  const len = new Uint32Array([128]);
  if (lib.symbols[fn](fd, buf, new Uint8Array(len.buffer)) !== 0) return undefined;
  return decodeSockaddr(buf);
}

/** What a probe of one descriptor found. */
const Probe = {
  /** Not an open, connected socket (a free number, a file, a listener). */
  NotASocket: 0,
  /** A connected socket, not this one. */
  Other: 1,
  Match: 2,
} as const;
type Probe = typeof Probe[keyof typeof Probe];

/**
 * Finds the descriptor of an accepted connection without Deno's help, and
 * cheaply: a full scan of /proc/self/fd costs one getpeername per open
 * descriptor (3.7 ms per accept with 1000 open, measured), so the likely
 * descriptors are tried first. The kernel gives an accepted socket the lowest
 * free number, so that is one a released connection gave back, or one above
 * every number seen so far. Every candidate is verified by its addresses,
 * so stale knowledge costs only probes: the last resort is the full scan,
 * live connections' descriptors included.
 */
class FdFinder {
  /** Descriptors of connections found here and not released yet. */
  readonly #live = new Map<number, Deno.TcpConn>();
  readonly #fdOf = new WeakMap<Deno.TcpConn, number>();
  /** Descriptors given back by released connections, kept while still free. */
  #freed: number[] = [];
  #highest = 2;
  readonly #buf = new Uint8Array(128);
  readonly #len = new Uint32Array(1);
  readonly #lenBytes = new Uint8Array(this.#len.buffer);
  /** getpeername/getsockname calls made, for tests. */
  probes = 0;

  constructor(readonly lib: Libc) {}

  /** The descriptor of `conn`, or undefined when none of this process's matches it. */
  find(conn: Deno.TcpConn): number | undefined {
    const remote = conn.remoteAddr;
    const host = normalize(remote.hostname);
    const localPort = conn.localAddr.port;
    const tried = new Set<number>();
    const attempt = (fd: number): Probe => {
      tried.add(fd);
      return this.#probe(fd, remote.port, host, localPort);
    };
    let fd = this.#fromFreed(attempt);
    if (fd === undefined) fd = this.#aboveHighest(attempt);
    if (fd === undefined) fd = this.#scan(attempt, tried, false);
    if (fd === undefined) fd = this.#scan(attempt, tried, true);
    if (fd !== undefined) {
      const stale = this.#live.get(fd);
      if (stale !== undefined) this.#fdOf.delete(stale);
      this.#live.set(fd, conn);
      this.#fdOf.set(conn, fd);
      if (fd > this.#highest) this.#highest = fd;
    }
    return fd;
  }

  /** `conn` is closed: its descriptor is the likeliest one for the next accept. */
  release(conn: Deno.TcpConn): void {
    const fd = this.#fdOf.get(conn);
    if (fd === undefined) return;
    this.#fdOf.delete(conn);
    if (this.#live.get(fd) !== conn) return;
    this.#live.delete(fd);
    this.#freed.push(fd);
  }

  /**
   * Released descriptors, lowest first. The first one still free ends the
   * search: the kernel would have given the connection that one or a lower one.
   */
  #fromFreed(attempt: (fd: number) => Probe): number | undefined {
    const freed = this.#freed.sort((a, b) => a - b);
    let i = 0;
    for (; i < freed.length; i++) {
      const r = attempt(freed[i]!);
      if (r === Probe.NotASocket) break;
      if (r === Probe.Match) {
        this.#freed = freed.slice(i + 1, i + 1 + 1024);
        return freed[i];
      }
      // Taken by another socket since: no longer a candidate.
    }
    this.#freed = freed.slice(i, i + 1024);
    return undefined;
  }

  /** Numbers above the highest seen, until eight in a row hold no socket. */
  #aboveHighest(attempt: (fd: number) => Probe): number | undefined {
    let misses = 0;
    for (let fd = this.#highest + 1; misses < 8; fd++) {
      const r = attempt(fd);
      if (r === Probe.Match) return fd;
      misses = r === Probe.NotASocket ? misses + 1 : 0;
    }
    return undefined;
  }

  /** Every open descriptor not tried yet; live connections' only when `withLive`. */
  #scan(
    attempt: (fd: number) => Probe,
    tried: Set<number>,
    withLive: boolean,
  ): number | undefined {
    for (const entry of Deno.readDirSync("/proc/self/fd")) {
      const fd = Number(entry.name);
      if (!(fd > 2) || tried.has(fd)) continue;
      if (fd > this.#highest) this.#highest = fd;
      if (!withLive && this.#live.has(fd)) continue;
      if (attempt(fd) === Probe.Match) return fd;
    }
    return undefined;
  }

  /** Compares a descriptor's peer port first, with no allocation unless it matches. */
  #probe(fd: number, port: number, host: string, localPort: number): Probe {
    this.probes++;
    this.#len[0] = 128;
    if (this.lib.symbols.getpeername(fd, this.#buf, this.#lenBytes) !== 0) return Probe.NotASocket;
    if (portOf(this.#buf) !== port) return Probe.Other;
    const peer = decodeSockaddr(this.#buf);
    if (peer === undefined || normalize(peer.hostname) !== host) return Probe.Other;
    this.probes++;
    this.#len[0] = 128;
    if (this.lib.symbols.getsockname(fd, this.#buf, this.#lenBytes) !== 0) return Probe.Other;
    return portOf(this.#buf) === localPort ? Probe.Match : Probe.Other;
  }
}

let finder: FdFinder | undefined;

function fdFinder(lib: Libc): FdFinder {
  return finder ??= new FdFinder(lib);
}

/** The descriptor of an accepted connection (see FdFinder), or undefined without FFI or a match. */
export function fdOf(conn: Deno.TcpConn): number | undefined {
  const lib = open();
  return lib === null ? undefined : fdFinder(lib).find(conn);
}

/**
 * Says that `conn`, whose original destination was read, is closed, so that
 * the next accept looks at its descriptor first.
 */
export function releaseConn(conn: Deno.TcpConn): void {
  finder?.release(conn);
}

/** getpeername/getsockname calls made finding descriptors so far (for tests). */
export function fdProbes(): number {
  return finder?.probes ?? 0;
}

/**
 * The destination the client asked for before an iptables REDIRECT, or
 * undefined when the connection was not redirected (or it cannot be read).
 */
export function originalDst(conn: Deno.TcpConn): SockAddr | undefined {
  const lib = open();
  if (lib === null) return undefined;
  let fd: number | undefined;
  try {
    fd = fdFinder(lib).find(conn);
  } catch {
    return undefined;
  }
  if (fd === undefined) return undefined;
  const len = new Uint32Array([128]);
  const buf = new Uint8Array(128);
  const local = sockaddrOf(lib, "getsockname", fd);
  let ok = false;
  if (local?.family === 6) {
    ok =
      lib.symbols.getsockopt(fd, SOL_IPV6, SO_ORIGINAL_DST, buf, new Uint8Array(len.buffer)) === 0;
  }
  if (!ok) {
    len[0] = 128;
    ok = lib.symbols.getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, buf, new Uint8Array(len.buffer)) === 0;
  }
  if (!ok) return undefined;
  const dst = decodeSockaddr(buf);
  if (dst === undefined) return undefined;
  // Conntrack reports a connection that was not redirected as going to the listener itself.
  if (
    local !== undefined && dst.port === local.port &&
    normalize(dst.hostname) === normalize(local.hostname)
  ) {
    return undefined;
  }
  return dst;
}

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const ONE = new Uint8Array(new Int32Array([1]).buffer);

/**
 * Turns Nagle's algorithm off on a connection Deno has no `setNoDelay` for
 * (its TLS client connections). Its descriptor is found as an accepted
 * connection's is (`FdFinder`), and given back to the finder at once: the
 * connection's own close does not report to it. False without FFI or a
 * match.
 */
export function setNoDelay(conn: Deno.Conn): boolean {
  const lib = open();
  if (lib === null) return false;
  const f = fdFinder(lib);
  const c = conn as Deno.TcpConn;
  let fd: number | undefined;
  try {
    fd = f.find(c);
  } catch {
    return false;
  }
  if (fd === undefined) return false;
  f.release(c);
  return lib.symbols.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4) === 0;
}

/** Gives malloc's free memory back to the kernel (glibc `malloc_trim(0)`); false without FFI. */
export function trimMalloc(): boolean {
  const c = open();
  if (c === null) return false;
  c.symbols.malloc_trim(0n);
  return true;
}

const MADV_DONTNEED = 4;

/**
 * Drops this process's resident pages of the read-only and executable
 * mappings of `file` (madvise MADV_DONTNEED); the page cache keeps them, so
 * whatever runs again is mapped back in with a minor fault. Only mappings
 * that hold nothing but clean file pages qualify (no write permission, no
 * private dirty or anonymous pages: relocated RELRO pages are dirty and are
 * left alone), so no content can be lost. Returns the bytes dropped from the
 * resident set (0 without FFI).
 */
export function dropCleanMappings(file: string): number {
  const c = open();
  if (c === null) return 0;
  let smaps: string;
  try {
    smaps = Deno.readTextFileSync("/proc/self/smaps");
  } catch {
    return 0;
  }
  let dropped = 0;
  // A mapping's header line, then "Key: value kB" lines until the next header.
  const blocks = smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
  for (const block of blocks) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (r-[-x]p) \S+ \S+ \S+\s+(.+)$/m.exec(block);
    if (head === null || head[4] !== file) continue;
    const kb = (key: string) =>
      Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(block)?.[1] ?? -1);
    if (kb("Private_Dirty") !== 0 || kb("Anonymous") !== 0) continue;
    const start = BigInt(`0x${head[1]}`);
    const length = BigInt(`0x${head[2]}`) - start;
    if (c.symbols.madvise(start, length, MADV_DONTNEED) === 0) dropped += kb("Rss") * 1024;
  }
  return dropped;
}

/**
 * Socket facts Deno does not expose, read through libc with FFI, and the two
 * memory calls `app/memory.ts` makes. This is the only module that talks FFI.
 *
 * `originalDst(conn)` returns the destination a connection had before an
 * iptables REDIRECT (SO_ORIGINAL_DST, IPv4 and IPv6). Deno gives no file
 * descriptor for a connection, so the descriptor is found by matching
 * `getpeername`/`getsockname` of the process's open sockets (/proc/self/fd)
 * against the connection's addresses. When FFI is unavailable (no
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

/** Decodes a sockaddr_in / sockaddr_in6; IPv4-mapped IPv6 becomes IPv4. */
export function decodeSockaddr(b: Uint8Array): SockAddr | undefined {
  const family = b[0]! | (b[1]! << 8);
  const port = (b[2]! << 8) | b[3]!;
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

/** The file descriptor of an accepted connection, or undefined. */
function findFd(lib: Libc, conn: Deno.TcpConn): number | undefined {
  const remote = conn.remoteAddr;
  const local = conn.localAddr;
  const rHost = normalize(remote.hostname);
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    const fd = Number(entry.name);
    if (!(fd > 2)) continue;
    const peer = sockaddrOf(lib, "getpeername", fd);
    if (peer === undefined || peer.port !== remote.port || normalize(peer.hostname) !== rHost) {
      continue;
    }
    const me = sockaddrOf(lib, "getsockname", fd);
    if (me !== undefined && me.port === local.port) return fd;
  }
  return undefined;
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
    fd = findFd(lib, conn);
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

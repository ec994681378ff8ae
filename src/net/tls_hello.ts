/**
 * Reads the server name (SNI) and the offered ALPN protocols from a TLS
 * ClientHello without consuming it:
 * the bytes stay in the connection's buffer and are relayed unchanged. Only
 * the first record is looked at; a ClientHello split over several records, or
 * any malformed input, gives undefined (the caller then routes by address).
 */

import type { BufConn } from "./buf_conn.ts";

export interface ClientHello {
  sni: string | undefined;
  alpn: string[];
}

/** The SNI host name in buf[start, end), "more" when the record is incomplete, or undefined. */
export function parseSni(buf: Uint8Array, start: number, end: number): string | "more" | undefined {
  const h = parseClientHello(buf, start, end);
  return h === "more" ? "more" : h?.sni;
}

/** SNI and ALPN of the ClientHello in buf[start, end), "more" when incomplete, undefined when not one. */
export function parseClientHello(
  buf: Uint8Array,
  start: number,
  end: number,
): ClientHello | "more" | undefined {
  const n = end - start;
  if (n < 5) return "more";
  if (buf[start] !== 0x16 || buf[start + 1] !== 0x03) return undefined;
  const recordLen = (buf[start + 3]! << 8) | buf[start + 4]!;
  if (n < 5 + recordLen) return recordLen > 16384 ? undefined : "more";
  const b = buf.subarray(start + 5, start + 5 + recordLen);
  let p = 0;
  const need = (k: number) => p + k <= b.length;
  if (!need(4) || b[0] !== 0x01) return undefined; // handshake type: ClientHello
  p = 4 + 2 + 32; // handshake header, client version, random
  if (!need(1)) return undefined;
  p += 1 + b[p]!; // session id
  if (!need(2)) return undefined;
  p += 2 + ((b[p]! << 8) | b[p + 1]!); // cipher suites
  if (!need(1)) return undefined;
  p += 1 + b[p]!; // compression methods
  const hello: ClientHello = { sni: undefined, alpn: [] };
  if (!need(2)) return hello;
  const extEnd = Math.min(p + 2 + ((b[p]! << 8) | b[p + 1]!), b.length);
  p += 2;
  while (p + 4 <= extEnd) {
    const type = (b[p]! << 8) | b[p + 1]!;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    p += 4;
    const body = b.subarray(p, Math.min(p + len, extEnd));
    if (type === 0) hello.sni = serverName(body);
    else if (type === 16) hello.alpn = protocols(body);
    p += len;
  }
  return hello;
}

/** server_name_list: total length, then entries of (type, length, name). */
function serverName(b: Uint8Array): string | undefined {
  let q = 2;
  while (q + 3 <= b.length) {
    const nameType = b[q]!;
    const nameLen = (b[q + 1]! << 8) | b[q + 2]!;
    q += 3;
    if (q + nameLen > b.length) return undefined;
    if (nameType === 0) {
      const name = String.fromCharCode(...b.subarray(q, q + nameLen)).toLowerCase();
      return /^[a-z0-9.\-_]+$/.test(name) ? name : undefined;
    }
    q += nameLen;
  }
  return undefined;
}

/** protocol_name_list: total length, then (length, name) entries. */
function protocols(b: Uint8Array): string[] {
  const out: string[] = [];
  let q = 2;
  while (q + 1 <= b.length) {
    const len = b[q]!;
    q += 1;
    if (q + len > b.length) break;
    out.push(String.fromCharCode(...b.subarray(q, q + len)));
    q += len;
  }
  return out;
}

/** The ClientHello at the front of `c`, reading (without consuming) for at most `timeoutMs`. */
export async function readClientHello(
  c: BufConn,
  timeoutMs: number,
): Promise<ClientHello | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const hello = parseClientHello(c.buf, c.start, c.end);
    if (hello !== "more") return hello;
    const left = until - Date.now();
    if (left <= 0) return undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const more = await Promise.race([
      c.fill(),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), left)),
    ]);
    clearTimeout(timer);
    if (!more) return undefined;
  }
}

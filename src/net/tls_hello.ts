/**
 * Reads the server name (SNI) from a TLS ClientHello without consuming it:
 * the bytes stay in the connection's buffer and are relayed unchanged. Only
 * the first record is looked at; a ClientHello split over several records, or
 * any malformed input, gives undefined (the caller then routes by address).
 */

/** The SNI host name in buf[start, end), "more" when the record is incomplete, or undefined. */
export function parseSni(buf: Uint8Array, start: number, end: number): string | "more" | undefined {
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
  if (!need(2)) return undefined;
  const extEnd = p + 2 + ((b[p]! << 8) | b[p + 1]!);
  p += 2;
  while (p + 4 <= Math.min(extEnd, b.length)) {
    const type = (b[p]! << 8) | b[p + 1]!;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    p += 4;
    if (type === 0 && p + 5 <= b.length) {
      // server_name_list: total length, then entries of (type, length, name).
      let q = p + 2;
      const listEnd = Math.min(p + len, b.length);
      while (q + 3 <= listEnd) {
        const nameType = b[q]!;
        const nameLen = (b[q + 1]! << 8) | b[q + 2]!;
        q += 3;
        if (q + nameLen > listEnd) return undefined;
        if (nameType === 0) {
          const name = String.fromCharCode(...b.subarray(q, q + nameLen)).toLowerCase();
          return /^[a-z0-9.\-_]+$/.test(name) ? name : undefined;
        }
        q += nameLen;
      }
      return undefined;
    }
    p += len;
  }
  return undefined;
}

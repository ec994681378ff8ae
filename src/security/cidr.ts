/**
 * IP addresses and CIDR ranges for authorization (`ipBlocks`, `source.ip`,
 * `destination.ip`): parsed once into 128-bit form, four 32-bit words, with
 * IPv4 stored as IPv4-mapped IPv6 (`::ffff:a.b.c.d`, prefix length + 96). So
 * an IPv4 block also matches the IPv4-mapped peers that listeners bound to
 * `::` report, and one comparison serves both families. A bare address is a
 * /32 or /128 block, and host bits below the prefix are ignored, as Envoy's
 * CidrRange does. No DNS names, no I/O.
 */

/** A parsed range: network words already masked. */
export interface Cidr {
  readonly net: Uint32Array;
  readonly mask: Uint32Array;
  /** As written, for messages and config dumps. */
  readonly text: string;
  /**
   * An IPv6 range that does not lie inside ::ffff:0:0/96: it holds no IPv4
   * address (as Envoy compares an address only with ranges of its version,
   * "::/0" does not match an IPv4 client).
   */
  readonly v6Only: boolean;
}

/**
 * Parses an IPv4 or IPv6 address (an IPv6 zone "%eth0" is dropped) into `out`
 * (four words). Returns false when `s` is not an address.
 */
export function parseIpInto(s: string, out: Uint32Array): boolean {
  if (s.includes(":")) return _parseV6(s, out);
  const v4 = _parseV4(s);
  if (v4 < 0) return false;
  out[0] = 0;
  out[1] = 0;
  out[2] = 0xffff;
  out[3] = v4;
  return true;
}

/** Parses "addr/len" or a bare address; an error message instead when it is not one. */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const net = new Uint32Array(4);
  if (addr.includes("%") || !parseIpInto(addr, net)) {
    return `expected an IP address or CIDR range such as 10.0.0.0/8 or fd00::/8, got "${text}"`;
  }
  const v4 = !addr.includes(":");
  const max = v4 ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const l = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(l) || Number(l) > max) {
      return `invalid prefix length in "${text}", expected 0..${max}`;
    }
    len = Number(l);
  }
  if (v4) len += 96;
  const mask = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    const bits = Math.max(0, Math.min(32, len - i * 32));
    mask[i] = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    net[i] = (net[i]! & mask[i]!) >>> 0;
  }
  const inMapped = len >= 96 && net[0] === 0 && net[1] === 0 && net[2] === 0xffff;
  return { net, mask, text, v6Only: !inMapped };
}

/** Whether the parsed address `ip` (four words) is inside `c`. */
export function cidrContains(c: Cidr, ip: Uint32Array): boolean {
  if (c.v6Only && ip[0] === 0 && ip[1] === 0 && ip[2] === 0xffff) return false;
  return ((ip[0]! & c.mask[0]!) >>> 0) === c.net[0] &&
    ((ip[1]! & c.mask[1]!) >>> 0) === c.net[1] &&
    ((ip[2]! & c.mask[2]!) >>> 0) === c.net[2] &&
    ((ip[3]! & c.mask[3]!) >>> 0) === c.net[3];
}

/** Dotted quad to a 32-bit number, or -1. No leading zeros (they read as octal elsewhere). */
function _parseV4(s: string): number {
  let n = 0;
  let parts = 0;
  let i = 0;
  while (parts < 4) {
    const start = i;
    let v = 0;
    while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) {
      v = v * 10 + s.charCodeAt(i) - 48;
      i++;
    }
    const len = i - start;
    if (len === 0 || len > 3 || v > 255 || (len > 1 && s.charCodeAt(start) === 48)) return -1;
    n = n * 256 + v;
    parts++;
    if (parts < 4) {
      if (s.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === s.length ? n : -1;
}

/** IPv6 text (with "::", an embedded dotted quad, an optional zone) into four words. */
function _parseV6(input: string, out: Uint32Array): boolean {
  const pct = input.indexOf("%");
  const s = pct < 0 ? input : input.slice(0, pct);
  const groups: number[] = [];
  let gap = -1;
  const halves = s.split("::");
  if (halves.length > 2) return false;
  for (let h = 0; h < halves.length; h++) {
    if (h === 1) gap = groups.length;
    const half = halves[h]!;
    if (half === "") continue;
    const parts = half.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && h === halves.length - 1 && p.includes(".")) {
        const v4 = _parseV4(p);
        if (v4 < 0) return false;
        groups.push(v4 >>> 16, v4 & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return false;
      groups.push(parseInt(p, 16));
    }
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return false;
  if (gap >= 0) groups.splice(gap, 0, ...new Array<number>(8 - groups.length).fill(0));
  for (let i = 0; i < 4; i++) out[i] = ((groups[2 * i]! << 16) | groups[2 * i + 1]!) >>> 0;
  return true;
}

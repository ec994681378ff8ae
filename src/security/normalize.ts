/**
 * Request path normalization, done once per request before routing and
 * authorization; the normalized path is also what remora forwards, so the
 * policy and the application see the same path. It follows what Istio does
 * with `meshConfig.pathNormalization: DECODE_AND_MERGE_SLASHES` (the strictest
 * setting Istio offers), and refuses what cannot be normalized safely. The
 * rules, with examples, are in docs/path_normalization.md:
 * percent-decode unreserved characters (upper-case the hex of the rest),
 * decode %2F and %5C to "/", turn "\" into "/", merge repeated slashes,
 * resolve "." and ".." segments. Refused: "%00", broken percent-encoding,
 * ".." above the root, characters outside visible ASCII, "#", and paths that
 * do not start with "/" (except "*"). The query string is returned unchanged.
 * Case and ";" parameters are left alone, as in Istio.
 */

export type NormalizeResult = { ok: true; path: string } | { ok: false; reason: string };

/** Normalizes the path part of a request target; the query ("?...") is appended unchanged. */
export function normalizePath(raw: string): NormalizeResult {
  if (_clean(raw)) return { ok: true, path: raw };
  if (raw.includes("#")) return { ok: false, reason: "fragment (#) in request path" };
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = q < 0 ? "" : raw.slice(q);
  if (path === "*") return { ok: true, path: raw };
  if (path.charCodeAt(0) !== _SLASH) {
    return { ok: false, reason: `request path must start with "/"` };
  }

  // 1. Percent-decoding, "\" to "/". One pass: "%252F" stays "%252F".
  const decoded = _decode(path, true);
  if (typeof decoded !== "string") return decoded;

  // 2. Merge slashes and resolve dot segments (RFC 3986 5.2.4), refusing ".." above "/".
  const out: string[] = [];
  let trailing = false;
  let start = 1;
  while (start <= decoded.length) {
    let end = decoded.indexOf("/", start);
    if (end < 0) end = decoded.length;
    const seg = decoded.slice(start, end);
    const last = end === decoded.length;
    if (seg === "..") {
      if (out.length === 0) return { ok: false, reason: `".." above the root in request path` };
      out.pop();
      trailing = true;
    } else if (seg === "." || seg === "") {
      trailing = true;
    } else {
      out.push(seg);
      trailing = false;
    }
    if (last) break;
    start = end + 1;
  }
  const normalized = out.length === 0 ? "/" : "/" + out.join("/") + (trailing ? "/" : "");
  return { ok: true, path: normalized + query };
}

/**
 * Istio's default normalization (`pathNormalization: BASE`, Envoy's
 * normalize_path), which applies on the outbound side: percent-encoded
 * unreserved characters decoded (the hex of the rest upper-cased, "%2F"
 * kept), "\" turned into "/", "." and ".." segments resolved (".." at the
 * root stays at the root, as RFC 3986 5.2.4 says). Slashes are not merged.
 * Refused: "%00", broken percent-encoding, characters outside visible
 * ASCII, "#". The query is returned unchanged.
 */
export function normalizeBasePath(raw: string): NormalizeResult {
  if (_clean(raw)) return { ok: true, path: raw };
  if (raw.includes("#")) return { ok: false, reason: "fragment (#) in request path" };
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = q < 0 ? "" : raw.slice(q);
  if (path === "*" || path.charCodeAt(0) !== _SLASH) return { ok: true, path: raw };
  const decoded = _decode(path, false);
  if (typeof decoded !== "string") return decoded;
  // Dot segments, keeping empty ones ("//" stays).
  const segs = decoded.slice(1).split("/");
  const out: string[] = [];
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const last = i === segs.length - 1;
    if (seg === "..") {
      out.pop();
      if (last) out.push("");
    } else if (seg === ".") {
      if (last) out.push("");
    } else {
      out.push(seg);
    }
  }
  return { ok: true, path: "/" + out.join("/") + query };
}

/**
 * Percent-decodes the unreserved characters of a path (other escapes get
 * upper-case hex; `%2F` and `%5C` become "/" when `slashes`) and turns "\"
 * into "/". Refuses "%00", broken escapes and characters outside visible ASCII.
 */
function _decode(path: string, slashes: boolean): string | { ok: false; reason: string } {
  let decoded = "";
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === _PERCENT) {
      const hi = _hex(path.charCodeAt(i + 1));
      const lo = _hex(path.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) {
        return { ok: false, reason: `invalid percent-encoding "${path.slice(i, i + 3)}"` };
      }
      const b = hi * 16 + lo;
      i += 2;
      if (b === 0) return { ok: false, reason: "encoded NUL (%00) in request path" };
      if (slashes && (b === _SLASH || b === _BACKSLASH)) decoded += "/";
      else if (_isUnreserved(b)) decoded += String.fromCharCode(b);
      else decoded += "%" + _HEX[hi]! + _HEX[lo]!;
    } else if (c === _BACKSLASH) {
      decoded += "/";
    } else if (c < 0x21 || c > 0x7e) {
      return { ok: false, reason: "invalid character in request path" };
    } else {
      decoded += path[i];
    }
  }
  return decoded;
}

const _SLASH = 0x2f;
const _BACKSLASH = 0x5c;
const _PERCENT = 0x25;
const _DOT = 0x2e;
const _HEX = "0123456789ABCDEF";

/**
 * The fast path: true when the path part needs no change — visible ASCII
 * only, starts with "/", no "%", "\", "#", "//" and no segment starting with ".".
 */
function _clean(raw: string): boolean {
  if (raw.charCodeAt(0) !== _SLASH) return false;
  let prev = _SLASH;
  for (let i = 1; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x3f) return raw.indexOf("#", i) < 0; // "?": the query is not normalized
    if (c < 0x21 || c > 0x7e || c === _PERCENT || c === _BACKSLASH || c === 0x23) return false;
    if (prev === _SLASH && (c === _SLASH || c === _DOT)) return false;
    prev = c;
  }
  return true;
}

function _hex(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function _isUnreserved(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
    b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
}

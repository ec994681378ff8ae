/**
 * HTTP/1.x message heads on raw bytes: find the end of a head, parse request
 * and response heads, and serialize them again.
 *
 * Written by hand rather than with node:http because heads are the proxy's hot
 * path: parsing here is one scan and one string decode per message, with no
 * Request/Response objects (see DESIGN.md, "Where the time goes"). Bodies are
 * not handled here (see `h1_body.ts`). Parsing is strict where laxness lets a
 * request be read two ways (request smuggling): conflicting Content-Length,
 * Content-Length with Transfer-Encoding, obsolete line folding, and spaces
 * before a header colon are all refused with an `HttpParseError`.
 */

/** A malformed message; `status` is what the proxy answers (400, 431, 501). */
export class HttpParseError extends Error {
  override name = "HttpParseError";
  constructor(message: string, readonly status = 400) {
    super(message);
  }
}

/** Body framing of a message. */
export type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** Header names lower-cased; values as sent, with surrounding space trimmed. */
export type HeaderList = Array<[name: string, value: string]>;

export interface RequestHead {
  method: string;
  /** Request target as sent: origin-form, absolute-form or authority-form. */
  target: string;
  /** Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  headers: HeaderList;
  framing: Framing;
  /** Whether the client allows the connection to stay open after this exchange. */
  keepAlive: boolean;
  /** Upgrade protocol requested (lower-case), e.g. "websocket". */
  upgrade: string | undefined;
  /** Bytes of the head on the wire, for metrics. */
  size: number;
}

export interface ResponseHead {
  status: number;
  reason: string;
  minor: number;
  headers: HeaderList;
  framing: Framing;
  keepAlive: boolean;
  size: number;
}

export const MAX_HEAD_BYTES = 64 * 1024;

/** Header fields a head may have: Envoy's default max_headers_count. */
export const MAX_HEADER_FIELDS = 100;

const HTTP_PREFIX = [72, 84, 84, 80, 47]; // "HTTP/"

/**
 * Where a response head buffered in `buf[start, end)` ends, as
 * `findHeadEnd`; -1 while more bytes may complete it. Throws (502) when no
 * head can come: the bytes do not start as an HTTP response does (a
 * server-first protocol such as SMTP or MySQL greets with its own), or the
 * head has passed `MAX_HEAD_BYTES`.
 */
export function responseHeadEnd(buf: Uint8Array, start: number, end: number): number {
  const e = findHeadEnd(buf, start, end);
  if (e !== -1) return e;
  for (let i = 0; i < HTTP_PREFIX.length && start + i < end; i++) {
    if (buf[start + i] !== HTTP_PREFIX[i]) {
      throw new HttpParseError("upstream answered with bytes that are not an HTTP response", 502);
    }
  }
  if (end - start > MAX_HEAD_BYTES) {
    throw new HttpParseError("upstream response head larger than 64 KiB", 502);
  }
  return -1;
}

/**
 * Returns the index just past the blank line ending a head in
 * `buf[start, end)`, or -1 when the head is not complete yet.
 */
export function findHeadEnd(buf: Uint8Array, start: number, end: number): number {
  let i = start;
  while (i < end) {
    const lf = buf.indexOf(10, i);
    if (lf === -1 || lf >= end) return -1;
    // "\n\n" or "\n\r\n" after this line feed ends the head.
    if (lf + 1 < end && buf[lf + 1] === 10) return lf + 2;
    if (lf + 2 < end && buf[lf + 1] === 13 && buf[lf + 2] === 10) return lf + 3;
    if (lf + 2 >= end) return -1;
    i = lf + 1;
  }
  return -1;
}

import { allocBytes } from "../net/slab.ts";

const asciiDecoder = new TextDecoder();

/** Decodes bytes as ISO-8859-1, so no byte is lost or altered. */
export function decodeLatin1(buf: Uint8Array, start: number, end: number): string {
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (buf[i]! > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return asciiDecoder.decode(buf.subarray(start, end));
  let s = "";
  for (let i = start; i < end; i += 8192) {
    s += String.fromCharCode(...buf.subarray(i, Math.min(end, i + 8192)));
  }
  return s;
}

const asciiEncoder = new TextEncoder();

/**
 * Writes `s` as ISO-8859-1 into `out`, which holds exactly `s.length` bytes
 * (characters above U+00FF become "?"). All-ASCII text, the usual case, is
 * encoded natively with `encodeInto` (one UTF-8 byte per character), which
 * also flattens whatever the string is made of; a character-code loop does
 * the rest.
 */
function putLatin1(s: string, out: Uint8Array): void {
  const r = asciiEncoder.encodeInto(s, out);
  if (r.read === s.length && r.written === s.length) return;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out[i] = c > 0xff ? 0x3f : c;
  }
}

/** Encodes a string as ISO-8859-1 (characters above U+00FF become "?"). */
export function encodeLatin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  putLatin1(s, out);
  return out;
}

// RFC 9110 token characters, for methods and header names.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TOKEN_CHARS = (() => {
  const t = new Uint8Array(128);
  for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
    t[c.charCodeAt(0)] = 1;
  }
  return t;
})();

/**
 * Splits a decoded head into its start line and header fields, walking the
 * text with indexOf (no intermediate array of lines).
 */
function parseLines(text: string): { first: string; headers: HeaderList } {
  const headers: HeaderList = [];
  let first: string | undefined;
  let pos = 0;
  const n = text.length;
  while (pos < n) {
    let lf = text.indexOf("\n", pos);
    if (lf === -1) lf = n;
    const lineEnd = lf > pos && text.charCodeAt(lf - 1) === 13 ? lf - 1 : lf;
    if (lineEnd === pos) break; // the blank line ending the head
    if (first === undefined) first = text.slice(pos, lineEnd);
    else headers.push(parseField(text, pos, lineEnd));
    pos = lf + 1;
  }
  return { first: first ?? "", headers };
}

/** One header field in text[start, end): name lower-cased, value trimmed. */
function parseField(text: string, start: number, end: number): [string, string] {
  const c0 = text.charCodeAt(start);
  if (c0 === 32 || c0 === 9) {
    throw new HttpParseError("Obsolete header line folding is not allowed");
  }
  const colon = text.indexOf(":", start);
  if (colon <= start || colon >= end) {
    throw new HttpParseError(
      `Malformed header line: "${text.slice(start, Math.min(end, start + 40))}"`,
    );
  }
  let upper = false;
  for (let j = start; j < colon; j++) {
    const c = text.charCodeAt(j);
    if (c >= 128 || TOKEN_CHARS[c] === 0) {
      throw new HttpParseError(
        `Invalid header name: "${text.slice(start, Math.min(colon, start + 40))}"`,
      );
    }
    if (c >= 65 && c <= 90) upper = true;
  }
  const name = upper ? text.slice(start, colon).toLowerCase() : text.slice(start, colon);
  // Optional whitespace around the value (RFC 9110 5.6.3).
  let vs = colon + 1;
  let ve = end;
  while (vs < ve && (text.charCodeAt(vs) === 32 || text.charCodeAt(vs) === 9)) vs++;
  while (ve > vs && (text.charCodeAt(ve - 1) === 32 || text.charCodeAt(ve - 1) === 9)) ve--;
  for (let j = vs; j < ve; j++) {
    const c = text.charCodeAt(j);
    if ((c < 0x20 && c !== 9) || c === 0x7f) {
      throw new HttpParseError(`Invalid character in header "${name}"`);
    }
  }
  return [name, text.slice(vs, ve)];
}

interface Semantics {
  framing: Framing;
  /** Host fields seen (a request must have at most one). */
  hosts: number;
  /** Content-Length came as a list or in several fields (of one value): forward it once. */
  lengthRepeated: boolean;
  /** Its value, -1 when absent. */
  contentLength: number;
  connectionClose: boolean;
  connectionKeepAlive: boolean;
  upgrade: string | undefined;
  connectionUpgrade: boolean;
}

function semantics(headers: HeaderList): Semantics {
  let length = -1;
  let chunked = false;
  let te = false;
  let connectionClose = false;
  let connectionKeepAlive = false;
  let connectionUpgrade = false;
  let upgrade: string | undefined;
  let hosts = 0;
  let lengthFields = 0;
  let lengthRepeated = false;
  for (const [name, value] of headers) {
    switch (name) {
      case "host":
        hosts++;
        break;
      case "content-length": {
        // A list of identical values is allowed (RFC 9110 8.6); anything else is not.
        if (++lengthFields > 1 || value.includes(",")) lengthRepeated = true;
        for (const part of value.split(",")) {
          const v = part.trim();
          if (!/^\d{1,15}$/.test(v)) throw new HttpParseError(`Invalid Content-Length: "${value}"`);
          const n = Number(v);
          if (length !== -1 && length !== n) {
            throw new HttpParseError("Conflicting Content-Length headers");
          }
          length = n;
        }
        break;
      }
      case "transfer-encoding": {
        te = true;
        const codings = value.toLowerCase().split(",").map((s) => s.trim()).filter((s) => s !== "");
        // Only chunked, as Envoy: a body in another coding (gzip, ...) cannot be re-framed
        // without losing that coding on the way.
        chunked = codings.length === 1 && codings[0] === "chunked";
        if (!chunked) throw new HttpParseError(`Unsupported Transfer-Encoding: "${value}"`, 501);
        break;
      }
      case "connection":
        for (const token of value.toLowerCase().split(",")) {
          const t = token.trim();
          if (t === "close") connectionClose = true;
          else if (t === "keep-alive") connectionKeepAlive = true;
          else if (t === "upgrade") connectionUpgrade = true;
        }
        break;
      case "upgrade":
        upgrade = value.toLowerCase();
        break;
    }
  }
  if (te && length !== -1) {
    throw new HttpParseError("Both Content-Length and Transfer-Encoding are present");
  }
  const framing: Framing = chunked
    ? { kind: "chunked" }
    : length > 0
    ? { kind: "length", length }
    : length === 0
    ? { kind: "none" }
    : { kind: "close" };
  return {
    framing,
    hosts,
    lengthRepeated,
    contentLength: length,
    connectionClose,
    connectionKeepAlive,
    upgrade,
    connectionUpgrade,
  };
}

/**
 * One Content-Length field with the one value, in place of a list of it or
 * of several fields: recipients that refuse repeats get a message they take.
 */
function singleLength(headers: HeaderList, length: number): HeaderList {
  const out: HeaderList = [];
  let done = false;
  for (const h of headers) {
    if (h[0] !== "content-length") out.push(h);
    else if (!done) {
      out.push(["content-length", String(length)]);
      done = true;
    }
  }
  return out;
}

/** A request target's characters must be visible ASCII (RFC 9112 3.2, RFC 3986). */
function checkTarget(target: string): void {
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) {
      throw new HttpParseError(
        `Invalid character in request target (byte 0x${c.toString(16).padStart(2, "0")})`,
      );
    }
  }
}

/** Parses a request head occupying `buf[start, end)` (end = findHeadEnd's result). */
export function parseRequestHead(buf: Uint8Array, start: number, end: number): RequestHead {
  const { first: requestLine, headers } = parseLines(decodeLatin1(buf, start, end));
  if (headers.length > MAX_HEADER_FIELDS) {
    throw new HttpParseError(
      `Too many header fields: ${headers.length} (at most ${MAX_HEADER_FIELDS})`,
      431,
    );
  }
  const sp1 = requestLine.indexOf(" ");
  const sp2 = requestLine.lastIndexOf(" ");
  if (sp1 <= 0 || sp2 <= sp1) throw new HttpParseError("Malformed request line");
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if (!TOKEN.test(method)) throw new HttpParseError(`Invalid method: "${method.slice(0, 20)}"`);
  if (target === "" || target.includes(" ")) throw new HttpParseError("Malformed request target");
  checkTarget(target);
  let minor: number;
  if (version === "HTTP/1.1") minor = 1;
  else if (version === "HTTP/1.0") minor = 0;
  else throw new HttpParseError(`Unsupported HTTP version: "${version.slice(0, 20)}"`, 505);
  const s = semantics(headers);
  if (s.hosts > 1) throw new HttpParseError("Several Host headers");
  // A request without Content-Length or chunked framing has no body (RFC 9112 6.3).
  const framing: Framing = s.framing.kind === "close" ? { kind: "none" } : s.framing;
  const keepAlive = minor === 1 ? !s.connectionClose : s.connectionKeepAlive && !s.connectionClose;
  return {
    method,
    target,
    minor,
    headers: s.lengthRepeated ? singleLength(headers, s.contentLength) : headers,
    framing,
    keepAlive,
    // An h2c upgrade is not passed on (as Envoy): the request goes as plain HTTP/1.1.
    upgrade: s.connectionUpgrade && s.upgrade?.trim().toLowerCase() !== "h2c"
      ? s.upgrade
      : undefined,
    size: end - start,
  };
}

/**
 * Parses a response head. `requestMethod` decides bodiless responses (HEAD,
 * and 2xx to CONNECT); 1xx, 204 and 304 have no body either.
 */
export function parseResponseHead(
  buf: Uint8Array,
  start: number,
  end: number,
  requestMethod: string,
): ResponseHead {
  const text = decodeLatin1(buf, start, end);
  const lf = text.indexOf("\n");
  const statusLine = text.slice(
    0,
    lf > 0 && text.charCodeAt(lf - 1) === 13 ? lf - 1 : lf === -1 ? text.length : lf,
  );
  const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(statusLine);
  if (m === null) {
    throw new HttpParseError(`Malformed status line: "${statusLine.slice(0, 40)}"`, 502);
  }
  const minor = Number(m[1]);
  const status = Number(m[2]);
  let headers: HeaderList;
  let s: Semantics;
  try {
    headers = parseLines(text).headers;
    if (headers.length > MAX_HEADER_FIELDS) {
      throw new HttpParseError(`${headers.length} header fields (at most ${MAX_HEADER_FIELDS})`);
    }
    s = semantics(headers);
  } catch (e) {
    throw new HttpParseError(`Invalid response from upstream: ${(e as Error).message}`, 502);
  }
  const bodiless = requestMethod === "HEAD" || status < 200 || status === 204 || status === 304 ||
    (requestMethod === "CONNECT" && status < 300);
  const framing: Framing = bodiless ? { kind: "none" } : s.framing;
  const keepAlive = framing.kind !== "close" &&
    (minor === 1 ? !s.connectionClose : s.connectionKeepAlive && !s.connectionClose);
  if (s.lengthRepeated) headers = singleLength(headers, s.contentLength);
  return { status, reason: m[3] ?? "", minor, headers, framing, keepAlive, size: end - start };
}

/**
 * Serializes a head: `startLine` then headers, then the blank line, into a
 * slab buffer (net/slab.ts). The head is built as one string and written by
 * `putLatin1`, natively for ASCII. A per-character loop over each header is
 * slower on the hot path: header strings come in many internal
 * representations (sliced, concatenated, internalized), and its property
 * loads turn megamorphic once it has seen enough of them.
 */
export function serializeHead(startLine: string, headers: HeaderList): Uint8Array {
  let text = startLine + "\r\n";
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    text += h[0] + ": " + h[1] + "\r\n";
  }
  text += "\r\n";
  const out = allocBytes(text.length);
  putLatin1(text, out);
  return out;
}

/** Returns the first value of a header (name lower-case), or undefined. */
export function getHeader(headers: HeaderList, name: string): string | undefined {
  for (const [n, v] of headers) if (n === name) return v;
  return undefined;
}

/**
 * A header's value for matching (routes, authorization): every field of that
 * name joined with ",", as Envoy and HTTP/2 see a repeated header; undefined
 * when absent.
 */
export function headerValue(headers: HeaderList, name: string): string | undefined {
  let out: string | undefined;
  for (const [n, v] of headers) if (n === name) out = out === undefined ? v : `${out},${v}`;
  return out;
}

/**
 * Whether a (lower-case) field name is hop-by-hop: the connection-specific
 * fields a proxy must not forward (RFC 9110 7.6.1), the proxy-only fields of
 * RFC 9112 and the obsolete Proxy-Connection. Matched by length and then by
 * comparison: the names parsed from a head are new strings, which a Set
 * lookup would first have to hash.
 */
function isHopByHop(n: string): boolean {
  switch (n.length) {
    case 2:
      return n === "te";
    case 7:
      return n === "trailer" || n === "upgrade";
    case 10:
      return n === "connection" || n === "keep-alive";
    case 16:
      return n === "proxy-connection";
    case 17:
      return n === "transfer-encoding";
    case 18:
      return n === "proxy-authenticate";
    case 19:
      return n === "proxy-authorization";
    default:
      return false;
  }
}

/**
 * Copies headers without hop-by-hop fields and without those the Connection
 * header names. `keep` names hop-by-hop fields to keep (e.g. "upgrade").
 */
export function endToEndHeaders(headers: HeaderList, keep?: string): HeaderList {
  let named: Set<string> | undefined;
  for (const [n, v] of headers) {
    if (n === "connection") {
      for (const t of v.toLowerCase().split(",")) {
        const token = t.trim();
        // Hop-by-hop names go anyway ("keep-alive", the usual one, needs no set).
        // Content-Length and Host are never dropped, whatever Connection says:
        // the body is forwarded by its length, and a recipient that lost the
        // length would read the body as the next request (smuggling).
        if (
          token !== "" && token !== keep && !isHopByHop(token) && token !== "content-length" &&
          token !== "host"
        ) {
          (named ??= new Set()).add(token);
        }
      }
    }
  }
  const out: HeaderList = [];
  for (const h of headers) {
    const n = h[0];
    if ((isHopByHop(n) && n !== keep) || named?.has(n)) continue;
    out.push(h);
  }
  return out;
}

/**
 * Header fields between node:http2's header objects (one key per name, a
 * repeated field as a list) and remora's field lists (`HeaderList`, one
 * entry per field), for the HTTP/2 engine and its HTTP/1.1 bridges.
 */

import type http2 from "node:http2";
import type { HeaderList } from "../http/h1_head.ts";

/**
 * The regular fields of `h` as a list, a list value as repeated fields;
 * pseudo-headers, and fields `skip` names, are left out.
 */
export function fieldList(
  h: http2.IncomingHttpHeaders | http2.OutgoingHttpHeaders,
  skip?: (name: string, value: string | number | string[]) => boolean,
): HeaderList {
  const list: HeaderList = [];
  for (const [k, v] of Object.entries(h)) {
    if (k.charCodeAt(0) === 58 || v === undefined || skip?.(k, v) === true) continue; // ":"
    if (Array.isArray(v)) { for (const x of v) list.push([k, String(x)]); }
    else list.push([k, String(v)]);
  }
  return list;
}

/** Adds the fields of `list` to `out`, a repeated name becoming a list; returns `out`. */
export function addFields(
  out: http2.OutgoingHttpHeaders,
  list: HeaderList,
): http2.OutgoingHttpHeaders {
  for (const [k, v] of list) {
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
  }
  return out;
}

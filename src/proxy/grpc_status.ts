/**
 * How remora's own replies read to a gRPC client: the grpc-status an HTTP
 * status maps to, as Envoy maps its local replies, and grpc-message's
 * encoding. Shared by the HTTP/1 and HTTP/2 engines.
 */

/** The grpc-status for an HTTP status, as Envoy maps its local replies (gRPC's HTTP mapping). */
export function grpcStatusOf(status: number): number {
  if (status >= 200 && status < 300) return 0;
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

const utf8 = new TextEncoder();

/** grpc-message is percent-encoded outside printable ASCII (and "%" itself). */
export function grpcMessage(text: string): string {
  let out = "";
  for (const b of utf8.encode(text)) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

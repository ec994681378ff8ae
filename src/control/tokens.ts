/**
 * Bootstrap tokens: how the control server's CA knows who is asking for a
 * certificate. A tokens file has one `TOKEN NAMESPACE SERVICE_ACCOUNT` per
 * line (blank lines and `#` comments are skipped); a caller that presents a
 * token in `authorization: Bearer <token>` gets a certificate for that
 * namespace and service account only. Tokens are compared in constant time.
 * It does not sign anything (see `server.ts`).
 */

import { timingSafeEqual } from "node:crypto";

/** The identity a token stands for. */
export interface TokenIdentity {
  namespace: string;
  serviceAccount: string;
}

interface _Entry extends TokenIdentity {
  token: Uint8Array;
  /** Its line in the file, for errors. */
  line: number;
}

function sameToken(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const _SEGMENT = /^[A-Za-z0-9._-]+$/;

/** A parsed tokens file. */
export class Tokens {
  readonly #entries: _Entry[];
  private constructor(entries: _Entry[]) {
    this.#entries = entries;
  }

  get size(): number {
    return this.#entries.length;
  }

  /** Parses a tokens file's text; throws an Error naming the line of the first problem. */
  static parse(text: string, file = "tokens"): Tokens {
    const entries: _Entry[] = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === "" || line.startsWith("#")) continue;
      const fields = line.split(/\s+/);
      if (fields.length !== 3) {
        throw new Error(
          `${file}:${i + 1}: expected TOKEN NAMESPACE SERVICE_ACCOUNT, got ${fields.length} fields`,
        );
      }
      const [token, namespace, serviceAccount] = fields as [string, string, string];
      if (token.length < 8) throw new Error(`${file}:${i + 1}: token is shorter than 8 characters`);
      for (const [what, s] of [["namespace", namespace], ["service account", serviceAccount]]) {
        if (!_SEGMENT.test(s!) || s === "." || s === "..") {
          throw new Error(
            `${file}:${i + 1}: ${what} "${s}" must be letters, digits, ".", "-" or "_"`,
          );
        }
      }
      const bytes = new TextEncoder().encode(token);
      const twin = entries.findIndex((e) => sameToken(e.token, bytes));
      if (twin !== -1) {
        throw new Error(
          `${file}:${i + 1}: the same token as line ${
            entries[twin]!.line
          }: a token stands for one identity`,
        );
      }
      entries.push({ token: bytes, namespace, serviceAccount, line: i + 1 });
    }
    return new Tokens(entries);
  }

  /** Reads and parses a tokens file. */
  static async load(path: string): Promise<Tokens> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new Error(
        `${path}: cannot read file: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    return Tokens.parse(text, path);
  }

  /** The identity of `token`, or undefined. Every entry is compared, in constant time each. */
  lookup(token: string): TokenIdentity | undefined {
    const given = new TextEncoder().encode(token);
    let found: _Entry | undefined;
    for (const e of this.#entries) {
      if (sameToken(e.token, given)) found ??= e;
    }
    return found === undefined
      ? undefined
      : { namespace: found.namespace, serviceAccount: found.serviceAccount };
  }
}

/** The token of an `authorization` metadata value ("Bearer <token>"), or undefined. */
export function bearerToken(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return m?.[1];
}

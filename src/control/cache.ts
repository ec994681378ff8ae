/**
 * The proxy's on-disk cache of what the control server gave it, so that a
 * restart while the control server is down still serves: the last config it
 * accepted (`config.json`: the resources as YAML text, their version and the
 * control URL) and its certificate (`cert-chain.pem`, `key.pem` with mode
 * 0600). Every file is replaced atomically (written beside, then renamed).
 * Reading gives back texts only; checking them is the caller's job. The
 * trust bundle is not cached: it comes from --root-cert.
 */

import type { Resource } from "./api.ts";
import { log } from "../log.ts";

export interface CachedConfig {
  url: string;
  version: string;
  resources: Resource[];
  savedAt: string;
}

export interface CachedCert {
  certChainPem: string;
  keyPem: string;
  /** When it was written: when the certificate was received. */
  savedAt: Date;
}

const _CONFIG = "config.json";
const _CHAIN = "cert-chain.pem";
const _KEY = "key.pem";

export class ControlCache {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * The cached config, or undefined when there is none. One that cannot be
   * read or parsed is not used either, and that is logged with the reason.
   */
  async readConfig(): Promise<CachedConfig | undefined> {
    const path = `${this.dir}/${_CONFIG}`;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        log.warn("the cached config cannot be read; it is not used", {
          file: path,
          error: (e as Error).message,
        });
      }
      return undefined;
    }
    try {
      const v = JSON.parse(text);
      if (
        typeof v?.url === "string" && typeof v.version === "string" &&
        Array.isArray(v.resources) &&
        v.resources.every((r: Resource) =>
          typeof r?.name === "string" && typeof r.yaml === "string"
        )
      ) {
        return v as CachedConfig;
      }
      log.warn("the cached config is not one remora wrote; it is not used", { file: path });
    } catch (e) {
      log.warn("the cached config is corrupt; it is not used", {
        file: path,
        error: (e as Error).message,
      });
    }
    return undefined;
  }

  async writeConfig(c: Omit<CachedConfig, "savedAt">): Promise<void> {
    const body: CachedConfig = { ...c, savedAt: new Date().toISOString() };
    await this.#write(_CONFIG, JSON.stringify(body, null, 2) + "\n", 0o644);
  }

  /** The cached certificate and key, or undefined. */
  async readCert(): Promise<CachedCert | undefined> {
    try {
      const certChainPem = await Deno.readTextFile(`${this.dir}/${_CHAIN}`);
      const keyPem = await Deno.readTextFile(`${this.dir}/${_KEY}`);
      const st = await Deno.stat(`${this.dir}/${_CHAIN}`);
      return { certChainPem, keyPem, savedAt: st.mtime ?? new Date(0) };
    } catch {
      return undefined;
    }
  }

  /** Writes the key first, then the chain, so a chain on disk is never older than its key. */
  async writeCert(certChainPem: string, keyPem: string): Promise<void> {
    await this.#write(_KEY, keyPem, 0o600);
    await this.#write(_CHAIN, certChainPem, 0o644);
  }

  async #write(name: string, text: string, mode: number): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.dir}/.${name}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    try {
      await Deno.writeTextFile(tmp, text, { mode });
      await Deno.chmod(tmp, mode);
      await Deno.rename(tmp, `${this.dir}/${name}`);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
  }
}

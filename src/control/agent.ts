/**
 * What `remora run --control` does with a control server, as one object:
 * its identity (a key made here, a CSR sent with the bootstrap token, the
 * chain checked against --root-cert, renewed at about half its lifetime,
 * rotated into the running `MeshIdentity`) and its config (each snapshot of
 * the stream validated and compiled for this workload, then activated and
 * ACKed, or refused with every error and NACKed while the last good config
 * keeps serving). With a cache directory the last good config and the
 * certificate are kept on disk and used at the next start, so that a restart
 * while the control server is down still serves. `describe()` is the
 * `control` section of /config_dump. Listeners and process lifetime are
 * `cli/run.ts`'s.
 */

import type { RuntimeConfig } from "../config/runtime.ts";
import { loadConfigTexts, type Workload } from "../config/source.ts";
import { formatConfigError } from "../config/validate.ts";
import { expiryWarnings, type Identity, identityFromPem } from "../identity/identity.ts";
import { log } from "../log.ts";
import type { ControlMetrics, Metrics } from "../telemetry/metrics.ts";
import type { MeshIdentity } from "../tls/mtls.ts";
import type { ConfigResponse, Node, Resource } from "./api.ts";
import { ControlCache } from "./cache.ts";
import {
  type ApplyResult,
  ConfigStream,
  ControlChannel,
  ControlError,
  type StreamState,
} from "./client.ts";
import type { ControlTarget } from "./target.ts";
import { newKeyAndCsr } from "./csr.ts";

export interface ControlAgentOptions {
  target: ControlTarget;
  /** File holding the bootstrap token (re-read for every certificate request). */
  tokenFile: string;
  /** The trust bundle (PEM) the control server and the issued chain must lead to. */
  rootCertPem: string;
  cacheDir?: string;
  workload: Workload;
  node: Node;
  metrics: Metrics;
  /** Lifetime asked for (the CA may give less). */
  certTtlMs: number;
  /** The SPIFFE ID the control server must present (default: any trust domain's remora-control). */
  controlId?: string;
}

/** The agent cannot start: the message says why (e.g. the token was refused). */
export class ControlStartError extends Error {
  override name = "ControlStartError";
}

/** What the running proxy lets the agent touch. */
export interface ControlHooks {
  mesh: MeshIdentity;
  /** The active config. */
  getConfig(): RuntimeConfig;
  /** Activates a config that validated and compiled. */
  setActive(config: RuntimeConfig): void;
}

interface _Event {
  version: string;
  nonce: string;
  at: string;
  error?: string;
}

const _RETRY_MIN_MS = 250;
const _RETRY_MAX_MS = 5_000;

export class ControlAgent {
  readonly #opts: ControlAgentOptions;
  readonly #channel: ControlChannel;
  readonly #cache: ControlCache | undefined;
  readonly #metrics: ControlMetrics;
  #identity: Identity;
  #identityFrom: "control" | "cache";
  #receivedAt: Date;
  #cachedConfig: RuntimeConfig | undefined;
  #stream: ConfigStream | undefined;
  #hooks: ControlHooks | undefined;
  #renewTimer: ReturnType<typeof setTimeout> | undefined;
  #renewAt: Date | undefined;
  #renewing: Promise<void> | undefined;
  #closed = false;
  #state: StreamState = "connecting";
  #lastError: { message: string; at: string } | undefined;
  #lastAck: _Event | undefined;
  #lastNack: _Event | undefined;
  #connectedAt: string | undefined;
  #reconnects = 0;
  #controlPlane = "";

  private constructor(
    opts: ControlAgentOptions,
    channel: ControlChannel,
    identity: Identity,
    from: "control" | "cache",
    receivedAt: Date,
    cachedConfig: RuntimeConfig | undefined,
  ) {
    this.#opts = opts;
    this.#channel = channel;
    this.#cache = opts.cacheDir === undefined ? undefined : new ControlCache(opts.cacheDir);
    this.#metrics = opts.metrics.control();
    this.#metrics.streamState(false);
    this.#identity = identity;
    this.#identityFrom = from;
    this.#receivedAt = receivedAt;
    this.#cachedConfig = cachedConfig;
  }

  /**
   * Gets the first identity: from the cache while it is valid, else from the
   * control server, retrying (with a log line each time) while it cannot be
   * reached. A refusal that retrying cannot cure (a wrong token, a CSR the CA
   * will not sign) throws `ControlStartError`.
   */
  static async start(opts: ControlAgentOptions): Promise<ControlAgent> {
    let channel: ControlChannel;
    try {
      channel = new ControlChannel(opts.target, opts.rootCertPem, {
        ...(opts.controlId === undefined ? {} : { expectedId: opts.controlId }),
      });
    } catch (e) {
      throw new ControlStartError(`The trust bundle was refused: ${(e as Error).message}`);
    }
    const cache = opts.cacheDir === undefined ? undefined : new ControlCache(opts.cacheDir);
    let cachedConfig: RuntimeConfig | undefined;
    const cfg = await cache?.readConfig();
    if (cfg !== undefined) {
      const loaded = loadConfigTexts(
        cfg.resources.map((r) => ({ file: r.name, text: r.yaml })),
        `cache ${opts.cacheDir} (from control ${cfg.url})`,
        opts.workload,
      );
      if (loaded.ok) {
        cachedConfig = loaded.config;
        log.info("serving the cached config until the control server sends one", {
          version: loaded.config.version,
          savedAt: cfg.savedAt,
        });
      } else {
        log.warn("the cached config was refused; it is not used", {
          errors: loaded.errors.map(formatConfigError).join("; "),
        });
      }
    }
    const cert = await cache?.readCert();
    if (cert !== undefined) {
      try {
        const identity = await identityFromPem({ ...cert, rootCertPem: opts.rootCertPem }, {
          dir: opts.cacheDir!,
        });
        log.info("using the cached certificate until it is renewed", {
          identity: identity.spiffeId,
          serial: identity.serialNumber,
          notAfter: identity.notAfter.toISOString(),
        });
        return new ControlAgent(opts, channel, identity, "cache", cert.savedAt, cachedConfig);
      } catch (e) {
        log.warn("the cached certificate is not usable; asking the control server", {
          error: (e as Error).message,
        });
      }
    }
    for (let attempt = 0;; attempt++) {
      try {
        const identity = await _requestIdentity(channel, opts, undefined);
        await _cacheCert(cache, identity);
        opts.metrics.control().certRenewal("success");
        log.info("certificate issued by the control server", {
          identity: identity.spiffeId,
          serial: identity.serialNumber,
          notAfter: identity.notAfter.toISOString(),
        });
        return new ControlAgent(opts, channel, identity, "control", new Date(), cachedConfig);
      } catch (e) {
        opts.metrics.control().certRenewal("failure");
        if (e instanceof ControlError && e.permanent) {
          channel.close();
          throw new ControlStartError(
            `The control server ${opts.target.url} refused the certificate request ` +
              `(token file ${opts.tokenFile}): ${e.message}`,
          );
        }
        if (e instanceof ControlStartError) {
          channel.close();
          throw e;
        }
        const delay = _backoff(attempt);
        log.warn("cannot get a certificate from the control server; retrying", {
          control: opts.target.url,
          error: (e as Error).message,
          retryInMs: delay,
        });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** The identity to serve now. */
  get identity(): Identity {
    return this.#identity;
  }

  /** The config from the cache, when there was a good one. */
  get cachedConfig(): RuntimeConfig | undefined {
    return this.#cachedConfig;
  }

  /** Starts the config stream and the renewal schedule. */
  run(hooks: ControlHooks): void {
    this.#hooks = hooks;
    this.#opts.metrics.setIdentityCertExpiry(this.#identity.notAfter);
    this.#scheduleRenewal(this.#renewTime(this.#identity, this.#receivedAt));
    this.#stream = new ConfigStream(this.#channel, {
      node: { ...this.#opts.node, serviceAccount: this.#identity.serviceAccount },
      ...(this.#cachedConfig === undefined ? {} : { initialVersion: this.#cachedConfig.version }),
      apply: (res) => this.#apply(res),
      onState: (state, error) => {
        const was = this.#state;
        this.#state = state;
        this.#metrics.streamState(state === "connected");
        if (state === "connected") {
          this.#connectedAt = new Date().toISOString();
          log.info("connected to the control server", { control: this.#opts.target.url });
        } else if (state === "reconnecting") {
          this.#reconnects++;
          if (error !== undefined) this.#lastError = { message: error, at: _now() };
          // One line per outage at warn; every retry at debug.
          const line = was === "connected" || this.#reconnects === 1 ? log.warn : log.debug;
          line("config stream to the control server broken; the current config keeps serving", {
            control: this.#opts.target.url,
            error,
          });
        }
      },
    });
  }

  #apply(res: ConfigResponse): ApplyResult {
    const hooks = this.#hooks!;
    this.#controlPlane = res.controlPlane;
    const event = { version: res.versionInfo, nonce: res.nonce, at: _now() };
    const current = hooks.getConfig();
    if (current.version === res.versionInfo && current.source.startsWith("control ")) {
      this.#lastAck = event;
      this.#metrics.update("ack");
      return { ok: true };
    }
    const loaded = loadConfigTexts(
      res.resources.map((r) => ({ file: r.name, text: r.yaml })),
      `control ${this.#opts.target.url}`,
      this.#opts.workload,
    );
    if (!loaded.ok) {
      const lines = loaded.errors.map(formatConfigError);
      this.#lastNack = { ...event, error: lines.join("\n") };
      this.#metrics.update("nack");
      this.#opts.metrics.configReloads.inc({ result: "rejected" });
      log.error(
        "config from the control server refused (NACK); the last good config keeps serving",
        {
          refused: res.versionInfo,
          serving: current.version,
          errors: lines.length,
        },
      );
      for (const line of lines) log.error(line);
      return { ok: false, message: lines.join("\n") };
    }
    hooks.setActive(loaded.config);
    this.#lastAck = event;
    this.#metrics.update("ack");
    this.#opts.metrics.configReloads.inc({ result: "accepted" });
    log.info("config from the control server applied (ACK)", {
      version: loaded.config.version,
      resources: loaded.config.resources.length,
      files: res.resources.length,
    });
    this.#saveConfig(res.versionInfo, res.resources);
    return { ok: true };
  }

  #saveConfig(version: string, resources: Resource[]): void {
    this.#cache?.writeConfig({ url: this.#opts.target.url, version, resources }).catch((e) =>
      log.warn("cannot write the config cache", { error: (e as Error).message })
    );
  }

  /** About half the lifetime left at `receivedAt`, at least a second from now. */
  #renewTime(id: Identity, receivedAt: Date): Date {
    const from = Math.max(receivedAt.getTime(), id.notBefore.getTime());
    const at = from + (id.notAfter.getTime() - from) / 2;
    return new Date(Math.max(at, Date.now() + 1000));
  }

  #scheduleRenewal(at: Date): void {
    if (this.#closed) return;
    if (this.#renewTimer !== undefined) clearTimeout(this.#renewTimer);
    this.#renewAt = at;
    this.#renewTimer = setTimeout(() => {
      this.#renewTimer = undefined;
      this.#renewing = this.#renew(0);
    }, Math.max(0, at.getTime() - Date.now()));
  }

  async #renew(attempt: number): Promise<void> {
    if (this.#closed) return;
    const old = this.#identity;
    try {
      // The identity asked for is the token's, as at start: an operator who moves the token to
      // another service account (or a cache from another one) gets that identity at renewal,
      // where asking for the old one would be refused at every try until it expired.
      const identity = await _requestIdentity(this.#channel, this.#opts, undefined);
      if (this.#closed) return;
      if (identity.spiffeId !== old.spiffeId) {
        log.warn("the bootstrap token stands for another identity now: it is the one served", {
          identity: identity.spiffeId,
          was: old.spiffeId,
        });
      }
      this.#identity = identity;
      this.#identityFrom = "control";
      this.#receivedAt = new Date();
      this.#hooks!.mesh.rotate(identity);
      this.#metrics.certRenewal("success");
      this.#opts.metrics.identityRotation("accepted");
      this.#opts.metrics.setIdentityCertExpiry(identity.notAfter);
      log.info("certificate renewed", {
        identity: identity.spiffeId,
        serial: identity.serialNumber,
        notAfter: identity.notAfter.toISOString(),
      });
      await _cacheCert(this.#cache, identity);
      this.#scheduleRenewal(this.#renewTime(identity, this.#receivedAt));
    } catch (e) {
      if (this.#closed) return;
      this.#metrics.certRenewal("failure");
      this.#lastError = { message: `certificate renewal: ${(e as Error).message}`, at: _now() };
      const delay = Math.min(
        _backoff(attempt),
        Math.max(1000, (old.notAfter.getTime() - Date.now()) / 4),
      );
      log.warn("cannot renew the certificate; the current one stays", {
        error: (e as Error).message,
        notAfter: old.notAfter.toISOString(),
        retryInMs: delay,
      });
      for (const w of expiryWarnings(old)) log.warn(w, { identity: old.spiffeId });
      this.#renewAt = new Date(Date.now() + delay);
      this.#renewTimer = setTimeout(() => {
        this.#renewTimer = undefined;
        this.#renewing = this.#renew(attempt + 1);
      }, delay);
    }
  }

  /** The `control` section of /config_dump. */
  describe(): Record<string, unknown> {
    const id = this.#identity;
    return {
      url: this.#opts.target.url,
      controlPlane: this.#controlPlane,
      node: this.#opts.node.id,
      stream: {
        state: this.#state,
        connectedAt: this.#connectedAt ?? null,
        reconnects: this.#reconnects,
        acceptedVersion: this.#stream?.version ?? null,
        lastAck: this.#lastAck ?? null,
        lastNack: this.#lastNack ?? null,
        lastError: this.#lastError ?? null,
      },
      certificate: {
        identity: id.spiffeId,
        serial: id.serialNumber,
        notBefore: id.notBefore.toISOString(),
        notAfter: id.notAfter.toISOString(),
        renewAt: this.#renewAt?.toISOString() ?? null,
        from: this.#identityFrom,
      },
      cacheDir: this.#opts.cacheDir ?? null,
    };
  }

  /** Stops the stream and renewals. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#renewTimer !== undefined) clearTimeout(this.#renewTimer);
    this.#stream?.close();
    await this.#renewing?.catch(() => {});
    this.#channel.close();
  }
}

/** Makes a key and CSR, sends it with the token, and checks the chain it gets back. */
async function _requestIdentity(
  channel: ControlChannel,
  opts: ControlAgentOptions,
  spiffeId: string | undefined,
): Promise<Identity> {
  let token: string;
  try {
    token = (await Deno.readTextFile(opts.tokenFile)).trim();
  } catch (e) {
    throw new ControlStartError(
      `Cannot read the token file ${opts.tokenFile}: ${(e as Error).message}`,
    );
  }
  if (token === "") throw new ControlStartError(`The token file ${opts.tokenFile} is empty`);
  // A token travels in call metadata: printable ASCII, one word (as the server reads it). The
  // token itself is never printed.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new ControlStartError(
      `The token file ${opts.tokenFile} holds more than one token, or characters a token cannot have (whitespace, control or non-ASCII characters): it must hold one token`,
    );
  }
  const { keyPem, csrPem } = await newKeyAndCsr(spiffeId);
  const chain = await channel.createCertificate(
    token,
    csrPem,
    Math.max(1, Math.round(opts.certTtlMs / 1000)),
  );
  // The bundle comes from --root-cert, never from the server; roots it sends are dropped.
  const roots = new Set(_pems(opts.rootCertPem).map(_norm));
  const certs = chain.flatMap(_pems).filter((p) => !roots.has(_norm(p)));
  try {
    return await identityFromPem({
      certChainPem: certs.join("\n") + "\n",
      keyPem,
      rootCertPem: opts.rootCertPem,
    });
  } catch (e) {
    throw new ControlError(13, `The issued certificate was refused: ${(e as Error).message}`);
  }
}

async function _cacheCert(cache: ControlCache | undefined, id: Identity): Promise<void> {
  if (cache === undefined) return;
  try {
    await cache.writeCert(id.certChainPem, id.keyPem);
  } catch (e) {
    log.warn("cannot write the certificate cache", { error: (e as Error).message });
  }
}

function _pems(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function _norm(pem: string): string {
  return pem.replace(/\s+/g, "");
}

function _backoff(attempt: number): number {
  const ceiling = Math.min(_RETRY_MAX_MS, _RETRY_MIN_MS * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
}

function _now(): string {
  return new Date().toISOString();
}

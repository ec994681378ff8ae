/**
 * The proxy's side of the control API over one gRPC channel: a TLS channel
 * that trusts only the mesh's trust bundle and a control server presenting
 * the expected SPIFFE ID (checked here, chain and all, not left to node:tls),
 * the CreateCertificate call with a bootstrap token, and `ConfigStream`,
 * which keeps a ConfigDiscovery stream open: each response is handed to the
 * caller's `apply`, answered with an ACK or a NACK, and a broken stream is
 * reopened after an exponential backoff with jitter, forever, until
 * `close`. It does not compile configs or hold identities (see `agent.ts`).
 */

import * as grpc from "@grpc/grpc-js";
import { X509Certificate } from "node:crypto";
import { chainProblem, spiffeIdOf } from "../tls/mtls.ts";
import {
  certificateClient,
  type CertificateRequest,
  type CertificateResponse,
  configDiscoveryClient,
  type ConfigRequest,
  type ConfigResponse,
  type Node,
} from "./api.ts";
import type { ControlTarget } from "./target.ts";

/** The SPIFFE path a control server presents unless told otherwise (istiod's is istiod). */
export const CONTROL_SA_PATH = "/ns/istio-system/sa/remora-control";

/** A gRPC error code and message, as the caller reports them. */
export class ControlError extends Error {
  override name = "ControlError";
  readonly code: grpc.status;
  constructor(code: grpc.status, message: string) {
    super(message);
    this.code = code;
  }
  /** Retrying cannot help: the server refused who we are or what we sent. */
  get permanent(): boolean {
    return this.code === grpc.status.UNAUTHENTICATED ||
      this.code === grpc.status.PERMISSION_DENIED ||
      this.code === grpc.status.INVALID_ARGUMENT;
  }
}

/** The channel to one control server, shared by the certificate call and the config stream. */
export class ControlChannel {
  readonly target: ControlTarget;
  readonly #certs: grpc.Client;
  readonly #config: grpc.Client;
  /** Why the last TLS handshake failed our checks, for the error message. */
  #refused: string | undefined;

  /**
   * `rootCertPem` is the trust bundle; the server must present a certificate
   * that chains to it and whose SPIFFE ID is `expectedId` (default: any
   * trust domain's `.../ns/istio-system/sa/remora-control`).
   */
  constructor(target: ControlTarget, rootCertPem: string, opts: { expectedId?: string } = {}) {
    this.target = target;
    const roots = (rootCertPem.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
    ) ?? []).map((p) => new X509Certificate(p));
    if (roots.length === 0) throw new Error("The trust bundle holds no PEM certificate");
    const creds = grpc.credentials.createSsl(Buffer.from(rootCertPem), null, null, {
      checkServerIdentity: (_host: string, cert: unknown) => {
        const problem = chainProblem(cert as Parameters<typeof chainProblem>[0], roots);
        if (problem !== undefined) {
          this.#refused = `the control server's certificate was refused: ${problem}`;
          return new Error(this.#refused);
        }
        const presented = spiffeIdOf(cert as Parameters<typeof spiffeIdOf>[0]);
        const ok = opts.expectedId === undefined
          ? presented?.endsWith(CONTROL_SA_PATH) === true
          : presented === opts.expectedId;
        if (ok) return undefined;
        this.#refused = `the control server presented ${presented ?? "no SPIFFE ID"}, expected ${
          opts.expectedId ?? `spiffe://<trust domain>${CONTROL_SA_PATH}`
        }`;
        return new Error(this.#refused);
      },
    });
    const options: grpc.ChannelOptions = {
      // The certificate names a SPIFFE ID, not a host: SNI and :authority name the service.
      "grpc.ssl_target_name_override": "remora-control",
      "grpc.default_authority": "remora-control",
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.keepalive_time_ms": 15_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 5_000,
    };
    // Both services share one channel (one connection): grpc-js pools by target and options.
    const Certs = certificateClient();
    const Config = configDiscoveryClient();
    this.#certs = new Certs(target.address, creds, options);
    this.#config = new Config(target.address, creds, options);
  }

  /** Sends a CSR with a bootstrap token; resolves with the PEM chain (leaf first). */
  createCertificate(
    token: string,
    csrPem: string,
    validitySeconds: number,
    timeoutMs = 10_000,
  ): Promise<string[]> {
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${token}`);
    const req: CertificateRequest = { csr: csrPem, validityDuration: validitySeconds };
    return new Promise((resolve, reject) => {
      (this.#certs as unknown as {
        createCertificate(
          r: CertificateRequest,
          m: grpc.Metadata,
          o: grpc.CallOptions,
          cb: (e: grpc.ServiceError | null, res?: CertificateResponse) => void,
        ): void;
      }).createCertificate(req, md, { deadline: Date.now() + timeoutMs }, (e, res) => {
        if (e !== null) reject(this.#error(e));
        else if (res === undefined || res.certChain.length === 0) {
          reject(new ControlError(grpc.status.INTERNAL, "The CA answered with no certificate"));
        } else resolve(res.certChain);
      });
    });
  }

  /** Opens a ConfigDiscovery stream. */
  openStream(): grpc.ClientDuplexStream<ConfigRequest, ConfigResponse> {
    return (this.#config as unknown as {
      streamConfig(): grpc.ClientDuplexStream<ConfigRequest, ConfigResponse>;
    }).streamConfig();
  }

  /** A gRPC error as a ControlError with the most useful message. */
  error(e: grpc.ServiceError): ControlError {
    return this.#error(e);
  }

  #error(e: grpc.ServiceError): ControlError {
    const refused = this.#refused;
    if (e.code === grpc.status.UNAVAILABLE && refused !== undefined) {
      return new ControlError(e.code, `${this.target.url} unavailable: ${refused}`);
    }
    const name = grpc.status[e.code] ?? String(e.code);
    return new ControlError(e.code, `${name}: ${e.details || e.message}`);
  }

  close(): void {
    this.#certs.close();
    this.#config.close();
  }
}

/** What `apply` says of a response: applied (ACK) or refused with every error (NACK). */
export type ApplyResult = { ok: true } | { ok: false; message: string };

export type StreamState = "connecting" | "connected" | "reconnecting" | "closed";

export interface ConfigStreamOptions {
  node: Node;
  /** The version already served (from a cache), sent on the first request. */
  initialVersion?: string;
  /** Validates and activates a response's resources, or says why not. */
  apply(res: ConfigResponse): ApplyResult;
  /** Told of every state change, with the error that caused it. */
  onState?(state: StreamState, error?: string): void;
  /** First reconnect delay (default 250ms); doubled per failure up to `maxBackoffMs` (default 5s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Randomness for jitter (tests). */
  random?: () => number;
}

/**
 * Keeps a config stream open. The version sent in requests is the last one
 * applied, so that after a NACK the server sees what is still served.
 */
export class ConfigStream {
  readonly #channel: ControlChannel;
  readonly #opts: ConfigStreamOptions;
  #state: StreamState = "connecting";
  #version: string;
  #failures = 0;
  #call: grpc.ClientDuplexStream<ConfigRequest, ConfigResponse> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  constructor(channel: ControlChannel, opts: ConfigStreamOptions) {
    this.#channel = channel;
    this.#opts = opts;
    this.#version = opts.initialVersion ?? "";
    this.#open();
  }

  get state(): StreamState {
    return this.#state;
  }

  /** The last version applied. */
  get version(): string {
    return this.#version;
  }

  #setState(state: StreamState, error?: string): void {
    this.#state = state;
    this.#opts.onState?.(state, error);
  }

  #open(): void {
    if (this.#closed) return;
    const call = this.#channel.openStream();
    this.#call = call;
    let done = false;
    const broken = (why: string) => {
      if (done) return;
      done = true;
      if (this.#call === call) this.#call = undefined;
      if (this.#closed) return;
      this.#reconnect(why);
    };
    call.on("data", (res: ConfigResponse) => {
      if (this.#closed) return;
      if (this.#state !== "connected") {
        this.#failures = 0;
        this.#setState("connected");
      }
      let result: ApplyResult;
      try {
        result = this.#opts.apply(res);
      } catch (e) {
        result = { ok: false, message: `Cannot apply: ${(e as Error).message}` };
      }
      if (result.ok) this.#version = res.versionInfo;
      call.write({
        node: this.#opts.node,
        versionInfo: this.#version,
        responseNonce: res.nonce,
        errorDetail: result.ok
          ? null
          : { code: grpc.status.INVALID_ARGUMENT, message: result.message },
      });
    });
    call.on("error", (e: grpc.ServiceError) => broken(this.#channel.error(e).message));
    call.on("end", () => broken("the control server ended the stream"));
    call.write({ node: this.#opts.node, versionInfo: this.#version, responseNonce: "" });
  }

  #reconnect(why: string): void {
    const initial = this.#opts.initialBackoffMs ?? 250;
    const max = this.#opts.maxBackoffMs ?? 5_000;
    const ceiling = Math.min(max, initial * 2 ** Math.min(this.#failures, 20));
    this.#failures++;
    // "Equal jitter": half the ceiling plus a random part of the other half.
    const delay = Math.round(ceiling / 2 + (this.#opts.random ?? Math.random)() * ceiling / 2);
    this.#setState("reconnecting", `${why} (retrying in ${delay}ms)`);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#open();
    }, delay);
  }

  /** Ends the stream and stops reconnecting. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#call?.cancel();
    this.#call = undefined;
    this.#setState("closed");
  }
}

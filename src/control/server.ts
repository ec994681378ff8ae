/**
 * The reference control server's gRPC side: the ConfigDiscovery stream
 * (state of the world: every connected proxy gets the full current snapshot
 * when it connects and again on every `publish`) and Istio's
 * CreateCertificate (a CSR signed by the CA for the identity the caller's
 * bootstrap token stands for, and no other). Every proxy gets the same
 * snapshot: the resources are the mesh's, and each proxy selects what
 * concerns its workload when it compiles them (workloadSelector, sourceLabels
 * and so on), as with a local file. The channel is TLS with a certificate
 * the caller gives (issued from the same CA); there are no client
 * certificates on it: bootstrap tokens authenticate certificate requests,
 * and config is not secret within the mesh. It does not read directories
 * or parse flags (see `cli/control.ts`).
 */

import * as grpc from "@grpc/grpc-js";
import { type Ca, CaError, type IssuedCert, signCsr } from "../identity/ca.ts";
import { spiffeId } from "../identity/spiffe.ts";
import { log } from "../log.ts";
import {
  type CertificateRequest,
  type CertificateResponse,
  certificateService,
  configDiscoveryService,
  type ConfigRequest,
  type ConfigResponse,
  type Node,
} from "./api.ts";
import type { Snapshot } from "./snapshot.ts";
import { bearerToken, type Tokens } from "./tokens.ts";

export interface ControlServerOptions {
  ca: Ca;
  /** The TLS certificate the server presents (issued from `ca`). */
  serverCert: IssuedCert;
  /** The first snapshot served. */
  snapshot: Snapshot;
  /** The current tokens (read per request, so an edited file counts at once), or undefined: no certificates are issued. */
  tokens: () => Promise<Tokens | undefined>;
  /** Longest certificate lifetime issued; shorter requests are honoured. */
  certTtlMs: number;
  /** Shown to proxies, e.g. "remora-control 0.9.0". */
  controlPlane: string;
}

/** What the server knows of one connected proxy (for logs and tests). */
export interface StreamInfo {
  node: Node | undefined;
  peer: string;
  /** The version last sent, and its nonce. */
  sentVersion: string | undefined;
  sentNonce: string | undefined;
  /** The version the proxy last acknowledged. */
  ackedVersion: string | undefined;
  /** The last NACK's error, cleared by an ACK. */
  lastNack: string | undefined;
}

type _Call = grpc.ServerDuplexStream<ConfigRequest, ConfigResponse>;

interface _Stream extends StreamInfo {
  call: _Call;
}

/** Max bytes of one message either way (a large mesh's config as YAML). */
const _MAX_MESSAGE = 64 * 1024 * 1024;

export class ControlServer {
  readonly #opts: ControlServerOptions;
  readonly #server: grpc.Server;
  readonly #streams = new Set<_Stream>();
  #snapshot: Snapshot;
  #nonce = 0;
  readonly #nonceBase = crypto.randomUUID().slice(0, 8);

  constructor(opts: ControlServerOptions) {
    this.#opts = opts;
    this.#snapshot = opts.snapshot;
    this.#server = new grpc.Server({
      "grpc.max_receive_message_length": _MAX_MESSAGE,
      "grpc.max_send_message_length": _MAX_MESSAGE,
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 5_000,
    });
    this.#server.addService(configDiscoveryService(), {
      streamConfig: (call: _Call) => this.#stream(call),
    });
    this.#server.addService(certificateService(), {
      createCertificate: (
        call: grpc.ServerUnaryCall<CertificateRequest, CertificateResponse>,
        done: grpc.sendUnaryData<CertificateResponse>,
      ) => {
        this.#createCertificate(call).then(
          (res) => done(null, res),
          (e: grpc.ServiceError) => done(e),
        );
      },
    });
  }

  /** Binds to `host:port` (0: any free port); resolves with the port. */
  listen(host: string, port: number): Promise<number> {
    // No client certificates are asked for, but the CA must be given: without it
    // grpc-js passes the system roots, and Deno's TLS then sends them all in
    // the handshake (a message clients refuse as too large).
    const creds = grpc.ServerCredentials.createSsl(Buffer.from(this.#opts.ca.certPem), [{
      cert_chain: Buffer.from(this.#opts.serverCert.certChainPem),
      private_key: Buffer.from(this.#opts.serverCert.keyPem),
    }], false);
    const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    // grpc-js reports a failed bind as EINVAL whatever the cause (and logs a line of its
    // own): the runtime's own attempt says what is wrong (in use, no such address).
    try {
      Deno.listen({ hostname: host, port }).close();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(target, creds, (e, bound) => e ? reject(e) : resolve(bound));
    });
  }

  /** The snapshot being served. */
  get snapshot(): Snapshot {
    return this.#snapshot;
  }

  /** The connected proxies. */
  get streams(): StreamInfo[] {
    return [...this.#streams].map(({ call: _call, ...info }) => info);
  }

  /** Serves `snapshot` from now on and sends it to every connected proxy. */
  publish(snapshot: Snapshot): void {
    this.#snapshot = snapshot;
    for (const s of this.#streams) {
      if (s.node !== undefined) this.#send(s);
    }
  }

  /** Ends every stream and stops the server. */
  close(): Promise<void> {
    for (const s of this.#streams) s.call.end();
    this.#streams.clear();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, 1000);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #send(s: _Stream): void {
    const nonce = `${this.#nonceBase}-${++this.#nonce}`;
    const snap = this.#snapshot;
    s.sentVersion = snap.version;
    s.sentNonce = nonce;
    s.call.write({
      versionInfo: snap.version,
      resources: snap.resources,
      nonce,
      controlPlane: this.#opts.controlPlane,
    });
  }

  #stream(call: _Call): void {
    const s: _Stream = {
      call,
      node: undefined,
      peer: call.getPeer(),
      sentVersion: undefined,
      sentNonce: undefined,
      ackedVersion: undefined,
      lastNack: undefined,
    };
    this.#streams.add(s);
    const gone = (why: string) => {
      if (!this.#streams.delete(s)) return;
      log.info("proxy disconnected", { node: s.node?.id ?? "", peer: s.peer, reason: why });
    };
    call.on("data", (req: ConfigRequest) => {
      if (s.node === undefined) {
        const n = req.node;
        s.node = {
          id: n?.id ?? "",
          namespace: n?.namespace ?? "",
          labels: n?.labels ?? {},
          serviceAccount: n?.serviceAccount ?? "",
        };
        log.info("proxy connected", {
          node: s.node.id,
          namespace: s.node.namespace,
          peer: s.peer,
          version: req.versionInfo,
        });
        this.#send(s);
        return;
      }
      // An answer to an older response (one already superseded) says nothing new.
      if (req.responseNonce !== s.sentNonce) return;
      if (req.errorDetail != null) {
        s.lastNack = req.errorDetail.message;
        log.warn("proxy refused the config (NACK)", {
          node: s.node.id,
          refused: s.sentVersion,
          serving: req.versionInfo,
          error: req.errorDetail.message,
        });
      } else {
        s.ackedVersion = req.versionInfo;
        s.lastNack = undefined;
        log.info("proxy applied the config (ACK)", { node: s.node.id, version: req.versionInfo });
      }
    });
    call.on("end", () => {
      gone("stream ended");
      call.end();
    });
    call.on("error", (e: Error) => gone(e.message));
    call.on("cancelled", () => gone("cancelled"));
  }

  async #createCertificate(
    call: grpc.ServerUnaryCall<CertificateRequest, CertificateResponse>,
  ): Promise<CertificateResponse> {
    const fail = (code: grpc.status, details: string): grpc.ServiceError => {
      log.warn("certificate refused", { peer: call.getPeer(), reason: details });
      return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
    };
    let tokens: Tokens | undefined;
    try {
      tokens = await this.#opts.tokens();
    } catch (e) {
      throw fail(grpc.status.INTERNAL, `The tokens file cannot be read: ${(e as Error).message}`);
    }
    if (tokens === undefined) {
      throw fail(
        grpc.status.UNAUTHENTICATED,
        "This control server issues no certificates: it was started without --tokens",
      );
    }
    const auth = call.metadata.get("authorization")[0];
    const token = bearerToken(typeof auth === "string" ? auth : undefined);
    if (token === undefined) {
      throw fail(
        grpc.status.UNAUTHENTICATED,
        "No bootstrap token: send it as call metadata authorization: Bearer <token>",
      );
    }
    const who = tokens.lookup(token);
    if (who === undefined) {
      throw fail(grpc.status.UNAUTHENTICATED, "The bootstrap token is not valid");
    }
    const id = spiffeId(this.#opts.ca.trustDomain, who.namespace, who.serviceAccount);
    const asked = Number(call.request.validityDuration);
    const ttlMs = asked > 0 ? Math.min(asked * 1000, this.#opts.certTtlMs) : this.#opts.certTtlMs;
    try {
      const issued = await signCsr(this.#opts.ca, call.request.csr, { id, ttlMs });
      log.info("certificate issued", {
        identity: id,
        notAfter: issued.notAfter.toISOString(),
        peer: call.getPeer(),
      });
      return { certChain: [issued.certChainPem, this.#opts.ca.certPem] };
    } catch (e) {
      if (e instanceof CaError) {
        throw fail(grpc.status.INVALID_ARGUMENT, `Cannot sign for ${id}: ${e.message}`);
      }
      throw fail(grpc.status.INTERNAL, `Cannot sign for ${id}: ${(e as Error).message}`);
    }
  }
}

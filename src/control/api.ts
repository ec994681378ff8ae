/**
 * The control API as grpc-js sees it: the two embedded .proto files
 * (remora_control.proto, istio_ca.proto) parsed from their text with
 * protobufjs and turned into grpc-js service definitions, plus the message
 * shapes in TypeScript. The .proto texts are imported as text, so `deno
 * compile` embeds them and nothing is read from disk at run time. It does
 * not serve or call anything (see `server.ts` and `client.ts`).
 */

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import controlProto from "./remora_control.proto" with { type: "text" };
import caProto from "./istio_ca.proto" with { type: "text" };

export interface Node {
  id: string;
  namespace: string;
  labels: Record<string, string>;
  serviceAccount: string;
}

export interface ErrorDetail {
  code: number;
  message: string;
}

export interface ConfigRequest {
  node?: Node | null;
  versionInfo: string;
  responseNonce: string;
  errorDetail?: ErrorDetail | null;
}

export interface Resource {
  name: string;
  yaml: string;
}

export interface ConfigResponse {
  versionInfo: string;
  resources: Resource[];
  nonce: string;
  controlPlane: string;
}

export interface CertificateRequest {
  csr: string;
  /** Seconds (int64; a string when it comes off the wire). */
  validityDuration: number | string;
}

export interface CertificateResponse {
  certChain: string[];
}

/** The full method paths, as they appear on the wire. */
export const STREAM_CONFIG_PATH = "/remora.control.v1.ConfigDiscovery/StreamConfig";
export const CREATE_CERTIFICATE_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

const _OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

function _load(): grpc.GrpcObject {
  const root = new protobuf.Root();
  protobuf.parse(controlProto, root, { keepCase: false });
  protobuf.parse(caProto, root, { keepCase: false });
  const def = protoLoader.fromJSON(root.toJSON(), _OPTIONS);
  return grpc.loadPackageDefinition(def);
}

let _api: grpc.GrpcObject | undefined;

/** The loaded API (parsed once, on first use). */
function api(): grpc.GrpcObject {
  return _api ??= _load();
}

// deno-lint-ignore no-explicit-any
type Any = any;

/** The ConfigDiscovery service definition (for `server.addService`). */
export function configDiscoveryService(): grpc.ServiceDefinition {
  return (api() as Any).remora.control.v1.ConfigDiscovery.service;
}

/** The IstioCertificateService definition (for `server.addService`). */
export function certificateService(): grpc.ServiceDefinition {
  return (api() as Any).istio.v1.auth.IstioCertificateService.service;
}

/** A client constructor for ConfigDiscovery. */
export function configDiscoveryClient(): grpc.ServiceClientConstructor {
  return (api() as Any).remora.control.v1.ConfigDiscovery;
}

/** A client constructor for IstioCertificateService. */
export function certificateClient(): grpc.ServiceClientConstructor {
  return (api() as Any).istio.v1.auth.IstioCertificateService;
}

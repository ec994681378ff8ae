/**
 * Validation of parsed config documents into typed Istio resources.
 *
 * `validateDocuments` checks a whole config set at once: each document's
 * envelope (apiVersion, kind, metadata) and spec (by the `validate_<kind>.ts`
 * modules), then rules across documents: duplicate names, two resources
 * claiming the same host, subsets that no DestinationRule defines, more than
 * one Sidecar. It collects every error with its file, document and field path
 * and never stops at the first; any field remora does not implement is an
 * error, never ignored. Host names in the resulting resources are resolved to
 * FQDNs (see `fqdn`). It does no I/O and builds no runtime tables (that is
 * `compile.ts`).
 */

import { printable } from "../log.ts";
import type { Kind, Meta, Resource, VirtualServiceSpec } from "./model.ts";
import { validateDestinationRuleSpec } from "./validate_destination_rule.ts";
import {
  boundToMesh,
  type ConfigError,
  Ctx,
  fields,
  fqdn,
  isDnsLabel,
  isDnsSubdomain,
  isObj,
  join,
  labels,
  obj,
  str,
  typeName,
} from "./validate_fields.ts";
import { checkHedgeRoutes, remoraAnnotations } from "./validate_remora.ts";
import { validateServiceEntrySpec } from "./validate_service_entry.ts";
import {
  isSecurityKind,
  SECURITY_API_VERSIONS,
  validateAuthorizationPolicySpec,
  validatePeerAuthenticationSpec,
} from "./validate_security.ts";
import { validateSidecarSpec } from "./validate_sidecar.ts";
import { TELEMETRY_API_VERSIONS, validateTelemetrySpec } from "./validate_telemetry.ts";
import { validateVirtualServiceSpec } from "./validate_virtual_service.ts";

export { type ConfigError, fqdn } from "./validate_fields.ts";

export type ValidationResult =
  | { ok: true; resources: Resource[] }
  | { ok: false; errors: ConfigError[] };

export interface InputDocument {
  file: string;
  /** 0-based index of the document in its file. */
  index: number;
  value: unknown;
}

export interface ValidateOptions {
  /** Namespace of resources whose metadata has none (default "default"). */
  defaultNamespace?: string | undefined;
  /** Check rules across documents (default true); off when some documents did not parse. */
  crossChecks?: boolean;
}

const _KINDS: readonly Kind[] = [
  "ServiceEntry",
  "VirtualService",
  "DestinationRule",
  "Sidecar",
  "Telemetry",
  "PeerAuthentication",
  "AuthorizationPolicy",
];
const _API_VERSIONS = [
  "networking.istio.io/v1",
  "networking.istio.io/v1beta1",
  "networking.istio.io/v1alpha3",
];
/** Kubernetes bookkeeping in metadata: accepted and ignored, it carries no behaviour. */
const _META_IGNORED = [
  "annotations",
  "resourceVersion",
  "uid",
  "generation",
  "creationTimestamp",
  "managedFields",
  "finalizers",
  "ownerReferences",
  "generateName",
  "selfLink",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
];

/** Validates a whole config set; every error is reported, in document order. */
export function validateDocuments(
  docs: ReadonlyArray<InputDocument>,
  opts: ValidateOptions = {},
): ValidationResult {
  const errors: ConfigError[] = [];
  const defaultNs = opts.defaultNamespace ?? "default";
  const checked: Array<{ ctx: Ctx; resource: Resource | undefined; raw: unknown }> = [];
  for (const doc of docs) {
    const ctx = new Ctx(errors, doc.file, doc.index, _namespaceOf(doc.value) ?? defaultNs);
    checked.push({ ctx, resource: _validateDocument(ctx, doc), raw: doc.value });
  }
  if (opts.crossChecks ?? true) _crossCheck(checked);
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, resources: checked.map((c) => c.resource!) };
}

/** One line: `file: document N (Kind name): path: message`; N counts from 1. */
export function formatConfigError(e: ConfigError): string {
  let where = e.line === undefined ? e.file : `${e.file}:${e.line}`;
  if (e.index >= 0) where += `: document ${e.index + 1}`;
  if (e.kind !== undefined) where += ` (${e.kind}${e.name === undefined ? "" : ` ${e.name}`})`;
  return printable(`${where}: ${e.path === "" ? "" : `${e.path}: `}${e.message}`);
}

function _namespaceOf(v: unknown): string | undefined {
  if (!isObj(v) || !isObj(v.metadata)) return undefined;
  const ns = v.metadata.namespace;
  return typeof ns === "string" && isDnsLabel(ns) ? ns : undefined;
}

function _validateDocument(ctx: Ctx, doc: InputDocument): Resource | undefined {
  const v = doc.value;
  if (!isObj(v)) {
    return ctx.err(
      "",
      `expected a resource with apiVersion, kind, metadata and spec, got ${typeName(v)}`,
    );
  }
  if (typeof v.kind === "string") ctx.kind = v.kind;
  if (isObj(v.metadata) && typeof v.metadata.name === "string") ctx.name = v.metadata.name;
  const before = ctx.errors.length;

  fields(ctx, v, "", ["apiVersion", "kind", "metadata", "spec", "status"]);
  const apiVersion = v.apiVersion === undefined
    ? ctx.err("apiVersion", "required")
    : str(ctx, v.apiVersion, "apiVersion");
  const telemetryKind = v.kind === "Telemetry";
  const securityKind = isSecurityKind(v.kind);
  if (
    apiVersion !== undefined &&
    !(telemetryKind ? TELEMETRY_API_VERSIONS : securityKind ? SECURITY_API_VERSIONS : _API_VERSIONS)
      .includes(apiVersion)
  ) {
    ctx.err(
      "apiVersion",
      telemetryKind
        ? `expected telemetry.istio.io/v1 or v1alpha1, got "${apiVersion}"`
        : securityKind
        ? `expected security.istio.io/v1 or v1beta1, got "${apiVersion}"`
        : `expected networking.istio.io/v1, v1beta1 or v1alpha3, got "${apiVersion}"`,
    );
  }
  const kindRaw = v.kind === undefined ? ctx.err("kind", "required") : str(ctx, v.kind, "kind");
  const kind = _KINDS.find((k) => k === kindRaw);
  if (kindRaw !== undefined && kind === undefined) {
    ctx.err("kind", `kind "${kindRaw}" is not supported, expected one of ${_KINDS.join(", ")}`);
  }

  const metadata = _metadata(ctx, v.metadata);

  let spec: unknown;
  // A security policy may leave its spec out: an empty AuthorizationPolicy denies all.
  if ((v.spec === undefined || v.spec === null) && !securityKind) ctx.err("spec", "required");
  else {
    const s = obj(ctx, v.spec ?? {}, "spec");
    if (s !== undefined && kind !== undefined) {
      spec = kind === "ServiceEntry"
        ? validateServiceEntrySpec(ctx, s, "spec")
        : kind === "VirtualService"
        ? validateVirtualServiceSpec(ctx, s, "spec")
        : kind === "DestinationRule"
        ? validateDestinationRuleSpec(ctx, s, "spec")
        : kind === "Telemetry"
        ? validateTelemetrySpec(ctx, s, "spec")
        : kind === "PeerAuthentication"
        ? validatePeerAuthenticationSpec(ctx, s, "spec")
        : kind === "AuthorizationPolicy"
        ? validateAuthorizationPolicySpec(ctx, s, "spec")
        : validateSidecarSpec(ctx, s, "spec");
    }
  }
  if (ctx.errors.length > before || apiVersion === undefined || kind === undefined) {
    return undefined;
  }
  if (metadata === undefined || spec === undefined) return undefined;
  if (kind === "VirtualService" && metadata.remora !== undefined) {
    checkHedgeRoutes(ctx, metadata.remora, spec as VirtualServiceSpec);
    if (ctx.errors.length > before) return undefined;
  }
  return {
    apiVersion,
    kind,
    metadata,
    spec,
    origin: { file: doc.file, index: doc.index },
  } as Resource;
}

function _metadata(ctx: Ctx, v: unknown): Meta | undefined {
  if (v === undefined || v === null) return ctx.err("metadata", "required");
  const m = obj(ctx, v, "metadata");
  if (m === undefined) return undefined;
  const before = ctx.errors.length;
  fields(ctx, m, "metadata", ["name", "namespace", "labels", ..._META_IGNORED]);
  const name = m.name === undefined
    ? ctx.err("metadata.name", "required")
    : str(ctx, m.name, "metadata.name");
  if (name !== undefined && !isDnsSubdomain(name)) {
    ctx.err("metadata.name", `must be a lower-case DNS-1123 name, got "${name}"`);
  }
  if (m.namespace !== undefined) {
    const ns = str(ctx, m.namespace, "metadata.namespace");
    if (ns !== undefined && !isDnsLabel(ns)) {
      ctx.err("metadata.namespace", `must be a lower-case DNS-1123 label, got "${ns}"`);
    }
  }
  const l = m.labels === undefined ? {} : labels(ctx, m.labels, "metadata.labels");
  const remora = remoraAnnotations(ctx, m.annotations, ctx.kind);
  const dryRun = _dryRun(ctx, m.annotations);
  if (ctx.errors.length > before || name === undefined || l === undefined) return undefined;
  const meta: Meta = { name, namespace: ctx.namespace, labels: l };
  if (remora !== undefined) meta.remora = remora;
  if (dryRun) meta.dryRun = true;
  return meta;
}

const DRY_RUN = "istio.io/dry-run";

/**
 * An AuthorizationPolicy's `istio.io/dry-run` annotation ("true" or "false",
 * any case, as Istio reads it). Other kinds ignore it, as Istio does.
 */
function _dryRun(ctx: Ctx, annotations: unknown): boolean {
  if (ctx.kind !== "AuthorizationPolicy" || !isObj(annotations)) return false;
  const v = annotations[DRY_RUN];
  if (v === undefined) return false;
  const path = `metadata.annotations["${DRY_RUN}"]`;
  if (typeof v !== "string" || !/^(true|false)$/i.test(v)) {
    ctx.err(path, `expected "true" or "false", got ${JSON.stringify(v)}`);
    return false;
  }
  return v.toLowerCase() === "true";
}

/** Rules that need the whole set. Works on the documents that validated. */
function _crossCheck(
  checked: Array<{ ctx: Ctx; resource: Resource | undefined; raw: unknown }>,
): void {
  const names = new Map<string, Ctx>();
  const vsHosts = new Map<string, Ctx>();
  const drHosts = new Map<string, { ctx: Ctx; subsets: string[] }>();
  const seHostPorts = new Map<string, Ctx>();
  const sePorts = new Map<string, number[]>();
  let sidecar: Ctx | undefined;
  let telemetry: Ctx | undefined;
  const ref = (c: Ctx) => `${c.kind} ${c.namespace}/${c.name} (${c.where()})`;

  for (const { ctx, resource: r } of checked) {
    if (r === undefined) continue;
    const key = `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`;
    const first = names.get(key);
    if (first !== undefined) {
      ctx.err(
        "metadata.name",
        `duplicate ${r.kind} "${r.metadata.name}" in namespace ${r.metadata.namespace}, first defined in ${first.where()}`,
      );
      continue;
    }
    names.set(key, ctx);
    switch (r.kind) {
      case "VirtualService":
        // Only the routes bound to the mesh are the sidecar's (gateways may share a host).
        if (!boundToMesh(r.spec.gateways)) break;
        r.spec.hosts.forEach((h, i) => {
          const other = vsHosts.get(h);
          if (other !== undefined) {
            ctx.err(join("spec", `hosts[${i}]`), `host ${h} is already routed by ${ref(other)}`);
          } else vsHosts.set(h, ctx);
        });
        break;
      case "DestinationRule": {
        const other = drHosts.get(r.spec.host);
        if (other !== undefined) {
          ctx.err("spec.host", `host ${r.spec.host} already has ${ref(other.ctx)}`);
        } else drHosts.set(r.spec.host, { ctx, subsets: r.spec.subsets.map((s) => s.name) });
        break;
      }
      case "ServiceEntry":
        r.spec.hosts.forEach((h, i) => {
          for (const p of r.spec.ports) {
            const other = seHostPorts.get(`${h}:${p.number}`);
            if (other !== undefined) {
              ctx.err(
                `spec.hosts[${i}]`,
                `host ${h} port ${p.number} is already defined by ${ref(other)}`,
              );
            } else seHostPorts.set(`${h}:${p.number}`, ctx);
            sePorts.set(h, [...(sePorts.get(h) ?? []), p.number]);
          }
        });
        break;
      case "Sidecar":
        if (sidecar !== undefined) {
          ctx.err("", `only one Sidecar is allowed, another is ${ref(sidecar)}`);
        } else sidecar = ctx;
        break;
      case "Telemetry":
        if (telemetry !== undefined) {
          ctx.err("", `only one Telemetry is allowed, another is ${ref(telemetry)}`);
        } else telemetry = ctx;
        break;
    }
  }

  for (const { ctx } of checked) {
    for (const r of ctx.portRefs) {
      const ports = sePorts.get(r.host);
      if (ports !== undefined && !ports.includes(r.port)) {
        ctx.err(
          r.path,
          `host ${r.host} has no port ${r.port}, its ServiceEntry ports are ${ports.join(", ")}`,
        );
      }
    }
  }

  // Subset references. A DestinationRule that failed validation would make
  // every reference to its host look wrong: skip those hosts (or all, when
  // its host cannot be read), since its own errors are already reported.
  const brokenHosts = new Set<string>();
  let unknownBroken = false;
  for (const { ctx, resource, raw } of checked) {
    if (resource !== undefined || !isObj(raw) || raw.kind !== "DestinationRule") continue;
    const host = isObj(raw.spec) && typeof raw.spec.host === "string" ? raw.spec.host : undefined;
    if (host === undefined) unknownBroken = true;
    else brokenHosts.add(fqdn(host, ctx.namespace));
  }
  if (unknownBroken) return;
  for (const { ctx } of checked) {
    for (const r of ctx.subsetRefs) {
      if (brokenHosts.has(r.host)) continue;
      const dr = drHosts.get(r.host);
      if (dr === undefined) {
        ctx.err(r.path, `unknown subset "${r.subset}": no DestinationRule for host ${r.host}`);
      } else if (!dr.subsets.includes(r.subset)) {
        const known = dr.subsets.length === 0 ? "none" : dr.subsets.join(", ");
        ctx.err(r.path, `unknown subset "${r.subset}": ${ref(dr.ctx)} defines ${known}`);
      }
    }
  }
}

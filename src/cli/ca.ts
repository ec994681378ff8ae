/**
 * `remora ca init | issue`: a small certificate authority for meshes without
 * a control plane.
 *
 * init writes a root key and self-signed root certificate for a trust
 * domain; issue writes a workload identity directory with Istio's file names
 * (cert-chain.pem, key.pem, root-cert.pem), the one `remora run
 * --identity-dir` reads. Bad flags (a malformed or foreign SPIFFE ID, an
 * unreadable CA, a non-positive ttl) are usage errors naming the flag. The
 * certificates themselves are `identity/ca.ts`'s business.
 */

import {
  CA_CERT_FILE,
  CA_KEY_FILE,
  CaError,
  initCa,
  issueCert,
  loadCa,
  writeCa,
  writeIssued,
} from "../identity/ca.ts";
import { CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE } from "../identity/identity.ts";
import { parseSpiffeId, trustDomainProblem } from "../identity/spiffe.ts";
import {
  type FlagSpecs,
  type FlagValue,
  helpText,
  InputError,
  parseFlags,
  UsageError,
} from "./flags.ts";

const _INIT_FLAGS: FlagSpecs = {
  "trust-domain": {
    kind: "string",
    arg: "DOMAIN",
    default: "cluster.local",
    help: "The SPIFFE trust domain the CA issues identities in",
  },
  out: { kind: "string", arg: "DIR", help: "Directory to write root-cert.pem and root-key.pem to" },
  ttl: { kind: "duration", default: 87600 * 3_600_000, help: "Lifetime of the root certificate" },
  force: { kind: "bool", default: false, help: "Replace an existing CA in DIR" },
};

const _ISSUE_FLAGS: FlagSpecs = {
  ca: { kind: "string", arg: "DIR", help: "Directory of the CA (root-cert.pem, root-key.pem)" },
  id: {
    kind: "string",
    arg: "SPIFFE_ID",
    help: "The workload's identity: spiffe://<trust domain>/ns/<namespace>/sa/<service account>",
  },
  ttl: {
    kind: "duration",
    default: 24 * 3_600_000,
    help: "Lifetime of the certificate (never beyond the CA's)",
  },
  out: {
    kind: "string",
    arg: "DIR",
    help: "Directory to write cert-chain.pem, key.pem and root-cert.pem to (replaced if present)",
  },
};

const _SUMMARY = `Usage: remora ca <init|issue> [flags]

A small certificate authority for SPIFFE identities (EC P-256, Istio's file names).

Commands:
  init    Create a root key and self-signed root certificate for a trust domain
  issue   Issue a workload certificate with a SPIFFE ID into an identity directory

Run "remora ca <command> --help" for a command's flags.`;

const _SUMMARIES: Record<string, { usage: string; summary: string; specs: FlagSpecs }> = {
  init: {
    usage: "remora ca init --trust-domain DOMAIN --out DIR [flags]",
    summary: "Creates a CA: an EC P-256 root key (root-key.pem, mode 0600) and a self-signed " +
      "root certificate (root-cert.pem, O=<trust domain>). Refuses to replace an existing CA " +
      "unless --force.",
    specs: _INIT_FLAGS,
  },
  issue: {
    usage: "remora ca issue --ca DIR --id SPIFFE_ID --out DIR [flags]",
    summary: "Issues a workload certificate signed by the CA: a new EC P-256 key (key.pem, " +
      "mode 0600), the certificate with the SPIFFE ID as its URI SAN, serverAuth and " +
      "clientAuth (cert-chain.pem), and the CA certificate (root-cert.pem).",
    specs: _ISSUE_FLAGS,
  },
};

function _required(flags: Record<string, FlagValue>, name: string): string {
  const v = flags[name];
  if (typeof v !== "string") throw new UsageError(`Missing flag --${name}`);
  return v;
}

/** 100 years: X.509 dates end at year 9999, and no certificate should outlive its keys by more. */
const MAX_TTL_MS = 876_000 * 3_600_000;

function _ttl(flags: Record<string, FlagValue>): number {
  const ttl = flags["ttl"];
  if (typeof ttl !== "number" || !(ttl >= 1000)) {
    throw new UsageError(`Flag --ttl must be at least 1s, got ${ttl}ms`);
  }
  if (ttl > MAX_TTL_MS) {
    throw new UsageError(`Flag --ttl must be at most 876000h (100 years), got ${ttl / 3_600_000}h`);
  }
  return ttl;
}

/** Whether two paths name the same directory (false when either does not exist). */
function samePlace(a: string, b: string): boolean {
  try {
    return Deno.realPathSync(a) === Deno.realPathSync(b);
  } catch {
    return false;
  }
}

/** A file system error (missing directory, no permission, a file in the way). */
function isFsError(e: unknown): e is Error {
  return e instanceof Error && Object.values(Deno.errors).some((E) => e instanceof E);
}

/** Runs `remora ca ...`; returns the exit code. Throws UsageError for bad arguments. */
export async function caCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    console.log(_SUMMARY);
    return sub === undefined ? 2 : 0;
  }
  const command = _SUMMARIES[sub];
  if (command === undefined) throw new UsageError(`Unknown ca command: ${sub}`);
  const { flags, positionals, help } = parseFlags(rest, command.specs);
  if (help) {
    console.log(helpText(command.usage, command.summary, command.specs));
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument: ${positionals[0]}`);
  return sub === "init" ? await _init(flags) : await _issue(flags);
}

async function _init(flags: Record<string, FlagValue>): Promise<number> {
  const trustDomain = _required(flags, "trust-domain");
  const problem = trustDomainProblem(trustDomain);
  if (problem !== undefined) throw new UsageError(`Flag --trust-domain: ${problem}`);
  const out = _required(flags, "out");
  const ttlMs = _ttl(flags);
  const ca = await initCa({ trustDomain, ttlMs });
  try {
    await writeCa(out, ca, { force: flags["force"] === true });
  } catch (e) {
    if (e instanceof CaError) {
      console.error(`remora: ca init: ${e.message}`);
      return 1;
    }
    if (isFsError(e)) {
      console.error(`remora: ca init: cannot write the CA to ${out}: ${fsReason(out, e)}`);
      return 1;
    }
    throw e;
  }
  console.log(
    `remora: CA for trust domain ${trustDomain} written to ${out}/${CA_CERT_FILE} and ` +
      `${out}/${CA_KEY_FILE}, valid until ${ca.cert.notAfter.toISOString()}`,
  );
  return 0;
}

async function _issue(flags: Record<string, FlagValue>): Promise<number> {
  const caDir = _required(flags, "ca");
  const rawId = _required(flags, "id");
  const out = _required(flags, "out");
  const ttlMs = _ttl(flags);
  let id;
  try {
    id = parseSpiffeId(rawId);
  } catch (e) {
    throw new UsageError(`Flag --id: ${e instanceof Error ? e.message : String(e)}`);
  }
  let ca;
  try {
    ca = await loadCa(caDir);
  } catch (e) {
    if (e instanceof CaError) {
      throw new InputError(`ca issue: the CA in ${caDir} was refused: ${e.message}`);
    }
    throw e;
  }
  if (samePlace(out, caDir)) {
    throw new UsageError(
      `Flag --out ${out} is the CA's directory: a workload's key must not sit beside the CA key`,
    );
  }
  if (id.trustDomain !== ca.trustDomain) {
    throw new UsageError(
      `Flag --id: ${rawId} is in trust domain "${id.trustDomain}", the CA in ${caDir} ` +
        `issues in "${ca.trustDomain}"`,
    );
  }
  const now = new Date();
  const issued = await issueCert(ca, { id: id.id, ttlMs, now });
  try {
    await writeIssued(out, issued);
  } catch (e) {
    if (isFsError(e)) {
      console.error(
        `remora: ca issue: cannot write the certificate to ${out}: ${fsReason(out, e)}`,
      );
      return 1;
    }
    throw e;
  }
  if (issued.notAfter.getTime() < now.getTime() + ttlMs - 1000) {
    console.error(
      `remora: ca issue: the certificate ends with the CA certificate at ` +
        `${issued.notAfter.toISOString()}, before the --ttl asked for`,
    );
  }
  console.log(
    `remora: ${id.id} written to ${out}/${CERT_CHAIN_FILE}, ${out}/${KEY_FILE} and ` +
      `${out}/${ROOT_CERT_FILE}, valid until ${issued.notAfter.toISOString()}`,
  );
  return 0;
}

/** Why `out` could not be written: a file where a directory is wanted is said in words. */
function fsReason(out: string, e: Error): string {
  if (e instanceof Deno.errors.AlreadyExists) {
    try {
      if (!Deno.statSync(out).isDirectory) return "it is a file; --out names a directory";
    } catch {
      // Gone meanwhile: the runtime's message stands.
    }
  }
  return e.message;
}

/**
 * Transparent capture with iptables: renders, installs and removes the
 * nat-table rules that send a workload's TCP traffic through remora, modelled
 * on Istio's istio-iptables.
 *
 * The rules live in remora's own chains (REMORA_INBOUND, REMORA_IN_REDIRECT,
 * REMORA_OUTPUT, REMORA_REDIRECT), reached by one jump rule each from
 * PREROUTING and OUTPUT. Every change is one `iptables-restore --noflush`
 * transaction computed from the current `iptables-save`, so installing twice
 * changes nothing, installing other options replaces remora's rules (IPv6
 * ones included: an install without IPv6 removes them), and uninstalling
 * leaves `iptables-save` as it was before install (counters aside), other
 * rules untouched and in order. When the nat table did not exist
 * before install (iptables-nft creates it on first use), install records that
 * in an empty marker chain, REMORA_OWNS_NAT, and uninstall deletes the table
 * again if nothing but remora's rules is in it.
 *
 * This is the only module of remora that spawns processes (iptables-save,
 * iptables-restore and their ip6tables twins, found on PATH). It does not read
 * original destinations or detect protocols; that is the proxy's job. Nor
 * does it know who else may be changing the rules: its callers claim the
 * capture of the network namespace first (src/capture/claim.ts).
 */

import { log } from "../log.ts";

/** IPv4 (iptables) or IPv6 (ip6tables). */
export type Family = 4 | 6;

export interface CaptureOptions {
  /** Traffic of this uid (the proxy's) is not captured on the way out. */
  proxyUid: number;
  /** Traffic of this gid is not captured either, when given. */
  proxyGid: number | undefined;
  /** Port of remora's inbound listener: PREROUTING traffic is redirected here. */
  inboundPort: number;
  /** Port of remora's outbound listener: OUTPUT traffic is redirected here. */
  outboundPort: number;
  /** Destination ports captured on the way in; "*" for all. */
  includeInboundPorts: "*" | number[];
  excludeInboundPorts: number[];
  /** Destination CIDRs (IPv4 and IPv6 mixed) captured on the way out; "*" for all. */
  includeOutboundCidrs: "*" | string[];
  excludeOutboundCidrs: string[];
  excludeOutboundPorts: number[];
  /** remora's own ports (admin, stats, health, listeners): never captured. */
  ownPorts: number[];
  /** Also install the same rules for IPv6 with ip6tables. */
  ipv6: boolean;
}

export function defaultCaptureOptions(): CaptureOptions {
  return {
    proxyUid: 1337,
    proxyGid: undefined,
    inboundPort: 15006,
    outboundPort: 15001,
    includeInboundPorts: "*",
    excludeInboundPorts: [],
    includeOutboundCidrs: "*",
    excludeOutboundCidrs: [],
    excludeOutboundPorts: [],
    ownPorts: [15000, 15001, 15006, 15020, 15021, 15090],
    ipv6: false,
  };
}

export type CaptureErrorKind =
  | "invalid-options"
  | "missing-binary"
  | "permission"
  | "rejected"
  | "failed";

/**
 * A capture operation failed; `kind` says why. Nothing was changed, unless
 * `partial` says that undoing a half-done change failed too.
 */
export class CaptureError extends Error {
  override name = "CaptureError";
  readonly kind: CaptureErrorKind;
  /** The binary that failed, when one did. */
  readonly binary: string | undefined;
  /** Its stderr, when it ran. */
  readonly stderr: string | undefined;
  /** Rules may be half-applied: a rollback failed. */
  readonly partial: boolean;

  constructor(
    kind: CaptureErrorKind,
    message: string,
    detail: { binary?: string; stderr?: string; cause?: unknown; partial?: boolean } = {},
  ) {
    super(message, detail.cause === undefined ? undefined : { cause: detail.cause });
    this.kind = kind;
    this.binary = detail.binary;
    this.stderr = detail.stderr;
    this.partial = detail.partial ?? false;
  }
}

/** remora's chains, in the order they are declared. */
export const CAPTURE_CHAINS = [
  "REMORA_INBOUND",
  "REMORA_IN_REDIRECT",
  "REMORA_OUTPUT",
  "REMORA_REDIRECT",
] as const;

/** Empty chain whose presence says "remora created the nat table; delete it on uninstall". */
export const OWNS_TABLE_CHAIN = "REMORA_OWNS_NAT";

/** remora's own chains, by exact name: a user's chain that merely starts with REMORA_ is not. */
const _OURS: ReadonlySet<string> = new Set([...CAPTURE_CHAINS, OWNS_TABLE_CHAIN]);
const _JUMP_TO_OURS = new RegExp(` -[jg] (${[..._OURS].join("|")})( |$)`);
const _BUILTIN_NAT_CHAINS = new Set(["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]);
const _TIMEOUT_MS = 30_000;

/** The flag each option is set by, so that errors name what the user typed. */
export const CAPTURE_OPTION_FLAGS: Readonly<Record<keyof CaptureOptions, string>> = {
  proxyUid: "--proxy-uid",
  proxyGid: "--proxy-gid",
  inboundPort: "--inbound-port",
  outboundPort: "--outbound-port",
  includeInboundPorts: "--include-inbound-ports",
  excludeInboundPorts: "--exclude-inbound-ports",
  includeOutboundCidrs: "--include-outbound-cidrs",
  excludeOutboundCidrs: "--exclude-outbound-cidrs",
  excludeOutboundPorts: "--exclude-outbound-ports",
  ownPorts: "own ports",
  ipv6: "--ipv6",
};

// ---------------------------------------------------------------------------
// Validation and CIDRs

/** A CIDR in the form iptables-save prints it: host bits cleared, prefix always given. */
export interface Cidr {
  family: Family;
  text: string;
}

/** Parses "10.1.2.3/8", "10.1.2.3", "fd00::/8" or "::1"; undefined when it is none of these. */
export function parseCidr(raw: string): Cidr | undefined {
  const slash = raw.indexOf("/");
  const addr = slash === -1 ? raw : raw.slice(0, slash);
  const prefixText = slash === -1 ? undefined : raw.slice(slash + 1);
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const v4 = _parseV4(addr);
  if (v4 !== undefined) {
    const prefix = prefixText === undefined ? 32 : Number(prefixText);
    if (prefix > 32) return undefined;
    const bytes = _mask(v4, prefix);
    return { family: 4, text: `${bytes.join(".")}/${prefix}` };
  }
  const v6 = _parseV6(addr);
  if (v6 !== undefined) {
    const prefix = prefixText === undefined ? 128 : Number(prefixText);
    if (prefix > 128) return undefined;
    return { family: 6, text: `${_formatV6(_mask(v6, prefix))}/${prefix}` };
  }
  return undefined;
}

function _parseV4(s: string): number[] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (m === null) return undefined;
  const bytes = m.slice(1).map(Number);
  return bytes.every((b) => b <= 255) ? bytes : undefined;
}

function _parseV6(s: string): number[] | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || !s.includes(":")) return undefined;
  let tail: number[] = [];
  let text = s;
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    const v4 = _parseV4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = v4;
    text = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const parse = (h: string): number[] | undefined => {
    if (h === "") return [];
    const groups = h.split(":");
    if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
    return groups.map((g) => parseInt(g, 16));
  };
  const head = parse(halves[0]!);
  const rest = halves.length === 2 ? parse(halves[1]!) : [];
  if (head === undefined || rest === undefined) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    if (head.length + rest.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  } else {
    if (head.length !== 8) return undefined;
    groups = head;
  }
  const bytes = groups.flatMap((g) => [g >> 8, g & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

function _mask(bytes: number[], prefix: number): number[] {
  return bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    return b & (0xff << (8 - bits)) & 0xff;
  });
}

/** RFC 5952 text, as inet_ntop (and so ip6tables-save) prints it. */
function _formatV6(bytes: number[]): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestLen < 2) return hex(groups);
  if (bestStart === 0 && (bestLen === 6 || (bestLen === 5 && groups[5] === 0xffff))) {
    // IPv4-mapped and -compatible addresses end in dotted quad, as in inet_ntop.
    return `::${bestLen === 5 ? "ffff:" : ""}${bytes.slice(12).join(".")}`;
  }
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/**
 * Checks options; returns every problem found, each naming its flag, e.g.
 * `--include-inbound-ports: 15006 is the inbound port (--inbound-port); capturing it would loop`.
 */
export function validateCaptureOptions(opts: CaptureOptions): string[] {
  const errors: string[] = [];
  const f = CAPTURE_OPTION_FLAGS;
  const id = (name: keyof CaptureOptions, v: number | undefined) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= 4294967294)) {
      errors.push(`${f[name]}: must be an id 0..4294967294, got ${v}`);
    }
  };
  id("proxyUid", opts.proxyUid);
  id("proxyGid", opts.proxyGid);
  const port = (name: keyof CaptureOptions, v: number) => {
    if (!(Number.isInteger(v) && v >= 1 && v <= 65535)) {
      errors.push(`${f[name]}: must be a port 1..65535, got ${v}`);
      return false;
    }
    return true;
  };
  port("inboundPort", opts.inboundPort);
  port("outboundPort", opts.outboundPort);
  if (opts.inboundPort === opts.outboundPort) {
    errors.push(
      `${f.outboundPort}: must differ from ${f.inboundPort}, both are ${opts.inboundPort}`,
    );
  }
  for (const name of ["excludeInboundPorts", "excludeOutboundPorts", "ownPorts"] as const) {
    for (const p of opts[name]) port(name, p);
  }
  if (opts.includeInboundPorts !== "*") {
    const own = new Set(opts.ownPorts);
    for (const p of opts.includeInboundPorts) {
      if (!port("includeInboundPorts", p)) continue;
      if (p === opts.inboundPort) {
        errors.push(
          `${f.includeInboundPorts}: ${p} is the inbound port (${f.inboundPort}); capturing it would loop`,
        );
      } else if (p === opts.outboundPort) {
        errors.push(
          `${f.includeInboundPorts}: ${p} is the outbound port (${f.outboundPort}); it is never captured`,
        );
      } else if (own.has(p)) {
        errors.push(
          `${f.includeInboundPorts}: ${p} is one of remora's own ports, which are never captured`,
        );
      }
    }
  }
  for (const name of ["includeOutboundCidrs", "excludeOutboundCidrs"] as const) {
    const list = opts[name];
    if (list === "*") continue;
    for (const raw of list) {
      const c = parseCidr(raw);
      if (c === undefined) {
        errors.push(`${f[name]}: "${raw}" is not an IPv4 or IPv6 CIDR`);
      } else if (c.family === 6 && !opts.ipv6) {
        errors.push(`${f[name]}: "${raw}" is an IPv6 CIDR, which needs ${f.ipv6}`);
      }
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------
// Rendering

/** remora's rules for one family, as iptables-save prints them. */
export interface RuleSet {
  family: Family;
  /** Every remora chain with its `-A CHAIN ...` lines, in order. */
  chains: ReadonlyMap<string, readonly string[]>;
  /** The `-A PREROUTING ...` and `-A OUTPUT ...` lines that enter remora's chains. */
  jumps: readonly string[];
}

/** Builds remora's rules for one family; throws CaptureError "invalid-options" on bad options. */
export function buildRuleSet(opts: CaptureOptions, family: Family): RuleSet {
  const errors = validateCaptureOptions(opts);
  if (errors.length > 0) {
    throw new CaptureError("invalid-options", `Invalid capture options: ${errors.join("; ")}`);
  }
  const loopback = family === 4 ? "127.0.0.1/32" : "::1/128";
  const uniq = <T>(xs: T[]) => [...new Set(xs)];
  const own = uniq([...opts.ownPorts, opts.inboundPort, opts.outboundPort]);
  const cidrs = (list: "*" | string[]) =>
    list === "*"
      ? "*"
      : uniq(list.map((c) => parseCidr(c)!).filter((c) => c.family === family).map((c) => c.text));
  const owners = [`--uid-owner ${opts.proxyUid}`];
  if (opts.proxyGid !== undefined) owners.push(`--gid-owner ${opts.proxyGid}`);

  const inbound: string[] = [];
  const add = (lines: string[], chain: string, rule: string) => lines.push(`-A ${chain} ${rule}`);
  for (const p of uniq([...own, ...opts.excludeInboundPorts])) {
    add(inbound, "REMORA_INBOUND", `-p tcp -m tcp --dport ${p} -j RETURN`);
  }
  if (opts.includeInboundPorts === "*") {
    add(inbound, "REMORA_INBOUND", "-p tcp -j REMORA_IN_REDIRECT");
  } else {
    for (const p of uniq(opts.includeInboundPorts)) {
      add(inbound, "REMORA_INBOUND", `-p tcp -m tcp --dport ${p} -j REMORA_IN_REDIRECT`);
    }
  }
  const inRedirect = [`-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${opts.inboundPort}`];

  const output: string[] = [];
  for (const o of owners) {
    // The proxy calling a local address other than loopback (the app calling
    // its own pod IP through its sidecar) goes to the inbound side.
    add(output, "REMORA_OUTPUT", `! -d ${loopback} -o lo -m owner ${o} -j REMORA_IN_REDIRECT`);
  }
  for (const o of owners) add(output, "REMORA_OUTPUT", `-m owner ${o} -j RETURN`);
  add(output, "REMORA_OUTPUT", "-o lo -j RETURN");
  add(output, "REMORA_OUTPUT", `-d ${loopback} -j RETURN`);
  for (const p of uniq([...own, ...opts.excludeOutboundPorts])) {
    add(output, "REMORA_OUTPUT", `-p tcp -m tcp --dport ${p} -j RETURN`);
  }
  const excluded = cidrs(opts.excludeOutboundCidrs);
  for (const c of excluded === "*" ? [] : excluded) {
    add(output, "REMORA_OUTPUT", `-d ${c} -j RETURN`);
  }
  const included = cidrs(opts.includeOutboundCidrs);
  if (included === "*") add(output, "REMORA_OUTPUT", "-j REMORA_REDIRECT");
  else for (const c of included) add(output, "REMORA_OUTPUT", `-d ${c} -j REMORA_REDIRECT`);
  const redirect = [`-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports ${opts.outboundPort}`];

  return {
    family,
    chains: new Map<string, readonly string[]>([
      ["REMORA_INBOUND", inbound],
      ["REMORA_IN_REDIRECT", inRedirect],
      ["REMORA_OUTPUT", output],
      ["REMORA_REDIRECT", redirect],
    ]),
    jumps: ["-A PREROUTING -p tcp -j REMORA_INBOUND", "-A OUTPUT -p tcp -j REMORA_OUTPUT"],
  };
}

/**
 * The exact nat-table rules for one family, in iptables-restore syntax, as a
 * fresh install applies them (`iptables-restore --noflush`, or
 * `ip6tables-restore --noflush` for family 6). Throws CaptureError
 * "invalid-options" on bad options.
 */
export function renderRules(opts: CaptureOptions, family: Family): string {
  const set = buildRuleSet(opts, family);
  const lines = [
    `# remora capture rules, IPv${family}: ${_binaries(family).restore} --noflush`,
    "*nat",
    ...[...set.chains.keys()].map((c) => `:${c} - [0:0]`),
    ...set.jumps,
    ...[...set.chains.values()].flat(),
    "COMMIT",
  ];
  return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------------------
// Reading the current state

/** What `iptables-save` says about the nat table of one family. */
interface NatState {
  tableExists: boolean;
  /** Every chain in the table, with its policy ("-" for user chains). */
  policies: Map<string, string>;
  /** remora's chains (CAPTURE_CHAINS and OWNS_TABLE_CHAIN) with their rule lines. */
  remora: Map<string, string[]>;
  /** Rules in other chains that jump to remora's chains. */
  jumps: string[];
  /** Rules in other chains that do not involve remora. */
  otherRules: string[];
}

/** Parses the nat section of a full `iptables-save`. */
function _parseNat(save: string): NatState {
  const state: NatState = {
    tableExists: false,
    policies: new Map(),
    remora: new Map(),
    jumps: [],
    otherRules: [],
  };
  let inNat = false;
  for (const raw of save.split("\n")) {
    const line = raw.trimEnd();
    if (line.startsWith("*")) {
      inNat = line === "*nat";
      if (inNat) state.tableExists = true;
      continue;
    }
    if (!inNat) continue;
    if (line === "COMMIT") {
      inNat = false;
      continue;
    }
    if (line.startsWith(":")) {
      const [name, policy] = line.slice(1).split(" ");
      if (name === undefined) continue;
      state.policies.set(name, policy ?? "-");
      if (_OURS.has(name)) state.remora.set(name, state.remora.get(name) ?? []);
      continue;
    }
    const m = /^-A (\S+) /.exec(line);
    if (m === null) continue;
    const chain = m[1]!;
    if (_OURS.has(chain)) {
      const lines = state.remora.get(chain) ?? [];
      lines.push(line);
      state.remora.set(chain, lines);
    } else if (_JUMP_TO_OURS.test(line)) {
      state.jumps.push(line);
    } else {
      state.otherRules.push(line);
    }
  }
  return state;
}

/** Nothing in the table but remora's chains and jumps, and built-in chains accepting. */
function _onlyRemora(s: NatState): boolean {
  if (s.otherRules.length > 0) return false;
  for (const [name, policy] of s.policies) {
    if (_OURS.has(name)) continue;
    if (!_BUILTIN_NAT_CHAINS.has(name) || policy !== "ACCEPT") return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Planning transactions

/** remora's part of a nat table: what install wants, or what was there before. */
interface RemoraPart {
  chains: ReadonlyMap<string, readonly string[]>;
  jumps: readonly string[];
  ownsTable: boolean;
}

interface Transaction {
  input: string;
  noflush: boolean;
}

function _currentPart(s: NatState): RemoraPart | undefined {
  if (s.remora.size === 0 && s.jumps.length === 0) return undefined;
  const chains = new Map(s.remora);
  const ownsTable = chains.delete(OWNS_TABLE_CHAIN);
  return { chains, jumps: [...s.jumps], ownsTable };
}

/** The one transaction that turns remora's part of `current` into `want` (undefined: none). */
function _plan(current: NatState, want: RemoraPart | undefined): Transaction | undefined {
  const del = (rule: string) => rule.replace(/^-A /, "-D ");
  if (want === undefined) {
    const part = _currentPart(current);
    if (part === undefined) return undefined;
    if (part.ownsTable && _onlyRemora(current)) {
      // remora created the table and nothing else uses it: flushing the table
      // without --noflush deletes it, as it was before install.
      return { input: "*nat\nCOMMIT\n", noflush: false };
    }
    const lines = ["*nat", ...current.jumps.map(del)];
    for (const c of current.remora.keys()) lines.push(`-F ${c}`);
    for (const c of current.remora.keys()) lines.push(`-X ${c}`);
    lines.push("COMMIT");
    return { input: lines.join("\n") + "\n", noflush: true };
  }
  const chains = new Map(want.chains);
  if (want.ownsTable) chains.set(OWNS_TABLE_CHAIN, []);
  const lines = ["*nat"];
  // Declaring an existing chain under --noflush flushes it (iptables-nft and
  // legacy alike); the explicit -F says so to the reader and costs nothing.
  for (const c of chains.keys()) lines.push(`:${c} - [0:0]`);
  for (const c of chains.keys()) if (current.remora.has(c)) lines.push(`-F ${c}`);
  const have = new Set<string>();
  for (const j of current.jumps) {
    // Keep one of each wanted jump where it is; drop others and duplicates.
    if (want.jumps.includes(j) && !have.has(j)) have.add(j);
    else lines.push(del(j));
  }
  for (const j of want.jumps) if (!have.has(j)) lines.push(j);
  for (const rules of chains.values()) lines.push(...rules);
  const stale = [...current.remora.keys()].filter((c) => !chains.has(c));
  for (const c of stale) lines.push(`-F ${c}`);
  for (const c of stale) lines.push(`-X ${c}`);
  lines.push("COMMIT");
  return { input: lines.join("\n") + "\n", noflush: true };
}

// ---------------------------------------------------------------------------
// Running iptables

function _binaries(family: Family): { save: string; restore: string } {
  return family === 4
    ? { save: "iptables-save", restore: "iptables-restore" }
    : { save: "ip6tables-save", restore: "ip6tables-restore" };
}

const _PERMISSION = /permission denied|operation not permitted|you must be root/i;

async function _run(binary: string, args: string[], stdin?: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    const child = new Deno.Command(binary, {
      args,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(_TIMEOUT_MS),
    }).spawn();
    if (stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(stdin));
      await w.close();
    }
    out = await child.output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CaptureError(
        "missing-binary",
        `Cannot run ${binary}: not found on PATH; install iptables (apt-get install iptables)`,
        { binary, cause: e },
      );
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new CaptureError("permission", `Cannot run ${binary}: ${(e as Error).message}`, {
        binary,
        cause: e,
      });
    }
    throw new CaptureError("failed", `Cannot run ${binary}: ${(e as Error).message}`, {
      binary,
      cause: e,
    });
  }
  const stderr = new TextDecoder().decode(out.stderr).trim();
  if (out.success) return new TextDecoder().decode(out.stdout);
  if (out.signal !== null) {
    throw new CaptureError("failed", `${binary} was killed by ${out.signal}: ${stderr}`, {
      binary,
      stderr,
    });
  }
  if (_PERMISSION.test(stderr)) {
    throw new CaptureError(
      "permission",
      `${binary} was denied: capture needs root or CAP_NET_ADMIN in the network namespace: ${stderr}`,
      { binary, stderr },
    );
  }
  if (stdin !== undefined) {
    throw new CaptureError(
      "rejected",
      `${binary} rejected the rules (exit ${out.code}): ${stderr}\nInput:\n${_numbered(stdin)}`,
      { binary, stderr },
    );
  }
  throw new CaptureError("failed", `${binary} failed (exit ${out.code}): ${stderr}`, {
    binary,
    stderr,
  });
}

function _numbered(text: string): string {
  return text.trimEnd().split("\n").map((l, i) => `${String(i + 1).padStart(4)}  ${l}`).join(
    "\n",
  );
}

async function _readNat(family: Family): Promise<NatState> {
  return _parseNat(await _run(_binaries(family).save, []));
}

async function _apply(family: Family, tx: Transaction): Promise<void> {
  const args = tx.noflush ? ["-w", "5", "--noflush"] : ["-w", "5"];
  log.debug("iptables transaction", { family, input: tx.input });
  await _run(_binaries(family).restore, args, tx.input);
}

function _families(ipv6: boolean): Family[] {
  return ipv6 ? [4, 6] : [4];
}

/**
 * Moves every family to the part `want` gives it, one transaction per family.
 * All families are read before any is changed (so a missing binary or
 * missing permission changes nothing); when a later family fails, the earlier
 * ones are put back as they were.
 */
async function _converge(
  families: Family[],
  want: (family: Family, current: NatState) => RemoraPart | undefined,
): Promise<void> {
  const states = new Map<Family, NatState>();
  for (const f of families) states.set(f, await _readNat(f));
  const done: Family[] = [];
  for (const f of families) {
    const current = states.get(f)!;
    const tx = _plan(current, want(f, current));
    if (tx === undefined) continue;
    try {
      await _apply(f, tx);
      done.push(f);
    } catch (e) {
      const rollbackErrors: string[] = [];
      for (const g of done.reverse()) {
        try {
          const before = _currentPart(states.get(g)!);
          const back = _plan(await _readNat(g), before);
          if (back !== undefined) await _apply(g, back);
        } catch (r) {
          rollbackErrors.push(`IPv${g}: ${(r as Error).message}`);
        }
      }
      if (rollbackErrors.length > 0 && e instanceof CaptureError) {
        throw new CaptureError(
          e.kind,
          `${e.message}\nRolling back failed too, rules may be half-applied: ${
            rollbackErrors.join("; ")
          }`,
          {
            ...(e.binary === undefined ? {} : { binary: e.binary }),
            ...(e.stderr === undefined ? {} : { stderr: e.stderr }),
            partial: true,
          },
        );
      }
      throw e;
    }
  }
}

// ---------------------------------------------------------------------------
// Public operations

/**
 * Installs remora's capture rules: IPv4, and IPv6 too with `opts.ipv6`. An
 * install replaces the whole capture before it: without `opts.ipv6`, IPv6
 * rules that an earlier install put there are removed (when ip6tables can
 * read them). Idempotent; atomic per family, and all-or-nothing across
 * families. Returns the families whose rules were removed. Throws
 * CaptureError.
 */
export async function install(opts: CaptureOptions): Promise<{ removed: Family[] }> {
  const sets = new Map(_families(opts.ipv6).map((f) => [f, buildRuleSet(opts, f)]));
  const removed: Family[] = !opts.ipv6 && await _hasRules(6) ? [6] : [];
  await _converge([..._families(opts.ipv6), ...removed], (f, current) => {
    const set = sets.get(f);
    if (set === undefined) return undefined;
    const ownsTable = !current.tableExists || current.remora.has(OWNS_TABLE_CHAIN);
    return { chains: set.chains, jumps: set.jumps, ownsTable };
  });
  log.debug("capture rules installed", { ipv6: opts.ipv6, removed });
  return { removed };
}

/**
 * Removes remora's rules. IPv6 rules are removed also without `opts.ipv6`
 * when there are any (an `install --ipv6` undone by a plain uninstall must
 * not leave IPv6 traffic redirected to nothing). Returns the families it
 * changed. Succeeds when nothing is installed. Throws CaptureError.
 */
export async function uninstall(opts: { ipv6: boolean }): Promise<Family[]> {
  const families = _families(opts.ipv6);
  if (!opts.ipv6 && await _hasRules(6)) families.push(6);
  await _converge(families, () => undefined);
  log.debug("capture rules removed", { families });
  return families;
}

/** Whether a family's nat table holds any of remora's chains or jumps (false when it cannot be read). */
async function _hasRules(family: Family): Promise<boolean> {
  try {
    const s = await _readNat(family);
    return s.remora.size > 0 || s.jumps.length > 0;
  } catch {
    return false; // No ip6tables, or no IPv6 nat table: nothing of remora's there.
  }
}

export interface FamilyStatus {
  family: Family;
  /** Asked for (IPv4, IPv6 with --ipv6); IPv6 is reported unasked when its rules are there. */
  asked: boolean;
  /** All four chains and both jumps are there. */
  installed: boolean;
  /** Some of remora's chains or jumps are there: installed, or a leftover. */
  present: boolean;
  /** remora's chains and their rule lines, as iptables-save prints them. */
  chains: Record<string, string[]>;
  jumps: string[];
  /** remora created the nat table and deletes it on uninstall. */
  ownsTable: boolean;
}

/**
 * What is installed, per family: IPv4, and IPv6 with `opts.ipv6` or
 * whenever ip6tables can read remora's rules there (`asked` tells which).
 * Throws CaptureError.
 */
export async function status(opts: { ipv6: boolean }): Promise<FamilyStatus[]> {
  const out: FamilyStatus[] = [];
  for (const family of [4, 6] as const) {
    const asked = _families(opts.ipv6).includes(family);
    let s: NatState;
    try {
      s = await _readNat(family);
    } catch (e) {
      if (asked) throw e;
      continue; // No ip6tables, or no IPv6 nat table: nothing of remora's there.
    }
    const jumps = [...s.jumps];
    const present = s.remora.size > 0 || jumps.length > 0;
    if (!asked && !present) continue;
    const expected = [
      "-A PREROUTING -p tcp -j REMORA_INBOUND",
      "-A OUTPUT -p tcp -j REMORA_OUTPUT",
    ];
    const chains = Object.fromEntries(
      [...s.remora].filter(([c]) => c !== OWNS_TABLE_CHAIN).map(([c, r]) => [c, [...r]]),
    );
    out.push({
      family,
      asked,
      installed: CAPTURE_CHAINS.every((c) => s.remora.has(c)) &&
        expected.every((j) => jumps.includes(j)),
      present,
      chains,
      jumps,
      ownsTable: s.remora.has(OWNS_TABLE_CHAIN),
    });
  }
  return out;
}

/** Whether the rules are installed for every family asked for. Throws CaptureError. */
export async function isInstalled(opts: { ipv6: boolean }): Promise<boolean> {
  return (await status(opts)).every((s) => !s.asked || s.installed);
}

/**
 * Whether the installed rules are exactly what `opts` renders, with no
 * rules in a family it does not ask for. Throws CaptureError.
 */
export async function isInstalledWith(opts: CaptureOptions): Promise<boolean> {
  for (const s of await status(opts)) {
    if (!s.asked) return false;
    const set = buildRuleSet(opts, s.family);
    if (!s.installed || s.jumps.length !== set.jumps.length) return false;
    if (Object.keys(s.chains).length !== set.chains.size) return false;
    for (const [c, rules] of set.chains) {
      if (JSON.stringify(s.chains[c]) !== JSON.stringify(rules)) return false;
    }
  }
  return true;
}

/**
 * AuthorizationPolicy for the workload this proxy serves, with Istio's
 * semantics (istio/istio pilot/pkg/security/authz: the policy → Envoy RBAC
 * translation), compiled once per config into flat matcher lists so that
 * `authorize` does no parsing and, in the common case, no allocation.
 *
 * Decision for one request (or one opaque TCP connection):
 * 1. AUDIT policies that match are named in `audit`; they change nothing.
 * 2. Any matching rule of a DENY policy denies.
 * 3. If any ALLOW policy applies to the workload, some rule of one of them
 *    must match, else the request is denied; with no ALLOW policy it is allowed.
 * A policy without rules matches nothing: an ALLOW one (an empty spec) then
 * denies everything; `rules: [{}]` matches everything.
 * 4. Policies annotated `istio.io/dry-run: "true"` decide nothing: they are
 *    evaluated beside, as Envoy's shadow rules, and the decision carries what
 *    they would have decided (`dryRun`), for the log.
 *
 * A rule matches when its `from` (any element), `to` (any element) and
 * every `when` condition match; absent parts match anything. Inside a
 * source/operation every given field must match. A field matches when some
 * value matches and, for its `not` form, no value matches. Strings: exact,
 * "prefix*", "*suffix", and "*" = any non-empty value (for `request.headers`:
 * any value, empty too, as Istio compiles it to Envoy's present_match). Principals are SPIFFE
 * IDs without "spiffe://"; namespaces come from the principal's "/ns/<ns>/"
 * part, so both need mTLS (plaintext has no principal: `principals` never
 * match it and `notPrincipals` always do). Hosts compare case-insensitively
 * with the Host/:authority as sent (port included); methods and paths
 * case-sensitively; the path without its query. ipBlocks are the
 * connection's peer address.
 *
 * Opaque TCP (no `http`), as Istio translates policies for TCP filter chains:
 * hosts, methods, paths (and their `not` forms) and `request.headers` are
 * HTTP-only. An ALLOW rule using any of them anywhere never matches TCP (the
 * rule is dropped, so the ALLOW policy admits less). In DENY and AUDIT rules
 * those fields are ignored and the rest of the rule decides (the rule widens:
 * a DENY of `methods: [GET]` from a principal denies every TCP connection from
 * that principal; a DENY with only HTTP fields denies all TCP).
 */

import type {
  AuthorizationPolicy,
  AuthzCondition,
  AuthzOperation,
  AuthzRule,
  AuthzSource,
  Resource,
} from "../config/model.ts";
import { log } from "../log.ts";
import { type Cidr, cidrContains, parseCidr, parseIpInto } from "./cidr.ts";
import { type SecurityWorkload, selects } from "./peer_auth.ts";

export interface AuthzRequest {
  /** Peer SPIFFE ID without "spiffe://" (cluster.local/ns/default/sa/sleep); undefined on plaintext. */
  principal: string | undefined;
  /** The connection's peer address (IPv4, IPv6 or IPv4-mapped IPv6). */
  sourceIp: string;
  /** The address the request was sent to (original destination, else the listener's); undefined when unknown. */
  destinationIp?: string | undefined;
  destinationPort: number;
  /** Undefined for opaque TCP. */
  http?: {
    method: string;
    /** Already normalized (normalize.ts); a query is ignored for matching. */
    path: string;
    /** Host or :authority as sent. */
    host: string;
    /** Header value by lower-case name; undefined when absent. */
    header(name: string): string | undefined;
  };
}

export interface AuthzDecision {
  allowed: boolean;
  reason: string;
  /** "namespace/name" of the deciding policy, when one decided. */
  policy?: string;
  /** "namespace/name" of the AUDIT policies that matched. */
  audit: readonly string[];
  /** With dry-run policies: what they would decide, each action on its own (see DryRunVerdict). */
  dryRun?: readonly DryRunVerdict[];
}

/**
 * A dry-run verdict, as Istio's shadow engines give them: the dry-run DENY
 * policies deny when one of their rules matches; the dry-run ALLOW policies
 * allow when one of theirs does, and deny otherwise.
 */
export interface DryRunVerdict {
  action: "ALLOW" | "DENY";
  allowed: boolean;
  /** The deciding policy, when a rule matched. */
  policy?: string;
}

export interface AuthzTable {
  readonly deny: readonly CompiledPolicy[];
  readonly allow: readonly CompiledPolicy[];
  readonly audit: readonly CompiledPolicy[];
  /** Dry-run policies, by action: evaluated, never enforced. */
  readonly dryRun: {
    readonly deny: readonly CompiledPolicy[];
    readonly allow: readonly CompiledPolicy[];
  };
}

export interface CompiledPolicy {
  /** "namespace/name". */
  readonly name: string;
  readonly rules: readonly CompiledRule[];
}

// Attributes a condition reads.
const _PRINCIPAL = 0;
const _NAMESPACE = 1;
const _SOURCE_IP = 2;
const _DEST_IP = 3;
const _PORT = 4;
const _HOST = 5;
const _METHOD = 6;
const _PATH = 7;
const _HEADER = 8;

// String match kinds.
const _EXACT = 0;
const _PREFIX = 1;
const _SUFFIX = 2;
const _ANY = 3;
/** A header's "*": present, even empty (Envoy's present_match, as Istio compiles it). */
const _PRESENT = 4;

interface _Str {
  kind: number;
  v: string;
}

/** One field: the values (any must match) and notValues (none may match). */
interface _Cond {
  attr: number;
  /** Lower-case header name for _HEADER. */
  header: string;
  httpOnly: boolean;
  strs: _Str[] | undefined;
  notStrs: _Str[] | undefined;
  cidrs: Cidr[] | undefined;
  notCidrs: Cidr[] | undefined;
  ports: number[] | undefined;
  notPorts: number[] | undefined;
}

/** One rule, flattened into condition lists (fields are internal to this module). */
export interface CompiledRule {
  /** Undefined: no `from`, any source. Each element: all conditions. */
  from: _Cond[][] | undefined;
  to: _Cond[][] | undefined;
  when: _Cond[];
  /** Uses an HTTP-only field somewhere: an ALLOW rule then never matches TCP. */
  httpOnly: boolean;
  /** Precomputed decision when this rule decides and nothing is audited. */
  decision: AuthzDecision;
  reason: string;
  policy: string;
}

const _NO_AUDIT: readonly string[] = Object.freeze([]);

/** Builds the policy lists that apply to `workload` (see the module doc for scoping). */
export function compileAuthz(
  resources: readonly Resource[],
  workload: SecurityWorkload,
  rootNamespace: string,
): AuthzTable {
  const deny: CompiledPolicy[] = [];
  const allow: CompiledPolicy[] = [];
  const audit: CompiledPolicy[] = [];
  const dryRun = { deny: [] as CompiledPolicy[], allow: [] as CompiledPolicy[] };
  for (const r of resources) {
    if (r.kind !== "AuthorizationPolicy") continue;
    const ns = r.metadata.namespace;
    if (ns !== workload.namespace && ns !== rootNamespace) continue;
    if (!selects(r.spec.selector?.matchLabels, workload.labels)) continue;
    const p = _compilePolicy(r);
    const action = r.spec.action;
    if (action === "AUDIT") audit.push(p);
    else if (r.metadata.dryRun === true) (action === "DENY" ? dryRun.deny : dryRun.allow).push(p);
    else (action === "DENY" ? deny : allow).push(p);
  }
  return { deny, allow, audit, dryRun };
}

/** Decides one request or TCP connection against the compiled policies. */
export function authorize(t: { readonly authz: AuthzTable }, r: AuthzRequest): AuthzDecision {
  const a = t.authz;
  _begin();
  const d = _enforced(a, r);
  if (a.dryRun.deny.length === 0 && a.dryRun.allow.length === 0) return d;
  return { ...d, dryRun: _dryRunVerdicts(a.dryRun, r) };
}

/**
 * Logs what AUDIT and dry-run policies made of a decision (nothing when none
 * applies), with `fields` naming the request or connection.
 */
export function logShadowPolicies(d: AuthzDecision, fields: Record<string, unknown>): void {
  if (d.audit.length > 0) {
    log.info("authorization audit", { policies: d.audit, allowed: d.allowed, ...fields });
  }
  for (const v of d.dryRun ?? []) {
    log.info("authorization dry-run", {
      action: v.action,
      result: v.allowed ? "allowed" : "denied",
      policy: v.policy ?? "",
      enforced: d.allowed ? "allowed" : "denied",
      ...fields,
    });
  }
}

function _dryRunVerdicts(t: AuthzTable["dryRun"], r: AuthzRequest): DryRunVerdict[] {
  const verdict = (action: "ALLOW" | "DENY", policies: readonly CompiledPolicy[]) => {
    const rule = _firstRule(policies, r, action === "ALLOW");
    const allowed = (rule !== undefined) === (action === "ALLOW");
    const v: DryRunVerdict = { action, allowed };
    if (rule !== undefined) v.policy = rule.policy;
    return v;
  };
  const out: DryRunVerdict[] = [];
  if (t.deny.length > 0) out.push(verdict("DENY", t.deny));
  if (t.allow.length > 0) out.push(verdict("ALLOW", t.allow));
  return out;
}

/** The first rule of `policies` (in order) that matches `r`; `allow`: read as an ALLOW rule. */
function _firstRule(
  policies: readonly CompiledPolicy[],
  r: AuthzRequest,
  allow: boolean,
): CompiledRule | undefined {
  for (const p of policies) {
    for (const rule of p.rules) {
      if (_ruleMatches(rule, r, allow)) return rule;
    }
  }
  return undefined;
}

function _enforced(a: AuthzTable, r: AuthzRequest): AuthzDecision {
  let audit = _NO_AUDIT;
  for (const p of a.audit) {
    for (const rule of p.rules) {
      if (_ruleMatches(rule, r, false)) {
        audit = audit === _NO_AUDIT ? [p.name] : [...audit, p.name];
        break;
      }
    }
  }
  const denied = _firstRule(a.deny, r, false);
  if (denied !== undefined) return _decide(denied, audit);
  if (a.allow.length === 0) {
    return audit === _NO_AUDIT ? _ALLOWED_NO_POLICY : { ..._ALLOWED_NO_POLICY, audit };
  }
  const allowed = _firstRule(a.allow, r, true);
  if (allowed !== undefined) return _decide(allowed, audit);
  return audit === _NO_AUDIT ? _DENIED_NO_MATCH : { ..._DENIED_NO_MATCH, audit };
}

const _ALLOWED_NO_POLICY: AuthzDecision = Object.freeze({
  allowed: true,
  reason: "no ALLOW policy applies",
  audit: _NO_AUDIT,
});
const _DENIED_NO_MATCH: AuthzDecision = Object.freeze({
  allowed: false,
  reason: "no ALLOW policy rule matched",
  audit: _NO_AUDIT,
});

function _decide(rule: CompiledRule, audit: readonly string[]): AuthzDecision {
  if (audit === _NO_AUDIT) return rule.decision;
  return { allowed: rule.decision.allowed, reason: rule.reason, policy: rule.policy, audit };
}

// ------------------------------------------------------------ per request

// The request being decided and what was derived from it, computed at most
// once per `authorize` call (it is synchronous, so module state is safe).
let _ns: string | undefined;
let _nsDone = false;
const _src = new Uint32Array(4);
let _srcState = 0; // 0 not parsed, 1 ok, 2 not an address
const _dst = new Uint32Array(4);
let _dstState = 0;
let _path: string | undefined;
let _host: string | undefined;

function _begin(): void {
  _nsDone = false;
  _srcState = 0;
  _dstState = 0;
  _path = undefined;
  _host = undefined;
}

function _ruleMatches(rule: CompiledRule, r: AuthzRequest, allowAction: boolean): boolean {
  if (allowAction && rule.httpOnly && r.http === undefined) return false;
  if (rule.from !== undefined && !_anyAll(rule.from, r)) return false;
  if (rule.to !== undefined && !_anyAll(rule.to, r)) return false;
  for (const c of rule.when) if (!_condMatches(c, r)) return false;
  return true;
}

function _anyAll(alts: _Cond[][], r: AuthzRequest): boolean {
  outer: for (const conds of alts) {
    for (const c of conds) if (!_condMatches(c, r)) continue outer;
    return true;
  }
  return false;
}

function _condMatches(c: _Cond, r: AuthzRequest): boolean {
  // Reached on TCP only for DENY/AUDIT rules: Istio drops HTTP-only fields there.
  if (c.httpOnly && r.http === undefined) return true;
  switch (c.attr) {
    case _SOURCE_IP:
    case _DEST_IP: {
      const ip = c.attr === _SOURCE_IP ? _sourceIp(r) : _destIp(r);
      if (c.cidrs !== undefined && (ip === undefined || !_anyCidr(c.cidrs, ip))) return false;
      return c.notCidrs === undefined || ip === undefined || !_anyCidr(c.notCidrs, ip);
    }
    case _PORT: {
      const p = r.destinationPort;
      if (c.ports !== undefined && !c.ports.includes(p)) return false;
      return c.notPorts === undefined || !c.notPorts.includes(p);
    }
    default: {
      const v = _stringAttr(c, r);
      if (c.strs !== undefined && (v === undefined || !_anyStr(c.strs, v))) return false;
      return c.notStrs === undefined || v === undefined || !_anyStr(c.notStrs, v);
    }
  }
}

function _stringAttr(c: _Cond, r: AuthzRequest): string | undefined {
  switch (c.attr) {
    case _PRINCIPAL:
      return r.principal;
    case _NAMESPACE:
      if (!_nsDone) {
        _ns = namespaceOf(r.principal);
        _nsDone = true;
      }
      return _ns;
    case _HOST:
      if (r.http === undefined) return undefined;
      return _host ??= r.http.host.toLowerCase();
    case _METHOD:
      return r.http?.method;
    case _PATH: {
      if (r.http === undefined) return undefined;
      if (_path === undefined) {
        const p = r.http.path;
        const q = p.indexOf("?");
        _path = q < 0 ? p : p.slice(0, q);
      }
      return _path;
    }
    case _HEADER:
      return r.http?.header(c.header);
    default:
      return undefined;
  }
}

function _sourceIp(r: AuthzRequest): Uint32Array | undefined {
  if (_srcState === 0) _srcState = parseIpInto(r.sourceIp, _src) ? 1 : 2;
  return _srcState === 1 ? _src : undefined;
}

function _destIp(r: AuthzRequest): Uint32Array | undefined {
  if (_dstState === 0) {
    _dstState = r.destinationIp !== undefined && parseIpInto(r.destinationIp, _dst) ? 1 : 2;
  }
  return _dstState === 1 ? _dst : undefined;
}

function _anyCidr(list: Cidr[], ip: Uint32Array): boolean {
  for (const c of list) if (cidrContains(c, ip)) return true;
  return false;
}

function _anyStr(list: _Str[], v: string): boolean {
  for (const m of list) {
    switch (m.kind) {
      case _EXACT:
        if (v === m.v) return true;
        break;
      case _PREFIX:
        if (v.startsWith(m.v)) return true;
        break;
      case _SUFFIX:
        if (v.endsWith(m.v)) return true;
        break;
      case _PRESENT:
        return true;
      default:
        if (v.length > 0) return true;
    }
  }
  return false;
}

/**
 * The namespace in a SPIFFE ID without scheme: the segment after "/ns/"
 * ("cluster.local/ns/default/sa/x" → "default"), as Istio's
 * `.*\/ns\/<ns>\/.*` match reads it; undefined when there is none.
 */
export function namespaceOf(principal: string | undefined): string | undefined {
  if (principal === undefined) return undefined;
  const i = principal.indexOf("/ns/");
  if (i < 0) return undefined;
  const j = principal.indexOf("/", i + 4);
  return j < 0 ? undefined : principal.slice(i + 4, j);
}

// ------------------------------------------------------------ compilation

function _compilePolicy(p: AuthorizationPolicy): CompiledPolicy {
  const name = `${p.metadata.namespace}/${p.metadata.name}`;
  const action = p.spec.action;
  const rules = p.spec.rules.map((rule, i) => _compileRule(rule, name, action, i));
  return { name, rules };
}

function _compileRule(
  rule: AuthzRule,
  policy: string,
  action: "ALLOW" | "DENY" | "AUDIT",
  index: number,
): CompiledRule {
  const from = rule.from?.map((f) => _sourceConds(f.source));
  const to = rule.to?.map((t) => _operationConds(t.operation));
  const when = (rule.when ?? []).map(_whenCond);
  const all = [...(from ?? []).flat(), ...(to ?? []).flat(), ...when];
  const allowed = action !== "DENY";
  const reason = `${allowed ? "allowed" : "denied"} by ${action} policy ${policy} rule ${index}`;
  return {
    from,
    to,
    when,
    httpOnly: all.some((c) => c.httpOnly),
    decision: Object.freeze({ allowed, reason, policy, audit: _NO_AUDIT }),
    reason,
    policy,
  };
}

function _sourceConds(s: AuthzSource): _Cond[] {
  const out: _Cond[] = [];
  _pushStr(out, _PRINCIPAL, s.principals, s.notPrincipals);
  _pushStr(out, _NAMESPACE, s.namespaces, s.notNamespaces);
  _pushIp(out, _SOURCE_IP, s.ipBlocks, s.notIpBlocks);
  return out;
}

function _operationConds(o: AuthzOperation): _Cond[] {
  const out: _Cond[] = [];
  _pushStr(out, _HOST, o.hosts, o.notHosts);
  _pushStr(out, _METHOD, o.methods, o.notMethods);
  _pushStr(out, _PATH, o.paths, o.notPaths);
  _pushPort(out, o.ports, o.notPorts);
  return out;
}

/** Condition keys remora implements; validation refuses the others. */
export const WHEN_KEYS = [
  "source.principal",
  "source.namespace",
  "source.ip",
  "destination.port",
  "destination.ip",
  "request.headers[<name>]",
] as const;

function _whenCond(w: AuthzCondition): _Cond {
  const out: _Cond[] = [];
  switch (w.key) {
    case "source.principal":
      _pushStr(out, _PRINCIPAL, w.values, w.notValues, true);
      break;
    case "source.namespace":
      _pushStr(out, _NAMESPACE, w.values, w.notValues, true);
      break;
    case "source.ip":
      _pushIp(out, _SOURCE_IP, w.values, w.notValues, true);
      break;
    case "destination.ip":
      _pushIp(out, _DEST_IP, w.values, w.notValues, true);
      break;
    case "destination.port":
      _pushPort(out, w.values, w.notValues, true);
      break;
    default: {
      const name = headerKeyName(w.key);
      if (name === undefined) throw new Error(`Cannot compile condition key "${w.key}"`);
      _pushStr(out, _HEADER, w.values, w.notValues, true);
      out[0]!.header = name.toLowerCase();
      out[0]!.httpOnly = true;
    }
  }
  return out[0]!;
}

/** The header name of a `request.headers[<name>]` key, or undefined. */
export function headerKeyName(key: string): string | undefined {
  const m = /^request\.headers\[([^\[\]\s]+)\]$/.exec(key);
  return m?.[1];
}

function _cond(attr: number): _Cond {
  return {
    attr,
    header: "",
    httpOnly: attr === _HOST || attr === _METHOD || attr === _PATH || attr === _HEADER,
    strs: undefined,
    notStrs: undefined,
    cidrs: undefined,
    notCidrs: undefined,
    ports: undefined,
    notPorts: undefined,
  };
}

/** Adds a condition when values or notValues are given (`always`: even when neither is). */
function _pushStr(
  out: _Cond[],
  attr: number,
  values: string[] | undefined,
  notValues: string[] | undefined,
  always = false,
): void {
  if (!always && values === undefined && notValues === undefined) return;
  const c = _cond(attr);
  const lower = attr === _HOST;
  const compile = (v: string): _Str =>
    attr === _HEADER && v === "*" ? { kind: _PRESENT, v: "" } : compileWildcard(v, lower);
  if (values !== undefined) c.strs = values.map(compile);
  if (notValues !== undefined) c.notStrs = notValues.map(compile);
  out.push(c);
}

function _pushIp(
  out: _Cond[],
  attr: number,
  values: string[] | undefined,
  notValues: string[] | undefined,
  always = false,
): void {
  if (!always && values === undefined && notValues === undefined) return;
  const c = _cond(attr);
  if (values !== undefined) c.cidrs = values.map(_cidr);
  if (notValues !== undefined) c.notCidrs = notValues.map(_cidr);
  out.push(c);
}

function _pushPort(
  out: _Cond[],
  values: string[] | undefined,
  notValues: string[] | undefined,
  always = false,
): void {
  if (!always && values === undefined && notValues === undefined) return;
  const c = _cond(_PORT);
  if (values !== undefined) c.ports = values.map(Number);
  if (notValues !== undefined) c.notPorts = notValues.map(Number);
  out.push(c);
}

function _cidr(s: string): Cidr {
  const c = parseCidr(s);
  if (typeof c === "string") throw new Error(`Cannot compile ipBlock: ${c}`);
  return c;
}

/** Istio's value match: "*" any non-empty, "*suffix", "prefix*", else exact. */
function compileWildcard(v: string, lower: boolean): _Str {
  const s = lower ? v.toLowerCase() : v;
  if (s === "*") return { kind: _ANY, v: "" };
  if (s.startsWith("*")) return { kind: _SUFFIX, v: s.slice(1) };
  if (s.endsWith("*")) return { kind: _PREFIX, v: s.slice(0, -1) };
  return { kind: _EXACT, v: s };
}

/**
 * Command-line flag parsing for remora's subcommands.
 *
 * Each subcommand declares its flags once (name, kind, default, help); the
 * parser returns typed values or throws a `UsageError` naming the flag and
 * what was wrong, which `main.ts` turns into exit code 2. It does not know
 * any subcommand itself.
 */

export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A file a flag names was refused (unreadable, not what it must be): exit 1,
 * as for a refused config, with no pointer to --help (the flags were right).
 */
export class InputError extends Error {
  override name = "InputError";
}

export type FlagKind = "string" | "port" | "int" | "bool" | "list" | "duration";

export interface FlagSpec {
  kind: FlagKind;
  help: string;
  /** Placeholder shown in help, e.g. FILE; "DIR" values lose trailing slashes. */
  arg?: string;
  default?: string | number | boolean | string[];
}

export type FlagSpecs = Record<string, FlagSpec>;

export type FlagValue = string | number | boolean | string[] | undefined;

export interface Parsed {
  flags: Record<string, FlagValue>;
  positionals: string[];
  help: boolean;
}

/** Parses `--name value`, `--name=value` and `--bool` forms. */
export function parseFlags(args: readonly string[], specs: FlagSpecs): Parsed {
  const flags: Record<string, FlagValue> = {};
  for (const [name, spec] of Object.entries(specs)) {
    flags[name] = spec.default;
  }
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(arg.startsWith("--") ? 2 : 1, eq === -1 ? undefined : eq);
    const spec = specs[name];
    if (spec === undefined) {
      throw new UsageError(`Unknown flag: ${arg.slice(0, eq === -1 ? undefined : eq)}`);
    }
    let raw: string;
    if (eq !== -1) raw = arg.slice(eq + 1);
    else if (spec.kind === "bool") raw = "true";
    else {
      const next = args[++i];
      if (next === undefined || (next.startsWith("--") && next.length > 2)) {
        throw new UsageError(`Flag --${name} needs a value`);
      }
      raw = next;
    }
    flags[name] = convert(name, spec, raw, flags[name]);
  }
  return { flags, positionals, help };
}

function convert(name: string, spec: FlagSpec, raw: string, prev: FlagValue): FlagValue {
  switch (spec.kind) {
    case "string":
      if (raw === "") throw new UsageError(`Flag --${name} needs a non-empty value`);
      // A directory's trailing slashes go, so that names built from it have one "/".
      if (spec.arg === "DIR" && raw.length > 1) return raw.replace(/\/+$/, "") || "/";
      return raw;
    case "bool":
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw new UsageError(`Flag --${name} takes true or false, got "${raw}"`);
    case "port": {
      const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
      if (!(n >= 0 && n <= 65535)) {
        throw new UsageError(`Flag --${name} takes a port 0..65535, got "${raw}"`);
      }
      return n;
    }
    case "int": {
      const n = /^-?\d+$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) {
        throw new UsageError(`Flag --${name} takes an integer, got "${raw}"`);
      }
      return n;
    }
    case "duration": {
      const ms = parseDurationMs(raw);
      if (ms === undefined) {
        throw new UsageError(
          `Flag --${name} takes a duration such as 500ms, 2s, 1m or 1h30m, got "${raw}"`,
        );
      }
      return ms;
    }
    case "list": {
      const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
      return [...(Array.isArray(prev) && prev !== spec.default ? prev : []), ...items];
    }
  }
}

/**
 * Parses a duration such as "1.5s", "250ms", "1m", "2h", or a sum of them
 * as Go writes it ("1h30m", "1m30s"), into milliseconds.
 */
export function parseDurationMs(raw: string): number | undefined {
  const text = raw.trim();
  const parts = text.match(/\d+(?:\.\d+)?(?:ms|s|m|h)/g);
  if (parts === null || parts.join("") !== text) return undefined;
  let ms = 0;
  for (const p of parts) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(p)!;
    const unit = m[2];
    ms += Number(m[1]) *
      (unit === "ms" ? 1 : unit === "s" ? 1000 : unit === "m" ? 60_000 : 3_600_000);
  }
  return Number.isFinite(ms) ? ms : undefined;
}

/** Formats milliseconds the way durations are written: 500ms, 10s, 5m, 1h. */
export function formatDurationMs(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Renders the help text of a subcommand from its flag specs. */
export function helpText(usage: string, summary: string, specs: FlagSpecs): string {
  const lines = [`Usage: ${usage}`, "", summary, ""];
  if (Object.keys(specs).length > 0) lines.push("Flags:");
  for (const [name, spec] of Object.entries(specs)) {
    const left = `  --${name}${
      spec.kind === "bool" ? "" : ` ${spec.arg ?? spec.kind.toUpperCase()}`
    }`;
    const shown = Array.isArray(spec.default)
      ? spec.default.join(",")
      : spec.kind === "duration" && typeof spec.default === "number"
      ? formatDurationMs(spec.default)
      : String(spec.default);
    const def = spec.default === undefined || spec.default === false ? "" : ` (default ${shown})`;
    lines.push(`${left.padEnd(34)} ${spec.help}${def}`);
  }
  lines.push(`${"  --help".padEnd(34)} Show this help`);
  return lines.join("\n");
}

/**
 * `remora validate FILE...`: checks config files without running the proxy.
 *
 * All files are validated together as one config set, exactly as `remora run`
 * would load them, so references across files (a VirtualService subset
 * defined by a DestinationRule in another file) resolve. Prints a one-line
 * summary and exits 0, or prints every error, one per line, to stderr and
 * exits 1. It does not start anything or touch the network.
 */

import { loadConfigFiles } from "../config/source.ts";
import { formatConfigError } from "../config/validate.ts";
import { type FlagSpecs, helpText, parseFlags, UsageError } from "./flags.ts";

const _FLAGS: FlagSpecs = {};

const _USAGE = "remora validate FILE...";
const _SUMMARY = "Validates Istio config files (ServiceEntry, VirtualService, DestinationRule, " +
  "Sidecar, PeerAuthentication, AuthorizationPolicy, Telemetry) as one set and reports every " +
  "error with its file, document and field path.";

/** Runs the command; returns the exit code. Throws UsageError for bad arguments. */
export async function validateCommand(args: string[]): Promise<number> {
  const parsed = parseFlags(args, _FLAGS);
  if (parsed.help) {
    console.log(helpText(_USAGE, _SUMMARY, _FLAGS));
    return 0;
  }
  if (parsed.positionals.length === 0) {
    throw new UsageError(`Missing config files: usage: ${_USAGE}`);
  }
  const files = [...new Set(parsed.positionals)];
  const result = await loadConfigFiles(files);
  if (!result.ok) {
    for (const e of result.errors) console.error(formatConfigError(e));
    return 1;
  }
  const n = result.config.resources.length;
  console.log(
    `ok: ${n} resource${n === 1 ? "" : "s"} in ${files.length} file${
      files.length === 1 ? "" : "s"
    }`,
  );
  return 0;
}

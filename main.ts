/**
 * remora's one entry point: `remora <command> [flags]`.
 *
 * Commands: run (the sidecar), control (the reference control server),
 * validate (check config files), iptables, ca, version.
 * Usage errors (unknown flag, bad value) exit with 2 and name what was wrong;
 * each command returns its own exit code otherwise.
 */

import { InputError, UsageError } from "./src/cli/flags.ts";
import { VERSION } from "./src/version.ts";

const HELP = `remora ${VERSION}: a service-mesh sidecar speaking the Istio API

Usage: remora <command> [flags]

Commands:
  run        Run the sidecar (outbound and inbound proxy, admin, metrics)
  control    Run the reference control server (config over gRPC, CA for workload certificates)
  validate   Check Istio YAML config files: remora validate FILE...
  iptables   Transparent capture rules: remora iptables install|uninstall|status|print
  ca         Certificate authority for SPIFFE identities: remora ca init|issue
  version    Print the version

Run "remora <command> --help" for a command's flags.`;

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    // Each command is loaded when it runs, so that the sidecar does not carry
    // the certificate tooling's libraries (tens of MB) in memory. The
    // specifiers are literal, so `deno compile` still embeds them.
    case "run":
      return await (await import("./src/cli/run.ts")).runCommand(rest);
    case "control":
      return await (await import("./src/cli/control.ts")).controlCommand(rest);
    case "validate":
      return await (await import("./src/cli/validate.ts")).validateCommand(rest);
    case "iptables":
      return await (await import("./src/cli/iptables.ts")).iptablesCommand(rest);
    case "ca":
      return await (await import("./src/cli/ca.ts")).caCommand(rest);
    case "version":
      if (rest.includes("--help") || rest.includes("-h")) {
        console.log("Usage: remora version\n\nPrints remora's version.");
        return 0;
      }
      if (rest.length > 0) throw new UsageError(`Unexpected argument: ${rest[0]}`);
      console.log(`remora ${VERSION} (deno ${Deno.version.deno})`);
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(HELP);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`Unknown command: ${command}`);
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    if (e instanceof UsageError) {
      // Point at the help of the command that was given, where there is one.
      const known = ["run", "control", "validate", "iptables", "ca"];
      const [first = "", second = ""] = Deno.args;
      const sub = first === "ca" && ["init", "issue"].includes(second) ? ` ${second}` : "";
      const cmd = known.includes(first) ? `remora ${first}${sub}` : "remora";
      console.error(`remora: ${e.message}\nRun "${cmd} --help" for usage.`);
      code = 2;
    } else if (e instanceof InputError) {
      console.error(`remora: ${e.message}`);
      code = 1;
    } else {
      console.error(`remora: fatal: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      code = 1;
    }
  }
  Deno.exit(code);
}

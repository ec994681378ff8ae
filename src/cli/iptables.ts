/**
 * `remora iptables install | uninstall | print | status`: transparent
 * capture rules for a workload, Istio's istio-iptables for remora.
 *
 * install applies the rules atomically (and idempotently), uninstall removes
 * them, print shows the exact iptables-restore input without touching
 * anything (no root needed), status shows what is installed. The flags are
 * exported (`CAPTURE_FLAGS`, `captureOptionsFromFlags`) so that
 * `remora run --capture` takes the same ones. install and uninstall claim
 * the capture of the network namespace while they change it, so they are
 * refused while a `remora run --capture` owns it. The rules themselves are
 * src/capture/iptables.ts's business.
 */

import {
  CaptureError,
  type CaptureOptions,
  defaultCaptureOptions,
  install,
  renderRules,
  status,
  uninstall,
  validateCaptureOptions,
} from "../capture/iptables.ts";
import {
  CaptureBusyError,
  type CaptureClaim,
  claimCapture,
  RUN_CAPTURE,
} from "../capture/claim.ts";
import { type FlagSpecs, type FlagValue, helpText, parseFlags, UsageError } from "./flags.ts";

const _D = defaultCaptureOptions();

/** The flags that shape the capture rules; `remora run --capture` takes them too. */
export const CAPTURE_FLAGS: FlagSpecs = {
  "proxy-uid": {
    kind: "int",
    arg: "UID",
    default: _D.proxyUid,
    help: "The proxy's uid, whose own traffic is not captured",
  },
  "proxy-gid": {
    kind: "int",
    arg: "GID",
    help: "The proxy's gid, whose own traffic is not captured either",
  },
  "inbound-port": {
    kind: "port",
    default: _D.inboundPort,
    help: "remora's inbound port: captured inbound traffic goes here",
  },
  "outbound-port": {
    kind: "port",
    default: _D.outboundPort,
    help: "remora's outbound port: captured outbound traffic goes here",
  },
  "include-inbound-ports": {
    kind: "list",
    arg: "PORTS",
    default: ["*"],
    help: "Inbound ports to capture, comma-separated, * for all, empty for none",
  },
  "exclude-inbound-ports": {
    kind: "list",
    arg: "PORTS",
    help: "Inbound ports never captured, comma-separated",
  },
  "include-outbound-cidrs": {
    kind: "list",
    arg: "CIDRS",
    default: ["*"],
    help: "Outbound destinations to capture, comma-separated CIDRs, * for all, empty for none",
  },
  "exclude-outbound-cidrs": {
    kind: "list",
    arg: "CIDRS",
    help: "Outbound destinations never captured, comma-separated CIDRs",
  },
  "exclude-outbound-ports": {
    kind: "list",
    arg: "PORTS",
    help: "Outbound destination ports never captured, comma-separated",
  },
  ipv6: { kind: "bool", default: false, help: "Capture IPv6 too (ip6tables)" },
};

const _FAMILY_FLAGS: FlagSpecs = {
  ipv6: { kind: "bool", default: false, help: "IPv6 too (ip6tables)" },
};

const _SUMMARY = `Usage: remora iptables <install|uninstall|print|status> [flags]

Transparent capture rules in remora's own nat chains (REMORA_*), like Istio's
istio-iptables. remora's own ports (15000, 15001, 15006, 15020, 15021, 15090)
are never captured, nor is the traffic of the proxy's uid.

Commands:
  install    Apply the rules atomically; installing again changes nothing
  uninstall  Remove the rules; iptables-save is as it was before install
  print      Print the exact iptables-restore input (dry run, no root needed)
  status     Show what is installed

install and uninstall are refused while a "remora run --capture" runs in the
same network namespace: it owns the rules and removes them when it exits.

Run "remora iptables <command> --help" for a command's flags.`;

function _ports(flag: string, items: string[]): number[] {
  return items.map((s) => {
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    if (!(n >= 1 && n <= 65535)) {
      throw new UsageError(`Flag --${flag} takes ports 1..65535, got "${s}"`);
    }
    return n;
  });
}

function _star<T>(flag: string, items: string[], each: (xs: string[]) => T[]): "*" | T[] {
  if (!items.includes("*")) return each(items);
  if (items.length === 1) return "*";
  throw new UsageError(`Flag --${flag} takes * alone or a list, got "${items.join(",")}"`);
}

/**
 * Turns parsed CAPTURE_FLAGS into capture options; throws UsageError naming
 * the flag when a value is bad. `ownPorts` defaults to remora's standard
 * ports; `remora run` passes the ports it really listens on.
 */
export function captureOptionsFromFlags(
  flags: Record<string, FlagValue>,
  overrides: { ownPorts?: number[] } = {},
): CaptureOptions {
  const list = (name: string) => (flags[name] as string[] | undefined) ?? [];
  const id = (name: string) => {
    const v = flags[name] as number | undefined;
    if (v !== undefined && !(v >= 0 && v <= 4294967294)) {
      throw new UsageError(`Flag --${name} takes an id 0..4294967294, got "${v}"`);
    }
    return v;
  };
  const opts: CaptureOptions = {
    proxyUid: id("proxy-uid") ?? _D.proxyUid,
    proxyGid: id("proxy-gid"),
    inboundPort: flags["inbound-port"] as number,
    outboundPort: flags["outbound-port"] as number,
    includeInboundPorts: _star(
      "include-inbound-ports",
      list("include-inbound-ports"),
      (xs) => _ports("include-inbound-ports", xs),
    ),
    excludeInboundPorts: _ports("exclude-inbound-ports", list("exclude-inbound-ports")),
    includeOutboundCidrs: _star(
      "include-outbound-cidrs",
      list("include-outbound-cidrs"),
      (xs) => xs,
    ),
    excludeOutboundCidrs: list("exclude-outbound-cidrs"),
    excludeOutboundPorts: _ports("exclude-outbound-ports", list("exclude-outbound-ports")),
    ownPorts: overrides.ownPorts ?? _D.ownPorts,
    ipv6: flags["ipv6"] === true,
  };
  const errors = validateCaptureOptions(opts);
  if (errors.length > 0) throw new UsageError(errors.join("; "));
  return opts;
}

/** Runs `remora iptables ...`; returns the exit code. Throws UsageError for bad arguments. */
export async function iptablesCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    console.log(_SUMMARY);
    return sub === undefined ? 2 : 0;
  }
  const specs = sub === "install" || sub === "print" ? CAPTURE_FLAGS : _FAMILY_FLAGS;
  const summaries: Record<string, string> = {
    install: "Installs remora's capture rules atomically; installing again changes nothing, " +
      "installing other flags replaces them (IPv6 rules too: without --ipv6 they are removed). " +
      "Refused while a `remora run --capture` owns this network namespace's capture. " +
      "Needs root or CAP_NET_ADMIN.",
    uninstall: "Removes remora's capture rules (IPv6 ones too, when there are any), leaving " +
      "every other rule as it was. Succeeds when nothing is installed. Refused while a " +
      "`remora run --capture` owns this network namespace's capture. " +
      "Needs root or CAP_NET_ADMIN.",
    print: "Prints the exact iptables-restore input install applies to a fresh table " +
      "(and the ip6tables-restore input with --ipv6). Changes nothing.",
    status: "Shows remora's capture chains and jumps as installed, IPv6 ones whenever " +
      "there are any. Exits 0 when every family shown is installed, 1 otherwise.",
  };
  const summary = summaries[sub];
  if (summary === undefined) throw new UsageError(`Unknown iptables command: ${sub}`);
  const { flags, positionals, help } = parseFlags(rest, specs);
  if (help) {
    console.log(helpText(`remora iptables ${sub} [flags]`, summary, specs));
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument: ${positionals[0]}`);
  const ipv6 = flags["ipv6"] === true;
  let claim: CaptureClaim | undefined;
  try {
    switch (sub) {
      case "print": {
        const opts = captureOptionsFromFlags(flags);
        let out = renderRules(opts, 4);
        if (ipv6) out += renderRules(opts, 6);
        await Deno.stdout.write(new TextEncoder().encode(out));
        return 0;
      }
      case "install": {
        const opts = captureOptionsFromFlags(flags);
        claim = await claimCapture("remora iptables install");
        const { removed } = await install(opts);
        console.log(
          `remora: capture rules installed (${ipv6 ? "IPv4 and IPv6" : "IPv4"})` +
            (removed.length > 0 ? "; IPv6 rules of an earlier install removed" : ""),
        );
        return 0;
      }
      case "uninstall": {
        claim = await claimCapture("remora iptables uninstall");
        const families = await uninstall({ ipv6 });
        console.log(
          `remora: capture rules removed (${families.length > 1 ? "IPv4 and IPv6" : "IPv4"})`,
        );
        return 0;
      }
      default: {
        let all = true;
        for (const s of await status({ ipv6 })) {
          all &&= s.installed;
          const state = s.installed
            ? "installed"
            : s.present
            ? "partly installed"
            : "not installed";
          console.log(
            `IPv${s.family}: ${state}${s.ownsTable ? " (remora created the nat table)" : ""}`,
          );
          for (const j of s.jumps) console.log(`  ${j}`);
          for (const rules of Object.values(s.chains)) for (const r of rules) console.log(`  ${r}`);
        }
        return all ? 0 : 1;
      }
    }
  } catch (e) {
    if (e instanceof CaptureBusyError) {
      console.error(`remora: iptables ${sub} refused: ${e.message}; ${_whileBusy(sub, e)}`);
      console.error("remora: nothing was changed");
      return 1;
    }
    if (e instanceof CaptureError) {
      console.error(`remora: iptables ${sub} failed: ${e.message}`);
      if (!e.partial) console.error("remora: nothing was changed");
      return 1;
    }
    throw e;
  } finally {
    await claim?.release();
  }
}

/** What to do when the capture is someone else's. */
function _whileBusy(sub: string, e: CaptureBusyError): string {
  if (e.holder?.what !== RUN_CAPTURE) return "try again once it is done";
  return sub === "uninstall"
    ? "stop it instead: it removes its rules when it exits"
    : "stop it first (it removes its rules when it exits), or restart it with the capture " +
      "flags you want";
}

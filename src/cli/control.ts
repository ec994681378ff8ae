/**
 * `remora control`: the reference control server, in the same binary as the
 * sidecar. It serves the Istio-kind YAML files of one directory to every
 * connected proxy over the ConfigDiscovery stream, validated with the same
 * validator the proxy uses; it watches the directory and pushes each good
 * change at once, while a bad change is refused (every error logged) and
 * the last good snapshot keeps being served. Its CA (a `remora ca init`
 * directory) signs CSRs for the identity a caller's bootstrap token stands
 * for, and issues the server's own TLS certificate
 * (spiffe://<td>/ns/istio-system/sa/remora-control) at start. The gRPC side
 * is `control/server.ts`; this file owns flags, files and process lifetime.
 */

import { formatConfigError } from "../config/validate.ts";
import { DirWatcher } from "../fs/dir_watch.ts";
import { CaError, issueCert, loadCa } from "../identity/ca.ts";
import { spiffeId } from "../identity/spiffe.ts";
import { isLevel, log, setLevel } from "../log.ts";
import { VERSION } from "../version.ts";
import { ControlServer } from "../control/server.ts";
import { isConfigFile, loadSnapshotDir } from "../control/snapshot.ts";
import { Tokens } from "../control/tokens.ts";
import { type FlagSpecs, helpText, parseFlags, UsageError } from "./flags.ts";

export const CONTROL_FLAGS: FlagSpecs = {
  "config-dir": {
    kind: "string",
    arg: "DIR",
    help: "Directory of Istio YAML files (*.yaml, *.yml) served to every proxy; watched",
  },
  ca: {
    kind: "string",
    arg: "DIR",
    help: "The CA directory (root-cert.pem, root-key.pem, as `remora ca init` writes it)",
  },
  listen: {
    kind: "string",
    arg: "HOST:PORT",
    default: "0.0.0.0:15012",
    help: "Address of the gRPC (TLS) endpoint; port 0 picks a free port",
  },
  tokens: {
    kind: "string",
    arg: "FILE",
    help: "Bootstrap tokens, one `TOKEN NAMESPACE SERVICE_ACCOUNT` per line " +
      "(without it, no certificates are issued)",
  },
  "cert-ttl": {
    kind: "duration",
    arg: "DURATION",
    default: 24 * 3_600_000,
    help: "Longest lifetime of an issued workload certificate",
  },
  "server-id": {
    kind: "string",
    arg: "SPIFFE_ID",
    help: "The identity of the server's own certificate " +
      "(default spiffe://<trust domain>/ns/istio-system/sa/remora-control)",
  },
  "log-level": {
    kind: "string",
    arg: "LEVEL",
    default: "info",
    help: "debug, info, warn, error or off",
  },
};

const _USAGE = "remora control --config-dir DIR --ca DIR [flags]";
const _SUMMARY =
  "Runs the reference control server: config snapshots over gRPC and a CA for workload certificates.";

/** The server's own certificate lives this long (capped by the CA's); restart to renew it. */
const _SERVER_CERT_TTL_MS = 365 * 24 * 3_600_000;

export async function controlCommand(args: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(args, CONTROL_FLAGS);
  if (help) {
    console.log(helpText(_USAGE, _SUMMARY, CONTROL_FLAGS));
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument: ${positionals[0]}`);
  const level = flags["log-level"] as string;
  if (!isLevel(level)) {
    throw new UsageError(`Flag --log-level takes debug, info, warn, error or off, got "${level}"`);
  }
  setLevel(level);
  const dir = flags["config-dir"] as string | undefined;
  const caDir = flags["ca"] as string | undefined;
  if (dir === undefined) throw new UsageError("Flag --config-dir is required");
  if (caDir === undefined) throw new UsageError("Flag --ca is required");
  const { host, port } = _parseListen(flags["listen"] as string);
  const certTtlMs = flags["cert-ttl"] as number;
  if (!(certTtlMs >= 1000)) {
    throw new UsageError(`Flag --cert-ttl must be at least 1s, got ${certTtlMs}ms`);
  }

  let ca;
  try {
    ca = await loadCa(caDir);
  } catch (e) {
    console.error(`remora: the CA was refused; not starting: ${(e as CaError).message}`);
    return 1;
  }
  const tokensPath = flags["tokens"] as string | undefined;
  let tokens: Tokens | undefined;
  if (tokensPath !== undefined) {
    try {
      tokens = await Tokens.load(tokensPath);
    } catch (e) {
      console.error(`remora: the tokens file was refused; not starting: ${(e as Error).message}`);
      return 1;
    }
  } else {
    log.warn("no --tokens: this control server issues no certificates");
  }
  // Read per request, so that an edited tokens file counts at once; a broken edit keeps the last good one.
  const currentTokens = async () => {
    if (tokensPath === undefined) return undefined;
    try {
      tokens = await Tokens.load(tokensPath);
    } catch (e) {
      log.error("the tokens file was refused; the last good one is used", {
        error: (e as Error).message,
      });
    }
    return tokens;
  };

  const first = await loadSnapshotDir(dir);
  if (!first.ok) {
    for (const e of first.errors) console.error(formatConfigError(e));
    console.error(`remora: config in ${dir} was refused; not starting`);
    return 1;
  }
  let serverCert;
  const serverId = (flags["server-id"] as string | undefined) ??
    spiffeId(ca.trustDomain, "istio-system", "remora-control");
  try {
    serverCert = await issueCert(ca, { id: serverId, ttlMs: _SERVER_CERT_TTL_MS });
  } catch (e) {
    console.error(`remora: cannot issue the server certificate: ${(e as Error).message}`);
    return 1;
  }
  const server = new ControlServer({
    ca,
    serverCert,
    snapshot: first.snapshot,
    tokens: currentTokens,
    certTtlMs,
    controlPlane: `remora-control ${VERSION}`,
  });
  let bound: number;
  try {
    bound = await server.listen(host, port);
  } catch (e) {
    console.error(`remora: cannot listen on ${host}:${port}: ${(e as Error).message}`);
    await server.close();
    return 1;
  }

  // An empty set is a valid config, and takes every policy away from every proxy: say so.
  const warnEmpty = () =>
    log.warn(
      "the config directory holds no config files: proxies get no services and no policies",
      { dir },
    );
  if (first.snapshot.resources.length === 0) warnEmpty();
  const watcher = new DirWatcher(dir, {
    // A Kubernetes ConfigMap volume publishes an update by swapping its `..data` link.
    matches: (p) => {
      const name = p.slice(p.lastIndexOf("/") + 1);
      return isConfigFile(name) || name === "..data";
    },
    reload: async () => {
      const next = await loadSnapshotDir(dir);
      if (watcher.closed) return;
      if (!next.ok) {
        log.error("config change refused; the last good snapshot keeps being served", {
          version: server.snapshot.version,
          errors: next.errors.length,
        });
        for (const e of next.errors) log.error(formatConfigError(e));
        return;
      }
      if (next.snapshot.version === server.snapshot.version) return;
      if (next.snapshot.resources.length === 0) warnEmpty();
      server.publish(next.snapshot);
      log.info("config published", {
        version: next.snapshot.version,
        files: next.snapshot.resources.length,
        proxies: server.streams.length,
      });
    },
    onWatchError: (reason) => log.error("cannot watch the config directory", { dir, reason }),
  });

  console.log(`remora: control config ${dir} version ${first.snapshot.version}`);
  console.log(`remora: control identity ${serverId} trust domain ${ca.trustDomain}`);
  console.log(`remora: control listening on ${host.includes(":") ? `[${host}]` : host}:${bound}`);

  const stop = Promise.withResolvers<string>();
  const handlers: Array<[Deno.Signal, () => void]> = [
    ["SIGTERM", () => stop.resolve("SIGTERM")],
    ["SIGINT", () => stop.resolve("SIGINT")],
  ];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  const signal = await stop.promise;
  log.info("shutting down", { signal });
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  await watcher.close();
  await server.close();
  return 0;
}

function _parseListen(raw: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(raw);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new UsageError(`Flag --listen takes HOST:PORT (e.g. 0.0.0.0:15012), got "${raw}"`);
  }
  return { host: m[1] ?? m[2]!, port };
}

/**
 * `remora run`: loads the config (a file, hot-reloaded, the embedded
 * default, or a control server's stream through `control/agent.ts`), starts
 * the outbound and inbound listeners and the admin, stats and health
 * servers, prints what it listens on, and drains on SIGTERM or SIGINT. Wiring of the pipelines is in src/app; this file owns process
 * lifetime only. With --capture it owns the capture of its network
 * namespace while it runs (src/capture/claim.ts): it installs the rules once
 * listening, removes them on the way out, and a second `run --capture` there
 * is refused.
 */

import { isIP } from "node:net";
import { startAdmin } from "../app/admin_servers.ts";
import { startInbound } from "../app/inbound.ts";
import { startMemoryTrim } from "../app/memory.ts";
import { startOutbound } from "../app/outbound.ts";
import type { RuntimeConfig } from "../config/runtime.ts";
import {
  ConfigWatcher,
  loadConfigFiles,
  loadEmbeddedDefault,
  type Workload,
} from "../config/source.ts";
import { formatConfigError } from "../config/validate.ts";
import { isLevel, log, setLevel } from "../log.ts";
import type { Identity } from "../identity/identity.ts";
import { parseSpiffeId } from "../identity/spiffe.ts";
import { MeshIdentity } from "../tls/mtls.ts";
import { peerAuthMode } from "../security/peer_auth.ts";
import { ConnPool } from "../proxy/pool.ts";
import { Metrics, peerMeta } from "../telemetry/metrics.ts";
import { Telemetry } from "../telemetry/tracing.ts";
import { TELEMETRY_FLAGS, type TelemetryFlags, telemetryFlags } from "./telemetry_flags.ts";
import {
  type FlagSpecs,
  type FlagValue,
  helpText,
  InputError,
  parseFlags,
  UsageError,
} from "./flags.ts";
import { type ControlTarget, parseControlUrl } from "../control/target.ts";
import { CAPTURE_FLAGS, captureOptionsFromFlags } from "./iptables.ts";
import { type CaptureOptions, install, uninstall } from "../capture/iptables.ts";
import {
  CaptureBusyError,
  type CaptureClaim,
  claimCapture,
  RUN_CAPTURE,
} from "../capture/claim.ts";

/**
 * run's capture flags (those of `remora iptables install`, its listener ports aside): they
 * shape the rules `--capture` installs, and nothing else.
 */
const CAPTURE_ONLY = Object.keys(CAPTURE_FLAGS).filter((name) =>
  name !== "inbound-port" && name !== "outbound-port"
);

export const RUN_FLAGS: FlagSpecs = {
  config: {
    kind: "string",
    arg: "FILE",
    help:
      "Istio YAML config file, reloaded when it changes (default: embedded pass-through config)",
  },
  "outbound-port": {
    kind: "port",
    default: 15001,
    help: "Outbound listener port (explicit HTTP proxy for the app)",
  },
  "outbound-address": {
    kind: "string",
    arg: "ADDR",
    default: "127.0.0.1",
    help: "Outbound listener address",
  },
  "inbound-port": { kind: "port", default: 15006, help: "Inbound listener port" },
  "inbound-address": {
    kind: "string",
    arg: "ADDR",
    default: "0.0.0.0",
    help: "Inbound listener address",
  },
  "app-port": {
    kind: "port",
    arg: "PORT",
    help: "The app's port on 127.0.0.1, where inbound traffic goes",
  },
  "admin-port": { kind: "port", default: 15000, help: "Admin port, on 127.0.0.1 only" },
  "stats-port": { kind: "port", default: 15020, help: "Prometheus port (/stats/prometheus)" },
  "health-port": { kind: "port", default: 15021, help: "Health port (/healthz/ready)" },
  namespace: {
    kind: "string",
    arg: "NS",
    default: "default",
    help:
      "The workload's namespace: metrics labels, which Sidecar, Telemetry, PeerAuthentication and AuthorizationPolicy apply, and short host names",
  },
  workload: {
    kind: "string",
    arg: "NAME",
    default: "unknown",
    help: "The workload's name, for metrics",
  },
  labels: {
    kind: "list",
    arg: "K=V,...",
    help:
      "The workload's labels, for policy selectors and sourceLabels matches (e.g. app=b,version=v1)",
  },
  "identity-dir": {
    kind: "string",
    arg: "DIR",
    help:
      "The workload's mTLS identity: cert-chain.pem, key.pem, root-cert.pem (watched; rotated without restart)",
  },
  control: {
    kind: "string",
    arg: "URL",
    help: "Get config and certificates from a control server (https://HOST:PORT) " +
      "instead of --config and --identity-dir",
  },
  "token-file": {
    kind: "string",
    arg: "FILE",
    help: "With --control: the bootstrap token that proves the workload's identity to the CA",
  },
  "root-cert": {
    kind: "string",
    arg: "FILE",
    help: "With --control: the trust bundle (PEM) for the control server and mesh peers",
  },
  "control-id": {
    kind: "string",
    arg: "SPIFFE_ID",
    help:
      "With --control: the identity the control server must present (default: its service account remora-control in istio-system, as `remora control` issues it)",
  },
  "cache-dir": {
    kind: "string",
    arg: "DIR",
    help:
      "With --control: keep the last good config and the certificate here, used when restarting while control is down",
  },
  "cert-ttl": {
    kind: "duration",
    arg: "DURATION",
    default: 24 * 3_600_000,
    help: "With --control: certificate lifetime to ask for (renewed at about half of it)",
  },
  "connect-timeout": {
    kind: "duration",
    arg: "DURATION",
    default: 10_000,
    help: "Upstream connect timeout (e.g. 10s)",
  },
  "detection-timeout": {
    kind: "duration",
    arg: "DURATION",
    default: 1_000,
    help:
      "How long a redirected client may stay silent before it is treated as opaque TCP (server-first)",
  },
  "tcp-idle-timeout": {
    kind: "duration",
    arg: "DURATION",
    default: 3_600_000,
    help: "Close an opaque TCP connection after this long without a byte either way",
  },
  "drain-time": {
    kind: "duration",
    arg: "DURATION",
    default: 5_000,
    help: "How long to let open connections finish on shutdown",
  },
  "log-level": {
    kind: "string",
    arg: "LEVEL",
    default: "info",
    help: "debug, info, warn, error or off",
  },
  ...TELEMETRY_FLAGS,
  capture: {
    kind: "bool",
    default: false,
    help: "Install iptables rules capturing the workload's traffic on start; remove them on exit " +
      "(the capture flags below are those of `remora iptables install`). Refused while another " +
      "`remora run --capture` runs in this network namespace",
  },
  ...Object.fromEntries(CAPTURE_ONLY.map((name) => [name, CAPTURE_FLAGS[name]!])),
};

const USAGE = "remora run [flags]";
const SUMMARY =
  "Runs the sidecar: outbound and inbound listeners, admin, stats and health servers.";

/** Errors that mean a peer went away: one connection's end, whatever code saw it. */
const PEER_GONE = [
  Deno.errors.BrokenPipe,
  Deno.errors.ConnectionReset,
  Deno.errors.ConnectionAborted,
  Deno.errors.NotConnected,
  Deno.errors.UnexpectedEof,
];

/**
 * Listener addresses must be IP addresses, remora's ports must differ, and
 * the app's port must not be one of them (inbound traffic would loop back
 * into remora).
 */
function checkAddressesAndPorts(flags: Record<string, unknown>): void {
  for (const name of ["outbound-address", "inbound-address"]) {
    const v = flags[name] as string;
    if (isIP(v) === 0 && v !== "localhost") {
      throw new UsageError(`Flag --${name} takes an IP address, got "${v}"`);
    }
  }
  const own = ["outbound-port", "inbound-port", "admin-port", "stats-port", "health-port"];
  const seen = new Map<number, string>();
  for (const name of own) {
    const port = flags[name] as number;
    if (port === 0) continue;
    const other = seen.get(port);
    if (other !== undefined) {
      throw new UsageError(
        `Flags --${other} and --${name} are both ${port}: each needs its own port`,
      );
    }
    seen.set(port, name);
  }
  const app = flags["app-port"] as number | undefined;
  const clash = app === undefined ? undefined : seen.get(app);
  if (clash !== undefined) {
    throw new UsageError(
      `Flag --app-port ${app} is remora's own --${clash}: inbound traffic would go to remora itself`,
    );
  }
}

export async function runCommand(args: string[]): Promise<number> {
  const { flags, positionals, help } = parseFlags(args, RUN_FLAGS);
  if (help) {
    console.log(helpText(USAGE, SUMMARY, RUN_FLAGS));
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument: ${positionals[0]}`);
  const level = flags["log-level"] as string;
  if (!isLevel(level)) {
    throw new UsageError(`Flag --log-level takes debug, info, warn, error or off, got "${level}"`);
  }
  setLevel(level);
  checkAddressesAndPorts(flags);
  const tracingFlags = telemetryFlags(flags);

  if (!((flags["connect-timeout"] as number) > 0)) {
    throw new UsageError(
      `Flag --connect-timeout must be more than 0 (Envoy's connectTimeout too), got ${
        flags["connect-timeout"]
      }ms`,
    );
  }
  const ns = flags["namespace"] as string;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(ns)) {
    throw new UsageError(
      `Flag --namespace takes a Kubernetes namespace name (lower-case letters, digits and "-", at most 63), got "${ns}"`,
    );
  }
  const capture = flags["capture"] === true;
  if (capture) {
    for (const name of ["outbound-port", "inbound-port"]) {
      if (flags[name] === 0) {
        throw new UsageError(`Flag --${name} must be a fixed port with --capture, got 0`);
      }
    }
  }
  // Checked now, so that a bad capture flag fails before anything is started
  // (also without --capture: a bad value is an error wherever it is given).
  // Without --capture the listener ports may be ephemeral (0), which capture
  // refuses: the capture flags' own values are checked with the default ports.
  const parsedCapture = captureOptionsFromFlags(
    capture ? flags : {
      ...flags,
      "inbound-port": RUN_FLAGS["inbound-port"]!.default!,
      "outbound-port": RUN_FLAGS["outbound-port"]!.default!,
    },
  );
  const captureOpts: CaptureOptions | undefined = capture ? parsedCapture : undefined;
  if (!capture) {
    // Given without --capture they would change nothing: say so rather than ignore them.
    for (const name of CAPTURE_ONLY) {
      const given = flags[name];
      if (
        given !== undefined && JSON.stringify(given) !== JSON.stringify(RUN_FLAGS[name]?.default)
      ) {
        throw new UsageError(
          `Flag --${name} applies only with --capture (the rules of \`remora iptables install\` take it there)`,
        );
      }
    }
  }
  if (captureOpts !== undefined) {
    // remora's own upstream connections must bypass the rules, or they would loop back into it.
    const uid = Deno.uid();
    const gid = Deno.gid();
    if (
      uid !== captureOpts.proxyUid &&
      (captureOpts.proxyGid === undefined || gid !== captureOpts.proxyGid)
    ) {
      throw new UsageError(
        `Flag --capture: remora runs as uid ${uid} but --proxy-uid is ${captureOpts.proxyUid}` +
          `${
            captureOpts.proxyGid === undefined ? "" : ` and --proxy-gid ${captureOpts.proxyGid}`
          }, so its own ` +
          `traffic would be captured too; run it as that uid (e.g. setpriv --reuid ${captureOpts.proxyUid}) ` +
          `or pass --proxy-uid ${uid}`,
      );
    }
  }

  const controlFlags = controlOptionsFromFlags(flags);

  // Claimed before anything listens, so that a sidecar refused here touches
  // neither the owner's ports nor its rules.
  let claim: CaptureClaim | undefined;
  if (captureOpts !== undefined) {
    try {
      claim = await claimCapture(RUN_CAPTURE);
    } catch (e) {
      if (!(e instanceof CaptureBusyError)) throw e;
      console.error(
        `remora: cannot start with --capture: ${e.message}; stop it first (it removes its rules ` +
          "when it exits), or run this sidecar without --capture",
      );
      return 1;
    }
  }
  try {
    return await serve(flags, tracingFlags, controlFlags, { captureOpts, claim });
  } finally {
    await claim?.release();
  }
}

/**
 * Runs the sidecar until SIGTERM or SIGINT; returns the exit code. With
 * `capture`, installs the rules once listening and removes them (and gives
 * up the claim) before draining.
 */
async function serve(
  flags: Record<string, FlagValue>,
  tracingFlags: TelemetryFlags,
  controlFlags: ReturnType<typeof controlOptionsFromFlags>,
  capture: { captureOpts: CaptureOptions | undefined; claim: CaptureClaim | undefined },
): Promise<number> {
  const { captureOpts, claim } = capture;
  const workload: Workload = {
    namespace: flags["namespace"] as string,
    labels: parseLabels((flags["labels"] as string[] | undefined) ?? []),
  };
  const identityDir = flags["identity-dir"] as string | undefined;
  let identity: Identity | undefined;
  // Loaded only when needed: its X.509 library costs tens of MB of memory.
  const identityModule = identityDir === undefined
    ? undefined
    : await import("../identity/identity.ts");
  if (identityDir !== undefined && identityModule !== undefined) {
    try {
      identity = await identityModule.loadIdentity(identityDir);
    } catch (e) {
      console.error(
        `remora: identity in ${identityDir} was refused; not starting: ${(e as Error).message}`,
      );
      return 1;
    }
    warnOtherNamespace(identity, flags["namespace"] as string);
  }

  const configPath = flags["config"] as string | undefined;
  let config: RuntimeConfig;
  if (configPath === undefined) {
    config = loadEmbeddedDefault(workload);
  } else {
    const loaded = await loadConfigFiles([configPath], workload);
    if (!loaded.ok) {
      for (const e of loaded.errors) console.error(formatConfigError(e));
      console.error(`remora: config ${configPath} was refused; not starting`);
      return 1;
    }
    config = loaded.config;
  }
  const metrics = new Metrics();
  const reloadErrors: string[] = [];
  const setActive = (c: RuntimeConfig) => {
    metrics.configVersion.reset();
    metrics.configVersion.set({ version: c.version, source: c.source }, 1);
    config = c;
  };
  // With --control the first certificate must be there before anything listens
  // (from the cache, else from the CA); config starts from the cache or the
  // embedded default and follows the stream once it runs.
  let control: import("../control/agent.ts").ControlAgent | undefined;
  if (controlFlags !== undefined) {
    const { ControlAgent, ControlStartError } = await import("../control/agent.ts");
    try {
      control = await ControlAgent.start({
        ...controlFlags,
        workload,
        metrics,
        node: {
          id: `${flags["workload"]}.${workload.namespace}~${Deno.hostname()}~${Deno.pid}`,
          namespace: workload.namespace,
          labels: { ...workload.labels },
          serviceAccount: "",
        },
      });
    } catch (e) {
      if (!(e instanceof ControlStartError)) throw e;
      console.error(`remora: no identity from the control server; not starting: ${e.message}`);
      return 1;
    }
    identity = control.identity;
    warnOtherNamespace(identity, flags["namespace"] as string);
    if (control.cachedConfig !== undefined) config = control.cachedConfig;
  }
  setActive(config);
  metrics.configReloads.inc({ result: "accepted" });
  const getConfig = () => config;
  // With --control, not ready (and inbound closed) until a config came from it or its cache.
  let configured = control === undefined || control.cachedConfig !== undefined;
  /** Shutting down: not ready, so that no new traffic is sent here. */
  let draining = false;

  const ports = {
    outbound: flags["outbound-port"] as number,
    inbound: flags["inbound-port"] as number,
    admin: flags["admin-port"] as number,
    stats: flags["stats-port"] as number,
    health: flags["health-port"] as number,
  };
  const mesh = identity === undefined ? undefined : new MeshIdentity(identity);
  const identityWatch = identityDir === undefined || identity === undefined
    ? undefined
    : watchIdentity(identityModule!, identityDir, identity, mesh!, metrics);
  const self = {
    workload: flags["workload"] as string,
    namespace: flags["namespace"] as string,
    meta: peerMeta(workload.labels, flags["workload"] as string),
    principal: () => mesh?.material.spiffeId,
  };
  const pool = new ConnPool({
    connectTimeoutMs: flags["connect-timeout"] as number,
    identity: mesh,
    onMtlsFailure: () => metrics.tlsHandshakeFailed("outbound"),
  });
  const ownPorts = new Set<number>(Object.values(ports).filter((p) => p !== 0));
  const telemetry = new Telemetry({ getConfig, metrics, self, ...tracingFlags });

  const timeouts = {
    detectionTimeoutMs: flags["detection-timeout"] as number,
    connectTimeoutMs: flags["connect-timeout"] as number,
    tcpIdleTimeoutMs: flags["tcp-idle-timeout"] as number,
  };
  let outbound, inbound, admin;
  try {
    // IPv6 capture redirects to [::1] and the pod's v6 address: listen there too.
    const ipv6 = flags["ipv6"] === true;
    const outboundAddress = flags["outbound-address"] as string;
    const inboundAddress = flags["inbound-address"] as string;
    outbound = startOutbound({
      addresses: ipv6 && outboundAddress === "127.0.0.1"
        ? [outboundAddress, "::1"]
        : [outboundAddress],
      port: ports.outbound,
      getConfig,
      ownPorts,
      metrics,
      pool,
      self,
      telemetry,
      ...timeouts,
    });
    inbound = startInbound({
      address: ipv6 && inboundAddress === "0.0.0.0" ? "::" : inboundAddress,
      port: ports.inbound,
      appPort: flags["app-port"] as number | undefined,
      identity: mesh,
      peerAuthMode: (port) => peerAuthModeOf(config, port),
      serving: () => configured,
      getConfig,
      metrics,
      pool,
      self,
      telemetry,
      ...timeouts,
    });
    for (const l of [...outbound.listeners, inbound.listener]) ownPorts.add(l.addr.port);
    admin = startAdmin({
      adminPort: ports.admin,
      statsPort: ports.stats,
      healthPort: ports.health,
      state: {
        getConfig,
        metrics,
        ready: () => configured && !draining,
        describe: () => ({
          listeners: {
            outbound: outbound!.listeners.map((l: { addr: Deno.NetAddr }) =>
              `${l.addr.hostname}:${l.addr.port}`
            ),
            inbound: `${inbound!.listener.addr.hostname}:${inbound!.listener.addr.port}`,
          },
          lastReloadErrors: reloadErrors,
          ...(control === undefined ? {} : { control: control.describe() }),
        }),
      },
    });
    for (const p of admin.ports) ownPorts.add(p);
  } catch (e) {
    if (
      e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.PermissionDenied ||
      e instanceof Deno.errors.AddrNotAvailable
    ) {
      console.error(`remora: cannot listen: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }

  control?.run({
    mesh: mesh!,
    getConfig,
    setActive: (c) => {
      configured = true;
      setActive(c);
    },
  });

  let watcher: ConfigWatcher | undefined;
  if (configPath !== undefined) {
    watcher = new ConfigWatcher(configPath, {
      workload,
      currentVersion: config.version,
      onConfig(c) {
        setActive(c);
        reloadErrors.length = 0;
        metrics.configReloads.inc({ result: "accepted" });
        log.info("config reloaded", { version: c.version, source: c.source });
      },
      onError(errors) {
        metrics.configReloads.inc({ result: "rejected" });
        reloadErrors.splice(0, reloadErrors.length, ...errors.map(formatConfigError));
        log.error("config change refused; the last good config keeps serving", {
          version: config.version,
          errors: errors.length,
        });
        for (const line of reloadErrors) log.error(line);
      },
    });
  }

  let captured = false;
  const removeCapture = async () => {
    if (captured && captureOpts !== undefined) {
      captured = false;
      try {
        await uninstall({ ipv6: captureOpts.ipv6 });
        log.info("capture rules removed");
      } catch (e) {
        log.error("could not remove the capture rules", { error: (e as Error).message });
      }
    }
    // Done with the rules: another sidecar may claim them while this one drains.
    await claim?.release();
  };
  if (captureOpts !== undefined) {
    try {
      const { removed } = await install({ ...captureOpts, ownPorts: [...ownPorts] });
      captured = true;
      log.info("capture rules installed", { inbound: ports.inbound, outbound: ports.outbound });
      if (removed.length > 0) log.info("IPv6 capture rules left from before were removed");
    } catch (e) {
      console.error(`remora: cannot install the capture rules: ${(e as Error).message}`);
      await watcher?.close();
      await control?.close();
      await Promise.all([...outbound.listeners.map((l) => l.close(0)), inbound.listener.close(0)]);
      await admin.close();
      return 1;
    }
  }
  // A fatal error must not leave traffic redirected to a dead proxy.
  const fatal = (what: unknown) => {
    // node:tls and node:http2 as Deno provides them sometimes throw from their
    // own callbacks when a peer goes away mid-handshake (e.g. "_flushEncOut"
    // of a null handle). That breaks one connection, not the proxy: log it.
    const stack = what instanceof Error ? what.stack ?? "" : "";
    if (/ext:deno_node\/(_tls_wrap|_tls_common|internal\/http2|_http2|http2)/.test(stack)) {
      log.warn("a connection failed inside node:tls or node:http2", { error: String(what) });
      return;
    }
    // A peer's reset or broken pipe that escaped its connection's handlers is
    // still that connection's failure, never the proxy's.
    if (PEER_GONE.some((E) => what instanceof E)) {
      log.warn("a connection failed (peer gone), outside its handlers", { error: String(what) });
      return;
    }
    console.error(`remora: fatal: ${what instanceof Error ? what.stack : String(what)}`);
    removeCapture().finally(() => Deno.exit(1));
  };
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    fatal(ev.reason);
  });
  globalThis.addEventListener("error", (ev) => {
    ev.preventDefault();
    fatal(ev.error ?? ev.message);
  });

  const a = (l: { addr: Deno.NetAddr }) => `${l.addr.hostname}:${l.addr.port}`;
  console.log(`remora: config ${config.source} version ${config.version}`);
  for (const l of outbound.listeners) console.log(`remora: outbound listening on ${a(l)}`);
  console.log(`remora: inbound listening on ${a(inbound.listener)}`);
  for (const line of admin.describe()) console.log(`remora: ${line}`);
  const stopMemoryTrim = startMemoryTrim();

  const stop = Promise.withResolvers<string>();
  const onSignal = (name: string) => () => stop.resolve(name);
  const handlers: Array<[Deno.Signal, () => void]> = [["SIGTERM", onSignal("SIGTERM")], [
    "SIGINT",
    onSignal("SIGINT"),
  ]];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  const signal = await stop.promise;
  log.info("shutting down", { signal });
  stopMemoryTrim();
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  draining = true;
  // Signals that come during the drain do not cut it short (it is bounded by --drain-time):
  // exiting now would drop what is in flight and, with --capture, leave the rules behind.
  const later = () => log.info("already shutting down; the drain ends within --drain-time");
  const laterHandlers: Array<[Deno.Signal, () => void]> = [["SIGTERM", later], ["SIGINT", later]];
  for (const [sig, h] of laterHandlers) Deno.addSignalListener(sig, h);
  await watcher?.close();
  await identityWatch?.close();
  await control?.close();
  // As Istio's sidecar drains: inbound first (no new connections; what is in flight finishes),
  // while the app can still call out, since finishing its own work may need that. Outbound
  // serves until the app has no connection to it left, or the drain time is up.
  const drain = flags["drain-time"] as number;
  const deadline = Date.now() + drain;
  await inbound.listener.close(drain);
  while (Date.now() < deadline && outbound.listeners.some((l) => l.openConnections > 0)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  await Promise.all(
    outbound.listeners.map((l) => l.close(Math.max(0, deadline - Date.now()))),
  );
  // Capture goes last: until now redirected connections met remora (or a closed port), never
  // the app without its policies.
  await removeCapture();
  outbound.h2.close();
  inbound.h2.close();
  pool.closeAll();
  // Spans still queued get one last, bounded, chance to leave.
  await telemetry.close();
  await admin.close();
  for (const [sig, h] of laterHandlers) Deno.removeSignalListener(sig, h);
  return 0;
}

/** The --control flags checked together; undefined without --control. */
function controlOptionsFromFlags(flags: Record<string, FlagValue>): {
  target: ControlTarget;
  tokenFile: string;
  rootCertPem: string;
  cacheDir?: string;
  certTtlMs: number;
  controlId?: string;
} | undefined {
  const url = flags["control"] as string | undefined;
  const only = ["token-file", "root-cert", "cache-dir", "control-id"].filter((n) =>
    flags[n] !== undefined
  );
  if (url === undefined) {
    if (only.length > 0) throw new UsageError(`Flag --${only[0]} needs --control`);
    return undefined;
  }
  for (const other of ["config", "identity-dir"]) {
    if (flags[other] !== undefined) {
      throw new UsageError(
        `Flags --control and --${other} cannot be used together: ` +
          `with --control, ${
            other === "config" ? "config" : "the identity"
          } comes from the control server`,
      );
    }
  }
  let target: ControlTarget;
  try {
    target = parseControlUrl(url);
  } catch (e) {
    throw new UsageError(`Flag --control: ${(e as Error).message}`);
  }
  const tokenFile = flags["token-file"] as string | undefined;
  const rootCert = flags["root-cert"] as string | undefined;
  if (tokenFile === undefined) throw new UsageError("Flag --control needs --token-file");
  if (rootCert === undefined) throw new UsageError("Flag --control needs --root-cert");
  let rootCertPem: string;
  try {
    rootCertPem = Deno.readTextFileSync(rootCert);
  } catch (e) {
    throw new InputError(`--root-cert ${rootCert}: cannot read it: ${(e as Error).message}`);
  }
  if (!rootCertPem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new InputError(`--root-cert ${rootCert}: holds no PEM certificate (a trust bundle)`);
  }
  const certTtlMs = flags["cert-ttl"] as number;
  if (!(certTtlMs >= 1000)) {
    throw new UsageError(`Flag --cert-ttl must be at least 1s, got ${certTtlMs}ms`);
  }
  const cacheDir = flags["cache-dir"] as string | undefined;
  const controlId = flags["control-id"] as string | undefined;
  if (controlId !== undefined) {
    try {
      parseSpiffeId(controlId);
    } catch (e) {
      throw new UsageError(`Flag --control-id: ${(e as Error).message}`);
    }
  }
  return {
    target,
    tokenFile,
    rootCertPem,
    certTtlMs,
    ...(cacheDir === undefined ? {} : { cacheDir }),
    ...(controlId === undefined ? {} : { controlId }),
  };
}

/** Policies select by --namespace, peers see the certificate's: says so when they differ. */
function warnOtherNamespace(identity: Identity, namespace: string): void {
  if (identity.namespace !== namespace) {
    log.warn("the identity's namespace is not --namespace", {
      identity: identity.spiffeId,
      namespace,
    });
  }
}

/** Parses --labels k=v,k2=v2. */
function parseLabels(items: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new UsageError(`Flag --labels takes key=value pairs, got "${item}"`);
    labels[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return labels;
}

/** The PeerAuthentication mode of a port (PERMISSIVE, Istio's default, when no policy says otherwise). */
function peerAuthModeOf(config: RuntimeConfig, port: number): "STRICT" | "PERMISSIVE" | "DISABLE" {
  return peerAuthMode(config.security, port);
}

/**
 * Watches the identity directory: a good new set is swapped in for new
 * connections (open ones keep theirs), a broken one is refused and counted,
 * and expiry is warned about ahead of time.
 */
function watchIdentity(
  { expiryWarnings, IdentityWatcher }: typeof import("../identity/identity.ts"),
  dir: string,
  first: Identity,
  mesh: MeshIdentity,
  metrics: Metrics,
): { close(): Promise<void> } {
  const expiry = (id: Identity) => {
    metrics.setIdentityCertExpiry(id.notAfter);
    for (const w of expiryWarnings(id)) log.warn(w, { identity: id.spiffeId });
  };
  expiry(first);
  const timer = setInterval(() => expiry(mesh.material as Identity), 60_000);
  const watcher = new IdentityWatcher(dir, {
    current: first,
    onIdentity(id) {
      const before = (mesh.material as Identity).spiffeId;
      mesh.rotate(id);
      metrics.identityRotation("accepted");
      const fields = {
        identity: id.spiffeId,
        serial: id.serialNumber,
        notAfter: id.notAfter.toISOString(),
      };
      // A new identity, not a renewal: peers' policies see another principal from now on.
      if (id.spiffeId !== before) {
        log.warn("identity rotated to another SPIFFE ID", { ...fields, was: before });
      } else log.info("identity rotated", fields);
      expiry(id);
    },
    onError(e) {
      metrics.identityRotation("rejected");
      log.error("new identity refused; the current one stays", { error: e.message });
    },
    onRestored(id) {
      log.info("identity files are good again: they hold the identity in use", {
        identity: id.spiffeId,
        serial: id.serialNumber,
      });
    },
  });
  return {
    close: async () => {
      clearInterval(timer);
      await watcher.close();
    },
  };
}

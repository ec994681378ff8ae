/**
 * The Dockerfile and deploy/docker-compose.yaml, checked statically (no
 * container engine runs here): every flag they pass is one `remora run`
 * has, the ports they expose and probe are remora's defaults, the health
 * check asks the health endpoint, the image runs as the proxy uid capture
 * expects, the build stage uses the Deno release and task this repository
 * uses, and the compose example's mesh.yaml validates.
 */

import assert from "node:assert/strict";
import { parse } from "yaml";
import { defaultCaptureOptions } from "../src/capture/iptables.ts";
import { RUN_FLAGS } from "../src/cli/run.ts";
import { loadConfigFiles } from "../src/config/source.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const dockerfile = Deno.readTextFileSync(`${ROOT}Dockerfile`);
const compose = parse(Deno.readTextFileSync(`${ROOT}deploy/docker-compose.yaml`));
const defaultPort = (flag: string) => RUN_FLAGS[flag]!.default as number;
const PORTS = ["outbound-port", "inbound-port", "stats-port", "health-port"].map(defaultPort);

Deno.test("Dockerfile: builds with this repository's Deno and compile task, runs as the proxy uid", () => {
  const deno = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  assert.ok(typeof deno.tasks.compile === "string");
  assert.match(dockerfile, /deno task compile/);
  const ci = Deno.readTextFileSync(`${ROOT}.ci/run`);
  const version = /deno@(\d+\.\d+\.\d+)/.exec(ci)?.[1];
  assert.ok(version !== undefined, "the CI script names the Deno version");
  assert.match(dockerfile, new RegExp(`FROM denoland/deno:${version.replaceAll(".", "\\.")} `));
  for (const m of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const src of m[1]!.split(" ")) {
      assert.ok(Deno.statSync(`${ROOT}${src}`), `COPY source ${src} exists`);
    }
  }
  assert.match(dockerfile, new RegExp(`^USER ${defaultCaptureOptions().proxyUid}:`, "m"));
  const exposed = /^EXPOSE (.+)$/m.exec(dockerfile)?.[1]?.split(" ").map(Number);
  assert.deepEqual(exposed, PORTS);
  const health = /curl -fsS http:\/\/127\.0\.0\.1:(\d+)(\/\S+)/.exec(dockerfile);
  assert.deepEqual([Number(health?.[1]), health?.[2]], [
    defaultPort("health-port"),
    "/healthz/ready",
  ]);
});

Deno.test("docker-compose: remora's flags exist, its ports are published, its health check is real", async () => {
  const remora = compose.services.remora;
  const args: string[] = remora.command;
  assert.equal(args[0], "run");
  for (const a of args.filter((x) => x.startsWith("--"))) {
    assert.ok(a.slice(2) in RUN_FLAGS, `remora run has ${a}`);
  }
  assert.equal(remora.network_mode, "service:app", "a sidecar shares the app's network");
  const published = (compose.services.app.ports as string[]).map((p) => Number(p.split(":")[1]));
  assert.deepEqual(published, PORTS);
  const appPort = Number(args[args.indexOf("--app-port") + 1]);
  assert.ok(
    compose.services.app.command.includes(String(appPort)),
    "the app listens on --app-port",
  );
  assert.deepEqual(remora.healthcheck.test.slice(-1), [
    `http://127.0.0.1:${defaultPort("health-port")}/healthz/ready`,
  ]);
  // The config is a file of the mounted directory (deploy/), which validates.
  const [hostDir, inContainer] = (remora.volumes as string[])[0]!.split(":");
  assert.equal(hostDir, ".");
  const config = args[args.indexOf("--config") + 1]!;
  assert.ok(config.startsWith(`${inContainer}/`), config);
  const loaded = await loadConfigFiles([`${ROOT}deploy/${config.slice(inContainer!.length + 1)}`]);
  assert.ok(loaded.ok, JSON.stringify(loaded));
});

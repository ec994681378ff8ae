/**
 * The command line as a user meets it: `remora` run as a real process (deno
 * run main.ts), checking exit codes (0 ok, 1 failure, 2 usage error) and
 * what is printed: help on every command, usage errors that name the flag,
 * `validate` listing every error with file, document and field path, and
 * `run` refusing a missing or invalid config before listening.
 */

import assert from "node:assert/strict";
import { VERSION } from "../../src/version.ts";
import { runCommand } from "./harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const BOOKINFO = new URL("../../../shared/conformance/istio-bookinfo/", import.meta.url).pathname;

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `remora ...args`; a `run` that unexpectedly starts is killed after 20s. */
async function remora(...args: string[]): Promise<Out> {
  const out = await runCommand(Deno.execPath(), ["run", "-A", `${ROOT}main.ts`, ...args], {
    cwd: ROOT,
    timeoutMs: 20_000,
  });
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: out.stderr };
}

/** Ephemeral ports, so a `run` that starts by mistake collides with nothing. */
const PORTS = [
  "--outbound-port",
  "0",
  "--inbound-port",
  "0",
  "--admin-port",
  "0",
  "--stats-port",
  "0",
  "--health-port",
  "0",
];

async function tempFile(name: string, text: string): Promise<{ path: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "remora-cli-" });
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, text);
  return { path, dir };
}

const GOOD = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
spec:
  hosts: [svc.example.internal]
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc
spec:
  host: svc.example.internal
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
spec:
  hosts: [svc.example.internal]
  http:
  - route:
    - {destination: {host: svc.example.internal, subset: v1}, weight: 90}
    - {destination: {host: svc.example.internal, subset: v2}, weight: 10}
`;

/** Four documents with errors in three of them. */
const BAD = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
spec:
  hosts: [svc.example.internal]
  resolution: STATICC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, lables: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc
spec:
  host: svc.example.internal
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: other
spec:
  host: other.example.internal
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
spec:
  hosts: [svc.example.internal]
  http:
  - timeout: soon
    route:
    - {destination: {host: svc.example.internal, subset: v1}, weight: 90}
    - {destination: {host: svc.example.internal, subset: v9}, weight: 20}
`;

Deno.test("--help on remora and every command exits 0 with usage", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["--help"], /Usage: remora <command>/],
    [["help"], /Usage: remora <command>/],
    [["run", "--help"], /Usage: remora run/],
    [["validate", "--help"], /Usage: remora validate FILE/],
    [["version", "--help"], /Usage: remora version/],
  ];
  for (const [args, usage] of cases) {
    const out = await remora(...args);
    assert.equal(out.code, 0, `${args.join(" ")}: ${out.stderr}`);
    assert.match(out.stdout, usage, args.join(" "));
  }
  const run = await remora("run", "--help");
  for (
    const flag of [
      "--config",
      "--outbound-port",
      "--inbound-port",
      "--app-port",
      "--admin-port",
      "--stats-port",
      "--health-port",
    ]
  ) {
    assert.ok(run.stdout.includes(flag), `run --help lists ${flag}`);
  }
  const top = await remora("--help");
  for (const cmd of ["run", "validate", "version"]) {
    assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
  }
  // No command at all is a usage error, with the usage shown.
  const none = await remora();
  assert.equal(none.code, 2);
  assert.match(none.stdout + none.stderr, /Usage: remora/);
});

Deno.test("usage errors exit 2 and name the flag, value or command", async () => {
  const cases: Array<[string[], RegExp[]]> = [
    [["run", "--bogus"], [/--bogus/, /Run "remora run --help" for usage/]],
    [["run", "--admin-port", "99999"], [/--admin-port/, /99999/]],
    [["run", "--outbound-port", "http"], [/--outbound-port/, /"http"/]],
    [["run", "--connect-timeout", "soon"], [/--connect-timeout/, /soon/]],
    [["run", "--log-level", "loud"], [/--log-level/, /loud/]],
    [["run", "--config"], [/--config/]],
    [["run", "stray"], [/stray/]],
    [["run", "--outbound-address", "999.1.1.1"], [/--outbound-address/, /999\.1\.1\.1/]],
    [["run", "--include-inbound-ports", "1,abc"], [/--include-inbound-ports/, /abc/]],
    [["run", "--inbound-address", "not-an-ip"], [/--inbound-address/, /not-an-ip/]],
    [["run", "--ipv6"], [/--ipv6 applies only with --capture/]],
    [["run", "--exclude-inbound-ports", "22"], [
      /--exclude-inbound-ports applies only with --capture/,
    ]],
    [["run", "--namespace", "Bad_NS"], [/--namespace/, /Bad_NS/]],
    [["run", "--connect-timeout", "0s"], [/--connect-timeout must be more than 0/]],
    [["run", "--admin-port", "19581", "--stats-port", "19581"], [/--admin-port/, /--stats-port/]],
    [["run", "--inbound-port", "19582", "--app-port", "19582"], [/--app-port 19582/, /inbound/]],
    [["ca", "init", "--trust-domain", "td", "--out", "/nonexistent/ca", "--ttl", "999999999h"], [
      /--ttl/,
      /999999999h/,
    ]],
    [["validate", "--bogus", "x.yaml"], [/--bogus/]],
    [["version", "extra"], [/extra/]],
    [["frobnicate"], [/frobnicate/, /Run "remora --help" for usage/]],
  ];
  for (const [args, wants] of cases) {
    const out = await remora(...(args[0] === "run" ? ["run", ...PORTS, ...args.slice(1)] : args));
    assert.equal(out.code, 2, `${args.join(" ")} exited ${out.code}: ${out.stderr}`);
    for (const w of wants) assert.match(out.stderr, w, `${args.join(" ")}: ${out.stderr}`);
    assert.doesNotMatch(out.stderr, /fatal|stack|at .*\.ts:\d+/i, "no stack trace");
    assert.doesNotMatch(out.stdout, /listening on/, "nothing started");
  }
});

Deno.test("ca issue refuses to write a workload key into the CA's directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-cli-" });
  try {
    const init = await remora("ca", "init", "--trust-domain", "td.test", "--out", `${dir}/ca`);
    assert.equal(init.code, 0, init.stderr);
    const r = await remora(
      "ca",
      "issue",
      "--ca",
      `${dir}/ca`,
      "--id",
      "spiffe://td.test/ns/default/sa/a",
      "--out",
      `${dir}/ca/`,
    );
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--out .* is the CA's directory/);
    assert.equal([...Deno.readDirSync(`${dir}/ca`)].some((e) => e.name === "key.pem"), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ca init where it cannot write exits 1 naming the place, with no stack trace", async () => {
  const { path, dir } = await tempFile("a-file", "x");
  try {
    for (const out of [path, "/proc/remora-nope"]) {
      const r = await remora("ca", "init", "--trust-domain", "td", "--out", out);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`cannot write the CA to ${out}`));
      assert.doesNotMatch(r.stderr, /fatal|at .*\.ts:\d+/);
      if (out === path) assert.match(r.stderr, /it is a file; --out names a directory/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run with a port already taken exits 1 naming the listener and port", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    const r = await remora("run", ...PORTS, "--outbound-port", String(port));
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`outbound listener on 127\\.0\\.0\\.1:${port}: Address already in use`),
    );
    const stats = await remora("run", ...PORTS, "--stats-port", String(port));
    assert.equal(stats.code, 1, stats.stderr);
    assert.match(
      stats.stderr,
      new RegExp(
        `stats listener \\(--stats-port\\): 0\\.0\\.0\\.0:${port}: Address already in use`,
      ),
    );
  } finally {
    taken.close();
  }
});

Deno.test("validate: a good file exits 0; no files is a usage error", async () => {
  const { path, dir } = await tempFile("good.yaml", GOOD);
  try {
    const out = await remora("validate", path);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /ok: 3 resources in 1 file/);
    // Istio's own Bookinfo samples, as one consistent set.
    const bookinfo = await remora(
      "validate",
      `${BOOKINFO}destination-rule-all.yaml`,
      `${BOOKINFO}virtual-service-all-v1.yaml`,
    );
    assert.equal(bookinfo.code, 0, bookinfo.stderr);
    const none = await remora("validate");
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage|usage/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validate: a bad file exits 1 listing every error with file, document and field path", async () => {
  const { path, dir } = await tempFile("bad.yaml", BAD);
  try {
    const out = await remora("validate", path);
    assert.equal(out.code, 1);
    const lines = out.stderr.trim().split("\n");
    const expect: Array<[string, string]> = [
      ["document 1 (ServiceEntry svc)", "spec.resolution"],
      ["document 1 (ServiceEntry svc)", "spec.endpoints[0].lables"],
      ["document 3 (DestinationRule other)", "spec.trafficPolicy.loadBalancer.simple"],
      ["document 4 (VirtualService svc)", "spec.http[0].timeout"],
      ["document 4 (VirtualService svc)", "spec.http[0].route[1].weight"],
      ["document 4 (VirtualService svc)", "spec.http[0].route[1].destination.subset"],
    ];
    for (const [doc, field] of expect) {
      const line = lines.find((l) => l.includes(doc) && l.includes(`${field}:`));
      assert.ok(line !== undefined, `no error for ${doc} ${field} in:\n${out.stderr}`);
      assert.ok(line.startsWith(path), `the line names the file: ${line}`);
    }
    assert.match(out.stderr, /FASTEST/);
    assert.match(out.stderr, /v9/);

    // Several files: errors of each, named by file; a missing file too.
    const good = `${dir}/good.yaml`;
    await Deno.writeTextFile(
      good,
      GOOD.replace("resolution: STATIC", "resolution: DNS").replace(
        "name: svc\nspec:\n  hosts",
        "name: svc\nspec:\n  location: SOMEWHERE\n  hosts",
      ),
    );
    const two = await remora("validate", path, good, `${dir}/absent.yaml`);
    assert.equal(two.code, 1);
    assert.match(
      two.stderr,
      new RegExp(`${good}: document 1 \\(ServiceEntry svc\\): spec\\.location`),
    );
    assert.match(two.stderr, new RegExp(`${dir}/absent\\.yaml: cannot read file`));
    assert.ok(two.stderr.includes(`${path}: document 1`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("version prints the version", async () => {
  const out = await remora("version");
  assert.equal(out.code, 0);
  assert.match(out.stdout, new RegExp(`^remora ${VERSION.replaceAll(".", "\\.")}\\b`));
});

Deno.test("run refuses a missing or invalid config with exit 1 before listening", async () => {
  const missing = await remora("run", "--config", "/nonexistent/remora/missing.yaml", ...PORTS);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /\/nonexistent\/remora\/missing\.yaml: cannot read file: no such file/,
  );
  assert.doesNotMatch(missing.stdout, /listening on/);

  const { path, dir } = await tempFile("bad.yaml", BAD);
  try {
    const bad = await remora("run", "--config", path, ...PORTS);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /spec\.resolution/);
    assert.match(bad.stderr, /spec\.endpoints\[0\]\.lables/);
    assert.match(bad.stderr, /spec\.http\[0\]\.route\[1\]\.destination\.subset/);
    assert.match(bad.stderr, new RegExp(`config ${path} was refused`));
    assert.doesNotMatch(bad.stdout, /listening on/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // An empty file is refused as a reload refuses it; validate says the same.
  const empty = await tempFile("empty.yaml", "\n");
  try {
    const r = await remora("run", "--config", empty.path, ...PORTS);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /empty\.yaml: the file is empty/);
    const v = await remora("validate", empty.path);
    assert.equal(v.code, 1);
    assert.match(v.stdout + v.stderr, /the file is empty/);
  } finally {
    await Deno.remove(empty.dir, { recursive: true });
  }
});

Deno.test("files a flag names that are refused exit 1, naming the file, with no pointer to --help", async () => {
  const { path, dir } = await tempFile("not-a-bundle.pem", "hello\n");
  try {
    const issue = await remora(
      "ca",
      "issue",
      "--ca",
      `${dir}/missing/`,
      "--id",
      "spiffe://cluster.local/ns/default/sa/x",
      "--out",
      `${dir}/out`,
    );
    assert.equal(issue.code, 1, issue.stderr);
    assert.match(issue.stderr, new RegExp(`${dir}/missing/root-cert\\.pem: cannot read file`));
    const bundle = await remora(
      "run",
      ...PORTS,
      "--control",
      "https://127.0.0.1:1",
      "--token-file",
      path,
      "--root-cert",
      path,
    );
    assert.equal(bundle.code, 1, bundle.stderr);
    assert.match(bundle.stderr, /--root-cert .*not-a-bundle\.pem: holds no PEM certificate/);
    for (const r of [issue, bundle]) assert.doesNotMatch(r.stderr, /--help|fatal|at .*\.ts:\d+/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

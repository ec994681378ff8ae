/**
 * Tests of config loading: files become one config set or every error (with
 * YAML syntax errors located by line), the embedded default is permissive,
 * and `ConfigWatcher` reports a changed file as a new config, a broken one as
 * errors only, and follows editors that replace the file by rename. Files live
 * in a temp dir; every wait is bounded; watchers are always closed.
 */

import assert from "node:assert/strict";
import type { RuntimeConfig } from "./runtime.ts";
import { ConfigWatcher, loadConfigFiles, loadEmbeddedDefault } from "./source.ts";
import { type ConfigError, formatConfigError } from "./validate.ts";

const GOOD = (weight: number) => `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: ${weight}}
    - {destination: {host: reviews, subset: v2}, weight: ${100 - weight}}
---
`;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "remora-config-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Polls `cond` every 20ms; fails after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("loadConfigFiles validates several files as one set", async () => {
  await withTempDir(async (dir) => {
    const [dr, vs] = GOOD(90).split("---\n");
    await Deno.writeTextFile(`${dir}/dr.yaml`, dr!);
    await Deno.writeTextFile(`${dir}/vs.yaml`, vs!);
    const both = await loadConfigFiles([`${dir}/vs.yaml`, `${dir}/dr.yaml`]);
    if (!both.ok) assert.fail(both.errors.map(formatConfigError).join("\n"));
    assert.equal(both.config.resources.length, 2);
    assert.equal(both.config.source, `${dir}/vs.yaml,${dir}/dr.yaml`);
    assert.deepEqual(both.config.hosts.get("reviews")?.http[0]?.cumulative, [90, 100]);
    const alone = await loadConfigFiles([`${dir}/vs.yaml`]);
    assert.equal(alone.ok, false, "subsets need the DestinationRule file");
  });
});

Deno.test("loadConfigFiles reports unreadable files and YAML syntax errors with lines", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/bad.yaml`,
      "# comment\nkind: [oops\n---\n---\n# empty\n---\na: 1\na: 2\n",
    );
    const r = await loadConfigFiles([`${dir}/missing.yaml`, `${dir}/bad.yaml`]);
    assert.equal(r.ok, false);
    const errors = (r as { errors: ConfigError[] }).errors;
    const lines = errors.map((e) =>
      formatConfigError({ ...e, file: e.file.slice(dir.length + 1) })
    );
    assert.equal(lines[0], "missing.yaml: cannot read file: no such file");
    assert.match(lines[1]!, /^bad\.yaml:3: document 1: flow sequence in block collection must be/);
    assert.equal(lines[2], "bad.yaml:8: document 4: map keys must be unique");
    assert.equal(lines.length, 3);
    assert.ok(errors.every((e) => e.path === ""));
  });
});

Deno.test("loadEmbeddedDefault is pass-through: ALLOW_ANY and no services", () => {
  const c = loadEmbeddedDefault();
  assert.equal(c.outboundTrafficPolicy, "ALLOW_ANY");
  assert.equal(c.hosts.size, 0);
  assert.equal(c.clusters.size, 0);
  assert.equal(c.source, "embedded default");
  assert.deepEqual(c.resources.map((r) => r.kind), ["Sidecar"]);
});

function recorder() {
  const configs: RuntimeConfig[] = [];
  const refusals: ConfigError[][] = [];
  return {
    configs,
    refusals,
    onConfig: (c: RuntimeConfig) => configs.push(c),
    onError: (e: ConfigError[]) => refusals.push(e),
  };
}

/**
 * Runs `body` with remora.yaml (GOOD(90), loaded as the current config) in a
 * temp dir, watched with a 50 ms debounce and a recorder of what it reports.
 */
async function withWatched(
  body: (
    ctx: { dir: string; path: string; first: RuntimeConfig; rec: ReturnType<typeof recorder> },
  ) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const path = `${dir}/remora.yaml`;
    await Deno.writeTextFile(path, GOOD(90));
    const first = await loadConfigFiles([path]);
    assert.ok(first.ok);
    const rec = recorder();
    const watcher = new ConfigWatcher(path, {
      ...rec,
      currentVersion: first.config.version,
      debounceMs: 50,
    });
    try {
      await sleep(100); // let the watcher start
      await body({ dir, path, first: first.config, rec });
    } finally {
      await watcher.close();
    }
  });
}

Deno.test("ConfigWatcher reports a changed file as a new config and refuses a broken one", async () => {
  await withWatched(async ({ dir, path, first, rec }) => {
    await Deno.writeTextFile(path, GOOD(50));
    await waitFor(() => rec.configs.length === 1, "the changed config");
    const second = rec.configs[0]!;
    assert.notEqual(second.version, first.version);
    assert.deepEqual(second.hosts.get("reviews")?.http[0]?.cumulative, [50, 100]);

    await Deno.writeTextFile(path, GOOD(50).replace("weight: 50", "weight: 70"));
    await waitFor(() => rec.refusals.length === 1, "the refusal");
    assert.deepEqual(rec.refusals[0]!.map((e) => [e.path, e.message]), [
      ["spec.http[0].route[1].weight", "weights must sum to 100, got 120"],
    ]);
    await sleep(300);
    assert.equal(rec.configs.length, 1, "no config from a refused file");

    // Another file in the same directory is not ours.
    await Deno.writeTextFile(`${dir}/other.yaml`, "not: [valid");
    await sleep(300);
    assert.deepEqual([rec.configs.length, rec.refusals.length], [1, 1]);
  });
});

Deno.test("ConfigWatcher follows a file replaced by rename and ignores unchanged content", async () => {
  await withWatched(async ({ dir, path, rec }) => {
    await Deno.writeTextFile(`${dir}/.remora.yaml.swp`, GOOD(10));
    await Deno.rename(`${dir}/.remora.yaml.swp`, path);
    await waitFor(() => rec.configs.length === 1, "the renamed config");
    assert.deepEqual(rec.configs[0]!.hosts.get("reviews")?.http[0]?.cumulative, [10, 100]);

    await Deno.writeTextFile(path, GOOD(10)); // same content: same version
    await sleep(300);
    assert.deepEqual([rec.configs.length, rec.refusals.length], [1, 0]);
  });
});

Deno.test("ConfigWatcher debounces a burst of writes into one reload, and close stops it", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/remora.yaml`;
    await Deno.writeTextFile(path, GOOD(90));
    const rec = recorder();
    const watcher = new ConfigWatcher(path, { ...rec, debounceMs: 150 });
    try {
      await sleep(100);
      for (const w of [80, 70, 60, 40]) {
        await Deno.writeTextFile(path, GOOD(w));
        await sleep(10);
      }
      await waitFor(() => rec.configs.length >= 1, "the reload");
      await sleep(300);
      assert.equal(rec.configs.length, 1);
      assert.deepEqual(rec.configs[0]!.hosts.get("reviews")?.http[0]?.cumulative, [40, 100]);
    } finally {
      await watcher.close();
    }
    await watcher.close(); // twice is fine
    await Deno.writeTextFile(path, GOOD(30));
    await sleep(300);
    assert.equal(rec.configs.length, 1, "nothing after close");
  });
});

Deno.test("ConfigWatcher follows a ConfigMap volume's ..data swap and a link to another directory", async () => {
  await withTempDir(async (dir) => {
    // kubelet's layout: mesh.yaml -> ..data/mesh.yaml, ..data -> ..v1
    await Deno.mkdir(`${dir}/cm/..v1`, { recursive: true });
    await Deno.writeTextFile(`${dir}/cm/..v1/mesh.yaml`, GOOD(90));
    await Deno.symlink("..v1", `${dir}/cm/..data`);
    await Deno.symlink("..data/mesh.yaml", `${dir}/cm/mesh.yaml`);
    // A link to a file kept in another directory, edited in place there.
    await Deno.mkdir(`${dir}/real`);
    await Deno.mkdir(`${dir}/link`);
    await Deno.writeTextFile(`${dir}/real/mesh.yaml`, GOOD(90));
    await Deno.symlink(`${dir}/real/mesh.yaml`, `${dir}/link/mesh.yaml`);

    const cm = recorder();
    const linked = recorder();
    const watchers = [
      new ConfigWatcher(`${dir}/cm/mesh.yaml`, { ...cm, debounceMs: 50 }),
      new ConfigWatcher(`${dir}/link/mesh.yaml`, { ...linked, debounceMs: 50 }),
    ];
    try {
      await sleep(100);
      // The update as kubelet publishes it: a new directory, ..data swapped by rename, the old one removed.
      await Deno.mkdir(`${dir}/cm/..v2`);
      await Deno.writeTextFile(`${dir}/cm/..v2/mesh.yaml`, GOOD(30));
      await Deno.symlink("..v2", `${dir}/cm/..data_tmp`);
      await Deno.rename(`${dir}/cm/..data_tmp`, `${dir}/cm/..data`);
      await Deno.remove(`${dir}/cm/..v1`, { recursive: true });
      await waitFor(() => cm.configs.length === 1, "the ConfigMap update");
      assert.deepEqual(cm.configs[0]!.hosts.get("reviews")?.http[0]?.cumulative, [30, 100]);
      // The new target is watched too: an edit there (not what kubelet does, but a link is a link) is seen.
      await Deno.writeTextFile(`${dir}/cm/..v2/mesh.yaml`, GOOD(20));
      await waitFor(() => cm.configs.length === 2, "an edit of the new target");

      await Deno.writeTextFile(`${dir}/real/mesh.yaml`, GOOD(60));
      await waitFor(() => linked.configs.length === 1, "the linked file's edit");
      assert.deepEqual(linked.configs[0]!.hosts.get("reviews")?.http[0]?.cumulative, [60, 100]);
      assert.deepEqual([cm.refusals.length, linked.refusals.length], [0, 0]);
    } finally {
      for (const w of watchers) await w.close();
    }
  });
});

Deno.test("ConfigWatcher refuses an empty file (a write in progress) but takes a comment-only one", async () => {
  await withWatched(async ({ path, rec }) => {
    await Deno.writeTextFile(path, ""); // truncated, the rest not written yet
    await waitFor(() => rec.refusals.length === 1, "the refusal");
    assert.match(rec.refusals[0]![0]!.message, /the file is empty/);
    assert.equal(rec.configs.length, 0, "the last good config stays");
    await Deno.writeTextFile(path, "# nothing for now\n");
    await waitFor(() => rec.configs.length === 1, "the comment-only config");
    assert.equal(rec.configs[0]!.hosts.size, 0);
  });
});

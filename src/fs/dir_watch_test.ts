import assert from "node:assert/strict";
import { DirWatcher } from "./dir_watch.ts";

/** Polls `check` every 50 ms for up to `ms`. */
async function within(ms: number, check: () => boolean): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

Deno.test("DirWatcher: a directory replaced by another of the same name is followed", async () => {
  const parent = await Deno.makeTempDir({ prefix: "remora-dirwatch-" });
  const dir = `${parent}/config`;
  await Deno.mkdir(dir);
  let reloads = 0;
  const errors: string[] = [];
  const w = new DirWatcher(dir, {
    matches: (p) => p.endsWith(".yaml"),
    reload: () => {
      reloads++;
      return Promise.resolve();
    },
    onWatchError: (r) => errors.push(r),
    debounceMs: 20,
  });
  try {
    await Deno.writeTextFile(`${dir}/a.yaml`, "one");
    assert.ok(await within(2000, () => reloads === 1), "a change in the directory");
    // Moved away and made anew: the new directory is watched, and loaded from once found.
    await Deno.rename(dir, `${parent}/config.old`);
    await Deno.mkdir(dir);
    await Deno.writeTextFile(`${dir}/a.yaml`, "two");
    assert.ok(await within(5000, () => reloads === 2), `reloads: ${reloads}`);
    // Later changes in the new directory are seen too (by polling).
    await Deno.writeTextFile(`${dir}/b.yaml`, "three");
    assert.ok(await within(5000, () => reloads === 3), `reloads: ${reloads}`);
    await Deno.remove(`${dir}/a.yaml`);
    assert.ok(await within(5000, () => reloads === 4), `reloads: ${reloads}`);
    assert.deepEqual(errors, []);
  } finally {
    await w.close();
    await Deno.remove(parent, { recursive: true });
  }
});

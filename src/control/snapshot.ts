/**
 * The control server's config snapshots: every `*.yaml`/`*.yml` file of a
 * directory, read in name order and validated as one set with the same
 * pipeline `remora run` uses (`loadConfigTexts`), so that a set the server
 * publishes is one every proxy of the same version accepts. A snapshot's
 * version is the compiled config's content hash, the one a proxy shows in
 * /config_dump. It does not watch the directory or serve anything (see
 * `server.ts` and `cli/control.ts`).
 */

import { emptyFileError, loadConfigTexts } from "../config/source.ts";
import type { ConfigError } from "../config/validate.ts";
import type { Resource } from "./api.ts";

/** A validated resource set, as sent to proxies. */
export interface Snapshot {
  version: string;
  resources: Resource[];
}

export type SnapshotResult =
  | { ok: true; snapshot: Snapshot }
  | { ok: false; errors: ConfigError[] };

/** Whether a directory entry is a config file of the set. */
export function isConfigFile(name: string): boolean {
  return /\.ya?ml$/.test(name) && !name.startsWith(".");
}

/** Reads and validates every config file in `dir` as one set. */
export async function loadSnapshotDir(dir: string): Promise<SnapshotResult> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if ((e.isFile || e.isSymlink) && isConfigFile(e.name)) names.push(e.name);
    }
  } catch (e) {
    return {
      ok: false,
      errors: [{ file: dir, index: -1, path: "", message: `cannot read directory: ${_reason(e)}` }],
    };
  }
  names.sort();
  const resources: Resource[] = [];
  const errors: ConfigError[] = [];
  for (const name of names) {
    try {
      const yaml = await Deno.readTextFile(`${dir}/${name}`);
      if (yaml.trim() === "") {
        errors.push(emptyFileError(name));
        continue;
      }
      resources.push({ name, yaml });
    } catch (e) {
      // Removed between the listing and the read: the next event reloads. A link whose target
      // is gone is still there, and the set is not whole without it.
      if (e instanceof Deno.errors.NotFound && !(await _isLink(`${dir}/${name}`))) continue;
      const message = e instanceof Deno.errors.NotFound
        ? "cannot read file: it is a symbolic link to a file that does not exist"
        : `cannot read file: ${_reason(e)}`;
      errors.push({ file: name, index: -1, path: "", message });
    }
  }
  // The files that could be read are checked too: every error is reported at once.
  const checked = snapshotOf(resources, dir);
  if (errors.length === 0) return checked;
  return { ok: false, errors: [...errors, ...(checked.ok ? [] : checked.errors)] };
}

/** Validates resources as one set; the snapshot's version is the compiled config's. */
export function snapshotOf(resources: Resource[], source: string): SnapshotResult {
  const loaded = loadConfigTexts(resources.map((r) => ({ file: r.name, text: r.yaml })), source);
  if (!loaded.ok) return { ok: false, errors: loaded.errors };
  return { ok: true, snapshot: { version: loaded.config.version, resources } };
}

async function _isLink(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isSymlink;
  } catch {
    return false;
  }
}

function _reason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file or directory";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  return e instanceof Error ? e.message : String(e);
}

/**
 * Where configs come from: files on disk, the embedded default, and a
 * watcher that hot-reloads a config file.
 *
 * Every path goes through the same pipeline (read, parse YAML, validate the
 * whole set, compile) and yields either a complete `RuntimeConfig` or every
 * error found; there is no partial application. `ConfigWatcher` reports new
 * configs and refusals through callbacks; keeping the last good config,
 * logging and counting refusals are the caller's job. It does not serve or
 * swap configs itself.
 */

import { DirWatcher } from "../fs/dir_watch.ts";
import { compile } from "./compile.ts";
import type { RuntimeConfig } from "./runtime.ts";
import { type ConfigError, type InputDocument, validateDocuments } from "./validate.ts";
import { parseYamlDocuments } from "./yaml.ts";
import defaultText from "./default.yaml" with { type: "text" };

/** The workload a config is compiled for (sourceLabels matches, policy selectors). */
export interface Workload {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

export type LoadResult =
  | { ok: true; config: RuntimeConfig }
  | { ok: false; errors: ConfigError[] };

/**
 * Validates and compiles YAML texts as one config set. `defaultNamespace`:
 * the namespace of resources whose metadata names none (default "default").
 */
export function loadConfigTexts(
  texts: ReadonlyArray<{ file: string; text: string }>,
  source: string,
  workload?: Workload,
  defaultNamespace?: string,
): LoadResult {
  const docs: InputDocument[] = [];
  const errors: ConfigError[] = [];
  for (const { file, text } of texts) {
    const parsed = parseYamlDocuments(text, file);
    docs.push(...parsed.docs);
    for (const e of parsed.errors) {
      errors.push({ file: e.file, index: e.index, line: e.line, path: "", message: e.message });
    }
  }
  // With a syntax error some documents are missing: rules across documents
  // (subsets, duplicates) would report errors that are not there.
  const result = validateDocuments(docs, { crossChecks: errors.length === 0, defaultNamespace });
  if (!result.ok) errors.push(...result.errors);
  if (!result.ok || errors.length > 0) {
    return {
      ok: false,
      errors: _byFile(errors, texts.map((t) => t.file)),
    };
  }
  const meta = workload === undefined
    ? { source }
    : { source, namespace: workload.namespace, workloadLabels: workload.labels };
  return { ok: true, config: compile(result.resources, meta) };
}

/**
 * Reads, parses, validates and compiles `paths` as one config set. The
 * workload's own files: a resource without a namespace is in the workload's,
 * as `kubectl apply` puts it in the current one.
 */
export async function loadConfigFiles(
  paths: readonly string[],
  workload?: Workload,
): Promise<LoadResult> {
  const texts: Array<{ file: string; text: string }> = [];
  const errors: ConfigError[] = [];
  for (const file of paths) {
    try {
      const text = await Deno.readTextFile(file);
      // Refused as at a reload (a file being written looks empty): the same file means the same.
      if (text.trim() === "") errors.push(emptyFileError(file));
      else texts.push({ file, text });
    } catch (e) {
      errors.push({ file, index: -1, path: "", message: `cannot read file: ${_reason(e)}` });
    }
  }
  const result = loadConfigTexts(texts, paths.join(","), workload, workload?.namespace);
  if (errors.length === 0) return result;
  return {
    ok: false,
    errors: _byFile([...errors, ...(result.ok ? [] : result.errors)], [...paths]),
  };
}

/** The embedded default config (src/config/default.yaml): ALLOW_ANY, no services. */
export function loadEmbeddedDefault(workload?: Workload): RuntimeConfig {
  const result = loadConfigTexts(
    [{ file: "default.yaml", text: defaultText }],
    "embedded default",
    workload,
  );
  if (!result.ok) {
    throw new Error(`Embedded default config is invalid: ${result.errors[0]?.message}`);
  }
  return result.config;
}

export interface ConfigWatcherOptions {
  /** Called with each new config that validated and compiled. */
  onConfig: (config: RuntimeConfig) => void;
  /** Called with every error of a refused config; the last good one stays. */
  onError: (errors: ConfigError[]) => void;
  /** Quiet time after the last change before reloading (default 100ms). */
  debounceMs?: number;
  /** Version currently served; a reload with the same content is not reported. */
  currentVersion?: string;
  /** The workload the config is compiled for. */
  workload?: Workload;
}

/**
 * Watches one config file and reloads it when it changes. It watches the
 * file's directory, not the file, so editors that save by writing a new file
 * and renaming it over the old one are seen too. Symlinks are followed: a
 * Kubernetes ConfigMap volume, which publishes an update by swapping its
 * `..data` link, and a link to a file in another directory, whose directory
 * is then watched as well (again after each reload, as the link may have
 * moved). Changes are debounced, and reloads never overlap. It does not load
 * the file at start: call `loadConfigFiles` for the initial config.
 */
export class ConfigWatcher {
  readonly path: string;
  readonly #opts: ConfigWatcherOptions;
  readonly #dir: DirWatcher;
  /** The directory of the file the path resolves to, when that is another one. */
  #target: DirWatcher | undefined;
  #version: string | undefined;

  constructor(path: string, opts: ConfigWatcherOptions) {
    this.path = path;
    this.#opts = opts;
    this.#version = opts.currentVersion;
    const slash = path.lastIndexOf("/");
    const name = path.slice(slash + 1);
    const dir = slash === -1 ? "." : slash === 0 ? "/" : path.slice(0, slash);
    this.#dir = new DirWatcher(dir, {
      // "..data" and its timestamped targets: a ConfigMap or Secret volume's update.
      matches: (p) => p === path || p.endsWith(`/${name}`) || baseName(p).startsWith(".."),
      reload: () => this.#reload(),
      onWatchError: (reason) =>
        opts.onError([{
          file: path,
          index: -1,
          path: "",
          message: `cannot watch file: ${reason}`,
        }]),
      ...(opts.debounceMs === undefined ? {} : { debounceMs: opts.debounceMs }),
    });
    this.#follow();
  }

  /** Watches the directory of the file the path resolves to, when the path is a link elsewhere. */
  #follow(): void {
    let real: string;
    try {
      real = Deno.realPathSync(this.path);
    } catch {
      return; // Gone for now: the path's own directory still sees it come back.
    }
    const dir = real.slice(0, real.lastIndexOf("/")) || "/";
    const own = Deno.realPathSync(this.#dir.dir);
    if (this.#target?.dir === dir || (dir === own && this.#target === undefined)) return;
    const old = this.#target;
    this.#target = undefined;
    old?.close();
    if (dir === own || this.#dir.closed) return;
    const name = real.slice(real.lastIndexOf("/") + 1);
    try {
      this.#target = new DirWatcher(dir, {
        matches: (p) => p.endsWith(`/${name}`),
        reload: () => this.#reload(),
        // The target's directory went away (a link swap): the path's own directory still watches.
        onWatchError: () => {},
        ...(this.#opts.debounceMs === undefined ? {} : { debounceMs: this.#opts.debounceMs }),
      });
    } catch {
      // Not watchable: changes through the link's own directory are still seen.
    }
  }

  async #reload(): Promise<void> {
    // An empty file is refused (emptyFileError); one with only a comment is an empty config.
    const result = await loadConfigFiles([this.path], this.#opts.workload);
    if (this.#dir.closed) return;
    this.#follow();
    if (!result.ok) this.#opts.onError(result.errors);
    else if (result.config.version !== this.#version) {
      this.#version = result.config.version;
      this.#opts.onConfig(result.config);
    }
  }

  /** Stops watching; resolves once no reload is running. Safe to call twice. */
  async close(): Promise<void> {
    const target = this.#target;
    this.#target = undefined;
    await Promise.all([this.#dir.close(), target?.close()]);
  }
}

/**
 * The refusal of an empty config file on reload, most likely one being
 * written (truncated first, as a shell redirection does): applying it would
 * drop every policy until the rest arrives. Shared with `remora control`.
 */
export function emptyFileError(file: string): ConfigError {
  return {
    file,
    index: -1,
    path: "",
    message: "the file is empty (being written?); write a comment (# none) to mean an empty config",
  };
}

function baseName(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1);
}

/** Keeps errors grouped by the order files were given in. */
function _byFile(errors: ConfigError[], files: string[]): ConfigError[] {
  return errors
    .map((e, i) => ({ e, i }))
    .sort((a, b) =>
      files.indexOf(a.e.file) - files.indexOf(b.e.file) || a.e.index - b.e.index || a.i - b.i
    )
    .map(({ e }) => e);
}

function _reason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.IsADirectory) return "is a directory";
  return e instanceof Error ? e.message : String(e);
}

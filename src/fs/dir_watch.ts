/**
 * Watches a directory for changes to the files a caller cares about and runs
 * the caller's reload, debounced, never two at once (a change during a reload
 * runs it once more after). It watches the directory rather than the files,
 * so files replaced by rename (editors, Kubernetes secret volumes swapping a
 * `..data` symlink) are seen. A directory replaced by another of the same
 * name (moved away, made anew) is noticed within REWATCH_MS and reloaded
 * from; from then on it is polled every REWATCH_MS (names, sizes and mtimes
 * of the files that matter), since Deno's watcher cannot watch a path again
 * once the directory it named is gone. Shared by the config and identity
 * watchers; it knows nothing of what is loaded.
 */

/** How often the directory's identity (inode) is checked, to follow a replaced directory. */
const REWATCH_MS = 2_000;

export interface DirWatchOptions {
  /** Whether a changed path concerns the watcher. */
  matches(path: string): boolean;
  /** Loads and reports; errors are the caller's to handle inside it. */
  reload(): Promise<void>;
  /** The directory cannot be watched (removed, no permission). */
  onWatchError(reason: string): void;
  /** Quiet time after the last change before reloading (default 100ms). */
  debounceMs?: number;
}

export class DirWatcher {
  readonly dir: string;
  readonly #opts: DirWatchOptions;
  readonly #watcher: Deno.FsWatcher;
  readonly #loop: Promise<void>;
  /** The watched directory's inode (null where the platform has none). */
  #ino: number | null;
  /** Once the directory was replaced: what it held at the last poll. */
  #polled: string | undefined;
  readonly #rewatch: ReturnType<typeof setInterval>;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #loading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(dir: string, opts: DirWatchOptions) {
    this.dir = dir;
    this.#opts = opts;
    this.#ino = Deno.statSync(dir).ino;
    this.#watcher = Deno.watchFs(dir, { recursive: false });
    this.#loop = this.#watch();
    this.#rewatch = setInterval(() => this.#followReplaced(), REWATCH_MS);
  }

  /** Follows a directory replaced by another of the same name, by polling it. */
  #followReplaced(): void {
    if (this.#closed) return;
    let ino: number | null;
    try {
      ino = Deno.statSync(this.dir).ino;
    } catch {
      return; // gone for now: the next check sees what replaces it
    }
    if (ino !== this.#ino) {
      this.#ino = ino;
      this.#polled = this.#listing();
      this.schedule();
      return;
    }
    if (this.#polled === undefined) return;
    const now = this.#listing();
    if (now !== this.#polled) {
      this.#polled = now;
      this.schedule();
    }
  }

  /** Names, sizes and mtimes of the directory's files that matter, as one string. */
  #listing(): string {
    const out: string[] = [];
    try {
      for (const e of Deno.readDirSync(this.dir)) {
        const path = `${this.dir}/${e.name}`;
        if (!this.#opts.matches(path)) continue;
        try {
          const st = Deno.statSync(path);
          out.push(`${e.name}:${st.size}:${st.mtime?.getTime()}:${st.ino}`);
        } catch {
          out.push(`${e.name}:gone`);
        }
      }
    } catch {
      return "";
    }
    return out.sort().join("\n");
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True while a reload is pending or running (callers use it to avoid redundant retries). */
  get busy(): boolean {
    return this.#timer !== undefined || this.#again;
  }

  async #watch(): Promise<void> {
    try {
      for await (const event of this.#watcher) {
        if (this.#closed) break;
        if (event.kind === "access") continue;
        if (event.paths.some((p) => this.#opts.matches(p))) this.schedule();
      }
    } catch (e) {
      if (!this.#closed) this.#opts.onWatchError(e instanceof Error ? e.message : String(e));
    }
  }

  /** Runs the reload after `ms` of quiet (default: the debounce time). */
  schedule(ms = this.#opts.debounceMs ?? 100): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#run();
    }, ms);
  }

  #run(): void {
    if (this.#closed) return;
    if (this.#loading !== undefined) {
      this.#again = true;
      return;
    }
    this.#loading = this.#opts.reload().finally(() => {
      this.#loading = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        this.#run();
      }
    });
  }

  /** Stops watching; resolves once no reload is running. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#rewatch);
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      try {
        this.#watcher.close();
      } catch {
        // already closed
      }
    }
    await this.#loop;
    await this.#loading;
  }
}

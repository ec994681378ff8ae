/**
 * Watches a directory for changes to the files a caller cares about and runs
 * the caller's reload, debounced, never two at once (a change during a reload
 * runs it once more after). It watches the directory rather than the files,
 * so files replaced by rename (editors, Kubernetes secret volumes swapping a
 * `..data` symlink) are seen. Shared by the config and identity watchers; it
 * knows nothing of what is loaded.
 */

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
  #timer: ReturnType<typeof setTimeout> | undefined;
  #loading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(dir: string, opts: DirWatchOptions) {
    this.dir = dir;
    this.#opts = opts;
    this.#watcher = Deno.watchFs(dir, { recursive: false });
    this.#loop = this.#watch();
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

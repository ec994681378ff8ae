/**
 * Keeps the sidecar's resident memory to what it is using.
 *
 * - Shortly after start, and once more a few seconds later: the pages of
 *   the runtime's executable that only startup touched (module loading,
 *   TypeScript transpiling under `deno run`, config parsing and compiling)
 *   leave the resident set (madvise MADV_DONTNEED on mappings of clean file
 *   pages only). The page cache keeps them; the code the proxy runs maps
 *   back in on first use with a minor fault. At idle this takes RSS from
 *   about 64 MB to about 40 MB. The first pass comes early because load may
 *   arrive as soon as the listeners are up (startup pages and load together
 *   made a peak of 83 MB); the second catches what finished loading later.
 * - Periodically: memory malloc holds free (connection buffers of a past
 *   burst, TLS state) is returned with malloc_trim, a few MB under load.
 *
 * Both go through `net/ffi.ts`; without FFI they do nothing.
 */

import { log } from "../log.ts";
import { dropCleanMappings, trimMalloc } from "../net/ffi.ts";

export interface MemoryTrimOptions {
  /** Delays after which startup pages are released (default 0.5 s and 5 s). */
  startupDelaysMs?: readonly number[];
  /** How often malloc's free memory is returned (default 2 s). */
  trimIntervalMs?: number;
}

/** Starts the trimming; the returned function stops it. Timers never keep the process alive. */
export function startMemoryTrim(o: MemoryTrimOptions = {}): () => void {
  const drop = () => {
    let exe: string;
    try {
      exe = Deno.realPathSync(Deno.execPath());
    } catch {
      return;
    }
    const bytes = dropCleanMappings(exe);
    trimMalloc();
    log.debug("startup pages dropped from the resident set", { mb: Math.round(bytes / 2 ** 20) });
  };
  const passes = (o.startupDelaysMs ?? [500, 5000]).map((ms) => setTimeout(drop, ms));
  const every = setInterval(() => trimMalloc(), o.trimIntervalMs ?? 2_000);
  for (const t of passes) Deno.unrefTimer(Number(t));
  Deno.unrefTimer(Number(every));
  return () => {
    for (const t of passes) clearTimeout(t);
    clearInterval(every);
  };
}

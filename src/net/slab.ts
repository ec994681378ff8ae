/**
 * Small byte buffers carved from shared 64 KiB slabs, the way node's
 * Buffer.allocUnsafe pools them. Allocating a fresh Uint8Array costs about
 * a microsecond (a new backing store); a view into a slab costs a third of
 * that, and heads are built several times per request. A slab is never
 * reused: when it is full a new one is started, and the old one lives as long
 * as any view into it does, so a view is never overwritten. Views are not
 * zeroed beyond what the slab was when new: callers write every byte.
 */

const SLAB = 64 * 1024;
let slab = new Uint8Array(SLAB);
let used = 0;

/** A buffer of `n` bytes (views of shared slabs below 8 KiB, fresh above). */
export function allocBytes(n: number): Uint8Array {
  if (n > 8 * 1024) return new Uint8Array(n);
  if (used + n > SLAB) {
    slab = new Uint8Array(SLAB);
    used = 0;
  }
  const view = slab.subarray(used, used + n);
  // Keep views 8-byte aligned, as typed-array consumers may expect.
  used += (n + 7) & ~7;
  return view;
}

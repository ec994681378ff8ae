/**
 * Load balancers: pick one endpoint of a cluster for each attempt.
 *
 * ROUND_ROBIN walks a weight-expanded ring, RANDOM draws by weight,
 * LEAST_REQUEST takes the less busy of two weighted random picks (power of two
 * choices), and CONSISTENT_HASH (DestinationRule consistentHash) walks a hash
 * ring with points in proportion to weights from the request's hash (a
 * header, cookie or source IP, hashed by the router; random when absent).
 * Every balancer honours an optional `usable` filter (outlier ejection,
 * `outlier.ts`) and an endpoint to avoid (the previous attempt's). The
 * per-cluster state (cursor, active counts) is kept in a WeakMap keyed by the
 * immutable `Cluster` of the running config, so a config swap starts fresh
 * state and old state is collected with the old config. Randomness is
 * injectable for tests. It does not decide who is healthy.
 */

import type { Cluster, Endpoint, HashPolicy } from "../config/runtime.ts";

/** What a pick may take into account beyond the endpoint to avoid. */
export interface PickOptions {
  /** Only endpoints for which this holds may be picked (undefined: all). */
  usable?: ((e: Endpoint) => boolean) | undefined;
  /** The request's hash, for CONSISTENT_HASH (undefined: a random point). */
  hash?: number | undefined;
}

export interface Balancer {
  /**
   * Picks a usable endpoint, avoiding `exclude` when another usable one
   * exists; undefined when none is usable.
   */
  pick(exclude?: Endpoint, opts?: PickOptions): Endpoint | undefined;
  /** Marks a request to `e` started / finished (LEAST_REQUEST uses it). */
  begin(e: Endpoint): void;
  end(e: Endpoint): void;
}

type Random = () => number;

class WeightedTable {
  readonly cumulative: number[] = [];
  readonly total: number;
  constructor(readonly endpoints: readonly Endpoint[]) {
    let sum = 0;
    for (const e of endpoints) this.cumulative.push(sum += Math.max(0, e.weight));
    this.total = sum;
  }
  draw(r: number): Endpoint | undefined {
    if (this.total <= 0) return this.endpoints[Math.floor(r * this.endpoints.length)];
    const x = r * this.total;
    let lo = 0;
    let hi = this.cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cumulative[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return this.endpoints[lo];
  }
  /** Draws by weight among all endpoints but `exclude` (when another exists). */
  drawExcept(r: number, exclude: Endpoint | undefined): Endpoint | undefined {
    const e = this.draw(r);
    if (e !== exclude || exclude === undefined || this.endpoints.length < 2) return e;
    const rest = this.endpoints.filter((x) => x !== exclude);
    const total = rest.reduce((sum, x) => sum + Math.max(0, x.weight), 0);
    let at = r * total;
    for (const x of rest) {
      at -= Math.max(0, x.weight);
      if (at < 0) return x;
    }
    return rest[rest.length - 1];
  }
}

class RoundRobin implements Balancer {
  readonly #ring: Endpoint[] = [];
  #next = 0;
  constructor(endpoints: readonly Endpoint[], random: Random) {
    // Interleave by weight so that weights 3:1 give a,b,a,a rather than a,a,a,b.
    const counts = endpoints.map((e) => Math.max(1, e.weight));
    const total = counts.reduce((a, b) => a + b, 0);
    const current = counts.map(() => 0);
    for (let n = 0; n < Math.min(total, 10_000); n++) {
      let best = 0;
      for (let i = 0; i < counts.length; i++) {
        current[i]! += counts[i]!;
        if (current[i]! > current[best]!) best = i;
      }
      current[best]! -= total;
      this.#ring.push(endpoints[best]!);
    }
    // Start at a random place so that many proxies do not move in lockstep.
    this.#next = Math.floor(random() * this.#ring.length);
  }
  pick(exclude?: Endpoint, opts?: PickOptions): Endpoint | undefined {
    const n = this.#ring.length;
    const usable = opts?.usable;
    let fallback: Endpoint | undefined;
    for (let tries = 0; tries < n; tries++) {
      const e = this.#ring[this.#next++ % n]!;
      if (usable !== undefined && !usable(e)) continue;
      if (e !== exclude) return e;
      fallback = e;
    }
    return fallback;
  }
  begin(): void {}
  end(): void {}
}

class RandomBalancer implements Balancer {
  readonly #table: WeightedTable;
  constructor(endpoints: readonly Endpoint[], readonly random: Random) {
    this.#table = new WeightedTable(endpoints);
  }
  pick(exclude?: Endpoint, opts?: PickOptions): Endpoint | undefined {
    return usableTable(this.#table, opts?.usable)?.drawExcept(this.random(), exclude);
  }
  begin(): void {}
  end(): void {}
}

class LeastRequest implements Balancer {
  readonly #table: WeightedTable;
  readonly #active = new Map<Endpoint, number>();
  constructor(endpoints: readonly Endpoint[], readonly random: Random) {
    this.#table = new WeightedTable(endpoints);
  }
  pick(exclude?: Endpoint, opts?: PickOptions): Endpoint | undefined {
    const table = usableTable(this.#table, opts?.usable);
    if (table === undefined) return undefined;
    const a = table.drawExcept(this.random(), exclude);
    const b = table.drawExcept(this.random(), exclude);
    if (a === undefined || b === undefined) return a ?? b;
    return (this.#active.get(b) ?? 0) < (this.#active.get(a) ?? 0) ? b : a;
  }
  begin(e: Endpoint): void {
    this.#active.set(e, (this.#active.get(e) ?? 0) + 1);
  }
  end(e: Endpoint): void {
    this.#active.set(e, (this.#active.get(e) ?? 1) - 1);
  }
}

/**
 * The table to draw from: `t` itself when every endpoint is usable (no
 * allocation), a table of the usable ones otherwise (only while some endpoint
 * is ejected), undefined when none is.
 */
function usableTable(
  t: WeightedTable,
  usable: ((e: Endpoint) => boolean) | undefined,
): WeightedTable | undefined {
  if (usable === undefined) return t.endpoints.length === 0 ? undefined : t;
  if (t.endpoints.every(usable)) return t.endpoints.length === 0 ? undefined : t;
  const rest = t.endpoints.filter(usable);
  return rest.length === 0 ? undefined : new WeightedTable(rest);
}

/** Ring points per unit of weight share; Envoy's ring hash defaults to 1024 in all. */
const RING_SIZE = 1024;

class ConsistentHashBalancer implements Balancer {
  /** Sorted ring point hashes and the endpoint at each. */
  readonly #points: Uint32Array;
  readonly #owners: Endpoint[];
  constructor(endpoints: readonly Endpoint[], readonly random: Random) {
    const total = endpoints.reduce((sum, e) => sum + Math.max(1, e.weight), 0);
    const pts: Array<[number, Endpoint]> = [];
    for (const e of endpoints) {
      const n = Math.max(1, Math.round((RING_SIZE * Math.max(1, e.weight)) / total));
      for (let i = 0; i < n; i++) pts.push([hashString(`${e.address}:${e.port}_${i}`), e]);
    }
    pts.sort((a, b) => a[0] - b[0]);
    this.#points = Uint32Array.from(pts, (p) => p[0]);
    this.#owners = pts.map((p) => p[1]);
  }
  pick(exclude?: Endpoint, opts?: PickOptions): Endpoint | undefined {
    const n = this.#points.length;
    if (n === 0) return undefined;
    const h = opts?.hash ?? Math.floor(this.random() * 0x100000000);
    // First point at or after h (wrapping): binary search.
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    const usable = opts?.usable;
    let fallback: Endpoint | undefined;
    for (let i = 0; i < n; i++) {
      const e = this.#owners[(lo + i) % n]!;
      if (usable !== undefined && !usable(e)) continue;
      if (e !== exclude) return e;
      fallback ??= e;
    }
    return fallback;
  }
  begin(): void {}
  end(): void {}
}

/** 32-bit FNV-1a with a final avalanche (murmur3 fmix32): request keys and ring points. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Builds the balancer a cluster's policy names. */
export function createBalancer(cluster: Cluster, random: Random = Math.random): Balancer {
  if (cluster.policy?.hash !== undefined) {
    return new ConsistentHashBalancer(cluster.endpoints, random);
  }
  switch (cluster.lb) {
    case "RANDOM":
      return new RandomBalancer(cluster.endpoints, random);
    case "LEAST_REQUEST":
      return new LeastRequest(cluster.endpoints, random);
    default:
      return new RoundRobin(cluster.endpoints, random);
  }
}

const balancers = new WeakMap<Cluster, Balancer>();

/** The balancer of a cluster of the running config, made on first use. */
export function balancerFor(cluster: Cluster): Balancer {
  let b = balancers.get(cluster);
  if (b === undefined) {
    b = createBalancer(cluster);
    balancers.set(cluster, b);
  }
  return b;
}

/** The request's consistent-hash key, and a cookie to set when remora made the key up. */
export interface RequestHash {
  hash: number | undefined;
  /** A Set-Cookie value for a generated httpCookie key (the cookie had a ttl). */
  setCookie: string | undefined;
}

/**
 * Hashes a request by the cluster's consistentHash key: a header, a cookie
 * (generated, with its ttl, when absent, as Envoy does), or the client's
 * address. Without a key the hash is undefined and the ring point random.
 */
export function requestHash(
  policy: HashPolicy,
  header: (name: string) => string | undefined,
  sourceAddr: string | undefined,
): RequestHash {
  switch (policy.kind) {
    case "header": {
      const v = header(policy.name);
      return { hash: v === undefined ? undefined : hashString(v), setCookie: undefined };
    }
    case "sourceIp": {
      const ip = sourceAddr?.startsWith("::ffff:") ? sourceAddr.slice(7) : sourceAddr;
      return { hash: ip === undefined ? undefined : hashString(ip), setCookie: undefined };
    }
    case "cookie": {
      const v = cookieValue(header("cookie"), policy.name);
      if (v !== undefined) return { hash: hashString(v), setCookie: undefined };
      if (policy.ttlMs === undefined) return { hash: undefined, setCookie: undefined };
      const made = crypto.randomUUID().replaceAll("-", "");
      let c = `${policy.name}=${made}`;
      if (policy.path !== undefined && policy.path !== "") c += `; Path=${policy.path}`;
      if (policy.ttlMs > 0) c += `; Max-Age=${Math.ceil(policy.ttlMs / 1000)}`;
      return { hash: hashString(made), setCookie: c + "; HttpOnly" };
    }
  }
}

function cookieValue(cookies: string | undefined, name: string): string | undefined {
  if (cookies === undefined) return undefined;
  for (const part of cookies.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Load balancers: pick one endpoint of a cluster for each attempt.
 *
 * ROUND_ROBIN walks a weight-expanded ring, RANDOM draws by weight, and
 * LEAST_REQUEST takes the less busy of two weighted random picks (power of two
 * choices). The per-cluster state (cursor, active counts) is kept in a WeakMap
 * keyed by the immutable `Cluster` of the running config, so a config swap
 * starts fresh state and old state is collected with the old config.
 * Randomness is injectable for tests. It does not do health or ejection.
 */

import type { Cluster, Endpoint } from "../config/runtime.ts";

export interface Balancer {
  /** Picks an endpoint, avoiding `exclude` when another one exists. */
  pick(exclude?: Endpoint): Endpoint | undefined;
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
  pick(exclude?: Endpoint): Endpoint | undefined {
    const n = this.#ring.length;
    for (let tries = 0; tries < n; tries++) {
      const e = this.#ring[this.#next++ % n]!;
      if (e !== exclude || tries === n - 1) return e;
    }
    return undefined;
  }
  begin(): void {}
  end(): void {}
}

class RandomBalancer implements Balancer {
  readonly #table: WeightedTable;
  constructor(endpoints: readonly Endpoint[], readonly random: Random) {
    this.#table = new WeightedTable(endpoints);
  }
  pick(exclude?: Endpoint): Endpoint | undefined {
    return this.#table.drawExcept(this.random(), exclude);
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
  pick(exclude?: Endpoint): Endpoint | undefined {
    const a = this.#table.drawExcept(this.random(), exclude);
    const b = this.#table.drawExcept(this.random(), exclude);
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

/** Builds the balancer a cluster's policy names. */
export function createBalancer(cluster: Cluster, random: Random = Math.random): Balancer {
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

/**
 * Starts the admin (loopback only), stats and health servers of one remora
 * process and says where they listen. Wiring only: handlers are in
 * src/admin/admin.ts.
 */

import {
  adminHandler,
  type AdminState,
  healthHandler,
  serve,
  statsHandler,
} from "../admin/admin.ts";

export interface AdminServers {
  ports: number[];
  describe(): string[];
  close(): Promise<void>;
}

export function startAdmin(o: {
  adminPort: number;
  statsPort: number;
  healthPort: number;
  state: AdminState;
}): AdminServers {
  const servers: Array<ReturnType<typeof serve>> = [];
  /** Serves, or closes what started and names the listener and its flag in the error. */
  const start = (
    name: string,
    flag: string,
    host: string,
    port: number,
    handler: Parameters<typeof serve>[2],
  ) => {
    try {
      const s = serve(host, port, handler);
      servers.push(s);
      return s;
    } catch (e) {
      for (const s of servers) s.shutdown();
      // The runtime names the address, not which listener or flag it is.
      if (e instanceof Error) {
        e.message = `${name} listener (${flag}): ${e.message}`;
      }
      throw e;
    }
  };
  const admin = start("admin", "--admin-port", "127.0.0.1", o.adminPort, adminHandler(o.state));
  const stats = start("stats", "--stats-port", "0.0.0.0", o.statsPort, statsHandler(o.state));
  const health = start("health", "--health-port", "0.0.0.0", o.healthPort, healthHandler(o.state));
  return {
    ports: servers.map((s) => s.addr.port),
    describe: () => [
      `admin listening on 127.0.0.1:${admin.addr.port} (/ready /config_dump /logging)`,
      `stats listening on 0.0.0.0:${stats.addr.port} (/stats/prometheus)`,
      `health listening on 0.0.0.0:${health.addr.port} (/healthz/ready)`,
    ],
    close: async () => {
      await Promise.all(servers.map((s) => s.shutdown()));
    },
  };
}

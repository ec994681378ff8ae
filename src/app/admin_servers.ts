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
  const admin = serve("127.0.0.1", o.adminPort, adminHandler(o.state));
  const stats = serve("0.0.0.0", o.statsPort, statsHandler(o.state));
  const health = serve("0.0.0.0", o.healthPort, healthHandler(o.state));
  const servers = [admin, stats, health];
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

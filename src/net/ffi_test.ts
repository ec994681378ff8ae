import assert from "node:assert/strict";
import {
  decodeSockaddr,
  dropCleanMappings,
  fdOf,
  fdProbes,
  originalDst,
  releaseConn,
  trimMalloc,
} from "./ffi.ts";

Deno.test("sockaddr_in and sockaddr_in6 decode, IPv4-mapped becomes IPv4", () => {
  const v4 = new Uint8Array(16);
  v4.set([2, 0, 0x1f, 0x90, 10, 250, 0, 11]);
  assert.deepEqual(decodeSockaddr(v4), { hostname: "10.250.0.11", port: 8080, family: 4 });
  const v6 = new Uint8Array(28);
  v6.set([10, 0, 0x00, 0x50]);
  v6.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
  assert.deepEqual(decodeSockaddr(v6), { hostname: "fd00::1", port: 80, family: 6 });
  const mapped = new Uint8Array(28);
  mapped.set([10, 0, 0x01, 0xbb]);
  mapped.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1], 8);
  assert.deepEqual(decodeSockaddr(mapped), { hostname: "127.0.0.1", port: 443, family: 4 });
  assert.equal(decodeSockaddr(new Uint8Array(16)), undefined);
});

Deno.test("a connection that was not redirected has no original destination", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
    assert.equal(originalDst(server), undefined);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

/** Local and remote port of a descriptor, from the kernel's socket table (not from getpeername). */
function portsOf(fd: number): { local: number; remote: number } | undefined {
  const inode = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/self/fd/${fd}`))?.[1];
  if (inode === undefined) return undefined;
  for (const table of ["/proc/self/net/tcp", "/proc/self/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[9] !== inode) continue;
      const port = (addr: string) => parseInt(addr.slice(addr.indexOf(":") + 1), 16);
      return { local: port(f[1]!), remote: port(f[2]!) };
    }
  }
  return undefined;
}

Deno.test("an accepted connection's descriptor is found, cheaply after releases, and after stale ones", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const open: Array<{ client: Deno.Conn; server: Deno.TcpConn }> = [];
  const pair = async () => {
    const client = Deno.connect({ hostname: "127.0.0.1", port });
    const server = await listener.accept();
    const p = { client: await client, server };
    open.push(p);
    return p;
  };
  const check = (server: Deno.TcpConn) => {
    const fd = fdOf(server);
    assert.ok(fd !== undefined, "descriptor not found");
    assert.deepEqual(portsOf(fd), { local: port, remote: server.remoteAddr.port });
    return fd;
  };
  // Only the server side closes here: the clients stand for other
  // processes, whose sockets take no numbers from this one.
  const orphans: Deno.Conn[] = [];
  const closeServer = (i: number, release: boolean) => {
    const [p] = open.splice(i, 1);
    p!.server.close();
    if (release) releaseConn(p!.server);
    orphans.push(p!.client);
  };
  try {
    // Sockets the finder knows nothing about, then connections it finds.
    for (let i = 0; i < 40; i++) await pair();
    const fds = new Set<number>();
    for (let i = 0; i < 10; i++) fds.add(check((await pair()).server));
    assert.equal(fds.size, 10);

    // Released connections give their numbers back; new ones take them (or
    // their clients do) and are found with a few probes each, not one per
    // open socket.
    for (let i = 0; i < 5; i++) closeServer(open.length - 1 - 2 * i, true);
    const before = fdProbes();
    for (let i = 0; i < 5; i++) check((await pair()).server);
    assert.ok(fdProbes() - before <= 5 * 4, `${fdProbes() - before} probes for 5 accepts`);

    // Closed without a release: the finder's knowledge is stale and a
    // reused number must still be found.
    for (let i = 0; i < 3; i++) closeServer(open.length - 2 - i, false);
    for (let i = 0; i < 3; i++) check((await pair()).server);
  } finally {
    for (const p of open) {
      p.server.close();
      p.client.close();
    }
    for (const c of orphans) c.close();
    listener.close();
  }
});

const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);

Deno.test("clean executable pages leave the resident set and what runs maps back in", () => {
  const exe = Deno.realPathSync(Deno.execPath());
  const before = rssKb();
  const dropped = dropCleanMappings(exe);
  const after = rssKb();
  assert.ok(dropped > 1024 * 1024, `dropped only ${dropped} bytes`);
  assert.ok(after < before, `RSS ${before} kB -> ${after} kB`);
  // The runtime keeps working: code and read-only data fault back in.
  assert.equal(JSON.parse(JSON.stringify({ a: [1, "x"] })).a[1], "x");
  assert.equal(new TextDecoder().decode(new TextEncoder().encode("héllo")), "héllo");
  assert.ok(trimMalloc());
});

Deno.test("only read-only or executable mappings of the named file are touched", () => {
  assert.equal(dropCleanMappings("/nonexistent/remora-binary"), 0);
});

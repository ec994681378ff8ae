/**
 * The mTLS data path with remora on both ends: `originate` (Deno's own TLS
 * client, or node's TLS on its own socket) talking to `terminate` (TLS over
 * a connection whose ClientHello was read for detection, read and written at
 * the TLS handle, `net/byte_conn.ts`); these tests check that bytes arrive
 * whole and in order when buffers are reused at once, when the reader is
 * slow, and that end of stream is seen. Then what `originate` accepts and
 * refuses.
 */

import assert from "node:assert/strict";
import tls from "node:tls";
import { caFromPem, initCa, issueCert } from "../identity/ca.ts";
import { EC_P256, generateKeyPair, privateKeyPem, x509 } from "../identity/x509.ts";
import { BufConn } from "../net/buf_conn.ts";
import { StreamByteConn, tcpByteConn } from "../net/byte_conn.ts";
import { X509Certificate } from "node:crypto";
import {
  chainProblem,
  MeshIdentity,
  originate,
  peerProblem,
  spiffeIdOf,
  terminate,
} from "./mtls.ts";

const TD = "cluster.local";

async function identity(ca: Awaited<ReturnType<typeof initCa>>, sa: string) {
  const id = `spiffe://${TD}/ns/default/sa/${sa}`;
  const c = await issueCert(ca, { id, ttlMs: 3_600_000 });
  return new MeshIdentity({
    spiffeId: id,
    trustDomain: TD,
    certChainPem: c.certChainPem,
    keyPem: c.keyPem,
    rootCertPem: c.rootCertPem,
  });
}

/** A client BufConn (originate) and the server BufConn (terminate) of one mTLS connection. */
async function mtlsPair(): Promise<{ client: BufConn; server: BufConn; close: () => void }> {
  const ca = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
  const [a, b] = await Promise.all([identity(ca, "a"), identity(ca, "b")]);
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = l.accept().then(async (tcp) => {
    const c = new BufConn(tcpByteConn(tcp));
    // As the inbound listener does: the ClientHello is read before TLS starts.
    await c.fill();
    return (await terminate(c, b, { requireClientCert: true, timeoutMs: 5000 })).conn;
  });
  const client = await originate(
    "127.0.0.1",
    l.addr.port,
    a,
    { expectedId: `spiffe://${TD}/ns/default/sa/b`, alpn: "istio-http/1.1" },
    5000,
  );
  const server = await accepted;
  l.close();
  return {
    client,
    server,
    close: () => {
      client.close();
      server.close();
    },
  };
}

/** Reads exactly `n` bytes (or up to end of stream) and returns them. */
async function readBytes(c: BufConn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    if (c.buffered === 0 && !(await c.fill())) break;
    const k = Math.min(n - got, c.buffered);
    out.set(c.buf.subarray(c.start, c.start + k), got);
    c.consume(k);
    got += k;
  }
  return out.subarray(0, got);
}

/** Writes `chunks` chunks of `size` bytes from one buffer, refilled right after each write call. */
async function writePattern(c: BufConn, chunks: number, size: number, seed = 0): Promise<void> {
  const buf = new Uint8Array(size);
  for (let i = 0; i < chunks; i++) {
    buf.fill((i + seed) % 251);
    let off = 0;
    while (off < size) {
      const p = c.conn.write(buf.subarray(off));
      // The TLS layer must have taken the bytes in: overwrite before the write completes.
      buf.fill(0xff);
      off += await p;
      buf.fill((i + seed) % 251);
    }
  }
}

function checkPattern(data: Uint8Array, chunks: number, size: number, seed = 0): void {
  assert.equal(data.length, chunks * size);
  for (let i = 0; i < chunks; i++) {
    const part = data.subarray(i * size, (i + 1) * size);
    const want = (i + seed) % 251;
    const bad = part.findIndex((v) => v !== want);
    assert.equal(bad, -1, `chunk ${i} byte ${bad} is ${part[bad]}, expected ${want}`);
  }
}

Deno.test("mTLS data path: both directions arrive whole while write buffers are reused at once", async () => {
  const p = await mtlsPair();
  try {
    // On this Deno neither end uses node's streams (see net/byte_conn.ts).
    assert.ok(!(p.client.conn instanceof StreamByteConn));
    assert.ok(!(p.server.conn instanceof StreamByteConn));
    const chunks = 16;
    const size = 64 * 1024;
    const [up, down] = await Promise.all([
      (async () => {
        await writePattern(p.client, chunks, size);
        return readBytes(p.client, chunks * size);
      })(),
      (async () => {
        const got = await readBytes(p.server, chunks * size);
        await writePattern(p.server, chunks, size);
        return got;
      })(),
    ]);
    checkPattern(down, chunks, size);
    checkPattern(up, chunks, size);
  } finally {
    p.close();
  }
});

Deno.test("mTLS data path: connections at once keep their own bytes; reads smaller than a record get the rest", async () => {
  // Decrypted bytes of every connection pass through one shared buffer (net/byte_conn.ts).
  const [p, q] = await Promise.all([mtlsPair(), mtlsPair()]);
  try {
    const chunks = 8;
    const size = 64 * 1024;
    const [pUp, qUp, pDown, qDown] = await Promise.all([
      writePattern(p.client, chunks, size, 1).then(() => readBytes(p.server, chunks * size)),
      writePattern(q.client, chunks, size, 2).then(() => readBytes(q.server, chunks * size)),
      writePattern(p.server, chunks, size, 3).then(() => readBytes(p.client, chunks * size)),
      writePattern(q.server, chunks, size, 4).then(() => readBytes(q.client, chunks * size)),
    ]);
    checkPattern(pUp, chunks, size, 1);
    checkPattern(qUp, chunks, size, 2);
    checkPattern(pDown, chunks, size, 3);
    checkPattern(qDown, chunks, size, 4);
    // A 100-byte read of a 16 KiB record takes what fits; the rest waits for the next reads.
    const sending = writePattern(p.client, 1, 40_000, 5);
    const got = new Uint8Array(40_000);
    let n = 0;
    while (n < got.length) {
      const small = new Uint8Array(100);
      const k = await p.server.conn.read(small);
      assert.ok(k !== null && k > 0 && k <= 100);
      got.set(small.subarray(0, k), n);
      n += k;
    }
    await sending;
    checkPattern(got, 1, 40_000, 5);
  } finally {
    p.close();
    q.close();
  }
});

Deno.test("mTLS data path: a reader that starts late still gets every byte in order", async () => {
  const p = await mtlsPair();
  try {
    // 4 MiB is far more than the receive queue holds: the sender must be held back, not lose bytes.
    const chunks = 64;
    const size = 64 * 1024;
    const sending = writePattern(p.client, chunks, size);
    await new Promise((r) => setTimeout(r, 300));
    const got = await readBytes(p.server, chunks * size);
    await sending;
    checkPattern(got, chunks, size);
  } finally {
    p.close();
  }
});

Deno.test("mTLS data path: the request sent with the handshake is read; end of stream is seen", async () => {
  const p = await mtlsPair();
  try {
    const req = new TextEncoder().encode("GET / HTTP/1.1\r\nhost: b\r\n\r\n");
    await p.client.writeAll(req);
    p.client.closeWrite();
    const got = await readBytes(p.server, req.length + 1);
    assert.equal(new TextDecoder().decode(got), "GET / HTTP/1.1\r\nhost: b\r\n\r\n");
    assert.equal(await p.server.fill(), false);
    assert.equal(p.server.eof, true);
  } finally {
    p.close();
  }
});

Deno.test("mTLS data path fallback (node's streams, for a Deno without the TLS handle calls) also delivers every byte", async () => {
  const ca = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
  const [a, b] = await Promise.all([identity(ca, "a"), identity(ca, "b")]);
  const server = tls.createServer({
    key: b.material.keyPem,
    cert: b.material.certChainPem,
    ca: b.material.rootCertPem,
    requestCert: true,
    rejectUnauthorized: true,
  });
  const accepted = new Promise<tls.TLSSocket>((r) => server.once("secureConnection", r));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const sock = tls.connect({
    host: "127.0.0.1",
    port,
    key: a.material.keyPem,
    cert: a.material.certChainPem,
    ca: a.material.rootCertPem,
    checkServerIdentity: () => undefined,
  });
  await new Promise<void>((r) => sock.once("secureConnect", () => r()));
  const client = new BufConn(new StreamByteConn(sock));
  const peer = new BufConn(new StreamByteConn(await accepted));
  try {
    const chunks = 32;
    const size = 64 * 1024;
    const sending = writePattern(client, chunks, size);
    await new Promise((r) => setTimeout(r, 200));
    checkPattern(await readBytes(peer, chunks * size), chunks, size);
    await sending;
    client.closeWrite();
    assert.equal(await peer.fill(), false);
  } finally {
    client.close();
    peer.close();
    server.close();
  }
});

Deno.test("chainProblem: an intermediate must be a CA; a workload's key cannot issue identities", async () => {
  const dir = await Deno.makeTempDir({ prefix: "remora-chain-" });
  const sh = async (cmd: string) => {
    const out = await new Deno.Command("bash", { args: ["-c", cmd], cwd: dir }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  };
  const key = (name: string) =>
    `openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ${name}.key -out ${name}.csr -subj /CN=${name} 2>/dev/null`;
  const sign = (name: string, by: string, ext: string) =>
    `printf '${ext}\\n' > ${name}.ext && openssl x509 -req -in ${name}.csr -CA ${by}.pem -CAkey ${by}.key -CAcreateserial -out ${name}.pem -days 1 -extfile ${name}.ext 2>/dev/null`;
  try {
    await sh(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key -out root.pem -subj /CN=root -days 1 -addext basicConstraints=critical,CA:TRUE 2>/dev/null",
    );
    // A workload certificate with no keyUsage (some CAs issue them so) ...
    await sh(
      `${key("w")} && ${
        sign("w", "root", "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/w")
      }`,
    );
    // ... whose key signs a certificate for an identity it does not have.
    await sh(
      `${key("f")} && ${
        sign("f", "w", "subjectAltName=URI:spiffe://cluster.local/ns/istio-system/sa/admin")
      }`,
    );
    // A real intermediate CA and a leaf under it.
    await sh(`${key("i")} && ${sign("i", "root", "basicConstraints=critical,CA:TRUE")}`);
    await sh(
      `${key("l")} && ${
        sign("l", "i", "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/l")
      }`,
    );
    const der = (name: string) =>
      new X509Certificate(Deno.readTextFileSync(`${dir}/${name}.pem`)).raw;
    const peer = (leaf: string, issuer: string) => {
      const parent = { raw: der(issuer), issuerCertificate: undefined };
      return { raw: der(leaf), issuerCertificate: parent } as unknown as tls.PeerCertificate;
    };
    const roots = [new X509Certificate(Deno.readTextFileSync(`${dir}/root.pem`))];
    assert.match(chainProblem(peer("f", "w"), roots) ?? "", /is not a CA certificate/);
    assert.equal(chainProblem(peer("l", "i"), roots), undefined);
    // extendedKeyUsage decides which side a certificate may play; one SPIFFE ID only.
    const san = "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/s";
    await sh(`${key("s")} && ${sign("s", "root", `${san}\\nextendedKeyUsage=serverAuth`)}`);
    await sh(`${key("c")} && ${sign("c", "root", `${san}\\nextendedKeyUsage=clientAuth`)}`);
    await sh(
      `${key("two")} && ${sign("two", "root", `${san},URI:spiffe://cluster.local/ns/x/sa/y`)}`,
    );
    // One URI SAN with a comma in it: node:tls's subjectaltname text would show two names.
    await sh(
      `${key("comma")} && ${
        sign(
          "comma",
          "root",
          "subjectAltName=@alt\\n[alt]\\nURI.1=https://example.com/x,URI:spiffe://cluster.local/ns/default/sa/admin",
        )
      }`,
    );
    const leaf = (name: string) => ({ raw: der(name) }) as unknown as tls.PeerCertificate;
    assert.equal(peerProblem(leaf("s"), roots, "serverAuth"), undefined);
    assert.match(peerProblem(leaf("s"), roots, "clientAuth") ?? "", /not for TLS clients/);
    assert.equal(peerProblem(leaf("c"), roots, "clientAuth"), undefined);
    assert.match(peerProblem(leaf("c"), roots, "serverAuth") ?? "", /not for TLS servers/);
    assert.equal(peerProblem(leaf("w"), roots, "clientAuth"), undefined, "no EKU: any use");
    assert.match(peerProblem(leaf("two"), roots, "clientAuth") ?? "", /2 SPIFFE IDs/);
    // The identity is a whole URI SAN: the comma one holds none.
    assert.equal(spiffeIdOf(leaf("s")), "spiffe://cluster.local/ns/default/sa/s");
    assert.ok(new X509Certificate(der("comma")).subjectAltName?.includes(",URI:spiffe://"));
    assert.equal(peerProblem(leaf("comma"), roots, "clientAuth"), undefined);
    assert.equal(spiffeIdOf(leaf("comma")), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A server ending mTLS as the inbound listener does, for `id`: each
 * connection that completes its handshake is answered with "ok". Counts the
 * connections it accepted.
 */
function mtlsServer(id: MeshIdentity): { port: number; accepted: () => number; close: () => void } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const conns: BufConn[] = [];
  (async () => {
    for await (const tcp of l) {
      accepted++;
      const c = new BufConn(tcpByteConn(tcp));
      conns.push(c);
      (async () => {
        await c.fill();
        const { conn } = await terminate(c, id, { requireClientCert: true, timeoutMs: 5000 });
        conns.push(conn);
        await conn.writeAll(new TextEncoder().encode("ok"));
      })().catch(() => c.close());
    }
  })().catch(() => {});
  return {
    port: l.addr.port,
    accepted: () => accepted,
    close: () => {
      l.close();
      for (const c of conns) c.close();
    },
  };
}

Deno.test("originate: an upstream whose chain goes through an intermediate CA is checked and accepted", async () => {
  const root = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
  const keys = await generateKeyPair();
  const intermediate = await x509.X509CertificateGenerator.create({
    subject: "O=cluster.local, CN=intermediate",
    issuer: root.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: root.signer.key,
    signingAlgorithm: EC_P256,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const inter = await caFromPem(intermediate.toString("pem"), await privateKeyPem(keys.privateKey));
  const leaf = await issueCert(inter, { id: `spiffe://${TD}/ns/default/sa/b`, ttlMs: 3_600_000 });
  const b = new MeshIdentity({
    spiffeId: `spiffe://${TD}/ns/default/sa/b`,
    trustDomain: TD,
    certChainPem: leaf.certChainPem + inter.certPem,
    keyPem: leaf.keyPem,
    rootCertPem: root.certPem,
  });
  const a = await identity(root, "a");
  const server = mtlsServer(b);
  try {
    for (let i = 0; i < 3; i++) {
      const c = await originate(
        "127.0.0.1",
        server.port,
        a,
        { expectedId: `spiffe://${TD}/ns/default/sa/b`, alpn: "istio-http/1.1" },
        5000,
      );
      assert.equal(new TextDecoder().decode(await readBytes(c, 2)), "ok");
      c.close();
    }
    // Deno's client sees only the leaf: one try, then node:tls for this upstream.
    assert.ok(server.accepted() <= 4, `${server.accepted()} connections for 3`);
  } finally {
    server.close();
  }
});

Deno.test("originate: a server with another SPIFFE ID or from another CA is refused, naming why", async () => {
  const ca = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
  const other = await initCa({ trustDomain: TD, ttlMs: 3_600_000 });
  const a = await identity(ca, "a");
  const b = mtlsServer(await identity(ca, "b"));
  const stranger = mtlsServer(await identity(other, "c"));
  try {
    await assert.rejects(
      originate("127.0.0.1", b.port, a, {
        expectedId: `spiffe://${TD}/ns/default/sa/c`,
        alpn: "istio-http/1.1",
      }, 5000),
      /Server identity mismatch: expected spiffe:\/\/cluster\.local\/ns\/default\/sa\/c, presented spiffe:\/\/cluster\.local\/ns\/default\/sa\/b/,
    );
    await assert.rejects(
      originate("127.0.0.1", stranger.port, a, {
        expectedId: `spiffe://${TD}/ns/default/sa/c`,
        alpn: "istio-http/1.1",
      }, 5000),
      /mTLS to upstream failed: .*(certificate|issuer)/i,
    );
  } finally {
    b.close();
    stranger.close();
  }
});

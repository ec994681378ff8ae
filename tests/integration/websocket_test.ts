/**
 * WebSocket (HTTP/1.1 Upgrade) passthrough by a real `remora run` process,
 * with a python3-websockets echo server (tests/testdata/ws_echo_server.py)
 * behind remora. The python3-websockets client (ws_echo_client.py) goes
 * through the inbound listener (--app-port) and through the outbound
 * listener with the upstream named by the Host header; a raw client written
 * here sends an absolute-form Upgrade request to the outbound listener, as an
 * app with HTTP_PROXY set does, and checks the handshake and frames byte by
 * byte. Messages echo both ways (1 MiB ones too), and both client- and
 * server-initiated closes reach the other side.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  exec,
  PYTHON,
  type Remora,
  type ServerProcess,
  startRemora,
  startServerProcess,
  TESTDATA,
} from "./harness.ts";

interface ClientReport {
  text_echoed: boolean;
  binary_echoed: boolean;
  big_binary_echoed: boolean;
  big_text_echoed: boolean;
  pong: boolean;
  client_close: { code: number; reason: string };
  server_close: { code: number | null; reason?: string | null };
}

async function withEcho(body: (r: Remora, server: ServerProcess) => Promise<void>): Promise<void> {
  let server: ServerProcess | undefined;
  let r: Remora | undefined;
  try {
    server = await startServerProcess(PYTHON, [`${TESTDATA}ws_echo_server.py`]);
    r = await startRemora(["--app-port", String(server.port)]);
    await body(r, server);
  } finally {
    await r?.stop();
    await server?.stop();
  }
}

async function runClient(connectPort: number, hostPort: number): Promise<ClientReport> {
  const r = await exec(PYTHON, [
    `${TESTDATA}ws_echo_client.py`,
    String(connectPort),
    String(hostPort),
  ], { timeoutMs: 40_000 });
  assert.equal(r.code, 0, `websocket client failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as ClientReport;
}

function assertReport(r: ClientReport): void {
  assert.deepEqual(r, {
    text_echoed: true,
    binary_echoed: true,
    big_binary_echoed: true,
    big_text_echoed: true,
    pong: true,
    client_close: { code: 1000, reason: "client done" },
    server_close: { code: 4000, reason: "bye" },
  });
}

Deno.test("websocket: echo and close through the inbound listener", async () => {
  await withEcho(async (r, server) => {
    assertReport(await runClient(r.inbound, server.port));
  });
});

Deno.test("websocket: echo and close through the outbound listener (Host-addressed)", async () => {
  await withEcho(async (r, server) => {
    assertReport(await runClient(r.outbound, server.port));
  });
});

/** A minimal WebSocket client over a raw TCP connection, for exact control of the handshake. */
class RawWebSocket {
  readonly #conn: Deno.TcpConn;
  #buf = new Uint8Array(0);

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  async #more(): Promise<void> {
    const chunk = new Uint8Array(256 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("Connection closed by remora");
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
  }

  /** Sends the handshake; returns the response head. */
  async handshake(target: string, host: string, key: string): Promise<string> {
    const req = `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    await this.#write(new TextEncoder().encode(req));
    for (;;) {
      const text = new TextDecoder().decode(this.#buf);
      const end = text.indexOf("\r\n\r\n");
      if (end !== -1) {
        this.#buf = this.#buf.subarray(end + 4);
        return text.slice(0, end);
      }
      await this.#more();
    }
  }

  async #write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) off += await this.#conn.write(data.subarray(off));
  }

  /** Sends one masked frame, as clients must. */
  async send(opcode: number, payload: Uint8Array): Promise<void> {
    const len = payload.length;
    const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
    const frame = new Uint8Array(2 + ext + 4 + len);
    frame[0] = 0x80 | opcode;
    const view = new DataView(frame.buffer);
    if (ext === 0) frame[1] = 0x80 | len;
    else if (ext === 2) {
      frame[1] = 0x80 | 126;
      view.setUint16(2, len);
    } else {
      frame[1] = 0x80 | 127;
      view.setBigUint64(2, BigInt(len));
    }
    const mask = crypto.getRandomValues(new Uint8Array(4));
    frame.set(mask, 2 + ext);
    const at = 2 + ext + 4;
    for (let i = 0; i < len; i++) frame[at + i] = payload[i]! ^ mask[i & 3]!;
    await this.#write(frame);
  }

  /** Reads one whole frame (server frames are not masked). */
  async recv(): Promise<{ fin: boolean; opcode: number; payload: Uint8Array }> {
    for (;;) {
      const b = this.#buf;
      if (b.length >= 2) {
        assert.equal(b[1]! & 0x80, 0, "server frames are not masked");
        let len = b[1]! & 0x7f;
        let at = 2;
        if (len === 126 && b.length >= 4) {
          len = (b[2]! << 8) | b[3]!;
          at = 4;
        } else if (len === 127 && b.length >= 10) {
          len = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(2));
          at = 10;
        }
        if ((len < 126 || at > 2) && b.length >= at + len) {
          this.#buf = b.subarray(at + len);
          return {
            fin: (b[0]! & 0x80) !== 0,
            opcode: b[0]! & 0x0f,
            payload: b.slice(at, at + len),
          };
        }
      }
      await this.#more();
    }
  }

  /** Reads frames until a whole message (data frame plus continuations). */
  async message(): Promise<{ opcode: number; payload: Uint8Array }> {
    const first = await this.recv();
    const parts = [first.payload];
    let fin = first.fin;
    while (!fin) {
      const f = await this.recv();
      assert.equal(f.opcode, 0, "continuation frame");
      parts.push(f.payload);
      fin = f.fin;
    }
    return { opcode: first.opcode, payload: new Uint8Array(Buffer.concat(parts)) };
  }

  /** True once the peer has closed the TCP connection (reads EOF). */
  async eof(): Promise<boolean> {
    try {
      for (;;) {
        const n = await this.#conn.read(new Uint8Array(1024));
        if (n === null) return true;
      }
    } catch {
      return true;
    }
  }
}

async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
  );
  return Buffer.from(digest).toString("base64");
}

Deno.test("websocket: absolute-form Upgrade on the outbound listener, frame by frame", async () => {
  await withEcho(async (r, server) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: r.outbound });
    const timer = setTimeout(() => conn.close(), 20_000);
    try {
      const ws = new RawWebSocket(conn);
      const key = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64");
      const authority = `127.0.0.1:${server.port}`;
      const head = await ws.handshake(`http://${authority}/echo`, authority, key);
      assert.match(head, /^HTTP\/1\.1 101 /);
      assert.match(head, /\r\nupgrade: websocket/i);
      assert.match(head, /\r\nconnection: upgrade/i);
      const accept = /\r\nsec-websocket-accept: *(\S+)/i.exec(head)?.[1];
      assert.equal(accept, await acceptFor(key));

      const hello = new TextEncoder().encode("hello through the outbound proxy");
      await ws.send(0x1, hello);
      const echo = await ws.message();
      assert.equal(echo.opcode, 0x1);
      assert.deepEqual(echo.payload, hello);

      const big = crypto.getRandomValues(new Uint8Array(65536));
      const mib = new Uint8Array(1024 * 1024);
      for (let i = 0; i < 16; i++) mib.set(big, i * 65536);
      await ws.send(0x2, mib);
      const bigEcho = await ws.message();
      assert.equal(bigEcho.opcode, 0x2);
      assert.equal(bigEcho.payload.length, mib.length);
      assert.ok(Buffer.from(bigEcho.payload).equals(Buffer.from(mib)), "1 MiB echoes unchanged");

      await ws.send(0x9, new TextEncoder().encode("ping"));
      const pong = await ws.recv();
      assert.equal(pong.opcode, 0xa);
      assert.equal(new TextDecoder().decode(pong.payload), "ping");

      // Close 1000: the server answers with its own close frame, then closes TCP.
      await ws.send(0x8, new Uint8Array([0x03, 0xe8, ...new TextEncoder().encode("done")]));
      const close = await ws.recv();
      assert.equal(close.opcode, 0x8);
      assert.equal((close.payload[0]! << 8) | close.payload[1]!, 1000);
      assert.equal(await ws.eof(), true);
    } finally {
      clearTimeout(timer);
      try {
        conn.close();
      } catch {
        // Closed by the timer or the peer already.
      }
    }
  });
});

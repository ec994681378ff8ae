"""A WebSocket client for remora's integration tests (python3-websockets).

Usage: ws_echo_client.py CONNECT_PORT HOST_PORT

Connects a TCP socket to 127.0.0.1:CONNECT_PORT (remora's listener) and does
the WebSocket handshake for ws://127.0.0.1:HOST_PORT/ on it, so the Host
header names the upstream (how an app addresses a service through remora's
outbound listener). Against ws_echo_server.py it sends text and binary
messages (one of 1 MiB each), pings, closes with 1000, then opens /close and
records the server's close. Prints one JSON report; the test asserts on it.
"""

import asyncio
import json
import os
import socket
import sys

import websockets


def connect(port, host_port, path):
    sock = socket.create_connection(("127.0.0.1", port))
    return websockets.connect(
        f"ws://127.0.0.1:{host_port}{path}",
        sock=sock,
        max_size=16 * 1024 * 1024,
        compression=None,
        open_timeout=10,
        close_timeout=10,
    )


async def main():
    port, host_port = int(sys.argv[1]), int(sys.argv[2])
    out = {}
    async with connect(port, host_port, "/echo") as ws:
        texts = [f"text message {i}" for i in range(10)]
        for t in texts:
            await ws.send(t)
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in texts]
        out["text_echoed"] = got == texts

        blobs = [os.urandom(100 + i) for i in range(10)]
        for b in blobs:
            await ws.send(b)
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in blobs]
        out["binary_echoed"] = got == blobs

        big = os.urandom(1024 * 1024)
        await ws.send(big)
        echoed = await asyncio.wait_for(ws.recv(), 20)
        out["big_binary_echoed"] = isinstance(echoed, bytes) and echoed == big

        big_text = "x" * (1024 * 1024)
        await ws.send(big_text)
        echoed = await asyncio.wait_for(ws.recv(), 20)
        out["big_text_echoed"] = echoed == big_text

        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        out["pong"] = True

        await ws.close(1000, "client done")
        out["client_close"] = {"code": ws.close_code, "reason": ws.close_reason}

    async with connect(port, host_port, "/close") as ws:
        try:
            await asyncio.wait_for(ws.recv(), 10)
            out["server_close"] = {"code": None}
        except websockets.exceptions.ConnectionClosed as e:
            out["server_close"] = {"code": e.rcvd.code if e.rcvd else None,
                                   "reason": e.rcvd.reason if e.rcvd else None}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())

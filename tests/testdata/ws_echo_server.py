"""A WebSocket echo server for remora's integration tests (python3-websockets).

Every message comes back as it was sent (text as text, binary as binary). On
path /close the server closes the connection itself with code 4000, reason
"bye", right after the handshake. Messages up to 16 MiB are accepted.

Listens on 127.0.0.1 (port argv[1], default ephemeral) and prints "port N"
when ready; stops on SIGTERM.
"""

import asyncio
import signal
import sys

import websockets


async def handler(ws):
    # websockets < 13 has ws.path; the newer implementation has ws.request.path.
    path = getattr(ws, "path", None) or ws.request.path
    if path == "/close":
        await ws.close(4000, "bye")
        return
    async for message in ws:
        await ws.send(message)


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(handler, "127.0.0.1", port, max_size=16 * 1024 * 1024) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"port {bound}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())

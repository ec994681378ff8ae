"""TCP peers for remora's capture tests (server-first and opaque protocols).

  tcp_peer.py greet-server HOST PORT NAME   server speaks first: "220 NAME ready\\r\\n",
                                             then answers each line with "250 NAME got <line>"
  tcp_peer.py echo-server HOST PORT         echoes every byte back (an opaque binary protocol)
  tcp_peer.py greet-client HOST PORT        connects, waits silently for the greeting, sends
                                             "HELO x", prints both answers
  tcp_peer.py echo-client HOST PORT N       sends N bytes of binary (all byte values), checks the
                                             echo, prints "echo ok N" or fails
Every wait is bounded (10 s).
"""

import socket
import socketserver
import sys
import threading


class Greet(socketserver.StreamRequestHandler):
    def handle(self):
        name = self.server.peer_name
        self.wfile.write(f"220 {name} ready\r\n".encode())
        for line in self.rfile:
            self.wfile.write(f"250 {name} got {line.decode().strip()}\r\n".encode())


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                self.request.shutdown(socket.SHUT_WR)
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(handler, host, port, name=""):
    srv = Server((host, int(port)), handler)
    srv.peer_name = name
    print(f"listening on {host}:{port}", flush=True)
    srv.serve_forever()


def read_line(sock):
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf.decode().strip()


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "greet-server":
        serve(Greet, host, port, sys.argv[4])
    elif mode == "echo-server":
        serve(Echo, host, port)
    elif mode == "greet-client":
        with socket.create_connection((host, port), timeout=10) as s:
            greeting = read_line(s)
            s.sendall(b"HELO x\r\n")
            print(greeting)
            print(read_line(s))
    elif mode == "echo-client":
        n = int(sys.argv[4])
        data = bytes(i % 256 for i in range(n))
        with socket.create_connection((host, port), timeout=10) as s:
            t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
            t.start()
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            t.join()
        if got != data:
            print(f"echo mismatch: sent {n} bytes, got {len(got)}")
            sys.exit(1)
        print(f"echo ok {n}")


if __name__ == "__main__":
    main()

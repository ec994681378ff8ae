"""A gRPC echo server for remora's integration tests (python3-grpcio).

Service remora.test.Echo, messages are raw bytes (identity serializers, so no
generated stubs are needed; the wire format is real gRPC):
  Unary          echoes the request, with trailing metadata x-echo-trailer
  ServerStream   request b"N:text" -> N messages b"text-0" .. b"text-(N-1)"
  ClientStream   joins the requests with b"|"
  Bidi           echoes each request as it comes, prefixed with b"echo:"
  Fail           aborts with NOT_FOUND and the message "no such thing: <request>"
  Slow           sleeps <request> milliseconds, then echoes
  Flaky          request b"key:N": the first N calls with that key abort with
                 UNAVAILABLE, later ones echo; b"count:key" answers how many
                 calls with that key came

Listens on 127.0.0.1 (port argv[1], default ephemeral) and prints "port N"
when ready; stops on SIGTERM.
"""

import signal
import sys
import threading
import time
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("x-echo-trailer", "unary-done"),))
    return request


def server_stream(request, context):
    count, _, text = request.partition(b":")
    for i in range(int(count)):
        yield text + b"-" + str(i).encode()


def client_stream(request_iterator, context):
    return b"|".join(request_iterator)


def bidi(request_iterator, context):
    for r in request_iterator:
        yield b"echo:" + r


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def slow(request, context):
    time.sleep(int(request) / 1000)
    return request


flaky_calls = {}
flaky_lock = threading.Lock()


def flaky(request, context):
    if request.startswith(b"count:"):
        with flaky_lock:
            return str(flaky_calls.get(request[6:], 0)).encode()
    key, _, n = request.partition(b":")
    with flaky_lock:
        flaky_calls[key] = flaky_calls.get(key, 0) + 1
        seen = flaky_calls[key]
    if seen <= int(n):
        context.abort(grpc.StatusCode.UNAVAILABLE, f"flaky call {seen}")
    return request


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
    }
    limit = 16 * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("remora.test.Echo", handlers),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"port {bound}", flush=True)
    done.wait()
    server.stop(0)


if __name__ == "__main__":
    main()

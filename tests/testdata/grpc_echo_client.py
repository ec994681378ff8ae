"""A gRPC client for remora's integration tests (python3-grpcio).

Usage: grpc_echo_client.py TARGET [AUTHORITY] [--many N]

Calls every method of remora.test.Echo (see grpc_echo_server.py) on TARGET,
with :authority set to AUTHORITY when given (how an app reaches a service
through remora's outbound listener), and prints one JSON object with what
came back: payloads, status codes, details and trailing metadata. The test
that runs it makes the assertions.
"""

import json
import sys

import grpc


def main():
    args = sys.argv[1:]
    many = 0
    if "--many" in args:
        i = args.index("--many")
        many = int(args[i + 1])
        del args[i : i + 2]
    target = args[0]
    limit = 16 * 1024 * 1024
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]
    if len(args) > 1:
        options.append(("grpc.default_authority", args[1]))
    out = {}
    with grpc.insecure_channel(target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        if many > 0:
            # Sequential calls on one channel: more than one connection's worth of streams.
            unary = channel.unary_unary("/remora.test.Echo/Unary")
            ok = 0
            for i in range(many):
                if unary(f"call {i}".encode(), timeout=10) == f"call {i}".encode():
                    ok += 1
            print(json.dumps({"many_ok": ok}))
            return
        unary = channel.unary_unary("/remora.test.Echo/Unary")
        resp, call = unary.with_call(b"hello unary", timeout=10)
        out["unary"] = {
            "response": resp.decode(),
            "code": call.code().name,
            "trailers": {k: v for k, v in call.trailing_metadata()},
        }
        big = bytes(range(256)) * 4096  # 1 MiB
        out["unary_big_equal"] = unary(big, timeout=20) == big

        stream = channel.unary_stream("/remora.test.Echo/ServerStream")
        out["server_stream"] = [m.decode() for m in stream(b"50:item", timeout=10)]

        client = channel.stream_unary("/remora.test.Echo/ClientStream")
        out["client_stream"] = client(iter([b"a", b"b", b"c", b"d"]), timeout=10).decode()

        bidi = channel.stream_stream("/remora.test.Echo/Bidi")
        out["bidi"] = [m.decode() for m in bidi(iter([f"m{i}".encode() for i in range(20)]), timeout=10)]

        fail = channel.unary_unary("/remora.test.Echo/Fail")
        try:
            fail(b"widget-7", timeout=10)
            out["fail"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["fail"] = {"code": e.code().name, "details": e.details()}

        slow = channel.unary_unary("/remora.test.Echo/Slow")
        futs = [slow.future(b"50", timeout=10) for _ in range(20)]
        out["concurrent_unary"] = sum(1 for f in futs if f.result() == b"50")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

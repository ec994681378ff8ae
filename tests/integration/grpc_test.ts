/**
 * gRPC through a real `remora run` process, with python3-grpcio on both ends
 * (tests/testdata/grpc_echo_server.py and grpc_echo_client.py): unary (also
 * 1 MiB), server-streaming, client-streaming and bidi calls succeed with
 * their payloads, a NOT_FOUND status and its message arrive unchanged (they
 * travel in trailers, or in a trailers-only response), custom trailing
 * metadata passes, and remora's Prometheus output labels the calls as gRPC
 * with their grpc-status. The client reaches the server through the outbound
 * listener (:authority = the server's address) and through the inbound
 * listener (--app-port).
 */

import assert from "node:assert/strict";
import {
  exec,
  PYTHON,
  type Remora,
  scrape,
  type ServerProcess,
  startRemora,
  startServerProcess,
  TESTDATA,
} from "./harness.ts";

interface ClientReport {
  unary: { response: string; code: string; trailers: Record<string, string> };
  unary_big_equal: boolean;
  server_stream: string[];
  client_stream: string;
  bidi: string[];
  fail: { code: string; details?: string };
  concurrent_unary: number;
}

async function runClient(target: string, authority?: string): Promise<ClientReport> {
  const args = [`${TESTDATA}grpc_echo_client.py`, target];
  if (authority !== undefined) args.push(authority);
  const r = await exec(PYTHON, args, { timeoutMs: 40_000 });
  assert.equal(r.code, 0, `grpc client failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as ClientReport;
}

function assertReport(r: ClientReport): void {
  assert.deepEqual(r.unary, {
    response: "hello unary",
    code: "OK",
    trailers: { "x-echo-trailer": "unary-done" },
  });
  assert.equal(r.unary_big_equal, true, "a 1 MiB unary message echoes unchanged");
  assert.deepEqual(r.server_stream, Array.from({ length: 50 }, (_, i) => `item-${i}`));
  assert.equal(r.client_stream, "a|b|c|d");
  assert.deepEqual(r.bidi, Array.from({ length: 20 }, (_, i) => `echo:m${i}`));
  assert.deepEqual(r.fail, { code: "NOT_FOUND", details: "no such thing: widget-7" });
  assert.equal(r.concurrent_unary, 20);
}

async function withGrpc(body: (r: Remora, server: ServerProcess) => Promise<void>): Promise<void> {
  let server: ServerProcess | undefined;
  let r: Remora | undefined;
  try {
    server = await startServerProcess(PYTHON, [`${TESTDATA}grpc_echo_server.py`]);
    r = await startRemora(["--app-port", String(server.port)]);
    await body(r, server);
  } finally {
    await r?.stop();
    await server?.stop();
  }
}

/** The value of istio_requests_total series whose labels include all of `labels`, summed. */
function requestsTotal(text: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("istio_requests_total{")) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (ok) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

Deno.test("grpc: every call kind through the outbound listener", async () => {
  await withGrpc(async (r, server) => {
    assertReport(await runClient(`127.0.0.1:${r.outbound}`, `127.0.0.1:${server.port}`));
    const text = await scrape(r);
    const source = { reporter: "source", request_protocol: "grpc" };
    // 25 calls answer OK: unary, 1 MiB unary, three streaming calls and 20 concurrent unary.
    assert.equal(requestsTotal(text, { ...source, grpc_response_status: "0" }), 25, text);
    assert.equal(requestsTotal(text, { ...source, grpc_response_status: "5" }), 1, text);
    assert.equal(
      requestsTotal(text, { ...source, grpc_response_status: "5", response_code: "200" }),
      1,
      "a gRPC error still has HTTP status 200",
    );
  });
});

Deno.test("grpc: every call kind through the inbound listener", async () => {
  await withGrpc(async (r) => {
    assertReport(await runClient(`127.0.0.1:${r.inbound}`));
    const text = await scrape(r);
    const dest = { reporter: "destination", request_protocol: "grpc" };
    assert.equal(requestsTotal(text, { ...dest, grpc_response_status: "0" }), 25, text);
    assert.equal(requestsTotal(text, { ...dest, grpc_response_status: "5" }), 1, text);
  });
});

Deno.test("grpc: 300 sequential calls on one channel all succeed, through both listeners", async () => {
  // Hundreds of streams on one connection, then the client's GOAWAY: remora keeps serving.
  await withGrpc(async (r, server) => {
    for (
      const [target, authority] of [
        [`127.0.0.1:${r.inbound}`, undefined],
        [`127.0.0.1:${r.outbound}`, `127.0.0.1:${server.port}`],
      ] as const
    ) {
      const args = [`${TESTDATA}grpc_echo_client.py`, target];
      if (authority !== undefined) args.push(authority);
      args.push("--many", "300");
      const out = await exec(PYTHON, args, { timeoutMs: 60_000 });
      assert.equal(out.code, 0, `grpc client failed:\n${out.stderr}\n${r.stderr()}`);
      assert.deepEqual(JSON.parse(out.stdout), { many_ok: 300 });
    }
  });
});

/** A ServiceEntry for the echo server, named echo.grpc.internal (port 50051), then `extra`. */
function echoMesh(serverPort: number, extra = ""): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo }
spec:
  hosts: [echo.grpc.internal]
  ports: [{ number: 50051, name: grpc, protocol: GRPC }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1, ports: { grpc: ${serverPort} } }]
${extra}`;
}

interface CallResult {
  code: string;
  body?: string;
  details?: string;
}

/**
 * Runs `fn` with the echo server and a remora configured by `mesh(serverPort)`;
 * `call` makes one unary call through remora's outbound listener with python3-grpcio.
 */
async function withGrpcMesh(
  mesh: (serverPort: number) => string,
  fn: (
    r: Remora,
    call: (
      method: string,
      request: string,
      opts?: { kase?: string; timeoutS?: number; cancelAfterS?: number },
    ) => Promise<CallResult>,
  ) => Promise<void>,
): Promise<void> {
  let server: ServerProcess | undefined;
  let r: Remora | undefined;
  const dir = await Deno.makeTempDir({ prefix: "remora-grpc-mesh-" });
  try {
    server = await startServerProcess(PYTHON, [`${TESTDATA}grpc_echo_server.py`]);
    await Deno.writeTextFile(`${dir}/mesh.yaml`, mesh(server.port));
    r = await startRemora(["--config", `${dir}/mesh.yaml`]);
    const code = `
import grpc, sys, json, time
ch = grpc.insecure_channel("127.0.0.1:${r.outbound}", options=[("grpc.default_authority", "echo.grpc.internal:50051")])
f = ch.unary_unary("/remora.test.Echo/" + sys.argv[1])
try:
    call = f.future(sys.argv[2].encode(), metadata=(("x-case", sys.argv[3]),), timeout=float(sys.argv[4]))
    if sys.argv[5] != "-":
        time.sleep(float(sys.argv[5]))
        call.cancel()
    print(json.dumps({"code": "OK", "body": call.result().decode()}))
except grpc.FutureCancelledError:
    print(json.dumps({"code": "CANCELLED"}))
except grpc.RpcError as e:
    print(json.dumps({"code": e.code().name, "details": e.details()}))
`;
    await fn(r, async (method, request, opts = {}) => {
      const args = [
        "-c",
        code,
        method,
        request,
        opts.kase ?? "-",
        String(opts.timeoutS ?? 10),
        opts.cancelAfterS === undefined ? "-" : String(opts.cancelAfterS),
      ];
      const out = await exec(PYTHON, args, { timeoutMs: 30_000 });
      assert.equal(out.code, 0, out.stderr);
      return JSON.parse(out.stdout) as CallResult;
    });
  } finally {
    await r?.stop();
    await server?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("grpc: retryOn unavailable retries a trailers-only UNAVAILABLE; without it the status passes", async () => {
  const route = (name: string, retryOn: string) => `
  - name: ${name}
    match: [{ headers: { x-case: { exact: ${name} } } }]
    retries: { attempts: 3, retryOn: "${retryOn}" }
    route: [{ destination: { host: echo.grpc.internal } }]`;
  const vs = `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo }
spec:
  hosts: [echo.grpc.internal]
  http:${route("grpc", "unavailable,cancelled")}${route("http", "5xx")}
`;
  await withGrpcMesh((port) => echoMesh(port, vs), async (_r, call) => {
    const flaky = (kase: string, request: string) => call("Flaky", request, { kase });
    // Two UNAVAILABLE answers, then OK: retried within the 3 attempts.
    assert.deepEqual(await flaky("grpc", "a:2"), { code: "OK", body: "a:2" });
    assert.deepEqual(await flaky("grpc", "count:a"), { code: "OK", body: "3" });
    // An HTTP-only condition does not retry gRPC statuses: the first answer passes.
    assert.deepEqual(await flaky("http", "b:1"), { code: "UNAVAILABLE", details: "flaky call 1" });
    assert.deepEqual(await flaky("grpc", "count:b"), { code: "OK", body: "1" });
    // More failures than attempts: the last answer reaches the client as it was.
    assert.deepEqual(await flaky("grpc", "c:9"), { code: "UNAVAILABLE", details: "flaky call 4" });
  });
});

Deno.test("grpc: remora's own replies to gRPC calls are gRPC statuses (directResponse, timeout)", async () => {
  const vs = `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo }
spec:
  hosts: [echo.grpc.internal]
  http:
  - match: [{ headers: { x-case: { exact: direct } } }]
    directResponse: { status: 503, body: { string: "closed for maintenance, 100%" } }
  - match: [{ headers: { x-case: { exact: denied } } }]
    directResponse: { status: 403 }
  - timeout: 300ms
    route: [{ destination: { host: echo.grpc.internal } }]
`;
  await withGrpcMesh((port) => echoMesh(port, vs), async (r, call) => {
    assert.deepEqual(await call("Unary", "x", { kase: "direct" }), {
      code: "UNAVAILABLE",
      details: "closed for maintenance, 100%",
    });
    assert.equal((await call("Unary", "x", { kase: "denied" })).code, "PERMISSION_DENIED");
    assert.deepEqual(await call("Slow", "2000"), {
      code: "UNAVAILABLE",
      details: "upstream request timeout",
    });
    assert.deepEqual(await call("Unary", "hello"), { code: "OK", body: "hello" });
    const text = await scrape(r);
    assert.ok(
      requestsTotal(text, { response_flags: "UT", grpc_response_status: "14" }) >= 1,
      text,
    );
  });
});

Deno.test("grpc: calls the client cancels free their slot at once and are reported DR", async () => {
  const dr = `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: echo }
spec:
  host: echo.grpc.internal
  trafficPolicy: { connectionPool: { http: { http2MaxRequests: 3 } } }
`;
  await withGrpcMesh((port) => echoMesh(port, dr), async (r, call) => {
    // The client cancels each call (RST_STREAM CANCEL) while the server is still working.
    for (let i = 0; i < 3; i++) {
      assert.equal((await call("Slow", "3000", { cancelAfterS: 0.3 })).code, "CANCELLED");
    }
    // Right after three cancelled calls, the limit of 3 is free again: were one slot
    // still held, three concurrent calls would meet the limit.
    const calls = await Promise.all(
      ["a", "b", "c"].map((m) => call("Slow", "1500", { kase: m })),
    );
    assert.deepEqual(calls, Array(3).fill({ code: "OK", body: "1500" }));
    const text = await scrape(r);
    assert.equal(requestsTotal(text, { response_code: "0", response_flags: "DR" }), 3, text);
    assert.equal(requestsTotal(text, { response_flags: "UO" }), 0, text);
  });
});

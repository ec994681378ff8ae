/**
 * Unit tests of the capture rules as rendered (no iptables run here; the
 * namespace tests in tests/e2e/iptables_test.ts apply them for real).
 */

import assert from "node:assert/strict";
import {
  buildRuleSet,
  CaptureError,
  type CaptureOptions,
  defaultCaptureOptions,
  parseCidr,
  renderRules,
  validateCaptureOptions,
} from "./iptables.ts";

function opts(o: Partial<CaptureOptions> = {}): CaptureOptions {
  return { ...defaultCaptureOptions(), ...o };
}

function rules(o: Partial<CaptureOptions>, family: 4 | 6 = 4): string[] {
  return renderRules(opts(o), family).split("\n");
}

/** The rules of one chain, without the "-A CHAIN " prefix. */
function chain(lines: string[], name: string): string[] {
  return lines.filter((l) => l.startsWith(`-A ${name} `)).map((l) => l.slice(name.length + 4));
}

Deno.test("renderRules: defaults give Istio's shape in remora's chains", () => {
  const text = renderRules(opts(), 4);
  assert.equal(
    text,
    `# remora capture rules, IPv4: iptables-restore --noflush
*nat
:REMORA_INBOUND - [0:0]
:REMORA_IN_REDIRECT - [0:0]
:REMORA_OUTPUT - [0:0]
:REMORA_REDIRECT - [0:0]
-A PREROUTING -p tcp -j REMORA_INBOUND
-A OUTPUT -p tcp -j REMORA_OUTPUT
-A REMORA_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A REMORA_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
-A REMORA_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
-A REMORA_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A REMORA_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A REMORA_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT
-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j REMORA_IN_REDIRECT
-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A REMORA_OUTPUT -o lo -j RETURN
-A REMORA_OUTPUT -d 127.0.0.1/32 -j RETURN
-A REMORA_OUTPUT -p tcp -m tcp --dport 15000 -j RETURN
-A REMORA_OUTPUT -p tcp -m tcp --dport 15001 -j RETURN
-A REMORA_OUTPUT -p tcp -m tcp --dport 15006 -j RETURN
-A REMORA_OUTPUT -p tcp -m tcp --dport 15020 -j RETURN
-A REMORA_OUTPUT -p tcp -m tcp --dport 15021 -j RETURN
-A REMORA_OUTPUT -p tcp -m tcp --dport 15090 -j RETURN
-A REMORA_OUTPUT -j REMORA_REDIRECT
-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
`,
  );
});

Deno.test("renderRules: own ports are never captured, before any capture rule, both ways", () => {
  const own = [15000, 15001, 15006, 15020, 15021, 15090];
  for (const o of [{}, { includeInboundPorts: [80, 9000] }, { excludeInboundPorts: [22] }]) {
    for (const family of [4, 6] as const) {
      for (const name of ["REMORA_INBOUND", "REMORA_OUTPUT"]) {
        const c = chain(rules(o, family), name);
        const firstCapture = c.findIndex((r) =>
          /-j REMORA_(IN_)?REDIRECT$/.test(r) && !r.includes("owner")
        );
        for (const p of own) {
          const i = c.indexOf(`-p tcp -m tcp --dport ${p} -j RETURN`);
          assert.ok(
            i >= 0 && i < firstCapture,
            `${name} returns ${p} first (${JSON.stringify(o)})`,
          );
        }
      }
    }
  }
  // A custom listener port is an own port too.
  const c = chain(rules({ inboundPort: 16006, outboundPort: 16001 }), "REMORA_INBOUND");
  assert.ok(c.includes("-p tcp -m tcp --dport 16006 -j RETURN"));
  assert.ok(c.includes("-p tcp -m tcp --dport 16001 -j RETURN"));
  const r = rules({ inboundPort: 16006, outboundPort: 16001 });
  assert.ok(r.includes("-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006"));
  assert.ok(r.includes("-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 16001"));
});

Deno.test("renderRules: include and exclude inbound ports", () => {
  const c = chain(
    rules({ includeInboundPorts: [8080, 80, 8080], excludeInboundPorts: [22, 22] }),
    "REMORA_INBOUND",
  );
  assert.deepEqual(c.slice(6), [
    "-p tcp -m tcp --dport 22 -j RETURN",
    "-p tcp -m tcp --dport 8080 -j REMORA_IN_REDIRECT",
    "-p tcp -m tcp --dport 80 -j REMORA_IN_REDIRECT",
  ]);
  assert.ok(!c.includes("-p tcp -j REMORA_IN_REDIRECT"));
  // An empty include list captures no inbound port.
  const none = chain(rules({ includeInboundPorts: [] }), "REMORA_INBOUND");
  assert.ok(none.every((r) => r.endsWith("-j RETURN")));
});

Deno.test("renderRules: proxy uid and gid are not captured, except to a local non-loopback address", () => {
  const c = chain(rules({ proxyUid: 2000, proxyGid: 3000 }), "REMORA_OUTPUT");
  assert.deepEqual(c.slice(0, 6), [
    "! -d 127.0.0.1/32 -o lo -m owner --uid-owner 2000 -j REMORA_IN_REDIRECT",
    "! -d 127.0.0.1/32 -o lo -m owner --gid-owner 3000 -j REMORA_IN_REDIRECT",
    "-m owner --uid-owner 2000 -j RETURN",
    "-m owner --gid-owner 3000 -j RETURN",
    "-o lo -j RETURN",
    "-d 127.0.0.1/32 -j RETURN",
  ]);
});

Deno.test("renderRules: outbound CIDRs and ports, normalised as iptables-save prints them", () => {
  const c = chain(
    rules({
      includeOutboundCidrs: ["10.1.2.3/8", "192.168.7.9", "fd00::1/8"],
      excludeOutboundCidrs: ["10.9.0.0/16", "fd00:0:0::5/128"],
      excludeOutboundPorts: [25, 3306],
      ipv6: true,
    }),
    "REMORA_OUTPUT",
  );
  assert.deepEqual(c.slice(-5), [
    "-p tcp -m tcp --dport 25 -j RETURN",
    "-p tcp -m tcp --dport 3306 -j RETURN",
    "-d 10.9.0.0/16 -j RETURN",
    "-d 10.0.0.0/8 -j REMORA_REDIRECT",
    "-d 192.168.7.9/32 -j REMORA_REDIRECT",
  ]);
  assert.ok(!c.includes("-j REMORA_REDIRECT"));
  const c6 = chain(
    rules({
      includeOutboundCidrs: ["10.1.2.3/8", "fd00::1/8"],
      excludeOutboundCidrs: ["fd00:0:0::5/128"],
      ipv6: true,
    }, 6),
    "REMORA_OUTPUT",
  );
  assert.deepEqual(c6.slice(-2), ["-d fd00::5/128 -j RETURN", "-d fd00::/8 -j REMORA_REDIRECT"]);
  // IPv4 CIDRs do not reach the IPv6 rules and vice versa.
  assert.ok(!c6.some((r) => r.includes("10.")));
});

Deno.test("renderRules: IPv6 uses ::1/128 and ip6tables-restore", () => {
  const r = rules({ ipv6: true }, 6);
  assert.equal(r[0], "# remora capture rules, IPv6: ip6tables-restore --noflush");
  const c = chain(r, "REMORA_OUTPUT");
  assert.ok(c.includes("! -d ::1/128 -o lo -m owner --uid-owner 1337 -j REMORA_IN_REDIRECT"));
  assert.ok(c.includes("-d ::1/128 -j RETURN"));
  assert.ok(!r.join("\n").includes("127.0.0.1"));
});

Deno.test("renderRules: bad options throw CaptureError naming the flag", () => {
  const cases: Array<[Partial<CaptureOptions>, RegExp]> = [
    [{ inboundPort: 0 }, /--inbound-port: must be a port 1\.\.65535, got 0/],
    [{ outboundPort: 70000 }, /--outbound-port: must be a port/],
    [{ outboundPort: 15006 }, /--outbound-port: must differ from --inbound-port/],
    [{ includeInboundPorts: [80, 15006] }, /--include-inbound-ports: 15006 is the inbound port/],
    [{ includeInboundPorts: [15001] }, /--include-inbound-ports: 15001 is the outbound port/],
    [
      { includeInboundPorts: [15020] },
      /--include-inbound-ports: 15020 is one of remora's own ports/,
    ],
    [{ excludeInboundPorts: [-1] }, /--exclude-inbound-ports: must be a port/],
    [{ excludeOutboundPorts: [1.5] }, /--exclude-outbound-ports: must be a port/],
    [{ excludeOutboundCidrs: ["10.0.0.0/33"] }, /--exclude-outbound-cidrs: "10.0.0.0\/33" is not/],
    [{ includeOutboundCidrs: ["example.com"] }, /--include-outbound-cidrs: "example.com" is not/],
    [{ includeOutboundCidrs: ["fd00::/8"] }, /"fd00::\/8" is an IPv6 CIDR, which needs --ipv6/],
    [{ proxyUid: -1 }, /--proxy-uid: must be an id/],
    [{ proxyGid: 2 ** 32 }, /--proxy-gid: must be an id/],
  ];
  for (const [o, re] of cases) {
    assert.match(validateCaptureOptions(opts(o)).join("; "), re);
    assert.throws(() => renderRules(opts(o), 4), (e: unknown) => {
      assert.ok(e instanceof CaptureError);
      assert.equal(e.kind, "invalid-options");
      assert.match(e.message, re);
      return true;
    });
  }
  assert.deepEqual(validateCaptureOptions(opts()), []);
});

Deno.test("parseCidr: normalises like iptables-save", () => {
  assert.deepEqual(parseCidr("10.1.2.3/8"), { family: 4, text: "10.0.0.0/8" });
  assert.deepEqual(parseCidr("10.1.2.3"), { family: 4, text: "10.1.2.3/32" });
  assert.deepEqual(parseCidr("0.0.0.0/0"), { family: 4, text: "0.0.0.0/0" });
  assert.deepEqual(parseCidr("FD00:0:0:0:0:0:0:1/64"), { family: 6, text: "fd00::/64" });
  assert.deepEqual(parseCidr("::1"), { family: 6, text: "::1/128" });
  assert.deepEqual(parseCidr("2001:db8:0:1:0:0:0:1/128"), {
    family: 6,
    text: "2001:db8:0:1::1/128",
  });
  assert.deepEqual(parseCidr("2001:0:0:1:0:0:0:1"), { family: 6, text: "2001:0:0:1::1/128" });
  assert.deepEqual(parseCidr("1:0:2:3:4:5:6:7"), { family: 6, text: "1:0:2:3:4:5:6:7/128" });
  assert.deepEqual(parseCidr("::ffff:10.1.2.3"), { family: 6, text: "::ffff:10.1.2.3/128" });
  for (
    const bad of [
      "",
      "10.0.0",
      "256.0.0.0/8",
      "10.0.0.0/-1",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "fd00::/129",
      "x/8",
    ]
  ) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
});

Deno.test("buildRuleSet: the jumps are the two lines install adds once", () => {
  const set = buildRuleSet(opts(), 4);
  assert.deepEqual(set.jumps, [
    "-A PREROUTING -p tcp -j REMORA_INBOUND",
    "-A OUTPUT -p tcp -j REMORA_OUTPUT",
  ]);
  assert.deepEqual([...set.chains.keys()], [
    "REMORA_INBOUND",
    "REMORA_IN_REDIRECT",
    "REMORA_OUTPUT",
    "REMORA_REDIRECT",
  ]);
});

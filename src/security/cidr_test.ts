/** IP and CIDR parsing and containment, IPv4, IPv6 and IPv4-mapped IPv6. */

import assert from "node:assert/strict";
import { cidrContains, parseCidr, parseIpInto } from "./cidr.ts";

function contains(cidr: string, ip: string): boolean {
  const c = parseCidr(cidr);
  if (typeof c === "string") throw new Error(c);
  const a = new Uint32Array(4);
  assert.ok(parseIpInto(ip, a), `${ip} parses`);
  return cidrContains(c, a);
}

Deno.test("cidr: containment table", () => {
  const table: Array<[string, string, boolean]> = [
    ["10.0.0.0/8", "10.255.1.2", true],
    ["10.0.0.0/8", "11.0.0.0", false],
    ["10.1.2.3/8", "10.9.9.9", true], // host bits ignored, as Envoy
    ["10.0.0.1", "10.0.0.1", true],
    ["10.0.0.1", "10.0.0.2", false],
    ["0.0.0.0/0", "203.0.113.9", true],
    ["0.0.0.0/0", "2001:db8::1", false],
    ["10.0.0.0/8", "::ffff:10.1.1.1", true],
    ["::ffff:10.0.0.0/104", "10.3.3.3", true],
    ["fd00::/8", "fd12::1", true],
    ["fd00::/8", "fe00::1", false],
    ["2001:db8::/32", "2001:db8:ffff::1", true],
    ["2001:db8::1", "2001:0db8:0:0:0:0:0:1", true],
    ["::/0", "::1", true],
    ["::1/128", "::1", true],
    ["fe80::/10", "fe80::1%eth0", true],
    ["1:2:3:4:5:6:7:8/127", "1:2:3:4:5:6:7:9", true],
    ["1:2:3:4:5:6:7:8/128", "1:2:3:4:5:6:7:9", false],
  ];
  for (const [c, ip, want] of table) assert.equal(contains(c, ip), want, `${c} ∋ ${ip}`);
});

Deno.test("cidr: invalid ranges are refused with a message", () => {
  for (
    const s of [
      "10.0.0.0/33",
      "10.0.0/8",
      "10.0.0.256",
      "010.0.0.1",
      "fd00::/129",
      "1::2::3",
      "x",
      "10.0.0.0/",
      "10.0.0.0/08",
      "1:2:3:4:5:6:7:8:9",
      "fe80::1%eth0",
    ]
  ) {
    assert.equal(typeof parseCidr(s), "string", s);
  }
});

Deno.test("an IPv6 range holds no IPv4 address (::/0 is not everyone), unless it lies in ::ffff:0:0/96", () => {
  const ip = (s: string) => {
    const out = new Uint32Array(4);
    assert.ok(parseIpInto(s, out), s);
    return out;
  };
  const cidr = (s: string) => {
    const c = parseCidr(s);
    assert.ok(typeof c !== "string", String(c));
    return c;
  };
  assert.equal(cidrContains(cidr("::/0"), ip("10.1.2.3")), false);
  assert.equal(cidrContains(cidr("::/0"), ip("::ffff:10.1.2.3")), false, "IPv4-mapped is IPv4");
  assert.equal(cidrContains(cidr("::/0"), ip("fd00::1")), true);
  assert.equal(cidrContains(cidr("0.0.0.0/0"), ip("::ffff:10.1.2.3")), true);
  assert.equal(cidrContains(cidr("0.0.0.0/0"), ip("fd00::1")), false);
  assert.equal(cidrContains(cidr("::ffff:10.0.0.0/104"), ip("10.1.2.3")), true);
});

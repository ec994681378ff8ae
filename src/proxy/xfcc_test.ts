import assert from "node:assert/strict";
import type { HeaderList } from "../http/h1_head.ts";
import type { PeerInfo } from "../tls/mtls.ts";
import { setClientCertHeader } from "./xfcc.ts";

const xfcc = (h: HeaderList) =>
  h.filter(([n]) => n === "x-forwarded-client-cert").map(([, v]) => v);

Deno.test("x-forwarded-client-cert: the client's own is removed; inbound mTLS adds Envoy's format", () => {
  const peer: PeerInfo = {
    principal: "spiffe://cluster.local/ns/default/sa/a",
    certHash: "ab12",
    alpn: "istio-http/1.1",
  };
  const self = "spiffe://cluster.local/ns/default/sa/b";
  const h: HeaderList = [["x-forwarded-client-cert", "By=forged"], ["host", "b"]];
  setClientCertHeader(h, true, peer, self);
  assert.deepEqual(xfcc(h), [
    `By=${self};Hash=ab12;Subject="";URI=spiffe://cluster.local/ns/default/sa/a`,
  ]);
  assert.deepEqual(h[0], ["host", "b"]);

  // Outbound, or inbound without a verified peer: removed, nothing added.
  const out: HeaderList = [["x-forwarded-client-cert", "By=forged"]];
  setClientCertHeader(out, false, peer, self);
  assert.deepEqual(xfcc(out), []);
  const plain: HeaderList = [["x-forwarded-client-cert", "By=forged"]];
  setClientCertHeader(plain, true, undefined, self);
  assert.deepEqual(xfcc(plain), []);
});

Deno.test("x-forwarded-client-cert: each peer and each own identity gets its own value, also on repeat", () => {
  const a: PeerInfo = { principal: "spiffe://td/ns/x/sa/a", certHash: "01", alpn: "" };
  const c: PeerInfo = { principal: "spiffe://td/ns/x/sa/c", certHash: undefined, alpn: "" };
  const value = (peer: PeerInfo, self: string | undefined) => {
    const h: HeaderList = [];
    setClientCertHeader(h, true, peer, self);
    return xfcc(h)[0];
  };
  for (let i = 0; i < 2; i++) {
    assert.equal(
      value(a, "spiffe://td/ns/x/sa/b"),
      'By=spiffe://td/ns/x/sa/b;Hash=01;Subject="";URI=spiffe://td/ns/x/sa/a',
    );
    assert.equal(
      value(c, "spiffe://td/ns/x/sa/b"),
      'By=spiffe://td/ns/x/sa/b;Subject="";URI=spiffe://td/ns/x/sa/c',
    );
    // The workload's identity rotated to another one: the header follows.
    assert.equal(
      value(a, "spiffe://td/ns/x/sa/b2"),
      'By=spiffe://td/ns/x/sa/b2;Hash=01;Subject="";URI=spiffe://td/ns/x/sa/a',
    );
    assert.equal(value(a, undefined), 'Hash=01;Subject="";URI=spiffe://td/ns/x/sa/a');
  }
});

/**
 * Unit tests of the capture claim, each under its own socket name in this
 * process's network namespace (no root needed). The namespace tests in
 * tests/e2e/capture_claim_test.ts claim the real name with remora's CLI.
 */

import assert from "node:assert/strict";
import { CaptureBusyError, claimCapture } from "./claim.ts";

function uniqueName(): string {
  return `\0remora-capture-test-${Deno.pid}-${crypto.randomUUID()}`;
}

Deno.test("claimCapture: a second claim is refused naming the holder, until it is released", async () => {
  const name = uniqueName();
  const first = await claimCapture("remora run --capture", { name });
  try {
    const err = await claimCapture("remora iptables install", { name }).then(
      () => undefined,
      (e) => e,
    );
    assert.ok(err instanceof CaptureBusyError, String(err));
    assert.deepEqual(err.holder, { pid: Deno.pid, what: "remora run --capture" });
    assert.match(err.netns ?? "", /^net:\[\d+\]$/);
    assert.match(
      err.message,
      /^remora run --capture \(pid \d+\) owns the capture of this network namespace \(net:\[\d+\]\)$/,
    );
  } finally {
    await first.release();
  }
  const again = await claimCapture("remora iptables install", { name });
  await again.release();
  await again.release();
});

Deno.test("claimCapture: a claim held by a process that was killed is free again", async () => {
  const name = uniqueName();
  const script = `
    import { claimCapture } from ${JSON.stringify(new URL("./claim.ts", import.meta.url).href)};
    await claimCapture("remora run --capture", { name: ${JSON.stringify(name)} });
    console.log("claimed");
    setInterval(() => {}, 1000);
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /claimed/);
    reader.releaseLock();
    const err = await claimCapture("test", { name }).then(() => undefined, (e) => e);
    assert.ok(err instanceof CaptureBusyError);
    assert.equal(err.holder?.pid, child.pid);
    child.kill("SIGKILL");
    await child.status;
    const claim = await claimCapture("test", { name });
    await claim.release();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.stdout.cancel().catch(() => {});
    await child.status;
  }
});

Deno.test("claimCapture: a holder that does not answer is still a holder", async () => {
  const name = uniqueName();
  const silent = Deno.listen({ transport: "unix", path: name });
  try {
    const err = await claimCapture("test", { name }).then(() => undefined, (e) => e);
    assert.ok(err instanceof CaptureBusyError);
    assert.equal(err.holder, undefined);
    assert.match(err.message, /a process that does not say who it is/);
  } finally {
    silent.close();
  }
});

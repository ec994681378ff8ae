import assert from "node:assert/strict";

Deno.test("startMemoryTrim drops startup pages after its delay, and stops", async () => {
  // In a process of its own: other tests in this one may have dropped the pages already.
  const script = `
    import { startMemoryTrim } from ${JSON.stringify(new URL("./memory.ts", import.meta.url).href)};
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))[1]);
    const before = rss();
    const stop = startMemoryTrim({ startupDelaysMs: [10, 50], trimIntervalMs: 20 });
    await new Promise((r) => setTimeout(r, 200));
    stop();
    console.log(JSON.stringify({ before, after: rss() }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const { before, after } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(after < before - 4096, `RSS ${before} kB -> ${after} kB`);
});

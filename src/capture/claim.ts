/**
 * Who may change the capture rules of a network namespace: one claimant at a
 * time. `remora run --capture` claims the capture of its network namespace
 * for as long as it runs; `remora iptables install` and `uninstall` claim it
 * while they change the rules. A second claimant is refused with
 * CaptureBusyError naming the holder, and must touch nothing.
 *
 * A claim is a listening abstract unix socket, `@remora-capture`. Abstract
 * socket names belong to the network namespace, not to a file system: each
 * network namespace has its own (pods on one host do not block each other),
 * the containers of one pod see the same one although they do not share
 * /tmp, a read-only root file system does not matter, and no file
 * permission stands between a root init step and the sidecar's uid. The
 * kernel frees the name when its holder exits however it exits (SIGKILL, a
 * crash), so a restarted sidecar claims it again at once. The holder answers
 * every connection with one JSON line saying who it is (pid, command), which
 * is how a refused claimant can name it.
 *
 * It does not read or change iptables rules; src/capture/iptables.ts does.
 */

import { log, printable } from "../log.ts";

/** The abstract socket name a claim holds (`@remora-capture` in `ss -xlp`). */
export const CLAIM_NAME = "\0remora-capture";

/** The holder's answer when `remora run --capture` holds the claim. */
export const RUN_CAPTURE = "remora run --capture";

/** Who holds a claim, as it says itself. */
export interface CaptureHolder {
  pid: number;
  /** The command holding it, e.g. "remora run --capture". */
  what: string;
}

/** The capture of this network namespace is held by someone else; nothing was changed. */
export class CaptureBusyError extends Error {
  override name = "CaptureBusyError";
  /** Undefined when the holder did not say who it is. */
  readonly holder: CaptureHolder | undefined;
  /** "net:[INODE]" of this network namespace, when it can be read. */
  readonly netns: string | undefined;

  constructor(holder: CaptureHolder | undefined, netns: string | undefined) {
    const who = holder === undefined
      ? `a process that does not say who it is (ss -xlp shows it as @${CLAIM_NAME.slice(1)})`
      : `${holder.what} (pid ${holder.pid})`;
    const where = netns === undefined ? "" : ` (${netns})`;
    super(`${who} owns the capture of this network namespace${where}`);
    this.holder = holder;
    this.netns = netns;
  }
}

/** A held claim; `release()` gives it up (exiting does too). */
export class CaptureClaim {
  readonly #listener: Deno.UnixListener;
  readonly #answering: Promise<void>;
  #released = false;

  constructor(listener: Deno.UnixListener, holder: CaptureHolder) {
    this.#listener = listener;
    // The claim must not keep a process alive that is otherwise done.
    listener.unref();
    this.#answering = _answer(listener, holder);
  }

  /** Gives the claim up; safe to call twice. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    // Referenced again, so that this process waits for the accept to end.
    this.#listener.ref();
    this.#listener.close();
    // The name is free only once the pending accept has let go of the socket.
    await this.#answering;
  }
}

const _ATTEMPTS = 5;
const _ASK_TIMEOUT_MS = 2_000;

/**
 * Claims the capture of this process's network namespace for `what` (e.g.
 * "remora iptables install"). Throws CaptureBusyError when another process
 * holds it. `opts.name` replaces the socket name, for tests.
 */
export async function claimCapture(
  what: string,
  opts: { name?: string } = {},
): Promise<CaptureClaim> {
  const name = opts.name ?? CLAIM_NAME;
  const holder = { pid: Deno.pid, what };
  let busy: CaptureHolder | undefined;
  for (let attempt = 1; attempt <= _ATTEMPTS; attempt++) {
    try {
      return new CaptureClaim(Deno.listen({ transport: "unix", path: name }), holder);
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    }
    const answer = await _ask(name);
    if (answer !== "gone") {
      busy = answer;
      break;
    }
    // The holder let go between our bind and our question: try again.
    await new Promise((r) => setTimeout(r, 20 * attempt));
  }
  throw new CaptureBusyError(busy, _netns());
}

/** Answers every connection with who holds the claim, until the listener closes. */
async function _answer(listener: Deno.UnixListener, holder: CaptureHolder): Promise<void> {
  const line = new TextEncoder().encode(JSON.stringify(holder) + "\n");
  try {
    for await (const conn of listener) {
      conn.write(line).catch(() => {}).finally(() => _close(conn));
    }
  } catch (e) {
    // The name stays held while the listener is open, answered or not.
    if (!(e instanceof Deno.errors.BadResource)) {
      log.warn("the capture claim stopped answering who holds it", { error: String(e) });
    }
  }
}

/** Asks the holder who it is: "gone" when nobody listens any more, undefined when it does not say. */
async function _ask(name: string): Promise<CaptureHolder | "gone" | undefined> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: name });
  } catch (e) {
    const gone = e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound;
    return gone ? "gone" : undefined;
  }
  const timer = setTimeout(() => _close(conn), _ASK_TIMEOUT_MS);
  try {
    const buf = new Uint8Array(512);
    let n = 0;
    while (n < buf.length && !buf.subarray(0, n).includes(0x0a)) {
      const got = await conn.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    const text = new TextDecoder().decode(buf.subarray(0, n));
    const end = text.indexOf("\n");
    const parsed = JSON.parse(end === -1 ? text : text.slice(0, end));
    if (!Number.isInteger(parsed?.pid) || typeof parsed?.what !== "string") return undefined;
    return { pid: parsed.pid, what: printable(parsed.what.slice(0, 100)) };
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
    _close(conn);
  }
}

function _close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** "net:[INODE]" of this process's network namespace, or undefined when it cannot be read. */
function _netns(): string | undefined {
  try {
    return Deno.readLinkSync("/proc/self/ns/net");
  } catch {
    return undefined;
  }
}

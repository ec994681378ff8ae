/**
 * remora's own log: leveled lines on stderr, `time level message key=value`.
 *
 * The level can be changed at run time (admin `POST /logging?level=`). Access logs
 * of requests are a separate concern and do not go through here.
 */

export const LEVELS = ["debug", "info", "warn", "error", "off"] as const;
export type Level = (typeof LEVELS)[number];

let current = 1;

export function setLevel(level: Level): void {
  current = LEVELS.indexOf(level);
}

export function getLevel(): Level {
  return LEVELS[current]!;
}

export function isLevel(s: string): s is Level {
  return (LEVELS as readonly string[]).includes(s);
}

// C0 and C1 control characters and DEL: a line break or a terminal escape in
// text that came from outside (a config, a peer) must not forge log lines.
// deno-lint-ignore no-control-regex
const HAS_CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** `s` with control characters written as escapes (\n, \u001b), for one log line. */
export function printable(s: string): string {
  return HAS_CONTROL.test(s) ? s.replace(CONTROL, escapeControl) : s;
}

function escapeControl(c: string): string {
  if (c === "\n") return "\\n";
  if (c === "\r") return "\\r";
  if (c === "\t") return "\\t";
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

function emit(level: number, msg: string, fields?: Record<string, unknown>): void {
  if (level < current) return;
  let line = `${new Date().toISOString()} ${LEVELS[level]!.padEnd(5)} ${printable(msg)}`;
  if (fields !== undefined) {
    for (const [k, v] of Object.entries(fields)) {
      const s = typeof v === "string" ? v : JSON.stringify(v) ?? "undefined";
      // JSON escapes quotes, spaces' neighbours and control characters alike.
      line += ` ${k}=${/[\s"=]/.test(s) || HAS_CONTROL.test(s) ? printable(JSON.stringify(s)) : s}`;
    }
  }
  console.error(line);
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => emit(0, msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => emit(1, msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => emit(2, msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => emit(3, msg, fields),
  enabled: (level: Level) => LEVELS.indexOf(level) >= current,
};

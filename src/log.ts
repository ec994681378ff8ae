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

function emit(level: number, msg: string, fields?: Record<string, unknown>): void {
  if (level < current) return;
  let line = `${new Date().toISOString()} ${LEVELS[level]!.padEnd(5)} ${msg}`;
  if (fields !== undefined) {
    for (const [k, v] of Object.entries(fields)) {
      const s = typeof v === "string" ? v : JSON.stringify(v);
      line += ` ${k}=${/[\s"=]/.test(s ?? "") ? JSON.stringify(s) : s}`;
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

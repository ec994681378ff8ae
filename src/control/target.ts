/**
 * The control server's address as `--control` gives it (https://HOST:PORT),
 * parsed without loading gRPC, so that flag errors cost nothing. It does not
 * connect (see `client.ts`).
 */

/** A control server address from `--control`: https://HOST:PORT. */
export interface ControlTarget {
  url: string;
  /** host:port as gRPC dials it. */
  address: string;
}

/** Parses `--control`; throws an Error saying what is wrong. */
export function parseControlUrl(raw: string): ControlTarget {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`"${raw}" is not a URL: use https://HOST:PORT`);
  }
  if (u.protocol !== "https:") {
    throw new Error(`"${raw}" must start with https:// (the control channel is always TLS)`);
  }
  if (u.pathname !== "/" && u.pathname !== "" || u.search !== "" || u.username !== "") {
    throw new Error(`"${raw}" must be https://HOST:PORT, without a path`);
  }
  const port = u.port === "" ? "443" : u.port;
  return { url: `https://${u.host}`, address: `${u.hostname}:${port}` };
}

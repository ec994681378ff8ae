import assert from "node:assert/strict";
import { reasonPhrase } from "./status.ts";

Deno.test("reasonPhrase names registered codes, fault injection's favourites included", () => {
  assert.equal(reasonPhrase(418), "I'm a teapot");
  assert.equal(reasonPhrase(425), "Too Early");
  assert.equal(reasonPhrase(503), "Service Unavailable");
  assert.equal(reasonPhrase(299), "Unknown", "an unregistered code");
});

/**
 * Test helper shared by the security tests: YAML documents validated the real
 * way (parse, validateDocuments) and compiled with `compileSecurity`.
 * Named `_test.ts` so it never ships; it holds no tests itself.
 */

import assert from "node:assert/strict";
import { formatConfigError, validateDocuments } from "../config/validate.ts";
import { parseYamlDocuments } from "../config/yaml.ts";
import { compileSecurity, type SecurityTables } from "./compile_security.ts";

export function tables(
  yaml: string,
  workload: { namespace?: string; labels?: Record<string, string> } = {},
  opts: { rootNamespace?: string } = {},
): SecurityTables {
  const parsed = parseYamlDocuments(yaml, "t.yaml");
  assert.deepEqual(parsed.errors, [], "test YAML must parse");
  const result = validateDocuments(parsed.docs);
  if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
  return compileSecurity(
    result.resources,
    { namespace: workload.namespace ?? "default", labels: workload.labels ?? { app: "b" } },
    opts,
  );
}

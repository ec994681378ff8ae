/**
 * Conformance: Istio's own Bookinfo traffic samples
 * (../shared/conformance/istio-bookinfo/, unchanged from istio/istio) must
 * validate as users apply them. A file whose routes name subsets is validated
 * together with destination-rule-all.yaml, unless it brings its own
 * DestinationRule (fault-injection-details-v1.yaml does; adding the shared
 * rules would define DestinationRule "details" twice). Everything must be
 * accepted, destination-rule-all-mtls.yaml's ISTIO_MUTUAL included (its
 * clusters then speak mTLS). Skipped, with a message, when the folder is
 * absent.
 */

import assert from "node:assert/strict";
import { compile } from "./compile.ts";
import { formatConfigError, validateDocuments } from "./validate.ts";
import { parseYamlDocuments, type YamlDocument } from "./yaml.ts";

const DIR = new URL("../../../shared/conformance/istio-bookinfo/", import.meta.url);
const SHARED_RULES = "destination-rule-all.yaml";
const MTLS_RULES = "destination-rule-all-mtls.yaml";

function listYaml(): string[] | undefined {
  try {
    return [...Deno.readDirSync(DIR)]
      .filter((e) => e.isFile && /\.ya?ml$/.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

function docsOf(name: string): YamlDocument[] {
  const parsed = parseYamlDocuments(Deno.readTextFileSync(new URL(name, DIR)), name);
  assert.deepEqual(parsed.errors, [], `${name} must parse`);
  return parsed.docs;
}

const files = listYaml();

if (files === undefined) {
  Deno.test({
    name: `conformance: Istio Bookinfo samples (skipped: ${DIR.pathname} not found)`,
    ignore: true,
    fn() {},
  });
} else {
  Deno.test("conformance: the Bookinfo sample folder holds the expected files", () => {
    assert.ok(files.includes(SHARED_RULES) && files.includes(MTLS_RULES), files.join(", "));
    assert.ok(files.length >= 10, `found ${files.length} files`);
  });

  for (const name of files) {
    Deno.test(`conformance: ${name}`, () => {
      const docs = docsOf(name);
      const namesSubsets = JSON.stringify(docs.map((d) => d.value)).includes('"subset"');
      const ownRules = docs.some((d) => (d.value as { kind?: unknown }).kind === "DestinationRule");
      const set = namesSubsets && !ownRules && name !== SHARED_RULES
        ? [...docs, ...docsOf(SHARED_RULES)]
        : docs;
      const result = validateDocuments(set);
      if (!result.ok) assert.fail(result.errors.map(formatConfigError).join("\n"));
      {
        assert.equal(result.resources.length, set.length);
        const config = compile(result.resources, { source: name });
        if (name === MTLS_RULES) {
          // With routes that use its subsets, every cluster speaks mTLS.
          const withRoutes = validateDocuments([...docs, ...docsOf("virtual-service-all-v1.yaml")]);
          if (!withRoutes.ok) assert.fail(withRoutes.errors.map(formatConfigError).join("\n"));
          const clusters = [...compile(withRoutes.resources, { source: name }).clusters.values()];
          assert.equal(clusters.length, 4);
          for (const c of clusters) assert.equal(c.tlsMode, "ISTIO_MUTUAL", c.name);
        }
        for (const r of result.resources) {
          if (r.kind !== "VirtualService") continue;
          const vhost = config.hosts.get(r.spec.hosts[0]!.split(".")[0]!);
          assert.equal(
            vhost?.virtualService,
            `default/${r.metadata.name}`,
            "short name routes by the VirtualService",
          );
        }
      }
    });
  }
}

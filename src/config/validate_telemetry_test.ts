import assert from "node:assert/strict";
import { loadConfigTexts } from "./source.ts";
import { formatConfigError } from "./validate.ts";

function load(text: string) {
  return loadConfigTexts([{ file: "t.yaml", text }], "test");
}

function errors(text: string): string[] {
  const r = load(text);
  assert.ok(!r.ok, "expected errors");
  return r.errors.map(formatConfigError);
}

Deno.test("Telemetry: supported fields compile to per-side policies", () => {
  const r = load(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  tracing:
  - match: { mode: SERVER }
    providers: [{ name: zipkin }]
    randomSamplingPercentage: 12.5
  - providers: [{ name: otel }]
    disableSpanReporting: true
  accessLogging:
  - providers: [{ name: envoy }]
    match: { mode: CLIENT }
`);
  assert.ok(r.ok, r.ok ? "" : r.errors.map(formatConfigError).join("\n"));
  const t = r.config.telemetry;
  assert.deepEqual(t.destination.tracing, {
    providers: ["zipkin"],
    randomSamplingPercentage: 12.5,
    disableSpanReporting: false,
  });
  assert.deepEqual(t.source.tracing, {
    providers: ["otel"],
    randomSamplingPercentage: undefined,
    disableSpanReporting: true,
  });
  assert.deepEqual(t.source.accessLogging, { providers: ["envoy"], disabled: false });
  assert.equal(t.destination.accessLogging, undefined);
});

Deno.test("Telemetry: v1alpha1 is accepted; no Telemetry means no policy", () => {
  const r = load(`apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: { name: t }
spec: { tracing: [{ randomSamplingPercentage: 100 }] }
`);
  assert.ok(r.ok);
  assert.equal(r.config.telemetry.source.tracing?.randomSamplingPercentage, 100);
  const none = load(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: s }
spec: { outboundTrafficPolicy: { mode: ALLOW_ANY } }
`);
  assert.ok(none.ok);
  assert.equal(none.config.telemetry.source.tracing, undefined);
});

Deno.test("Telemetry: unsupported fields and bad values are errors naming their path", () => {
  const errs = errors(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: t }
spec:
  selector: { matchLabels: { app: a } }
  metrics: [{ providers: [{ name: prometheus }] }]
  tracing:
  - randomSamplingPercentage: 150
    customTags: { env: { literal: { value: prod } } }
    providers: [{ name: jaeger }]
  accessLogging:
  - filter: { expression: "response.code >= 400" }
    providers: [{ name: envoy }, { name: otel }]
`);
  const has = (s: string) =>
    assert.ok(errs.some((e) => e.includes(s)), `${s} in\n${errs.join("\n")}`);
  has("spec.selector: not supported");
  has("spec.metrics: not supported");
  has("spec.tracing[0].randomSamplingPercentage: expected a number 0..100, got 150");
  has("spec.tracing[0].customTags: not supported yet");
  has('spec.tracing[0].providers[0].name: unknown tracing provider "jaeger"');
  has("spec.accessLogging[0].filter: not supported");
  has("spec.accessLogging[0].providers: only one provider per rule");
});

Deno.test("Telemetry: wrong API group and a second Telemetry are refused", () => {
  has(
    errors(`apiVersion: networking.istio.io/v1
kind: Telemetry
metadata: { name: t }
spec: {}
`),
    'apiVersion: expected telemetry.istio.io/v1 or v1alpha1, got "networking.istio.io/v1"',
  );
  has(
    errors(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: a }
spec: {}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: b }
spec: {}
`),
    "only one Telemetry is allowed",
  );
});

function has(errs: string[], s: string): void {
  assert.ok(errs.some((e) => e.includes(s)), `${s} in\n${errs.join("\n")}`);
}

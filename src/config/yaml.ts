/**
 * Multi-document YAML parsing: the only module in remora that imports the
 * `yaml` package.
 *
 * `parseYamlDocuments` splits a file's text at `---` into plain JavaScript
 * values, each with its 0-based document index and the 1-based line where its
 * content starts; empty documents (a trailing `---`, comments only) are
 * skipped but still counted, so indexes match what a reader counts in the
 * file. Syntax errors (including duplicate keys) are returned with file, document
 * index and line, never thrown. It does not know Istio: checking what the
 * values mean is `validate.ts`'s job.
 */

import YAML from "yaml";

/** One non-empty document of a YAML stream. */
export interface YamlDocument {
  file: string;
  /** 0-based index of the document in its file, counting empty ones. */
  index: number;
  /** 1-based line where the document's content starts. */
  line: number;
  value: unknown;
}

/** A YAML syntax error, located. */
export interface YamlError {
  file: string;
  index: number;
  /** 1-based line of the error. */
  line: number;
  message: string;
}

export interface ParsedYaml {
  docs: YamlDocument[];
  errors: YamlError[];
}

/** Parses every document of `text`; `file` only labels results and errors. */
export function parseYamlDocuments(text: string, file: string): ParsedYaml {
  const lineCounter = new YAML.LineCounter();
  const parsed = YAML.parseAllDocuments(text, { lineCounter, prettyErrors: false });
  const all = Array.isArray(parsed) ? parsed : [];
  const docs: YamlDocument[] = [];
  const errors: YamlError[] = [];
  all.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        errors.push({
          file,
          index,
          line: lineCounter.linePos(e.pos[0]).line,
          message: _firstLine(e.message),
        });
      }
      return;
    }
    const start = doc.contents?.range?.[0] ?? doc.range[0];
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      errors.push({
        file,
        index,
        line: lineCounter.linePos(start).line,
        message: _firstLine(e instanceof Error ? e.message : String(e)),
      });
      return;
    }
    if (value === null || value === undefined) return;
    docs.push({ file, index, line: lineCounter.linePos(start).line, value });
  });
  return { docs, errors };
}

/** Keeps the message's first line, without the library's "at line L, column C" suffix. */
function _firstLine(message: string): string {
  const first = message.split("\n")[0] ?? message;
  const trimmed = first.replace(/ at line \d+, column \d+:?$/, "").replace(/[.:]$/, "");
  return trimmed.charAt(0).toLowerCase() + trimmed.slice(1);
}

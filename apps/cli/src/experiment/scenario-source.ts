import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import {
  type Scenario,
  ScenarioError,
  builtinDocument,
  isBuiltin,
  parseScenario,
} from '#experiments';
import { parse as parseYaml } from 'yaml';

// Where a scenario comes from: a YAML or JSON file, or the name of a built-in. Its hash is of
// the scenario as validated, so that two files that differ only in layout or defaults written
// out hash the same.

export interface LoadedScenario {
  scenario: Scenario;
  /** The scenario's name, or the built-in's. */
  name: string;
  /** What the user named: a path or a built-in's name. */
  source: string;
  hash: string;
}

/** Reads a scenario file's text: YAML when the name ends in .yaml or .yml, JSON otherwise. */
export function parseScenarioText(text: string, fileName: string): unknown {
  const yaml = /\.ya?ml$/i.test(fileName);
  try {
    return yaml ? (parseYaml(text) as unknown) : (JSON.parse(text) as unknown);
  } catch (error) {
    const first = (error as Error).message.split('\n')[0] ?? '';
    throw new ScenarioError(`${basename(fileName)} is not ${yaml ? 'YAML' : 'JSON'}: ${first}`);
  }
}

/** A path that exists is read as a file; otherwise the name must be a built-in. */
export function loadScenario(source: string): LoadedScenario {
  let document: unknown;
  if (existsSync(source)) {
    document = parseScenarioText(readFileSync(source, 'utf8'), source);
  } else if (isBuiltin(source)) {
    document = builtinDocument(source);
  } else {
    throw new ScenarioError(
      `no file or built-in scenario "${source}" (see \`tdx-fleet experiment list\`)`,
    );
  }
  const scenario = parseScenario(document);
  return { scenario, name: scenario.name, source, hash: scenarioHash(scenario) };
}

/** sha256 of the scenario in canonical JSON (object keys sorted). */
export function scenarioHash(scenario: Scenario): string {
  return createHash('sha256').update(canonicalJson(scenario)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

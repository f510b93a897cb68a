import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ExperimentResult, RESULT_SCHEMA } from '#experiments';
import { readChartLibrary } from './chart-library.js';
import { renderReportHtml } from './report-html.js';
import { renderSummaryMarkdown } from './summary-markdown.js';

// A result directory: result.json (the numbers, versioned), summary.md and report.html (one
// self-contained page with its charts). The JSON is written with sorted-as-built keys and a final
// newline, so that the same run gives the same bytes.

/** A result file that cannot be read as a result. */
export class ResultFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ResultFileError';
  }
}

export interface WrittenResult {
  directory: string;
  resultJson: string;
  summaryMarkdown: string;
  reportHtml: string;
}

/** result.json's text. */
export function resultJsonText(result: ExperimentResult): string {
  return `${JSON.stringify(result, null, 2)}\n`;
}

/** Writes the three files into `directory` (made if missing). */
export async function writeResultDirectory(
  directory: string,
  result: ExperimentResult,
): Promise<WrittenResult> {
  await mkdir(directory, { recursive: true });
  const written: WrittenResult = {
    directory,
    resultJson: join(directory, 'result.json'),
    summaryMarkdown: join(directory, 'summary.md'),
    reportHtml: join(directory, 'report.html'),
  };
  await writeFile(written.resultJson, resultJsonText(result));
  await writeFile(written.summaryMarkdown, renderSummaryMarkdown(result));
  await writeFile(written.reportHtml, renderReportHtml(result, await readChartLibrary()));
  return written;
}

/** Reads a result.json (or a result directory) and checks its schema version. */
export async function readResultFile(path: string): Promise<ExperimentResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') return readResultFile(join(path, 'result.json'));
    throw new ResultFileError(`cannot read ${path}: ${(error as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ResultFileError(`${path} is not JSON: ${(error as Error).message}`);
  }
  const schema = (value as { schema?: unknown } | null)?.schema;
  if (schema !== RESULT_SCHEMA) {
    throw new ResultFileError(
      `${path} is not an experiment result of this version (schema ${JSON.stringify(schema ?? null)}, expected ${RESULT_SCHEMA})`,
    );
  }
  return value as ExperimentResult;
}

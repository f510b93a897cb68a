// summary.md: an experiment's result as Markdown, to read in a terminal or a pull request. The
// tables are report-tables.ts's, the same as report.html's.
import type { ExperimentResult, RunResult } from '#experiments';
import { markdownCode, markdownInline, markdownTable, markdownText } from './markdown.js';
import { runLabel } from './result-runs.js';
import {
  abortSentence,
  agreementTable,
  causesTable,
  groupsTable,
  headlineGlossary,
  kernelEffectsTable,
  outcomeSentence,
  phasesTable,
  provenanceFacts,
  referencesTable,
  skippedTable,
  thresholdsTable,
  variantsTable,
} from './report-tables.js';

function runSection(run: RunResult): string {
  return [
    `### Run ${markdownCode(runLabel(run))} (seed ${run.seed})`,
    markdownTable(phasesTable(run.phases), 'No phases ran.'),
    '#### Downtime by phase and VM group',
    markdownTable(groupsTable(run.groups), 'No operations.'),
    '#### Waits by cause',
    markdownTable(causesTable(run.waits, true), 'No step waited.'),
    '#### Failures by cause',
    markdownTable(causesTable(run.failures, false), 'No operation failed.'),
  ].join('\n\n');
}

/** summary.md for a result. */
export function renderSummaryMarkdown(result: ExperimentResult): string {
  const facts = provenanceFacts(result).map(
    ([label, value]) => `- ${label}: ${markdownInline(value)}`,
  );
  const sections = [
    `# Experiment ${markdownCode(result.provenance.scenario)}`,
    facts.join('\n'),
    `**${markdownText(outcomeSentence(result))}**\n\n${markdownText(abortSentence(result))}`,
    '## Variants',
    'Headline metrics: the mean over the repetitions, with its 95% confidence interval in brackets when there were several.',
    markdownTable(variantsTable(result), 'No variant ran.'),
    headlineGlossary()
      .map(([metric, description]) => `- ${markdownCode(metric)}: ${markdownText(description)}`)
      .join('\n'),
    '## Thresholds',
    markdownTable(thresholdsTable(result), 'The scenario sets no thresholds.'),
  ];
  if (result.runs.some((run) => run.references.length > 0)) {
    sections.push(
      '## Published figures',
      "The scenario's published figures beside this run's; the difference is relative to the published one.",
      markdownTable(referencesTable(result), 'No figure.'),
    );
  }
  if (result.kernelEffects.length > 0) {
    sections.push(
      '## What each kernel feature changes',
      'Mean change between variants that differ in that switch alone (to minus from); negative is less.',
      markdownTable(kernelEffectsTable(result), 'No pair.'),
    );
  }
  if (result.skipped.length > 0) {
    sections.push('## Skipped variants', markdownTable(skippedTable(result), 'None.'));
  }
  if (result.agreement !== null) {
    sections.push(
      '## Live against offline',
      'The same scenario on the daemon and on the offline engine; the difference is relative to offline.',
      markdownTable(agreementTable(result.agreement), 'No metric compared.'),
    );
  }
  sections.push('## Runs', ...result.runs.map(runSection));
  return `${sections.join('\n\n')}\n`;
}

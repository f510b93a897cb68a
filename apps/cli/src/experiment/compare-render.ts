// A comparison of two experiment results as a terminal table, Markdown (for a pull request or an
// issue) or a self-contained HTML page. The three show the same cells, built once here.
import type { ComparedResult, Comparison, MetricComparison } from '#experiments';
import { formatMetric, formatMetricChange, formatRelativeChange } from './format-units.js';

interface Column {
  header: string;
  /** Numbers line up on the right, words on the left. */
  align: 'left' | 'right';
  cell: (row: MetricComparison) => string;
}

const COLUMNS: readonly Column[] = [
  { header: 'metric', align: 'left', cell: (row) => row.metric },
  { header: 'runs a/b', align: 'right', cell: (row) => `${row.a.runs}/${row.b.runs}` },
  { header: 'a', align: 'right', cell: (row) => formatMetric(row.metric, row.a.mean) },
  { header: 'b', align: 'right', cell: (row) => formatMetric(row.metric, row.b.mean) },
  {
    header: 'change',
    align: 'right',
    cell: (row) => formatMetricChange(row.metric, row.change.absolute),
  },
  {
    header: 'relative',
    align: 'right',
    cell: (row) =>
      row.change.relative === null ? 'from 0' : formatRelativeChange(row.change.relative),
  },
  {
    header: '95% CI of change',
    align: 'right',
    cell: (row) =>
      row.interval === null
        ? 'n/a'
        : `[${formatMetricChange(row.metric, row.interval.low)}, ` +
          `${formatMetricChange(row.metric, row.interval.high)}]`,
  },
  { header: 'p', align: 'right', cell: (row) => formatPValue(row.pValue) },
  {
    header: 'significant',
    align: 'left',
    cell: (row) => row.untested ?? (row.significant ? 'yes' : 'no'),
  },
  { header: 'verdict', align: 'left', cell: (row) => row.verdict },
];

const VERDICT_COLUMN = COLUMNS.length - 1;

/** Terminal ANSI colours, only for the verdict. */
const ANSI = { better: '\u001b[32m', worse: '\u001b[31m', reset: '\u001b[0m' } as const;

/** Aligned plain-text columns; `colour` paints better green and worse red (ANSI codes). */
export function compareTable(comparison: Comparison, options: { colour?: boolean } = {}): string {
  const lines = [
    `a: ${describeResult(comparison.a)}`,
    `b: ${describeResult(comparison.b)}`,
    `changes are b - a; intervals and p-values drawn with seed ${comparison.seed}`,
  ];
  if (comparison.notes.length > 0) {
    lines.push('', 'notes:', ...comparison.notes.map((note) => `  - ${note}`));
  }
  for (const variant of comparison.variants) {
    lines.push('', `variant ${variant.variant}`);
    if (variant.metrics.length === 0) {
      lines.push('  no metric in both results');
      continue;
    }
    const grid = [
      COLUMNS.map((column) => column.header),
      ...variant.metrics.map((row) => COLUMNS.map((column) => column.cell(row))),
    ];
    const widths = COLUMNS.map((_, index) =>
      Math.max(...grid.map((cells) => (cells[index] ?? '').length)),
    );
    grid.forEach((cells, rowIndex) => {
      const row = rowIndex === 0 ? undefined : variant.metrics[rowIndex - 1];
      const padded = COLUMNS.map((column, index) => {
        const text = cells[index] ?? '';
        const width = widths[index] ?? 0;
        // The last column is not padded, so lines carry no trailing spaces.
        if (index === VERDICT_COLUMN) return paint(text, row, options.colour === true);
        return column.align === 'right' ? text.padStart(width) : text.padEnd(width);
      });
      lines.push(`  ${padded.join('  ')}`);
    });
  }
  lines.push(...unmatchedLines(comparison));
  return `${lines.join('\n')}\n`;
}

/** GitHub-flavoured Markdown: a table of the two results' origins, notes, a table per variant. */
export function compareMarkdown(comparison: Comparison): string {
  const cell = (text: string) => escapeMarkdown(text);
  const lines = [
    '# Experiment comparison',
    '',
    '| | a | b |',
    '| --- | --- | --- |',
    ...originRows(comparison).map(
      ([label, a, b]) => `| ${cell(label)} | ${cell(a)} | ${cell(b)} |`,
    ),
    '',
    `Changes are b - a. Intervals and p-values drawn with seed ${comparison.seed}.`,
  ];
  if (comparison.notes.length > 0) {
    lines.push('', '## Notes', '', ...comparison.notes.map((note) => `- ${cell(note)}`));
  }
  for (const variant of comparison.variants) {
    lines.push('', `## Variant ${cell(variant.variant)}`, '');
    if (variant.metrics.length === 0) {
      lines.push('No metric in both results.');
      continue;
    }
    lines.push(
      `| ${COLUMNS.map((column) => cell(column.header)).join(' | ')} |`,
      `| ${COLUMNS.map((column) => (column.align === 'right' ? '---:' : ':---')).join(' | ')} |`,
      ...variant.metrics.map(
        (row) => `| ${COLUMNS.map((column) => cell(column.cell(row))).join(' | ')} |`,
      ),
    );
  }
  const unmatched = unmatchedLines(comparison).filter((line) => line !== '');
  if (unmatched.length > 0) {
    lines.push('', '## Unmatched variants', '', ...unmatched.map((line) => `- ${cell(line)}`));
  }
  return `${lines.join('\n')}\n`;
}

/** A self-contained HTML page: tables only, inline CSS, no script. */
export function compareHtml(comparison: Comparison): string {
  const title = `Experiment comparison: ${comparison.a.scenario} vs ${comparison.b.scenario}`;
  const body = [
    `<h1>${escapeHtml(title)}</h1>`,
    '<table>',
    '<thead><tr><th></th><th>a</th><th>b</th></tr></thead>',
    '<tbody>',
    ...originRows(comparison).map(
      ([label, a, b]) =>
        `<tr><th>${escapeHtml(label)}</th><td>${escapeHtml(a)}</td><td>${escapeHtml(b)}</td></tr>`,
    ),
    '</tbody>',
    '</table>',
    `<p>Changes are b &minus; a. Intervals and p-values drawn with seed ${comparison.seed}.</p>`,
  ];
  if (comparison.notes.length > 0) {
    body.push(
      '<h2>Notes</h2>',
      '<ul class="notes">',
      ...comparison.notes.map((note) => `<li>${escapeHtml(note)}</li>`),
      '</ul>',
    );
  }
  for (const variant of comparison.variants) {
    body.push(`<h2>Variant ${escapeHtml(variant.variant)}</h2>`);
    if (variant.metrics.length === 0) {
      body.push('<p>No metric in both results.</p>');
      continue;
    }
    body.push(
      '<table>',
      `<thead><tr>${COLUMNS.map((column) => `<th class="${column.align}">${escapeHtml(column.header)}</th>`).join('')}</tr></thead>`,
      '<tbody>',
      ...variant.metrics.map(
        (row) =>
          `<tr class="${row.verdict}">${COLUMNS.map(
            (column) => `<td class="${column.align}">${escapeHtml(column.cell(row))}</td>`,
          ).join('')}</tr>`,
      ),
      '</tbody>',
      '</table>',
    );
  }
  const unmatched = unmatchedLines(comparison).filter((line) => line !== '');
  if (unmatched.length > 0) {
    body.push(
      '<h2>Unmatched variants</h2>',
      '<ul>',
      ...unmatched.map((line) => `<li>${escapeHtml(line)}</li>`),
      '</ul>',
    );
  }
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f3f3f3; text-align: left; }
.right { text-align: right; font-variant-numeric: tabular-nums; }
.left { text-align: left; }
tr.better td:last-child { color: #1a7f37; font-weight: bold; }
tr.worse td:last-child { color: #cf222e; font-weight: bold; }
.notes li { color: #9a6700; }
</style>
</head>
<body>
${body.join('\n')}
</body>
</html>
`;
}

function describeResult(result: ComparedResult): string {
  const revision = result.gitRevision === null ? '' : ` (${result.gitRevision.slice(0, 12)})`;
  return (
    `${result.scenario} [${result.scenarioHash.slice(0, 12)}] on ${result.target}, ` +
    `seed ${result.seed} x ${result.repeat}, version ${result.version}${revision}`
  );
}

/** Label, a's value, b's value: where each result came from. */
function originRows(comparison: Comparison): [string, string, string][] {
  const { a, b } = comparison;
  return [
    ['scenario', a.scenario, b.scenario],
    ['scenario hash', a.scenarioHash.slice(0, 12), b.scenarioHash.slice(0, 12)],
    ['target', a.target, b.target],
    ['seed', String(a.seed), String(b.seed)],
    ['repetitions', String(a.repeat), String(b.repeat)],
    ['version', a.version, b.version],
    ['git revision', a.gitRevision ?? 'unknown', b.gitRevision ?? 'unknown'],
  ];
}

function unmatchedLines(comparison: Comparison): string[] {
  const { onlyInA, onlyInB } = comparison.unmatched;
  const lines: string[] = [];
  if (onlyInA.length > 0) lines.push(`only in a (not compared): ${onlyInA.join(', ')}`);
  if (onlyInB.length > 0) lines.push(`only in b (not compared): ${onlyInB.join(', ')}`);
  return lines.length > 0 ? ['', ...lines] : [];
}

function formatPValue(pValue: number | null): string {
  if (pValue === null) return 'n/a';
  if (pValue < 0.0001) return '<0.0001';
  return String(Number(pValue.toPrecision(2)));
}

function paint(text: string, row: MetricComparison | undefined, colour: boolean): string {
  if (!colour || row === undefined || row.verdict === 'same') return text;
  return `${ANSI[row.verdict]}${text}${ANSI.reset}`;
}

function escapeMarkdown(text: string): string {
  return text.replace(/[\\`*_<>|]/g, (character) => `\\${character}`);
}

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (character) =>
      ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[character] ??
      character,
  );
}

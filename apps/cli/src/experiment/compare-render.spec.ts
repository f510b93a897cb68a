/**
 * The comparison's renderers: the terminal table lines up and has no colour unless asked, the
 * Markdown and HTML carry the same cells, and values read in their units.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareResults } from '#experiments';
import { resultOf } from '../../../../libs/experiments/src/testing/comparable-result.js';
import { compareHtml, compareMarkdown, compareTable } from './compare-render.js';
import { formatMetricChange, formatRelativeChange } from './format-units.js';

const GIB = 1024 ** 3;

const comparison = compareResults(
  resultOf({
    baseline: {
      'downtime.p99': [100, 102, 98, 101, 99],
      makespan: [500, 510, 490, 505, 495],
      'memory.headroomBytes': [2, 2, 2, 2, 2].map((gib) => gib * GIB),
      'operations.failed': [3],
    },
    'only-before': { makespan: [1, 2] },
  }),
  resultOf(
    {
      baseline: {
        'downtime.p99': [130, 128, 131, 129, 132],
        makespan: [503, 497, 508, 494, 500],
        'memory.headroomBytes': [2, 2, 2, 2, 2].map((gib) => gib * GIB),
        'operations.failed': [5],
      },
      '<b>new</b>': { makespan: [1, 2] },
    },
    { scenarioHash: 'b'.repeat(64) },
  ),
);

/** The table's line for a metric, split on runs of two or more spaces. */
function cellsOf(table: string, metric: string): string[] {
  const line = table.split('\n').find((candidate) => candidate.trim().startsWith(`${metric} `));
  assert.ok(line, `a line for ${metric}`);
  return line.trim().split(/ {2,}/);
}

describe('compareTable', () => {
  const table = compareTable(comparison);

  it('gives each metric its values, change, interval, p-value, significance and verdict', () => {
    const downtime = cellsOf(table, 'downtime.p99');
    assert.deepEqual(downtime.slice(0, 6), [
      'downtime.p99',
      '5/5',
      '100 s',
      '130 s',
      '+30 s',
      '+30%',
    ]);
    assert.match(downtime[6] ?? '', /^\[\+\d+(\.\d+)? s, \+\d+(\.\d+)? s\]$/);
    assert.deepEqual(downtime.slice(7), ['0.0079', 'yes', 'worse']);

    const makespan = cellsOf(table, 'makespan');
    assert.deepEqual(makespan.slice(-2), ['no', 'same']);

    const headroom = cellsOf(table, 'memory.headroomBytes');
    assert.deepEqual(headroom.slice(2, 5), ['2 GiB', '2 GiB', '0 B']);
  });

  it('says n/a for a metric with one run each', () => {
    assert.deepEqual(cellsOf(table, 'operations.failed').slice(1), [
      '1/1',
      '3',
      '5',
      '+2',
      '+66.7%',
      '[+2, +2]',
      'n/a',
      'n/a: one run each',
      'same',
    ]);
  });

  it('lines up the columns: words on the left edge, numbers on the right', () => {
    const alignments = ['left', ...Array<string>(7).fill('right'), 'left', 'left'];
    const spans = (line: string) =>
      [...line.matchAll(/\S+(?: \S+)*/g)].map((match) => ({
        start: match.index,
        end: match.index + match[0].length,
      }));
    const lines = table.split('\n');
    const start = lines.findIndex((line) => line.trim().startsWith('metric '));
    const [header, ...rows] = lines.slice(start, start + 5).map(spans);
    assert.equal(header?.length, alignments.length);
    for (const row of rows) {
      assert.equal(row.length, alignments.length);
      alignments.forEach((alignment, column) => {
        const edge = alignment === 'left' ? 'start' : 'end';
        assert.equal(row[column]?.[edge], header?.[column]?.[edge], `column ${column}`);
      });
    }
    assert.ok(lines.every((line) => line === line.trimEnd()));
  });

  it('shows notes and unmatched variants', () => {
    assert.match(table, /notes:\n {2}- different scenarios/);
    assert.match(table, /only in a \(not compared\): only-before/);
    assert.match(table, /only in b \(not compared\): <b>new<\/b>/);
  });

  it('has no colour codes unless asked, and only those when asked', () => {
    assert.ok(!table.includes('\u001b['));
    const coloured = compareTable(comparison, { colour: true });
    assert.ok(coloured.includes('\u001b[31mworse\u001b[0m'));
    // eslint-disable-next-line no-control-regex
    assert.equal(coloured.replace(/\u001b\[\d+m/g, ''), table);
  });
});

describe('compareMarkdown', () => {
  const markdown = compareMarkdown(comparison);

  it('has a table per variant with the same cells', () => {
    assert.match(markdown, /^# Experiment comparison\n/);
    assert.match(markdown, /## Variant baseline\n\n\| metric \| runs a\/b \| a \| b \| change \|/);
    assert.match(markdown, /\| :--- \| ---: \| ---: \|/);
    assert.match(
      markdown,
      /\| downtime\.p99 \| 5\/5 \| 100 s \| 130 s \| \+30 s \| \+30% \| .* \| 0\.0079 \| yes \| worse \|/,
    );
    assert.match(
      markdown,
      /\| operations\.failed \| .* \| \[\+2, \+2\] \| n\/a \| n\/a: one run each \| same \|/,
    );
  });

  it('lists notes and escapes what Markdown would read', () => {
    assert.match(markdown, /## Notes\n\n- different scenarios/);
    assert.match(markdown, /- only in b \(not compared\): \\<b\\>new\\<\/b\\>/);
  });
});

describe('compareHtml', () => {
  const html = compareHtml(comparison);

  it('is a self-contained page of tables', () => {
    assert.match(html, /^<!doctype html>\n<html lang="en">/);
    assert.match(html, /<style>[\s\S]*<\/style>/);
    assert.ok(!/<script|<link|src=/.test(html));
    assert.equal(html.match(/<table>/g)?.length, 2);
  });

  it('marks verdicts and escapes names', () => {
    assert.match(html, /<tr class="worse"><td class="left">downtime\.p99<\/td>/);
    assert.match(html, /<td class="left">n\/a: one run each<\/td><td class="left">same<\/td>/);
    assert.ok(html.includes('&lt;b&gt;new&lt;/b&gt;'));
    assert.ok(!html.includes('<b>new</b>'));
  });
});

describe('changes', () => {
  it('signs changes, with fractions in percentage points', () => {
    assert.equal(formatMetricChange('downtime.p99', -1.5), '-1.5 s');
    assert.equal(formatMetricChange('memory.free.minFraction', 0.025), '+2.5 pp');
    assert.equal(formatMetricChange('operations.failed', 0), '0');
    assert.equal(formatRelativeChange(0.125), '+12.5%');
    assert.equal(formatRelativeChange(-0.5), '-50%');
  });
});

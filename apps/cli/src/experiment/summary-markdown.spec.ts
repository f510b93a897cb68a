import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HEADLINE_METRICS } from '#experiments';
import { renderSummaryMarkdown } from './summary-markdown.js';
import { buildResultFixture } from './testing/result-fixture.js';

/** The table whose header row starts with `firstHeader`, as rows of trimmed cells. */
function tableAfter(markdown: string, firstHeader: string): string[][] {
  const lines = markdown.split('\n');
  const start = lines.findIndex((line) => line.startsWith(`| ${firstHeader} |`));
  assert.ok(start >= 0, `a table starting with ${firstHeader}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start)) {
    if (!line.startsWith('|')) break;
    // Split on pipes that are not escaped.
    rows.push(
      line
        .slice(2, -2)
        .split(/ (?<!\\)\| /)
        .map((cell) => cell.trim()),
    );
  }
  return rows;
}

describe('renderSummaryMarkdown', () => {
  const result = buildResultFixture();
  const markdown = renderSummaryMarkdown(result);

  it('names the scenario, target, seed, repeat, version, revision and scenario hash', () => {
    assert.match(markdown, /^# Experiment `reboot-storm`$/m);
    for (const fact of [
      '- Target: offline',
      '- Seed: 42',
      '- Repeat: 2',
      '- Version: 0.1.0',
      '- Git revision: `4bcbe63`',
      `- Scenario hash: \`${result.provenance.scenarioHash}\``,
    ]) {
      assert.ok(markdown.includes(`${fact}\n`), fact);
    }
  });

  it('says whether it passed and whether it was aborted', () => {
    assert.match(markdown, /^\*\*FAILED: 4 of 16 threshold checks failed, in 2 of 4 runs/m);
    assert.match(markdown, /^Not aborted/m);
    const aborted = renderSummaryMarkdown({
      ...result,
      aborted: { run: 'strategy=cold #1', threshold: 'memory.free.minFraction >= 0.1' },
    });
    assert.match(
      aborted,
      /^ABORTED after run strategy=cold #1: threshold "memory.free.minFraction >= 0.1" failed/m,
    );
    const passing = buildResultFixture();
    passing.passed = true;
    assert.match(renderSummaryMarkdown(passing), /^\*\*PASSED: every threshold held/m);
  });

  it('tables the variants against every headline metric, with the mean and its 95% CI', () => {
    const [header, , cold, reuse] = tableAfter(markdown, 'Variant');
    assert.deepEqual(header, ['Variant', 'strategy', 'Runs', ...HEADLINE_METRICS, 'Thresholds']);
    assert.deepEqual(cold, [
      '`strategy=cold`',
      '`cold`',
      '2',
      '159 s \\[159 s, 159 s\\]',
      '302 s \\[301 s, 303 s\\]',
      '397 s \\[396 s, 398 s\\]',
      '1,080 s \\[1,076 s, 1,084 s\\]',
      '4 \\[4, 4\\]',
      '18.5% \\[18.5%, 18.5%\\]',
      '1,556 GiB \\[1,554 GiB, 1,557 GiB\\]',
      'FAIL',
    ]);
    assert.equal(reuse?.at(-1), 'pass');
    assert.equal(reuse?.[3], '72.8 s \\[72.1 s, 73.6 s\\]');
  });

  it('shows one repetition without an interval', () => {
    const single = renderSummaryMarkdown(buildResultFixture({ repetitions: 1 }));
    const [, , cold] = tableAfter(single, 'Variant');
    assert.deepEqual(cold?.slice(3, 5), ['159 s', '303 s']);
  });

  it('tables the thresholds with value, limit and verdict, per variant over repetitions', () => {
    const thresholds = tableAfter(markdown.slice(markdown.indexOf('## Thresholds')), 'Variant');
    assert.deepEqual(thresholds[0], [
      'Variant',
      'Threshold',
      'Values',
      'Limit',
      'Aborts',
      'Result',
    ]);
    assert.deepEqual(thresholds.slice(2, 6), [
      [
        '`strategy=cold`',
        '`downtime.p99 <= 150 (vmGroup=large)`',
        '301 s – 303 s',
        '≤ 150 s',
        '',
        'FAIL (held in 0/2 runs)',
      ],
      ['`strategy=cold`', '`operations.failed <= 2`', '4', '≤ 2', '', 'FAIL (held in 0/2 runs)'],
      [
        '`strategy=cold`',
        '`memory.free.minFraction >= 0.1`',
        '18.5%',
        '≥ 10%',
        'yes',
        'pass (held in 2/2 runs)',
      ],
      [
        '`strategy=cold`',
        '`queue.p99 <= 60 (strategy=terminate)`',
        'n/a',
        '≤ 60 s',
        '',
        'pass (held in 2/2 runs)',
      ],
    ]);
  });

  it('tables the thresholds per run when every variant ran once', () => {
    const single = renderSummaryMarkdown(buildResultFixture({ repetitions: 1 }));
    const thresholds = tableAfter(single.slice(single.indexOf('## Thresholds')), 'Run');
    assert.deepEqual(thresholds[2], [
      '`strategy=cold #1`',
      '`downtime.p99 <= 150 (vmGroup=large)`',
      '303 s',
      '≤ 150 s',
      '',
      'FAIL',
    ]);
    assert.equal(thresholds.length, 2 + 8);
  });

  it('gives each run its phases, downtime percentiles per phase and VM group, waits and failures', () => {
    const cold = markdown.slice(markdown.indexOf('### Run `strategy=cold #1`'));
    assert.match(cold, /^\| `storm` \| storm \| 0 s \| 404 s \| 120 \|$/m);
    assert.match(
      cold,
      /^\| `storm` \| `large` \| reboot \| `cold` \| 32 vCPU, 256 GiB \| 58 \| 2 \| 0 \| 159 s \| 255 s \| 303 s \| 334 s \|$/m,
    );
    assert.match(cold, /^\| `ENOSPC` \| `tdh-mng-create` \| 48 \| 1,291 s \|$/m);
    assert.match(cold, /^\| `hkid-release-lock` \| {2}\| 17 \| 3.4 s \|$/m);
    assert.match(cold, /^\| `EIO` \| `reclaim` \| 4 \|$/m);
    const reuse = markdown.slice(markdown.indexOf('### Run `strategy=reuse #1`'));
    assert.match(reuse, /^_No operation failed\._$/m);
  });

  it('adds the live-against-offline table only when there is one', () => {
    assert.doesNotMatch(markdown, /Live against offline/);
    const daemon = renderSummaryMarkdown(buildResultFixture({ agreement: true }));
    assert.match(daemon, /^- Target: daemon \(http:\/\/127\.0\.0\.1:3000\)$/m);
    const table = tableAfter(daemon.slice(daemon.indexOf('## Live against offline')), 'Metric');
    assert.deepEqual(table.slice(2), [
      ['`downtime.p99`', '181 s', '176 s', '+2.7%'],
      ['`makespan`', '1,080 s', '1,092 s', '-1.1%'],
      ['`operations.failed`', '0', '0', '0%'],
    ]);
  });

  it('keeps a table whole when a name holds a pipe or backticks', () => {
    const odd = renderSummaryMarkdown(buildResultFixture({ extraVariants: ['size=a|b`c`'] }));
    const rows = tableAfter(odd, 'Variant');
    const widths = new Set(rows.map((row) => row.length));
    assert.deepEqual([...widths], [rows[0]?.length]);
    assert.ok(odd.includes('| `` size=a\\|b`c` `` |'), 'the name as a code span, its pipe escaped');
  });
});

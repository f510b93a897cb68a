// report.html: an experiment's result as one self-contained page. The tables are rendered here
// and read without JavaScript; the charts are ECharts options in the page's JSON data, drawn by
// the inlined library. The page loads nothing: its content security policy forbids any request,
// so that it opens the same offline, from a mail attachment or an archive.
import type { EChartsOption } from 'echarts';
import type { ExperimentResult } from '#experiments';
import type { ChartSpec } from './chart-spec.js';
import { type FleetCharts, fleetCharts, MAX_EMBEDDED_RUNS } from './fleet-charts.js';
import { cellHtml, escapeHtml, htmlTable, inlineScriptSource, jsonForScript } from './html.js';
import { causesChart, downtimeChart, meanBreakdownChart, slowestChart } from './report-charts.js';
import { CHART_BOOTSTRAP_SCRIPT, ERROR_RECORDER_SCRIPT } from './report-page-scripts.js';
import {
  abortSentence,
  agreementTable,
  kernelEffectsTable,
  referencesTable,
  skippedTable,
  outcomeSentence,
  headlineGlossary,
  provenanceFacts,
  thresholdsTable,
  variantsTable,
} from './report-tables.js';

/** What the page's `<script type="application/json" id="report-data">` holds. */
export interface ReportData {
  /** ECharts options by chart id: a box's `data-chart` names its chart. */
  charts: Record<string, EChartsOption>;
}

/** Up to this many runs get a chart each; more share one box and a run selector. */
const RUNS_SHOWN_SIDE_BY_SIDE = 3;

const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'unsafe-inline'",
  "style-src 'unsafe-inline'",
  // The chart library's canvas may paint patterns from data: or blob: images it makes itself.
  'img-src data: blob:',
].join('; ');

const STYLE = `
:root { color-scheme: light; }
body { margin: 0 auto; max-width: 1240px; padding: 20px 24px 40px; font: 15px/1.45 system-ui, sans-serif; color: #1b1b1b; background: #fff; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 19px; margin: 28px 0 4px; padding-bottom: 4px; border-bottom: 1px solid #d5d5d5; }
h3 { font-size: 16px; margin: 16px 0 2px; }
p { margin: 4px 0 8px; }
.question { color: #3b3b3b; }
.note { color: #555; font-size: 14px; }
code { font: 13px/1.3 ui-monospace, SFMono-Regular, Menlo, monospace; background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0 12px; }
dl.facts dt { color: #555; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.outcome { padding: 8px 12px; border-radius: 4px; font-weight: 600; }
.outcome.pass { background: #e3f1e4; color: #1d5e20; border: 1px solid #9ccc9f; }
.outcome.fail { background: #fbe4e2; color: #8c1d16; border: 1px solid #e6a19b; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { border: 1px solid #d5d5d5; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pass td.verdict { background: #e3f1e4; color: #1d5e20; font-weight: 600; }
tr.fail td.verdict { background: #fbe4e2; color: #8c1d16; font-weight: 600; }
.interval { color: #555; font-size: 12px; }
details { margin: 0 0 8px; }
summary { cursor: pointer; color: #3b3b3b; }
.chart { width: 100%; margin: 6px 0 12px; }
select { font: inherit; }
#errors { white-space: pre-wrap; background: #fbe4e2; color: #8c1d16; border: 1px solid #e6a19b; padding: 8px; }
#errors[hidden] { display: none; }
`;

interface Section {
  id: string;
  title: string;
  /** One line: the question the section answers. */
  question: string;
  body: string;
}

function sectionHtml(section: Section): string {
  return [
    `<section id="${escapeHtml(section.id)}">`,
    `<h2>${escapeHtml(section.title)}</h2>`,
    `<p class="question">${escapeHtml(section.question)}</p>`,
    section.body,
    '</section>',
  ].join('\n');
}

function chartBox(chart: ChartSpec, description: string, boxId = `chart-${chart.id}`): string {
  return `<div class="chart" id="${escapeHtml(boxId)}" data-chart="${escapeHtml(chart.id)}" style="height: ${chart.height}px" role="img" aria-label="${escapeHtml(description)}"></div>`;
}

function chartOrNote(chart: ChartSpec | null, description: string, missing: string): string {
  return chart === null
    ? `<p class="note">${escapeHtml(missing)}</p>`
    : chartBox(chart, description);
}

function headerHtml(result: ExperimentResult): string {
  const facts = provenanceFacts(result)
    .map(([label, value]) => `<dt>${escapeHtml(label)}</dt><dd>${cellHtml(value)}</dd>`)
    .join('\n');
  const verdict = result.passed ? 'pass' : 'fail';
  const aborted = result.aborted === null ? '' : ' outcome fail';
  return [
    '<header>',
    `<h1>Experiment <code>${escapeHtml(result.provenance.scenario)}</code></h1>`,
    `<dl class="facts">\n${facts}\n</dl>`,
    `<p class="outcome ${verdict}">${escapeHtml(outcomeSentence(result))}</p>`,
    `<p class="abort${aborted}">${escapeHtml(abortSentence(result))}</p>`,
    '</header>',
  ].join('\n');
}

function glossaryHtml(): string {
  const entries = headlineGlossary()
    .map(
      ([metric, description]) =>
        `<dt><code>${escapeHtml(metric)}</code></dt><dd>${escapeHtml(description)}</dd>`,
    )
    .join('\n');
  return `<details><summary>What the metrics mean</summary>\n<dl class="facts">\n${entries}\n</dl>\n</details>`;
}

function fleetBody(fleet: FleetCharts): string {
  const notes: string[] = [];
  if (fleet.runs.length < fleet.totalRuns) {
    notes.push(
      `This page embeds the series of ${fleet.runs.length} of the ${fleet.totalRuns} runs (at most ${MAX_EMBEDDED_RUNS}): the first repetition of every variant, then the second, and so on.`,
    );
  }
  if (fleet.downsampled) {
    notes.push(
      'Long series are thinned to the lowest and highest sample of each interval, so peaks and dips stay where they were.',
    );
  }
  const noteHtml = notes.map((note) => `<p class="note">${escapeHtml(note)}</p>`).join('\n');
  const first = fleet.runs[0];
  if (first === undefined) return `${noteHtml}<p class="note">No run has samples.</p>`;
  const description = 'free, retained and orphaned memory and HKIDs in use over time';
  if (fleet.runs.length <= RUNS_SHOWN_SIDE_BY_SIDE) {
    const charts = fleet.runs.map(
      ({ label, chart }) =>
        `<h3>Run <code>${escapeHtml(label)}</code></h3>\n${chartBox(chart, `${label}: ${description}`)}`,
    );
    return [noteHtml, ...charts].join('\n');
  }
  const options = fleet.runs
    .map(
      ({ label, chart }) => `<option value="${escapeHtml(chart.id)}">${escapeHtml(label)}</option>`,
    )
    .join('\n');
  return [
    noteHtml,
    `<p><label>Run <select id="run-select" data-chart-box="chart-fleet">\n${options}\n</select></label></p>`,
    chartBox(first.chart, description, 'chart-fleet'),
  ].join('\n');
}

function allCharts(result: ExperimentResult) {
  return {
    downtime: downtimeChart(result),
    slowest: slowestChart(result),
    meanBreakdown: meanBreakdownChart(result),
    fleet: fleetCharts(result),
    causes: causesChart(result),
  };
}

function dataOf(charts: ReturnType<typeof allCharts>): ReportData {
  const specs = [
    charts.downtime,
    charts.slowest,
    charts.meanBreakdown,
    ...charts.fleet.runs.map((run) => run.chart),
    charts.causes,
  ].flatMap((chart) => (chart === null ? [] : [chart]));
  return { charts: Object.fromEntries(specs.map((chart) => [chart.id, chart.option])) };
}

/** The data the page embeds for its charts. */
export function buildReportData(result: ExperimentResult): ReportData {
  return dataOf(allCharts(result));
}

/** report.html for a result; `chartLibrarySource` is ECharts' browser build (readChartLibrary). */
export function renderReportHtml(result: ExperimentResult, chartLibrarySource: string): string {
  const charts = allCharts(result);
  const severalRepetitions = result.variants.some((v) =>
    Object.values(v.estimates).some((estimate) => estimate.values.length > 1),
  );
  const sections: Section[] = [
    {
      id: 'variants',
      title: 'Variants',
      question: `How do the variants compare on the headline metrics?${severalRepetitions ? ' Mean over the repetitions, with its 95% confidence interval in brackets.' : ''}`,
      body: [htmlTable(variantsTable(result), 'No variant ran.'), glossaryHtml()].join('\n'),
    },
    {
      id: 'thresholds',
      title: 'Thresholds',
      question: "Did every run stay within the scenario's limits?",
      body: htmlTable(thresholdsTable(result), 'The scenario sets no thresholds.'),
    },
  ];
  if (result.runs.some((run) => run.references.length > 0)) {
    sections.push({
      id: 'references',
      title: 'Published figures',
      question:
        'Does the simulation reproduce the published figures? The difference is relative to the published one.',
      body: htmlTable(referencesTable(result), 'No figure.'),
    });
  }
  if (result.kernelEffects.length > 0) {
    sections.push({
      id: 'kernel-effects',
      title: 'What each kernel feature changes',
      question:
        'What does each kernel switch bring? The mean change between variants that differ in that switch alone (to minus from).',
      body: htmlTable(kernelEffectsTable(result), 'No pair.'),
    });
  }
  if (result.skipped.length > 0) {
    sections.push({
      id: 'skipped',
      title: 'Skipped variants',
      question: 'Which combinations of the sweep could not run, and why?',
      body: htmlTable(skippedTable(result), 'None.'),
    });
  }
  if (result.agreement !== null) {
    sections.push({
      id: 'agreement',
      title: 'Live against offline',
      question:
        'Does the daemon agree with the offline engine on the same scenario? The difference is relative to offline.',
      body: htmlTable(agreementTable(result.agreement), 'No metric compared.'),
    });
  }
  sections.push(
    {
      id: 'downtime',
      title: 'Downtime by strategy and VM group',
      question:
        'How long did VMs stay down? Downtime p50, p95 and p99 of the succeeded operations per VM group (mean over repetitions).',
      body: chartOrNote(
        charts.downtime,
        'downtime percentiles per VM group',
        'No operation succeeded.',
      ),
    },
    {
      id: 'breakdown',
      title: 'Where the time went',
      question:
        'What made operations slow: the queue, waiting for an HKID, for memory or for the release lock, reclaim, or the work itself?',
      body: [
        '<h3>Slowest operations</h3>',
        '<p class="note">Each bar is one operation, from its request to its end.</p>',
        chartOrNote(
          charts.slowest,
          'breakdown of the slowest operations',
          'No slow operation recorded.',
        ),
        '<h3>Mean per group</h3>',
        '<p class="note">The mean operation of each VM group, weighted by the succeeded operations of every run.</p>',
        chartOrNote(charts.meanBreakdown, 'mean breakdown per VM group', 'No operation succeeded.'),
      ].join('\n'),
    },
    {
      id: 'fleet',
      title: 'Memory and HKIDs over time',
      question:
        'Did the hosts run short of memory or HKIDs, and did memory stay orphaned after a phase? Shaded bands are the phases.',
      body: fleetBody(charts.fleet),
    },
    {
      id: 'causes',
      title: 'Waits and failures by cause',
      question:
        'What did steps wait for, and why did operations fail? Counts and seconds per run (mean over repetitions).',
      body: chartOrNote(
        charts.causes,
        'waits and failures by cause',
        'No step waited and no operation failed.',
      ),
    },
  );
  const title = `Experiment ${result.provenance.scenario}: ${result.passed ? 'passed' : 'failed'}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${escapeHtml(CONTENT_SECURITY_POLICY)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<pre id="errors" hidden></pre>
<script>${ERROR_RECORDER_SCRIPT}</script>
${headerHtml(result)}
<noscript><p class="note">The charts need JavaScript; the tables do not.</p></noscript>
${sections.map(sectionHtml).join('\n')}
<script type="application/json" id="report-data">${jsonForScript(dataOf(charts))}</script>
<script>${inlineScriptSource(chartLibrarySource, 'the chart library')}</script>
<script>${CHART_BOOTSTRAP_SCRIPT}</script>
</body>
</html>
`;
}

// report.html: one file that loads nothing, its data intact whatever the names hold, and, in a
// real headless Chromium (Debian's chromium package), every chart drawn without an error.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from '../../../../test/support/temp-dir.js';
import { readChartLibrary } from './chart-library.js';
import { MAX_EMBEDDED_RUNS } from './fleet-charts.js';
import { buildReportData, renderReportHtml } from './report-html.js';
import { buildResultFixture } from './testing/result-fixture.js';

/** Where KEEP_SCREENSHOT=1 keeps the fixture's picture (for the docs). */
const DOCS_SCREENSHOT = fileURLToPath(
  new URL('../../../../../docs/experiment-report.png', import.meta.url),
);

/** A variant name that tries to end the data's script element and start its own. */
const HOSTILE_NAME = 'label=</script><script>document.title="broken"</script><!--';

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  // Nothing resolves: a page that tried to load something would fail to (and say so).
  '--host-resolver-rules=MAP * ~NOTFOUND',
  '--enable-logging=stderr',
  '--v=0',
  '--hide-scrollbars',
  // Let the scripts run and the charts draw before the DOM or the screenshot is taken.
  '--virtual-time-budget=5000',
];

/** Fails with what to install when a tool is missing. */
function requireTool(command: string, debianPackage: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  if (found.status !== 0) {
    assert.fail(
      `${command} is not on the PATH: it comes from Debian's ${debianPackage} package ` +
        `(apt-get install ${debianPackage})`,
    );
  }
}

function chromium(
  profileDir: string,
  args: readonly string[],
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'chromium',
      [...CHROMIUM_FLAGS, `--user-data-dir=${profileDir}`, ...args],
      { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error !== null) reject(new Error(`chromium ${args.join(' ')}: ${stderr.slice(-2000)}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

/** The text of the page's data element. */
function dataJson(html: string): string {
  const match = /<script type="application\/json" id="report-data">([\s\S]*?)<\/script>/.exec(html);
  assert.ok(match?.[1] !== undefined, 'the page has its data element');
  return match[1];
}

/** The page without the inlined chart library, whose own source is not the page's doing. */
function withoutLibrary(html: string, library: string): string {
  assert.ok(html.includes(library));
  return html.replace(library, '');
}

/** The opening tags of the chart boxes in a (dumped) page. */
function chartBoxes(html: string): string[] {
  return Array.from(html.matchAll(/<div\b[^>]*\sdata-chart="[^"]*"[^>]*>/g), (match) => match[0]);
}

describe('renderReportHtml', () => {
  let library: string;
  before(async () => {
    library = await readChartLibrary();
  });

  it('is one page that loads nothing from anywhere', () => {
    const html = renderReportHtml(buildResultFixture({ agreement: true }), library);
    assert.equal(html.match(/<html\b/g)?.length, 1);
    assert.doesNotMatch(html, /\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?\/\//i);
    const page = withoutLibrary(html, library);
    assert.doesNotMatch(page, /<link\b|@import|url\(|<iframe\b|<img\b/i);
    assert.doesNotMatch(page, /<script\b[^>]*\ssrc=/i);
    assert.match(
      page,
      /<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;;/,
    );
  });

  it('renders the tables on the server: variants, thresholds with verdicts, agreement', () => {
    const html = renderReportHtml(buildResultFixture({ agreement: true }), library);
    assert.match(html, /<tr class="fail"><td><code>strategy=cold<\/code><\/td>/);
    assert.match(html, /<td class="verdict">FAIL \(held in 0\/2 runs\)<\/td>/);
    assert.match(
      html,
      /<td class="number">302 s<br><span class="interval">\[301 s, 303 s\]<\/span><\/td>/,
    );
    assert.match(html, /<td><code>downtime\.p99 &lt;= 150 \(vmGroup=large\)<\/code><\/td>/);
    assert.match(html, /<td class="number">\+2\.7%<\/td>/);
    assert.doesNotMatch(
      renderReportHtml(buildResultFixture(), library),
      /id="agreement"/,
      'no agreement section without an agreement',
    );
  });

  it('embeds the chart data as JSON that reads back as built, one entry per chart box', () => {
    const result = buildResultFixture();
    const html = renderReportHtml(result, library);
    const data = JSON.parse(dataJson(html)) as ReturnType<typeof buildReportData>;
    assert.deepEqual(data, JSON.parse(JSON.stringify(buildReportData(result))));
    const boxes = chartBoxes(html).map((tag) => /data-chart="([^"]*)"/.exec(tag)?.[1]);
    assert.deepEqual(boxes, ['downtime', 'slowest', 'mean-breakdown', 'fleet-0', 'causes']);
    for (const id of boxes) assert.ok(id !== undefined && id in data.charts, `data for ${id}`);
    // Four runs share one box: the selector offers every run's chart.
    const options = Array.from(html.matchAll(/<option value="([^"]*)">/g), (m) => m[1]);
    assert.deepEqual(options, ['fleet-0', 'fleet-1', 'fleet-2', 'fleet-3']);
    for (const id of options) assert.ok(id !== undefined && id in data.charts, `data for ${id}`);
  });

  it('keeps a </script> inside a name from ending the data element', () => {
    const result = buildResultFixture({ repetitions: 1, extraVariants: [HOSTILE_NAME] });
    const html = renderReportHtml(result, library);
    // The page's own four scripts, each closed once.
    assert.equal(html.match(/<script\b/gi)?.length, 4);
    assert.equal(html.match(/<\/script/gi)?.length, 4);
    assert.doesNotMatch(dataJson(html), /</);
    const data = JSON.stringify(JSON.parse(dataJson(html)));
    assert.ok(data.includes(JSON.stringify(HOSTILE_NAME).slice(1, -1)), 'the name reads back');
    assert.ok(
      html.includes('<code>label=&lt;/script&gt;&lt;script&gt;document.title=&quot;broken'),
    );
  });

  it('refuses a chart library it cannot inline', () => {
    assert.throws(
      () => renderReportHtml(buildResultFixture(), 'var s = "</script>";'),
      /the chart library holds "<\/script" at 9/,
    );
  });

  it(`embeds the series of at most ${MAX_EMBEDDED_RUNS} runs, every variant's first, and says so`, () => {
    const extraVariants = Array.from({ length: 10 }, (_, i) => `size=${i}`);
    const result = buildResultFixture({ extraVariants });
    assert.equal(result.runs.length, 24);
    const html = renderReportHtml(result, library);
    const data = JSON.parse(dataJson(html)) as ReturnType<typeof buildReportData>;
    const fleet = Object.keys(data.charts).filter((id) => id.startsWith('fleet-'));
    assert.equal(fleet.length, MAX_EMBEDDED_RUNS);
    for (const variant of result.variants) {
      const first = result.runs.findIndex((run) => run.variant === variant.name);
      assert.ok(fleet.includes(`fleet-${first}`), `${variant.name}'s first run`);
    }
    assert.match(html, /embeds the series of 20 of the 24 runs/);
  });

  describe('in headless Chromium', () => {
    let temp: Awaited<ReturnType<typeof makeTempDir>>;
    before(async () => {
      temp = await makeTempDir('report-html');
    });
    after(async () => {
      await temp.remove();
    });

    /** Writes the page, opens it and checks the charts drew with no error; the dumped DOM. */
    async function openAndCheck(name: string, html: string): Promise<string> {
      const page = join(temp.path, `${name}.html`);
      await writeFile(page, html);
      const { stdout: dom, stderr } = await chromium(join(temp.path, `profile-${name}`), [
        '--dump-dom',
        `file://${page}`,
      ]);
      const errors = /<pre id="errors"[^>]*>([\s\S]*?)<\/pre>/.exec(dom);
      assert.ok(errors !== null, 'the dumped page has its error list');
      assert.equal(errors[1], '', 'the page recorded no error');
      assert.doesNotMatch(stderr, /Uncaught|Refused to/);
      const boxes = chartBoxes(dom);
      assert.ok(boxes.length >= 4, `${boxes.length} chart boxes`);
      for (const box of boxes) assert.match(box, /_echarts_instance_="/, box);
      assert.ok((dom.match(/<canvas\b/g)?.length ?? 0) >= boxes.length, 'a canvas per chart');
      assert.match(dom, new RegExp(`<body[^>]*data-charts-drawn="${boxes.length}"`));
      return dom;
    }

    it('draws every chart of the fixture with no error, and takes its picture', async () => {
      requireTool('chromium', 'chromium');
      const html = renderReportHtml(buildResultFixture({ agreement: true }), library);
      await openAndCheck('report', html);

      const screenshot = join(temp.path, 'report.png');
      await chromium(join(temp.path, 'profile-report'), [
        `--screenshot=${screenshot}`,
        '--window-size=1280,2400',
        `file://${join(temp.path, 'report.html')}`,
      ]);
      const png = await readFile(screenshot);
      assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
      // KEEP_SCREENSHOT=1 keeps the picture for the docs.
      const keep = process.env['KEEP_SCREENSHOT'];
      if (keep !== undefined && keep !== '') await copyFile(screenshot, DOCS_SCREENSHOT);
    });

    it('draws a chart per run, and a page whose names hold markup, with no error', async () => {
      requireTool('chromium', 'chromium');
      const result = buildResultFixture({ repetitions: 1, extraVariants: [HOSTILE_NAME] });
      const dom = await openAndCheck('hostile', renderReportHtml(result, library));
      assert.equal(chartBoxes(dom).filter((box) => box.includes('data-chart="fleet-')).length, 3);
      assert.match(dom, /<title>Experiment reboot-storm: failed<\/title>/);
    });
  });
});

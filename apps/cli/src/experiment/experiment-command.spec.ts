// `tdx-fleet experiment` as a user runs it: the built executable in a child process, exit codes,
// the files it writes and what they hold.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BUILTIN_NAMES, type ExperimentResult, scenarioJsonSchema } from '#experiments';
import { makeTempDir } from '../../../../test/support/temp-dir.js';

const cli = fileURLToPath(new URL('../main.js', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../../../../', import.meta.url));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tdx-fleet experiment ...` (async: several run side by side). */
function experiment(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'experiment', ...args], { cwd: repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** A small scenario: three hosts, nine VMs, one storm; `extra` replaces top-level keys. */
function smallScenario(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    name: 'small',
    fleet: {
      hosts: [
        {
          name: 'h',
          count: 3,
          memoryGiB: 512,
          hkids: 8,
          kernel: { terminateVm: 'v4', linkGuestMemfd: true },
        },
      ],
      vms: [{ name: 'vm', perHost: 3, sizes: [{ vcpus: 4, memoryGiB: 18 }] }],
    },
    phases: [{ name: 'storm', kind: 'storm', strategy: 'reuse' }],
    sampleEverySeconds: 5,
    ...extra,
  });
}

async function readResult(directory: string): Promise<ExperimentResult> {
  return JSON.parse(await readFile(join(directory, 'result.json'), 'utf8')) as ExperimentResult;
}

describe('tdx-fleet experiment', { concurrency: true }, () => {
  let temp: { path: string; remove(): Promise<void> };
  before(async () => {
    temp = await makeTempDir('experiment-cli-');
  });
  after(async () => {
    await temp.remove();
  });

  it('list shows every built-in with what it answers, one line each', async () => {
    const { status, stdout } = await experiment('list');
    assert.equal(status, 0);
    const lines = stdout.trimEnd().split('\n');
    assert.deepEqual(
      lines.map((line) => line.split(/\s+/)[0]),
      BUILTIN_NAMES,
    );
    for (const line of lines) assert.ok(line.length > 40, `says what it answers: ${line}`);
  });

  it('--help for each subcommand; a bad argument is one line and exit 2', async () => {
    for (const sub of [
      'run',
      'list',
      'show',
      'schema',
      'compare',
      'concurrency',
      'record',
      'replay',
    ]) {
      const { status, stdout } = await experiment(sub, '--help');
      assert.equal(status, 0, sub);
      assert.match(stdout, new RegExp(`^usage: tdx-fleet experiment ${sub}`));
    }
    for (const args of [
      [],
      ['frobnicate'],
      ['run'],
      ['run', 'seed-table', '--target', 'cloud'],
      ['run', 'seed-table', '--seed', '-1'],
      ['run', 'no-such-scenario'],
      ['compare', 'a.json'],
      ['record', '--api', 'http://127.0.0.1:1'],
      ['record', '--out', 'r.json', '--seconds', '0'],
      ['replay'],
      ['replay', 'examples/fleet-storm.json', '--strategy', 'warm'],
      ['replay', 'examples/fleet-storm.json', '--link-guest-memfd', 'yes'],
      ['replay', 'no-such-recording.json'],
    ]) {
      const { status, stdout, stderr } = await experiment(...args);
      assert.equal(status, 2, args.join(' '));
      assert.equal(stdout, '');
      assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    }
  });

  it('a scenario with a wrong field exits 2 naming the field', async () => {
    const file = join(temp.path, 'bad.yaml');
    await writeFile(
      file,
      'name: bad\nfleet:\n  hosts: [{name: h, memoryGiB: 64}]\n  vms: [{name: vm, count: 1, sizes: [{vcpus: 4, memoryGiB: 18}]}]\nphases: [{name: s, kind: storm}]\nthresholds: [{metric: downtime.p98, max: 1}]\n',
    );
    const { status, stderr } = await experiment('run', file, '--out', join(temp.path, 'bad'));
    assert.equal(status, 2);
    assert.match(stderr, /^tdx-fleet experiment: thresholds\[0\]\.metric: expected a metric/);
  });

  it("run seed-table writes the three files and prints the seed's figures beside the simulated ones", async () => {
    const out = join(temp.path, 'seed-table');
    const { status, stdout, stderr } = await experiment('run', 'seed-table', '--out', out);
    assert.equal(status, 0, stderr);
    assert.match(stdout, /PASSED/);
    assert.match(stdout, /64 vCPUs, 400 GiB: mainline: 5,534 s \(published 5,539 s, -0\.1%\)/);
    const result = await readResult(out);
    assert.equal(result.provenance.target, 'offline');
    assert.match(result.provenance.scenarioHash, /^[0-9a-f]{64}$/);
    assert.match(await readFile(join(out, 'summary.md'), 'utf8'), /## Published figures/);
    assert.match(await readFile(join(out, 'report.html'), 'utf8'), /^<!doctype html>/i);
  });

  it('the same scenario and seed give byte-identical result.json', async () => {
    const file = join(temp.path, 'same.json');
    await writeFile(file, smallScenario({ sweep: { strategy: ['cold', 'reuse'] }, repeat: 2 }));
    const [a, b] = await Promise.all([
      experiment('run', file, '--out', join(temp.path, 'same-a'), '--seed', '5'),
      experiment('run', file, '--out', join(temp.path, 'same-b'), '--seed', '5'),
    ]);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(
      await readFile(join(temp.path, 'same-a', 'result.json'), 'utf8'),
      await readFile(join(temp.path, 'same-b', 'result.json'), 'utf8'),
    );
  });

  it('a failed threshold exits 1; abortOnFail stops after the first failing run', async () => {
    const failing = join(temp.path, 'failing.json');
    await writeFile(
      failing,
      smallScenario({
        sweep: { strategy: ['cold', 'terminate', 'reuse'] },
        thresholds: [{ metric: 'downtime.p99', max: 1 }],
      }),
    );
    const aborting = join(temp.path, 'aborting.json');
    await writeFile(
      aborting,
      smallScenario({
        sweep: { strategy: ['cold', 'terminate', 'reuse'] },
        thresholds: [{ metric: 'downtime.p99', max: 1, abortOnFail: true }],
      }),
    );
    const [all, stopped] = await Promise.all([
      experiment('run', failing, '--out', join(temp.path, 'failing'), '--json'),
      experiment('run', aborting, '--out', join(temp.path, 'aborting')),
    ]);
    assert.equal(all.status, 1, all.stderr);
    const result = JSON.parse(all.stdout) as ExperimentResult;
    assert.equal(result.runs.length, 3);
    assert.equal(result.passed, false);
    assert.equal(stopped.status, 1, stopped.stderr);
    assert.match(stopped.stdout, /ABORTED/);
    assert.equal((await readResult(join(temp.path, 'aborting'))).runs.length, 1);
  });

  it('compare tells which metrics changed between two results', async () => {
    const cold = join(temp.path, 'cold.json');
    const reuse = join(temp.path, 'reuse.json');
    await writeFile(cold, smallScenario({ sweep: { strategy: ['cold'] }, repeat: 4 }));
    await writeFile(reuse, smallScenario({ sweep: { strategy: ['reuse'] }, repeat: 4 }));
    const runs = await Promise.all([
      experiment('run', cold, '--out', join(temp.path, 'cmp-cold'), '--quiet'),
      experiment('run', reuse, '--out', join(temp.path, 'cmp-reuse'), '--quiet'),
    ]);
    for (const r of runs) assert.equal(r.status, 0, r.stderr);
    const markdown = join(temp.path, 'compare.md');
    const { status, stdout, stderr } = await experiment(
      'compare',
      join(temp.path, 'cmp-cold'),
      join(temp.path, 'cmp-reuse', 'result.json'),
      '--markdown',
      markdown,
    );
    assert.equal(status, 0, stderr);
    assert.match(stdout, /memory\.headroomBytes/);
    assert.match(stdout, /better|worse/);
    assert.match(await readFile(markdown, 'utf8'), /\|/);
    const notResult = await experiment('compare', cold, cold);
    assert.equal(notResult.status, 2);
    assert.match(notResult.stderr, /is not an experiment result/);
  });

  it('concurrency names the largest safe maxPerHost and the threshold that binds above it', async () => {
    const file = join(temp.path, 'wave.json');
    await writeFile(
      file,
      smallScenario({
        phases: [{ name: 'wave', kind: 'rolling', strategy: 'terminate', maxPerHost: 1 }],
        thresholds: [
          { metric: 'makespan', max: 1e9 },
          { metric: 'hkidWait.max', max: 0 },
        ],
        fleet: {
          hosts: [{ name: 'h', count: 2, memoryGiB: 512, hkids: 4, kernel: { terminateVm: 'v4' } }],
          vms: [{ name: 'vm', perHost: 4, sizes: [{ vcpus: 4, memoryGiB: 18 }] }],
        },
      }),
    );
    const { status, stdout, stderr } = await experiment('concurrency', file, '--json', '--quiet');
    assert.equal(status, 0, stderr);
    const result = JSON.parse(stdout) as {
      knob: string;
      upper: number;
      rows: Array<{ safe: number | null; binding: { label: string } | null }>;
    };
    assert.equal(result.knob, 'maxPerHost');
    assert.equal(result.upper, 4);
    assert.equal(result.rows.length, 1);
    assert.ok(result.rows[0] !== undefined);
    assert.ok(result.rows[0].safe !== null && result.rows[0].safe >= 1);
  });

  it('docs/scenario.schema.json is the schema the command prints', async () => {
    const published = await readFile(join(repoRoot, 'docs', 'scenario.schema.json'), 'utf8');
    const { status, stdout } = await experiment('schema');
    assert.equal(status, 0);
    assert.equal(published, stdout);
    assert.deepEqual(JSON.parse(published), scenarioJsonSchema());
  });

  it('show prints a built-in as YAML that runs as a file', async () => {
    const { status, stdout } = await experiment('show', 'hkid-pressure');
    assert.equal(status, 0);
    const file = join(temp.path, 'hkid-pressure.yaml');
    await writeFile(file, stdout);
    const run = await experiment('run', file, '--out', join(temp.path, 'shown'), '--quiet');
    assert.equal(run.status, 0, run.stderr);
  });
});

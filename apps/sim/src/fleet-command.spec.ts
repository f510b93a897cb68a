import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { type OfflineOutput, runFleet } from '#fleet';
import { hostFor, rebootOnce } from './experiments.js';
import { FleetFileError, fleetInput } from './fleet-file.js';

const main = fileURLToPath(new URL('./main.js', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
const example = join(repoRoot, 'examples', 'fleet-storm.json');

function sim(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', cwd: repoRoot });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function near(actual: number, expected: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= 1e-9 * Math.max(1000, Math.abs(expected)),
    `${what}: ${actual} vs ${expected}`,
  );
}

function fileError(value: unknown): string {
  try {
    fleetInput(value);
  } catch (error) {
    if (error instanceof FleetFileError) return error.message;
    throw error;
  }
  assert.fail('the file was accepted');
}

const HOST = { memoryGiB: 64 };

describe('sim fleet: the offline engine against sim reboot', () => {
  it('at full HKID capacity a cold reboot waits for ENOSPC and takes what sim reboot says', () => {
    // `sim reboot --strategy cold --vcpus 4 --memory-gib 4 --hkids 2 --other-vms 1`
    const options = { strategy: 'cold' as const, vcpus: 4, memoryGiB: 4, hkids: 2, otherVms: 1 };
    const alone = rebootOnce(options);
    const config = hostFor(options.memoryGiB, options, options.otherVms * 0.5).config;
    const output = runFleet({
      hosts: [
        {
          id: 'h1',
          memoryGiB: config.memoryBytes / 1024 ** 3,
          hkids: config.hkids,
          packages: config.packages,
          cpus: config.cpus,
          kernel: config.kernel,
        },
      ],
      vms: [
        { id: 'other', vcpus: 1, memoryGiB: 0.25, hostId: 'h1' },
        { id: 'vm', vcpus: 4, memoryGiB: 4, hostId: 'h1' },
      ],
      requests: [
        { at: 0, action: 'boot', vmId: 'other' },
        { at: 100, action: 'boot', vmId: 'vm' },
        { at: 1000, action: 'reboot', vmId: 'vm', strategy: 'cold' },
      ],
    });
    const reboot = output.operations.find((op) => op.action === 'reboot');
    assert.equal(reboot?.state, 'succeeded');
    assert.ok(reboot.waits.some((w) => w.step === 'init-vm' && w.errno === 'ENOSPC'));
    const waited = alone.timeline.find((s) => s.name === 'init-vm')?.waitedSeconds ?? 0;
    assert.ok(waited > 0);
    near(reboot.waitedSeconds, waited, 'waited');
    const result = reboot.result;
    assert.ok(result);
    for (const key of Object.keys(alone.summary) as Array<keyof typeof alone.summary>) {
      if (key.startsWith('bytes')) assert.equal(result[key], alone.summary[key], key);
      else near(result[key], alone.summary[key], key);
    }
  });
});

describe('sim fleet: the file', () => {
  const base = { hosts: [HOST], vms: [{ id: 'vm', vcpus: 1, memoryGiB: 1 }] };
  const cases: Array<[string, unknown, RegExp]> = [
    [
      'a host memory that is not positive',
      { hosts: [HOST, HOST, { memoryGiB: 0, count: 1 }] },
      /^hosts\[2\]\.memoryGiB: expected a number > 0$/,
    ],
    ['a missing field', { hosts: [{ count: 1 }] }, /^hosts\[0\]\.memoryGiB: required/],
    ['an unknown key', { ...base, speed: 1 }, /^\(the file\): unknown key "speed"/],
    [
      'an unknown key deep down',
      { hosts: [{ ...HOST, kernel: { terminate: 'v4' } }] },
      /^hosts\[0\]\.kernel: unknown key "terminate"/,
    ],
    [
      'a bad kernel switch',
      { hosts: [{ ...HOST, kernel: { terminateVm: 'v5' } }] },
      /^hosts\[0\]\.kernel\.terminateVm: expected none, v4 or aug2025/,
    ],
    [
      'a request for an unknown VM',
      { ...base, requests: [{ at: 1, action: 'reboot', vmId: 'nope', strategy: 'cold' }] },
      /^requests\[0\]\.vmId: no VM "nope"/,
    ],
    [
      'a strategy of the other action',
      { ...base, requests: [{ at: 1, action: 'reboot', vmId: 'vm', strategy: 'close' }] },
      /^requests\[0\]\.strategy: expected one of cold, terminate, reuse for reboot/,
    ],
    [
      'a negative time',
      { ...base, requests: [{ at: -1, action: 'cancel', vmId: 'vm' }] },
      /^requests\[0\]\.at: expected a number of virtual seconds >= 0/,
    ],
    [
      'a VM on an unknown host',
      { hosts: [HOST], vms: [{ count: 2, vcpus: 1, memoryGiB: 1, hostId: 'h-0009' }] },
      /^vms\[0\]\.hostId: no host "h-0009"/,
    ],
    [
      'a batch selector with two kinds',
      {
        ...base,
        batches: [
          {
            at: 0,
            selector: { all: true, vmIds: ['vm'] },
            action: 'reboot',
            strategy: 'cold',
            maxConcurrency: 1,
          },
        ],
      },
      /^batches\[0\]\.selector: needs exactly one of/,
    ],
    [
      'a duplicated id',
      {
        hosts: [
          { ...HOST, id: 'a' },
          { ...HOST, id: 'a' },
        ],
      },
      /used twice/,
    ],
  ];
  for (const [what, value, expected] of cases) {
    it(`names the field: ${what}`, () => assert.match(fileError(value), expected));
  }

  it('expands groups into numbered ids and VMs into boot requests', () => {
    const input = fleetInput({
      hosts: [
        { ...HOST, count: 2 },
        { ...HOST, id: 'big' },
        { ...HOST, count: 1 },
      ],
      vms: [
        { count: 3, vcpus: 1, memoryGiB: 1 },
        { id: 'late', vcpus: 1, memoryGiB: 1, bootAt: 50 },
        { id: 'never', vcpus: 1, memoryGiB: 1, bootAt: null },
      ],
    });
    assert.deepEqual(
      input.hosts.map((h) => h.id),
      ['h-0001', 'h-0002', 'big', 'h-0003'],
    );
    assert.deepEqual(
      input.requests?.map((r) => [r.at, r.action, r.vmId]),
      [
        [0, 'boot', 'vm-0001'],
        [0, 'boot', 'vm-0002'],
        [0, 'boot', 'vm-0003'],
        [50, 'boot', 'late'],
      ],
    );
  });

  it('bad files are one line on stderr and exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sim-fleet-'));
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ hosts: [HOST, HOST, { memoryGiB: -4 }] }));
    for (const args of [['fleet', bad], ['fleet'], ['fleet', join(dir, 'missing.json')]]) {
      const result = sim(...args);
      assert.equal(result.status, 2, args.join(' '));
      assert.equal(result.stdout, '');
      assert.match(result.stderr, /^sim: [^\n]+\n$/);
    }
    assert.match(sim('fleet', bad).stderr, /hosts\[2\]\.memoryGiB: expected a number > 0/);
    writeFileSync(join(dir, 'broken.json'), '{"hosts": [');
    assert.match(sim('fleet', join(dir, 'broken.json')).stderr, /is not JSON/);
  });
});

describe('sim fleet: the example', () => {
  it('runs, summarises, and gives the same JSON from YAML, twice', () => {
    const text = sim('fleet', example);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^fleet: 4 hosts, 24 VMs/);
    assert.match(text.stdout, /reboot reuse +\d+ +[\d.]+ +[\d.]+ +[\d.]+/);
    assert.match(text.stdout, /min free memory: /);

    const json = sim('fleet', example, '--json');
    assert.equal(json.status, 0);
    const output = JSON.parse(json.stdout) as OfflineOutput;
    assert.equal(output.totals.byState.cancelled, 1);
    assert.ok(output.series.fleet.length > 10);

    const dir = mkdtempSync(join(tmpdir(), 'sim-fleet-'));
    const yamlFile = join(dir, 'fleet-storm.yaml');
    writeFileSync(yamlFile, toYaml(JSON.parse(readFileSync(example, 'utf8'))));
    assert.equal(sim('fleet', yamlFile, '--json').stdout, json.stdout);
    assert.equal(sim('fleet', example, '--json').stdout, json.stdout);
  });
});

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  ALL_KERNELS,
  COST_MODELS,
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  type KernelFeatures,
  isFlagSwitch,
  kernelLabel,
  kernelSwitchesText,
} from '#tdx-sim';
import { REBOOT_STRATEGIES } from '#vmm';

const main = fileURLToPath(new URL('./main.js', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
const GIB = 1024 ** 3;

function sim(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', cwd: repoRoot });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function within(actual: number, expected: number, fraction: number): boolean {
  return Math.abs(actual - expected) <= expected * fraction;
}

describe('sim reclaim-table', () => {
  it('prints the seed table beside the simulation, each figure within 10% (calibrated)', () => {
    const { status, stdout } = sim('reclaim-table', '--json');
    assert.equal(status, 0);
    const table = JSON.parse(stdout) as {
      model: string;
      rows: Array<{
        vcpus: number;
        memoryGiB: number;
        seed: { beforeSeconds: number; afterSeconds: number };
        simulated: { beforeSeconds: number; afterSeconds: number };
      }>;
    };
    assert.equal(table.model, 'calibrated');
    assert.deepEqual(
      table.rows.map((r) => [r.vcpus, r.memoryGiB, r.seed.beforeSeconds, r.seed.afterSeconds]),
      [
        [4, 18, 72, 24],
        [32, 107, 517, 134],
        [64, 400, 5539, 467],
      ],
    );
    for (const row of table.rows) {
      assert.ok(
        within(row.simulated.beforeSeconds, row.seed.beforeSeconds, 0.1),
        `before ${row.vcpus}`,
      );
      assert.ok(
        within(row.simulated.afterSeconds, row.seed.afterSeconds, 0.1),
        `after ${row.vcpus}`,
      );
    }
  });

  it('prints a readable table by default and takes the mechanistic model', () => {
    const text = sim('reclaim-table', '--model', 'mechanistic');
    assert.equal(text.status, 0);
    assert.match(text.stdout, /model: mechanistic/);
    assert.match(text.stdout, /\b5539\b/);
  });
});

describe('sim reclaim', () => {
  it('answers for any size and warns outside the calibrated range', () => {
    const inside = sim('reclaim', '--vcpus', '16', '--memory-gib', '64', '--json');
    assert.equal(inside.status, 0);
    assert.equal(inside.stderr, '');
    const result = JSON.parse(inside.stdout) as { beforeSeconds: number; afterSeconds: number };
    assert.ok(result.beforeSeconds > result.afterSeconds);

    const outside = sim('reclaim', '--vcpus', '128', '--memory-gib', '800', '--json');
    assert.equal(outside.status, 0);
    assert.match(outside.stderr, /^warning: .*outside the seed's table/);
    assert.ok((JSON.parse(outside.stdout) as { afterSeconds: number }).afterSeconds > 0);
  });
});

describe('sim reboot', () => {
  it('reuse under v4 + link keeps the guest memory: nothing newly allocated', () => {
    const { status, stdout } = sim(
      'reboot',
      '--strategy',
      'reuse',
      '--vcpus',
      '4',
      '--memory-gib',
      '18',
      '--terminate-vm',
      'v4',
      '--link-guest-memfd',
      '--json',
    );
    assert.equal(status, 0);
    const report = JSON.parse(stdout) as {
      ok: boolean;
      timeline: Array<{ name: string }>;
      summary: { bytesAllocated: number; bytesReused: number; bytesFreed: number };
    };
    assert.equal(report.ok, true);
    assert.equal(report.summary.bytesAllocated, 0);
    assert.equal(report.summary.bytesReused, 18 * GIB);
    assert.ok(report.summary.bytesFreed < GIB / 8, 'only metadata goes back to the host');
    assert.ok(report.timeline.some((s) => s.name === 'link-guest-memfd'));
  });

  it('refuses reuse without the link feature: the reason on one line, exit 1', () => {
    const { status, stderr, stdout } = sim(
      'reboot',
      '--strategy',
      'reuse',
      '--vcpus',
      '4',
      '--memory-gib',
      '18',
      '--terminate-vm',
      'v4',
    );
    assert.equal(status, 1);
    assert.equal(stdout, '');
    assert.equal(stderr.trimEnd().split('\n').length, 1);
    assert.match(stderr, /KVM_LINK_GUEST_MEMFD/);
  });

  it('--preallocate takes the guest memory at boot; a reuse reboot keeps it', () => {
    const { status, stdout } = sim(
      'reboot',
      '--strategy',
      'reuse',
      '--vcpus',
      '4',
      '--memory-gib',
      '2',
      '--terminate-vm',
      'aug2025',
      '--link-guest-memfd',
      '--preallocate',
      '--json',
    );
    assert.equal(status, 0);
    const report = JSON.parse(stdout) as {
      preallocate: boolean;
      summary: { bytesAllocated: number; bytesReused: number };
    };
    assert.equal(report.preallocate, true);
    assert.equal(report.summary.bytesAllocated, 0);
    assert.equal(report.summary.bytesReused, 2 * GIB);
  });

  it('cold reboot at full HKID capacity shows the new VM waiting for an HKID', () => {
    const { status, stdout } = sim(
      'reboot',
      '--strategy',
      'cold',
      '--vcpus',
      '4',
      '--memory-gib',
      '18',
      '--hkids',
      '4',
      '--other-vms',
      '3',
      '--json',
    );
    assert.equal(status, 0);
    const report = JSON.parse(stdout) as {
      timeline: Array<{ name: string; waitedSeconds: number; errno?: string }>;
    };
    const initVm = report.timeline.find((s) => s.name === 'init-vm');
    assert.ok(initVm !== undefined && initVm.waitedSeconds > 60, 'waits for the slow teardown');
    assert.equal(initVm.errno, 'ENOSPC');
  });

  for (const args of [
    [],
    ['--strategy', 'warm', '--vcpus', '4', '--memory-gib', '18'],
    ['--strategy', 'cold', '--vcpus', '0', '--memory-gib', '18'],
    ['--strategy', 'cold', '--vcpus', '4', '--memory-gib', '-1'],
    ['--strategy', 'cold', '--vcpus', '4', '--memory-gib', '18', '--terminate-vm', 'v9'],
    ['--strategy', 'cold', '--vcpus', '4', '--memory-gib', '18', '--bogus'],
  ]) {
    it(`rejects bad arguments with one line and exit 2: ${args.join(' ') || '(none)'}`, () => {
      const { status, stderr } = sim('reboot', ...args);
      assert.equal(status, 2);
      assert.equal(stderr.trimEnd().split('\n').length, 1);
      assert.match(stderr, /^sim: /);
    });
  }

  it('rejects an unknown command with exit 2', () => {
    assert.equal(sim('frobnicate').status, 2);
  });

  it("--help after a command prints that command's usage, exit 0", () => {
    const { status, stdout, stderr } = sim('reboot', '--help');
    assert.equal(status, 0);
    assert.equal(stderr, '');
    assert.match(stdout, /^usage: sim reboot --strategy /);
    assert.ok(!stdout.includes('reclaim-table'), stdout);
  });
});

describe('sim exec', () => {
  it("replays the seed's reuse scenario from the examples folder", () => {
    const { status, stdout } = sim('exec', 'examples/seed-reuse-v4-link.json', '--json');
    assert.equal(status, 0);
    const report = JSON.parse(stdout) as {
      results: Array<{ call: { op: string }; ok: boolean; errno?: string }>;
      memory: { free: number; private: number };
      hkids: { owned: number; total: number };
      failedExpectations: number;
    };
    assert.equal(report.failedExpectations, 0);
    assert.equal(report.memory.private, 2 * GIB, 'the new VM runs on the old memory');
    assert.deepEqual(report.hkids, { ...report.hkids, owned: 1, total: 1 });
    const link = report.results.find((r) => r.call.op === 'KVM_LINK_GUEST_MEMFD');
    assert.equal(link?.ok, true);
  });

  it('exits 1 when an expectation is not met, 2 on a bad script', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sim-exec-'));
    const wrong = join(dir, 'wrong.json');
    writeFileSync(
      wrong,
      JSON.stringify({
        host: { memoryGiB: 1 },
        calls: [
          { op: 'KVM_CREATE_VM', as: 'vm' },
          { op: 'KVM_TDX_TERMINATE_VM', vm: '$vm', expect: 'ok' },
        ],
      }),
    );
    const mismatch = sim('exec', wrong);
    assert.equal(mismatch.status, 1);
    assert.match(mismatch.stdout, /EINVAL/);
    assert.match(mismatch.stdout, /expected ok/);

    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ calls: [{ op: 'KVM_TDX_INIT_VM' }] }));
    const invalid = sim('exec', bad);
    assert.equal(invalid.status, 2);
    assert.match(invalid.stderr, /calls\[0\]: KVM_TDX_INIT_VM needs "vm"/);

    assert.equal(sim('exec', join(dir, 'missing.json')).status, 2);
  });

  it('reads the script from standard input with -, and says what the kernel says', () => {
    const script = {
      host: { memoryGiB: 1, hkids: 2, kernel: { terminateVm: 'aug2025', linkGuestMemfd: true } },
      calls: [
        { op: 'KVM_CREATE_VM', as: 'vm' },
        { op: 'KVM_TDX_INIT_VM', vm: '$vm' },
        {
          op: 'KVM_CREATE_GUEST_MEMFD',
          vm: '$vm',
          bytes: '64MiB',
          flags: 'GUEST_MEMFD_FLAG_MMAP',
          as: 'g',
        },
        { op: 'fallocate', fd: '$g', mode: 0, offset: 0, bytes: '2MiB', expect: 'EOPNOTSUPP' },
        { op: 'fallocate', fd: '$g', mode: 'FALLOC_FL_KEEP_SIZE', offset: 0, bytes: '64MiB' },
        { op: 'fstat', fd: '$g', expect: 'ok' },
        { op: 'write', fd: '$g', bytes: 4096, expect: 'EINVAL' },
        { op: 'memfd_create', bytes: '2MiB', as: 'plain' },
        {
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: '$vm',
          slot: 0,
          gpa: 0,
          bytes: '2MiB',
          gmem: '$plain',
          expect: 'EINVAL',
        },
        {
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: '$vm',
          slot: 0,
          gpa: 0,
          bytes: '64MiB',
          gmem: '$g',
        },
        { op: 'KVM_CREATE_VCPU', vm: '$vm', as: 'cpu' },
        { op: 'KVM_TDX_INIT_VCPU', vcpu: '$cpu' },
        { op: 'KVM_TDX_FINALIZE_VM', vm: '$vm' },
        { op: 'KVM_SET_USER_MEMORY_REGION2', vm: '$vm', slot: 0, gpa: 0, bytes: 0 },
        { op: 'KVM_RUN', vcpu: '$cpu', faultIn: { gpa: '4MiB', bytes: '2MiB' }, expect: 'EFAULT' },
        { op: 'tdx_fail_next', step: 'VPFLUSHDONE' },
        { op: 'KVM_TDX_TERMINATE_VM', vm: '$vm', expect: 'ok' },
        { op: 'KVM_CREATE_GUEST_MEMFD', vm: '$vm', bytes: '2MiB', expect: 'ok' },
        { op: 'KVM_CREATE_VCPU', vm: '$vm', expect: 'EIO' },
      ],
    };
    const result = spawnSync(process.execPath, [main, 'exec', '-', '--json'], {
      encoding: 'utf8',
      cwd: repoRoot,
      input: JSON.stringify(script),
    });
    assert.equal(result.status, 0, result.stdout + result.stderr);
    const report = JSON.parse(result.stdout) as {
      results: Array<{
        call: { op: string };
        value?: { size?: number; blocks?: number };
        exit?: { reason: string; gpa: number };
        hkidReleaseFailure?: string;
      }>;
      hkids: { owned: number; leaked: number };
      failedExpectations: number;
    };
    assert.equal(report.failedExpectations, 0);
    assert.deepEqual(report.results[5]?.value, { size: 64 * 1024 ** 2, blocks: 131072 });
    assert.deepEqual(report.results[14]?.exit?.reason, 'KVM_EXIT_MEMORY_FAULT');
    assert.equal(report.results[14]?.exit?.gpa, 4 * 1024 ** 2);
    assert.equal(report.results[16]?.hkidReleaseFailure, 'VPFLUSHDONE');
    assert.deepEqual([report.hkids.owned, report.hkids.leaked], [1, 0], 'the HKID is kept');
  });

  it('a failed KEY.FREEID shows the HKID leaked, apart from zombies', () => {
    const script = {
      host: { memoryGiB: 1, hkids: 2 },
      calls: [
        { op: 'KVM_CREATE_VM', as: 'vm' },
        { op: 'KVM_TDX_INIT_VM', vm: '$vm' },
        { op: 'tdx_fail_next', step: 'FREEID' },
        { op: 'close', fd: '$vm' },
      ],
    };
    const result = spawnSync(process.execPath, [main, 'exec', '-'], {
      encoding: 'utf8',
      cwd: repoRoot,
      input: JSON.stringify(script),
    });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /FREEID failed: HKID 1 leaked/);
    assert.match(result.stdout, /HKIDs: 0 owned, 1 free of 2 \(zombies 0, leaked 1\)/);
  });
});

describe('sim: options derive from the declared kernel switches and strategies', () => {
  /** The option of a switch: its name in kebab case. */
  const option = (name: string): string =>
    `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;

  /** The options that ask for `kernel`: a flag when set, a choice unless mainline's. */
  const kernelArgs = (kernel: KernelFeatures): string[] =>
    KERNEL_SWITCH_NAMES.flatMap((name) => {
      const value = kernel[name];
      if (typeof value === 'boolean') return value ? [option(name)] : [];
      return [option(name), value];
    });

  it('--help lists every strategy, kernel switch value and cost model', () => {
    const { status, stdout } = sim('--help');
    assert.equal(status, 0);
    assert.ok(stdout.includes(`--strategy ${REBOOT_STRATEGIES.join('|')}`), stdout);
    for (const name of KERNEL_SWITCH_NAMES) {
      const values = KERNEL_SWITCHES[name].values.map(String).join('|');
      const usage = isFlagSwitch(name) ? `[${option(name)}]` : `[${option(name)} ${values}]`;
      assert.ok(stdout.includes(usage), `${usage} in ${stdout}`);
    }
    assert.ok(stdout.includes(`--model ${COST_MODELS.join('|')}`), stdout);
  });

  for (const kernel of ALL_KERNELS) {
    it(`reboot runs on every declared kernel (${kernelLabel(kernel)})`, () => {
      const args = ['reboot', '--strategy', 'cold', '--vcpus', '2', '--memory-gib', '2'];
      const json = sim(...args, ...kernelArgs(kernel), '--json');
      assert.equal(json.status, 0, json.stderr);
      assert.deepEqual((JSON.parse(json.stdout) as { kernel: unknown }).kernel, kernel);
      const text = sim(...args, ...kernelArgs(kernel));
      assert.ok(text.stdout.includes(`kernel ${kernelSwitchesText(kernel)}\n`), text.stdout);
    });
  }

  for (const strategy of REBOOT_STRATEGIES) {
    it(`reboot takes strategy ${strategy}: a plan, or a refusal naming the kernel`, () => {
      const { status, stderr } = sim(
        'reboot',
        ...['--strategy', strategy, '--vcpus', '2', '--memory-gib', '2'],
      );
      assert.ok(status === 0 || (status === 1 && stderr.startsWith('refused: ')), stderr);
    });
  }

  for (const name of KERNEL_SWITCH_NAMES.filter((n) => !isFlagSwitch(n))) {
    it(`${option(name)} refuses a value not declared, listing the declared ones`, () => {
      const { status, stderr } = sim(
        ...['reboot', '--strategy', 'cold', '--vcpus', '2', '--memory-gib', '2'],
        ...[option(name), 'not-a-value'],
      );
      assert.equal(status, 2);
      const values = KERNEL_SWITCHES[name].values.join(', ');
      assert.equal(stderr, `sim: ${option(name)} must be one of ${values}, got "not-a-value"\n`);
    });
  }
});

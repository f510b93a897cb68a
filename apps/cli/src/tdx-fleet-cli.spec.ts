import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SIM_COMMAND_NAMES } from '../../sim/src/sim-command.js';

const cli = fileURLToPath(new URL('./main.js', import.meta.url));
const simMain = fileURLToPath(new URL('../../sim/src/main.js', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(main: string, args: string[]): Run {
  const result = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', cwd: repoRoot });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const tdxFleet = (...args: string[]): Run => run(cli, args);

describe('tdx-fleet', () => {
  it("--version prints package.json's version", () => {
    const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
      version: string;
    };
    for (const option of ['--version', '-V']) {
      assert.deepEqual(tdxFleet(option), { status: 0, stdout: `${version}\n`, stderr: '' });
    }
  });

  it('--help lists the commands', () => {
    const { status, stdout } = tdxFleet('--help');
    assert.equal(status, 0);
    assert.match(stdout, /^usage: tdx-fleet <command>/);
    assert.match(stdout, /^ {2}sim <command> \[options\]$/m);
    assert.match(stdout, /--version/);
  });

  it('sim --help lists every sim command, and each command has its own --help', () => {
    const { status, stdout } = tdxFleet('sim', '--help');
    assert.equal(status, 0);
    assert.match(stdout, /^usage: tdx-fleet sim <command>/);
    for (const name of SIM_COMMAND_NAMES) {
      assert.match(stdout, new RegExp(`^ {2}${name} `, 'm'), name);
      const own = tdxFleet('sim', name, '--help');
      assert.equal(own.status, 0, own.stderr);
      assert.ok(own.stdout.startsWith(`usage: tdx-fleet sim ${name} `), own.stdout);
    }
  });

  for (const args of [
    [],
    ['frobnicate'],
    ['--bogus'],
    ['sim'],
    ['sim', 'frobnicate'],
    ['sim', 'reboot', '--bogus'],
    ['sim', 'reclaim-table', '--model', 'astrology'],
  ]) {
    it(`rejects bad arguments with one line on stderr and exit 2: ${args.join(' ') || '(none)'}`, () => {
      const { status, stdout, stderr } = tdxFleet(...args);
      assert.equal(status, 2);
      assert.equal(stdout, '');
      assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    });
  }
});

describe('tdx-fleet sim runs what sim runs', () => {
  for (const args of [
    ['reclaim-table', '--json'],
    ['reclaim', '--vcpus', '128', '--memory-gib', '800'],
    ['reboot', '--strategy', 'reuse', '--vcpus', '4', '--memory-gib', '18', '--terminate-vm', 'v4'],
    ['reboot', '--strategy', 'warm', '--vcpus', '4', '--memory-gib', '18'],
    ['exec', 'examples/seed-reuse-v4-link.json', '--json'],
    ['exec', 'examples/no-such-script.json'],
    ['frobnicate'],
  ]) {
    it(`same output and exit code: ${args.join(' ')}`, () => {
      assert.deepEqual(tdxFleet('sim', ...args), run(simMain, args));
    });
  }
});

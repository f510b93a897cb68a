import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAINLINE_KERNEL } from '#tdx-sim';
import { BUILTIN_NAMES, builtinDocument } from './builtins.js';
import { ScenarioError, parseScenario, scenarioJsonSchema } from './scenario.js';
import { buildFleet } from './fleet-builder.js';
import { BASE_VARIANT } from './sweep.js';

type Entry = Record<string, unknown>;
/** A scenario document as a test edits it. */
interface Doc {
  [key: string]: unknown;
  fleet: { hosts: Entry[]; vms: Entry[] };
  phases: Entry[];
  thresholds: Entry[];
}

/** A small valid scenario; each case below breaks one field of a copy. */
function valid(): Doc {
  return {
    name: 'small',
    fleet: {
      hosts: [{ name: 'h', count: 2, memoryGiB: 256 }],
      vms: [{ name: 'vm', perHost: 2, sizes: [{ vcpus: 4, memoryGiB: 18 }] }],
    },
    phases: [{ name: 'storm', kind: 'storm' }],
    thresholds: [{ metric: 'downtime.p99', max: 100 }],
  };
}

function rejects(change: (doc: Doc) => void, message: RegExp): void {
  const doc = valid();
  change(doc);
  assert.throws(
    () => parseScenario(doc),
    (error: unknown) => {
      assert.ok(error instanceof ScenarioError, String(error));
      assert.match(error.message, message);
      return true;
    },
  );
}

describe('scenario validation', () => {
  it('accepts a small scenario and fills in the defaults', () => {
    const s = parseScenario(valid());
    assert.equal(s.seed, 1);
    assert.equal(s.repeat, 1);
    assert.deepEqual(s.fleet.hosts[0]?.kernel, MAINLINE_KERNEL);
    assert.equal(s.phases[0]?.action, 'reboot');
    assert.equal(s.limits.hostConcurrency, 4);
  });

  it('every built-in is a valid scenario named as listed', () => {
    for (const name of BUILTIN_NAMES) assert.equal(parseScenario(builtinDocument(name)).name, name);
  });

  const cases: Array<[string, (doc: Doc) => void, RegExp]> = [
    [
      'an unknown key',
      (d) => ((d.fleet.hosts[0] as Entry).memGiB = 4),
      /^fleet\.hosts\[0\]: unknown key "memGiB"/,
    ],
    ['an unknown top-level key', (d) => (d.phase = []), /^\(the scenario\): unknown key "phase"/],
    [
      'an unknown metric',
      (d) => ((d.thresholds[0] as Entry).metric = 'downtime.p98'),
      /^thresholds\[0\]\.metric: expected a metric/,
    ],
    [
      'both max and min',
      (d) => ((d.thresholds[0] as Entry).min = 1),
      /^thresholds\[0\]: give exactly one of max or min/,
    ],
    [
      'a negative host count',
      (d) => ((d.fleet.hosts[0] as Entry).count = -1),
      /^fleet\.hosts\[0\]\.count: expected an integer > 0/,
    ],
    [
      'an unknown kernel value',
      (d) => ((d.fleet.hosts[0] as Entry).kernel = { terminateVm: 'v5' }),
      /^fleet\.hosts\[0\]\.kernel\.terminateVm: expected one of none, v4, aug2025/,
    ],
    ['an unknown phase kind', (d) => ((d.phases[0] as Entry).kind = 'burst'), /^phases\[0\]\.kind/],
    [
      'a strategy of the other action',
      (d) => ((d.phases[0] as Entry).strategy = 'close'),
      /^phases\[0\]\.strategy: reboot takes cold, terminate, reuse, not close/,
    ],
    [
      'a phase on an unknown VM group',
      (d) => ((d.phases[0] as Entry).vmGroups = ['big']),
      /^phases\[0\]\.vmGroups\[0\]: no VM group "big"/,
    ],
    [
      'a threshold on an unknown phase',
      (d) => ((d.thresholds[0] as Entry).where = { phase: 'wave' }),
      /^thresholds\[0\]\.where\.phase: no phase "wave"/,
    ],
    [
      'a fleet metric narrowed by VM group',
      (d) => (d.thresholds[0] = { metric: 'makespan', max: 1, where: { vmGroup: 'vm' } }),
      /^thresholds\[0\]\.where: makespan is a fleet metric/,
    ],
    [
      'a name used twice',
      (d) => d.phases.push({ name: 'storm', kind: 'storm' }),
      /^phases\[1\]\.name: "storm" is used twice/,
    ],
    [
      'a VM group with count and perHost',
      (d) => ((d.fleet.vms[0] as Entry).count = 3),
      /^fleet\.vms\[0\]: give exactly one of count or perHost/,
    ],
    [
      'a VM group on an unknown host group',
      (d) => ((d.fleet.vms[0] as Entry).hostGroups = ['x']),
      /^fleet\.vms\[0\]\.hostGroups\[0\]: no host group "x"/,
    ],
    ['a missing fleet', (d) => delete (d as Partial<Doc>).fleet, /^fleet: required/],
    ['no phases', (d) => (d.phases = []), /^phases: expected at least one phase/],
    ['an unknown sweep variable', (d) => (d.sweep = { cpus: [1] }), /^sweep: unknown key "cpus"/],
  ];
  for (const [what, change, message] of cases) {
    it(`names the field of ${what}`, () => rejects(change, message));
  }

  it('a fleet that cannot fit its hosts is an error naming the VM group', () => {
    const doc = valid();
    (doc.fleet.vms[0] as Entry).perHost = 20;
    const s = parseScenario(doc);
    assert.throws(
      () => buildFleet(s, BASE_VARIANT, 1),
      /^ScenarioError: fleet\.vms\[0\]: VM \d+ of 40 in group "vm"/,
    );
  });

  it('the JSON Schema lists the metrics and forbids unknown keys', () => {
    const schema = JSON.stringify(scenarioJsonSchema());
    assert.match(schema, /"downtime\.p99"/);
    assert.match(schema, /"additionalProperties":false/);
    assert.match(schema, /2020-12/);
  });
});

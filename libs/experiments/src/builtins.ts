import { ALL_KERNELS, MAINLINE_KERNEL } from '#tdx-sim';
import { type Scenario, parseScenario } from './scenario.js';

// The built-in scenarios, each answering one question users bring to the project. They are
// scenario documents like a user's file (validated by the same schema), written here so that
// the command ships them without reading files.

const SEED_SOURCE =
  'KVM_TDX_TERMINATE_VM v4 commit message (June 2025): reclaim seconds before and after';

/** The seed's three VM sizes: vCPUs, GiB, and reclaim seconds before and after TERMINATE_VM. */
const SEED_ROWS = [
  { vcpus: 4, memoryGiB: 18, before: 72, after: 24 },
  { vcpus: 32, memoryGiB: 107, before: 517, after: 134 },
  { vcpus: 64, memoryGiB: 400, before: 5539, after: 467 },
] as const;

/**
 * The kernels the what-if sweeps: every combination of the switches the plans and their costs
 * read. The guest_memfd switches (which creation flags a kernel knows, which tree's errno for an
 * overlap) change what calls a VMM may make, not what a reboot costs: they stay at mainline's.
 */
const WHATIF_KERNELS = ALL_KERNELS.filter(
  (kernel) =>
    kernel.guestMemfdFlags === MAINLINE_KERNEL.guestMemfdFlags &&
    kernel.guestMemfdTree === MAINLINE_KERNEL.guestMemfdTree,
).map((kernel) => ({
  terminateVm: kernel.terminateVm,
  linkGuestMemfd: kernel.linkGuestMemfd,
  privatePageSize: kernel.privatePageSize,
}));

const V4_LINK = { terminateVm: 'v4', linkGuestMemfd: true, privatePageSize: '4K' } as const;

/** A fleet of `hosts` hosts of 1 TiB with a mix of the seed's small and middle sizes. */
function mixedFleet(hosts: number, kernel: object = {}) {
  return {
    hosts: [{ name: 'host', count: hosts, memoryGiB: 1024, hkids: 63, cpus: 128, kernel }],
    vms: [
      {
        name: 'vm',
        perHost: 6,
        sizes: [
          { vcpus: 4, memoryGiB: 18, weight: 3 },
          { vcpus: 32, memoryGiB: 107, weight: 2 },
        ],
      },
    ],
  };
}

const BUILTIN_DOCUMENTS: Record<string, Record<string, unknown>> = {
  'seed-table': {
    name: 'seed-table',
    answers:
      "Does the simulator reproduce the seed's table? Each of its three VM sizes torn down by " +
      'the mainline path (close) and by KVM_TDX_TERMINATE_VM, beside the published seconds.',
    fleet: {
      // One VM per host, as the seed measured them: nothing else contends for the host.
      hosts: SEED_ROWS.map((row) => ({
        name: `h${row.memoryGiB}`,
        count: 2,
        memoryGiB: 2 * row.memoryGiB + 8,
        kernel: V4_LINK,
      })),
      vms: SEED_ROWS.flatMap((row) =>
        (['close', 'terminate'] as const).map((how) => ({
          name: `s${row.memoryGiB}-${how}`,
          count: 1,
          hostGroups: [`h${row.memoryGiB}`],
          sizes: [{ vcpus: row.vcpus, memoryGiB: row.memoryGiB }],
        })),
      ),
    },
    phases: [
      {
        name: 'mainline',
        kind: 'storm',
        action: 'terminate',
        strategy: 'close',
        vmGroups: SEED_ROWS.map((row) => `s${row.memoryGiB}-close`),
      },
      {
        name: 'terminate-vm',
        kind: 'storm',
        action: 'terminate',
        strategy: 'terminate',
        vmGroups: SEED_ROWS.map((row) => `s${row.memoryGiB}-terminate`),
      },
    ],
    references: SEED_ROWS.flatMap((row) => [
      {
        label: `${row.vcpus} vCPUs, ${row.memoryGiB} GiB: mainline`,
        metric: 'reclaim.p50',
        where: { vmGroup: `s${row.memoryGiB}-close` },
        value: row.before,
        source: SEED_SOURCE,
      },
      {
        label: `${row.vcpus} vCPUs, ${row.memoryGiB} GiB: TERMINATE_VM`,
        metric: 'reclaim.p50',
        where: { vmGroup: `s${row.memoryGiB}-terminate` },
        value: row.after,
        source: SEED_SOURCE,
      },
    ]),
    thresholds: [{ metric: 'operations.failed', max: 0 }],
    sampleEverySeconds: 30,
  },

  'reboot-storm': {
    name: 'reboot-storm',
    answers:
      'How long is a VM down when a whole fleet reboots at once, with each strategy on each ' +
      'kernel? (Strategies a kernel cannot run are listed as skipped.)',
    fleet: mixedFleet(8),
    phases: [{ name: 'storm', kind: 'storm', action: 'reboot' }],
    sweep: {
      strategy: ['cold', 'terminate', 'reuse'],
      kernel: [
        { terminateVm: 'none', linkGuestMemfd: false },
        { terminateVm: 'v4', linkGuestMemfd: true },
        { terminateVm: 'aug2025', linkGuestMemfd: true },
      ],
    },
    thresholds: [{ metric: 'operations.failed', max: 0 }],
    sampleEverySeconds: 10,
  },

  'rolling-reboot': {
    name: 'rolling-reboot',
    answers:
      'How long does a maintenance wave take, and how long is each VM down, with at most N ' +
      'VMs down per host (and 16 in the fleet)?',
    fleet: mixedFleet(8, V4_LINK),
    phases: [
      { name: 'wave', kind: 'rolling', action: 'reboot', strategy: 'reuse', maxInFleet: 16 },
    ],
    sweep: { maxPerHost: [1, 2, 4], strategy: ['terminate', 'reuse'] },
    thresholds: [{ metric: 'operations.failed', max: 0 }],
    sampleEverySeconds: 10,
  },

  'hkid-pressure': {
    name: 'hkid-pressure',
    answers:
      'On hosts whose HKIDs are all in use, how long do cold, terminate and reuse reboots ' +
      'take? A cold reboot needs a second HKID before the old one is free.',
    fleet: {
      hosts: [{ name: 'host', count: 4, memoryGiB: 1024, hkids: 8, kernel: V4_LINK }],
      vms: [{ name: 'vm', perHost: 8, sizes: [{ vcpus: 4, memoryGiB: 18 }] }],
    },
    phases: [{ name: 'storm', kind: 'storm', action: 'reboot' }],
    sweep: { strategy: ['cold', 'terminate', 'reuse'] },
    thresholds: [{ metric: 'operations.failed', max: 0 }],
    sampleEverySeconds: 5,
  },

  'memory-headroom': {
    name: 'memory-headroom',
    answers:
      'How much free memory does each strategy need at a given reboot concurrency per host? ' +
      'memory.headroomBytes is the free memory a wave uses up.',
    fleet: {
      hosts: [{ name: 'host', count: 4, memoryGiB: 512, kernel: V4_LINK }],
      vms: [{ name: 'vm', perHost: 3, sizes: [{ vcpus: 32, memoryGiB: 107 }] }],
    },
    phases: [{ name: 'wave', kind: 'rolling', action: 'reboot' }],
    sweep: { strategy: ['cold', 'terminate', 'reuse'], maxPerHost: [1, 2, 3] },
    thresholds: [{ metric: 'operations.failed', max: 0 }],
    sampleEverySeconds: 1,
  },

  'leak-hunt': {
    name: 'leak-hunt',
    answers:
      '1,000 reuse reboots of the same VMs: does free memory drift, and do orphaned memory ' +
      'and zombie HKIDs stay at zero?',
    fleet: {
      hosts: [{ name: 'host', count: 2, memoryGiB: 256, kernel: V4_LINK }],
      vms: [{ name: 'vm', perHost: 5, sizes: [{ vcpus: 4, memoryGiB: 18 }] }],
    },
    phases: [
      {
        name: 'reboots',
        kind: 'closed-loop',
        action: 'reboot',
        strategy: 'reuse',
        concurrency: 4,
        operations: 1000,
      },
    ],
    thresholds: [
      { metric: 'operations.failed', max: 0 },
      { metric: 'memory.free.driftBytes', min: 0 },
      { metric: 'memory.orphaned.endBytes', max: 0 },
      { metric: 'hkids.zombie.end', max: 0 },
    ],
    sampleEverySeconds: 60,
  },

  'kernel-whatif': {
    name: 'kernel-whatif',
    answers:
      'What does each kernel feature (TERMINATE_VM v4 or aug2025, LINK_GUEST_MEMFD, 2M private ' +
      'pages) change in downtime, makespan and headroom, for the same fleet and storm?',
    fleet: mixedFleet(4),
    phases: [{ name: 'storm', kind: 'storm', action: 'reboot' }],
    sweep: {
      kernel: WHATIF_KERNELS,
      strategy: ['cold', 'terminate', 'reuse'],
    },
    thresholds: [{ metric: 'operations.failed', max: 0 }],
    sampleEverySeconds: 10,
  },
};

/** The names of the built-in scenarios, in the order `experiment list` shows them. */
export const BUILTIN_NAMES = Object.keys(BUILTIN_DOCUMENTS);

/** True when `name` is a built-in scenario. */
export function isBuiltin(name: string): boolean {
  return Object.hasOwn(BUILTIN_DOCUMENTS, name);
}

/** A built-in scenario's document, as a user would write it (a fresh copy). */
export function builtinDocument(name: string): Record<string, unknown> {
  const document = BUILTIN_DOCUMENTS[name];
  if (document === undefined) throw new RangeError(`no built-in scenario "${name}"`);
  return structuredClone(document);
}

/** A built-in scenario, validated. */
export function builtinScenario(name: string): Scenario {
  return parseScenario(builtinDocument(name));
}

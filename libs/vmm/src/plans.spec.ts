/**
 * What an operator sees when asking for a plan: refusals before any step for kernels that cannot
 * run it (naming the missing feature and the switch that provides it), refusals of impossible
 * VM shapes, and the order of the steps of an accepted plan (the seed's reuse flow above all).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  GIB_BYTES,
  type HostState,
  type KernelFeatures,
  MAINLINE_KERNEL,
  type PrivatePageSize,
  type TerminateVmSemantics,
  createHost,
  makeHostConfig,
  ALL_KERNELS,
  kernelLabel,
} from '#tdx-sim';
import {
  type Intent,
  REBOOT_STRATEGIES,
  TERMINATE_STRATEGIES,
  type KernelFeatureName,
  type Plan,
  type PlanStep,
  type StepName,
  type VmHandles,
  type VmShape,
  handlesAfter,
  planFor,
  runPlan,
  runnableStrategies,
  shapeOfGiB,
} from './index.js';

const MIB = 1024 * 1024;
const SHAPE: VmShape = shapeOfGiB(2, 1);

function kernel(
  terminateVm: TerminateVmSemantics,
  linkGuestMemfd: boolean,
  privatePageSize: PrivatePageSize = '4K',
): KernelFeatures {
  return { ...MAINLINE_KERNEL, terminateVm, linkGuestMemfd, privatePageSize };
}

function intentLabel(intent: Intent): string {
  return intent.action === 'boot' ? 'boot' : `${intent.action} ${intent.strategy}`;
}

const BOOT: Intent = { action: 'boot' };
const COLD: Intent = { action: 'reboot', strategy: 'cold' };
const TERMINATE_REBOOT: Intent = { action: 'reboot', strategy: 'terminate' };
const REUSE: Intent = { action: 'reboot', strategy: 'reuse' };
const CLOSE: Intent = { action: 'terminate', strategy: 'close' };
const TERMINATE_VM: Intent = { action: 'terminate', strategy: 'terminate' };
/** Boot, then every declared strategy of each action. */
const ALL_INTENTS: readonly Intent[] = [
  BOOT,
  ...REBOOT_STRATEGIES.map((strategy): Intent => ({ action: 'reboot', strategy })),
  ...TERMINATE_STRATEGIES.map((strategy): Intent => ({ action: 'terminate', strategy })),
];

/** A running VM of `shape` on a fresh host with `k`: the state and the VMM's handles. */
function bootedHost(
  k: KernelFeatures,
  shape: VmShape = SHAPE,
): { state: HostState; handles: VmHandles } {
  const config = makeHostConfig({ memoryGiB: 8, hkids: 4, cpus: 16, kernel: k });
  const result = planFor(BOOT, config.kernel, shape);
  assert.ok(result.ok, 'boot is never refused for a valid shape');
  const run = runPlan(createHost(config), result.plan);
  assert.ok(run.ok, `boot failed: ${run.failure?.message ?? ''}`);
  return { state: run.state, handles: handlesAfter(shape, run.bindings) };
}

/** Handles that look like a running VM's; enough for planning (no host needed). */
const FAKE_HANDLES: VmHandles = {
  vm: 3,
  vcpus: [7, 8],
  guestMemfds: [{ fd: 4, map: 1, slot: 0, gpa: 0, bytes: SHAPE.memoryBytes, offset: 0 }],
};

function mustPlan(intent: Intent, k: KernelFeatures, handles: VmHandles = FAKE_HANDLES): Plan {
  const result = planFor(intent, k, SHAPE, intent.action === 'boot' ? undefined : handles);
  if (!result.ok) assert.fail(`${intentLabel(intent)} refused: ${result.refusal.message}`);
  return result.plan;
}

function stepNames(plan: Plan): StepName[] {
  return plan.steps.map((s) => s.name);
}

describe('planFor: refusals for a kernel without the needed feature', () => {
  const refusals: Array<{
    intent: Intent;
    terminateVm: TerminateVmSemantics;
    link: boolean;
    feature: KernelFeatureName;
    switchName: 'terminateVm' | 'linkGuestMemfd';
  }> = [
    // Reuse needs both: terminate is the first one missing on mainline, with or without link.
    {
      intent: REUSE,
      terminateVm: 'none',
      link: false,
      feature: 'KVM_TDX_TERMINATE_VM',
      switchName: 'terminateVm',
    },
    {
      intent: REUSE,
      terminateVm: 'none',
      link: true,
      feature: 'KVM_TDX_TERMINATE_VM',
      switchName: 'terminateVm',
    },
    {
      intent: REUSE,
      terminateVm: 'v4',
      link: false,
      feature: 'KVM_LINK_GUEST_MEMFD',
      switchName: 'linkGuestMemfd',
    },
    {
      intent: REUSE,
      terminateVm: 'aug2025',
      link: false,
      feature: 'KVM_LINK_GUEST_MEMFD',
      switchName: 'linkGuestMemfd',
    },
    {
      intent: TERMINATE_REBOOT,
      terminateVm: 'none',
      link: false,
      feature: 'KVM_TDX_TERMINATE_VM',
      switchName: 'terminateVm',
    },
    {
      intent: TERMINATE_REBOOT,
      terminateVm: 'none',
      link: true,
      feature: 'KVM_TDX_TERMINATE_VM',
      switchName: 'terminateVm',
    },
    {
      intent: TERMINATE_VM,
      terminateVm: 'none',
      link: false,
      feature: 'KVM_TDX_TERMINATE_VM',
      switchName: 'terminateVm',
    },
    {
      intent: TERMINATE_VM,
      terminateVm: 'none',
      link: true,
      feature: 'KVM_TDX_TERMINATE_VM',
      switchName: 'terminateVm',
    },
  ];

  for (const row of refusals) {
    for (const size of ['4K', '2M'] as const) {
      const k = kernel(row.terminateVm, row.link, size);
      it(`${intentLabel(row.intent)} on ${kernelLabel(k)} is refused: ${row.feature} missing`, () => {
        const result = planFor(row.intent, k, SHAPE, FAKE_HANDLES);
        assert.equal(result.ok, false);
        assert.ok(!result.ok);
        assert.equal(result.refusal.code, 'KERNEL_FEATURE_MISSING');
        assert.ok(result.refusal.code === 'KERNEL_FEATURE_MISSING');
        assert.equal(result.refusal.feature, row.feature);
        assert.equal(result.refusal.switch, row.switchName);
        // The message is what the operator reads: it names the feature and the switch.
        assert.match(result.refusal.message, new RegExp(row.feature));
        assert.match(result.refusal.message, new RegExp(row.switchName));
        assert.equal('plan' in result, false, 'a refusal carries no plan to run');
      });
    }
  }

  it('a refusal does not need the running VM handles (nothing is planned)', () => {
    const result = planFor(REUSE, kernel('none', false), SHAPE);
    assert.equal(result.ok, false);
  });
});

describe('planFor: accepted combinations return plans', () => {
  /** Which kernels accept each intent; every other kernel refuses it (the table above). */
  const accepts: Array<[Intent, (k: KernelFeatures) => boolean]> = [
    [BOOT, () => true],
    [COLD, () => true],
    [CLOSE, () => true],
    [TERMINATE_REBOOT, (k) => k.terminateVm !== 'none'],
    [TERMINATE_VM, (k) => k.terminateVm !== 'none'],
    [REUSE, (k) => k.terminateVm !== 'none' && k.linkGuestMemfd],
  ];
  let accepted = 0;
  let refused = 0;
  for (const [intent, allows] of accepts) {
    for (const k of ALL_KERNELS) {
      if (allows(k)) accepted += 1;
      else refused += 1;
      it(`${intentLabel(intent)} on ${kernelLabel(k)}: ${allows(k) ? 'a plan' : 'refused'}`, () => {
        const handles = intent.action === 'boot' ? undefined : FAKE_HANDLES;
        const result = planFor(intent, k, SHAPE, handles);
        assert.equal(result.ok, allows(k));
        if (!result.ok) return;
        assert.deepEqual(result.plan.intent, intent);
        assert.ok(result.plan.steps.length > 0);
        if (intent.action === 'boot') {
          assert.deepEqual(result.plan.initialBindings, {});
        } else {
          assert.equal(result.plan.initialBindings['old.vm'], FAKE_HANDLES.vm);
          assert.equal(result.plan.initialBindings['old.gmem.0'], 4);
        }
      });
    }
  }

  // The guest_memfd switches refuse no plan: each of the 12 kernels of the other switches
  // (56 pairs accepted, 16 refused) comes in their 4 variants.
  it('covers all 288 intent x kernel pairs: 224 accepted, 64 refused', () => {
    assert.equal(accepted + refused, ALL_INTENTS.length * ALL_KERNELS.length);
    assert.equal(accepted, 56 * 4);
    assert.equal(refused, 16 * 4);
  });
});

describe('a refused plan leaves the host untouched', () => {
  const cases: Array<[Intent, KernelFeatures]> = [
    [REUSE, kernel('none', false)],
    [REUSE, kernel('none', true)],
    [REUSE, kernel('v4', false)],
    [REUSE, kernel('aug2025', false)],
    [TERMINATE_REBOOT, kernel('none', true)],
    [TERMINATE_VM, kernel('none', false)],
  ];
  for (const [intent, k] of cases) {
    it(`${intentLabel(intent)} on ${kernelLabel(k)}: the VM keeps running as it was`, () => {
      const { state, handles } = bootedHost(k);
      const before = structuredClone(state);
      const result = planFor(intent, k, SHAPE, handles);
      assert.equal(result.ok, false);
      // Nothing ran: the host is exactly as it was, the VM still RUNNABLE with its HKID and
      // its vCPUs inside KVM_RUN.
      assert.deepEqual(state, before);
      const vms = Object.values(state.vms);
      assert.equal(vms.length, 1);
      const vm = vms[0];
      assert.ok(vm !== undefined);
      assert.equal(vm.tdState, 'RUNNABLE');
      assert.equal(vm.dead, false);
      assert.notEqual(vm.hkid, null);
      assert.ok(vm.vcpus.every((v) => v.inIoctl));
      // And the operator can still do what the kernel allows: a cold reboot of the same VM.
      const cold = planFor(COLD, k, SHAPE, handles);
      assert.ok(cold.ok);
      assert.equal(runPlan(state, cold.plan).ok, true);
    });
  }
});

describe('planFor: invalid VM shapes are refused with INVALID_VM_SHAPE', () => {
  const GIB = GIB_BYTES;
  const invalid: Array<[string, VmShape]> = [
    ['0 vCPUs', { vcpus: 0, memoryBytes: GIB }],
    ['negative vCPUs', { vcpus: -2, memoryBytes: GIB }],
    ['fractional vCPUs', { vcpus: 1.5, memoryBytes: GIB }],
    ['NaN vCPUs', { vcpus: Number.NaN, memoryBytes: GIB }],
    ['0 bytes of memory', { vcpus: 2, memoryBytes: 0 }],
    ['negative memory', { vcpus: 2, memoryBytes: -GIB }],
    ['memory of 2 MiB + 4 KiB', { vcpus: 2, memoryBytes: 2 * MIB + 4096 }],
    ['memory of 1 GiB + 1 MiB', { vcpus: 2, memoryBytes: GIB + MIB }],
    ['memory of 1 MiB', { vcpus: 2, memoryBytes: MIB }],
    ['fractional memory', { vcpus: 2, memoryBytes: 2 * MIB + 0.5 }],
    ['an initial region of 0', { vcpus: 2, memoryBytes: GIB, initialRegionBytes: 0 }],
    [
      'an initial region larger than memory',
      { vcpus: 2, memoryBytes: 4 * MIB, initialRegionBytes: 6 * MIB },
    ],
    [
      'an initial region not a multiple of 2 MiB',
      { vcpus: 2, memoryBytes: GIB, initialRegionBytes: 3 * MIB },
    ],
    [
      'a fault-in smaller than the initial region',
      { vcpus: 2, memoryBytes: GIB, initialRegionBytes: 8 * MIB, faultInBytes: 4 * MIB },
    ],
    ['a fault-in larger than memory', { vcpus: 2, memoryBytes: GIB, faultInBytes: 2 * GIB }],
    // Memory defaults its initial region to 4 MiB: 2 MiB of memory cannot hold it.
    [
      '2 MiB of memory (smaller than the default firmware region)',
      { vcpus: 1, memoryBytes: 2 * MIB },
    ],
  ];
  const intents: Intent[] = [BOOT, COLD, TERMINATE_REBOOT, REUSE, CLOSE];
  for (const [name, shape] of invalid) {
    it(`refuses ${name}`, () => {
      for (const intent of intents) {
        // On a kernel that has everything, so only the shape can be the reason.
        const result = planFor(intent, kernel('aug2025', true), shape, FAKE_HANDLES);
        assert.equal(result.ok, false, `${intentLabel(intent)} accepted ${name}`);
        assert.ok(!result.ok);
        assert.equal(result.refusal.code, 'INVALID_VM_SHAPE');
        assert.ok(result.refusal.message.length > 0);
      }
    });
  }

  it('checks the shape before the kernel: a bad shape on mainline is INVALID_VM_SHAPE', () => {
    const result = planFor(REUSE, kernel('none', false), { vcpus: 0, memoryBytes: GIB });
    assert.ok(!result.ok);
    assert.equal(result.refusal.code, 'INVALID_VM_SHAPE');
  });

  const valid: Array<[string, VmShape]> = [
    ['1 vCPU, 4 MiB', { vcpus: 1, memoryBytes: 4 * MIB }],
    ['2 vCPUs, 2 GiB + 2 MiB', { vcpus: 2, memoryBytes: 2 * GIB + 2 * MIB }],
    ['half the memory faulted in', { vcpus: 4, memoryBytes: GIB, faultInBytes: GIB / 2 }],
    [
      'fault-in equal to the initial region',
      { vcpus: 1, memoryBytes: GIB, initialRegionBytes: 8 * MIB, faultInBytes: 8 * MIB },
    ],
  ];
  for (const [name, shape] of valid) {
    it(`accepts ${name}`, () => {
      assert.equal(planFor(BOOT, kernel('none', false), shape).ok, true);
    });
  }
});

describe('plan steps', () => {
  /** The seed's reuse flow, steps 1 to 8, then init, finalize, run. */
  const SEED_ORDER: StepName[] = [
    'terminate-vm', // 1. TERMINATE_VM on the old VM
    'close-vm', // 2. close the old VM fd
    'create-vm', // 3. create the new VM
    'link-guest-memfd', // 4. link the old guest_memfds to the new VM
    'unmap-old-guest-memfd', // 5. unmap the old mappings
    'close-old-guest-memfd', // 6. close the old guest_memfd files
    'map-guest-memfd', // 7. map the new views
    'create-memslots', // 8. memslots in the new VM on the same inodes
    'init-vm',
    'finalize',
    'run',
  ];

  const reuseKernels: Array<[KernelFeatures, StepName[]]> = [
    [
      kernel('v4', true),
      [
        'stop-vcpus',
        'terminate-vm',
        'close-vcpus',
        'close-vm',
        'create-vm',
        'link-guest-memfd',
        'unmap-old-guest-memfd',
        'close-old-guest-memfd',
        'map-guest-memfd',
        'create-memslots',
        'init-vm',
        'create-vcpus',
        'init-vcpus',
        'init-mem-region',
        'finalize',
        'run',
      ],
    ],
    [
      kernel('aug2025', true),
      [
        'stop-vcpus',
        'terminate-vm',
        'delete-memslots',
        'close-vcpus',
        'close-vm',
        'create-vm',
        'link-guest-memfd',
        'unmap-old-guest-memfd',
        'close-old-guest-memfd',
        'map-guest-memfd',
        'create-memslots',
        'init-vm',
        'create-vcpus',
        'init-vcpus',
        'init-mem-region',
        'finalize',
        'run',
      ],
    ],
  ];

  for (const [k, expected] of reuseKernels) {
    for (const size of ['4K', '2M'] as const) {
      const kk = { ...k, privatePageSize: size };
      it(`reuse on ${kernelLabel(kk)} follows the seed's eight steps in order`, () => {
        const plan = mustPlan(REUSE, kk);
        const names = stepNames(plan);
        assert.deepEqual(names, expected);
        const positions = SEED_ORDER.map((name) => names.indexOf(name));
        assert.ok(positions.every((p) => p >= 0));
        assert.deepEqual(
          positions,
          [...positions].sort((a, b) => a - b),
        );
        // delete-memslots only under aug2025, and right after terminate.
        const del = names.indexOf('delete-memslots');
        if (kk.terminateVm === 'aug2025') assert.equal(del, names.indexOf('terminate-vm') + 1);
        else assert.equal(del, -1);
        // Reuse never creates a guest_memfd nor closes the old ones through the teardown path.
        assert.equal(names.includes('create-guest-memfd'), false);
        assert.equal(names.includes('close-guest-memfd'), false);
        // The new VM waits for the whole teardown (the old VM fd is closed before it exists).
        assert.equal(plan.handoff, null);
      });
    }
  }

  it('reuse: each step names the right VM and guest_memfd', () => {
    const plan = mustPlan(REUSE, kernel('aug2025', true));
    const step = (name: StepName) => {
      const found = plan.steps.find((s) => s.name === name);
      assert.ok(found, `no ${name} step`);
      return found;
    };
    assert.deepEqual(
      step('terminate-vm').calls.map((c) => c.call),
      [{ op: 'KVM_TDX_TERMINATE_VM', vm: { ref: 'old.vm' } }],
    );
    assert.deepEqual(step('delete-memslots').calls, [
      {
        call: {
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: { ref: 'old.vm' },
          slot: 0,
          gpa: 0,
          bytes: 0,
        },
      },
    ]);
    assert.deepEqual(
      step('close-vm').calls.map((c) => c.call),
      [{ op: 'close', fd: { ref: 'old.vm' } }],
    );
    assert.deepEqual(step('link-guest-memfd').calls, [
      {
        call: { op: 'KVM_LINK_GUEST_MEMFD', vm: { ref: 'vm' }, gmem: { ref: 'old.gmem.0' } },
        bind: 'gmem.0',
      },
    ]);
    assert.deepEqual(
      step('unmap-old-guest-memfd').calls.map((c) => c.call),
      [{ op: 'munmap', map: { ref: 'old.map.0' } }],
    );
    assert.deepEqual(
      step('close-old-guest-memfd').calls.map((c) => c.call),
      [{ op: 'close', fd: { ref: 'old.gmem.0' } }],
    );
    assert.deepEqual(step('map-guest-memfd').calls, [
      { call: { op: 'mmap', fd: { ref: 'gmem.0' } }, bind: 'map.0' },
    ]);
    const memslot = step('create-memslots').calls[0]?.call;
    assert.ok(memslot?.op === 'KVM_SET_USER_MEMORY_REGION2');
    assert.deepEqual(memslot.gmem, { ref: 'gmem.0' });
    assert.deepEqual(memslot.vm, { ref: 'vm' });
    assert.equal(memslot.bytes, SHAPE.memoryBytes);
    // The teardown steps act on the old VM, the boot steps on the new one.
    for (const s of plan.steps) {
      assert.equal(
        s.track,
        ['stop-vcpus', 'terminate-vm', 'delete-memslots', 'close-vcpus', 'close-vm'].includes(
          s.name,
        )
          ? 'teardown'
          : 'boot',
        `${s.name} on the wrong track`,
      );
    }
  });

  const others: Array<[Intent, KernelFeatures, StepName[]]> = [
    [
      BOOT,
      kernel('none', false),
      [
        'create-vm',
        'init-vm',
        'create-vcpus',
        'create-guest-memfd',
        'map-guest-memfd',
        'create-memslots',
        'init-vcpus',
        'init-mem-region',
        'finalize',
        'run',
      ],
    ],
    [
      COLD,
      kernel('none', false),
      [
        'stop-vcpus',
        'close-vcpus',
        'unmap-old-guest-memfd',
        'close-guest-memfd',
        'close-vm',
        'create-vm',
        'init-vm',
        'create-vcpus',
        'create-guest-memfd',
        'map-guest-memfd',
        'create-memslots',
        'init-vcpus',
        'init-mem-region',
        'finalize',
        'run',
      ],
    ],
    [
      TERMINATE_REBOOT,
      kernel('v4', false),
      [
        'stop-vcpus',
        'terminate-vm',
        'close-vcpus',
        'unmap-old-guest-memfd',
        'close-guest-memfd',
        'close-vm',
        'create-vm',
        'init-vm',
        'create-vcpus',
        'create-guest-memfd',
        'map-guest-memfd',
        'create-memslots',
        'init-vcpus',
        'init-mem-region',
        'finalize',
        'run',
      ],
    ],
    [
      CLOSE,
      kernel('none', false),
      ['stop-vcpus', 'close-vcpus', 'unmap-old-guest-memfd', 'close-guest-memfd', 'close-vm'],
    ],
    [
      TERMINATE_VM,
      kernel('aug2025', false),
      [
        'stop-vcpus',
        'terminate-vm',
        'close-vcpus',
        'unmap-old-guest-memfd',
        'close-guest-memfd',
        'close-vm',
      ],
    ],
  ];
  for (const [intent, k, expected] of others) {
    it(`${intentLabel(intent)} on ${kernelLabel(k)}: steps in order`, () => {
      assert.deepEqual(stepNames(mustPlan(intent, k)), expected);
    });
  }

  it('a guest_memfd without a userspace mapping is closed without an unmap step', () => {
    const unmapped: VmHandles = {
      ...FAKE_HANDLES,
      guestMemfds: FAKE_HANDLES.guestMemfds.map((m) => ({ ...m, map: null })),
    };
    const names = stepNames(mustPlan(CLOSE, kernel('none', false), unmapped));
    assert.deepEqual(names, ['stop-vcpus', 'close-vcpus', 'close-guest-memfd', 'close-vm']);
  });

  it('cold reboot: the new VM starts beside the teardown (handoff after stop-vcpus)', () => {
    const plan = mustPlan(COLD, kernel('none', false));
    assert.equal(plan.handoff, 'stop-vcpus');
  });

  it('terminate reboot: the new VM starts once TERMINATE_VM is done', () => {
    const plan = mustPlan(TERMINATE_REBOOT, kernel('v4', false));
    assert.equal(plan.handoff, 'terminate-vm');
  });

  it('every vCPU is stopped, closed, created, initialised and run', () => {
    const handles: VmHandles = { ...FAKE_HANDLES, vcpus: [20, 21, 22] };
    const shape: VmShape = { vcpus: 5, memoryBytes: GIB_BYTES };
    const result = planFor(COLD, kernel('none', false), shape, handles);
    assert.ok(result.ok);
    const count = (name: StepName) =>
      result.plan.steps.find((s) => s.name === name)?.calls.length ?? 0;
    assert.equal(count('stop-vcpus'), 3, 'the old VM had 3 vCPUs');
    assert.equal(count('close-vcpus'), 3);
    assert.equal(count('create-vcpus'), 5, 'the new VM has 5');
    assert.equal(count('init-vcpus'), 5);
    assert.equal(count('run'), 5);
  });
});

/** Every handle a step names, in plan order: an unbound one would stop the runner with a bug. */
function unboundHandles(plan: Plan): string[] {
  const bound = new Set(Object.keys(plan.initialBindings));
  const missing: string[] = [];
  const refsOf = (step: PlanStep): string[] =>
    step.calls.flatMap(({ call }) =>
      Object.values(call).flatMap((v: unknown) =>
        typeof v === 'object' && v !== null && 'ref' in v && typeof v.ref === 'string'
          ? [v.ref]
          : [],
      ),
    );
  // Tracks run in plan order within themselves; a boot step may also use what the teardown
  // bound before the handoff, which plan order covers too.
  for (const step of plan.steps) {
    for (const name of refsOf(step)) if (!bound.has(name)) missing.push(`${step.name}: ${name}`);
    for (const { bind } of step.calls) if (bind !== undefined) bound.add(bind);
  }
  return missing;
}

describe('plans name only handles they have', () => {
  const arbHandles = fc
    .record({
      vcpus: fc.integer({ min: 1, max: 6 }),
      mapped: fc.boolean(),
      gib: fc.integer({ min: 1, max: 4 }),
    })
    .map(({ vcpus, mapped, gib }) => ({
      shape: shapeOfGiB(vcpus, gib),
      handles: {
        vm: 3,
        vcpus: Array.from({ length: vcpus }, (_, i) => 10 + i),
        guestMemfds: [
          { fd: 4, map: mapped ? 1 : null, slot: 0, gpa: 0, bytes: gib * GIB_BYTES, offset: 0 },
        ],
      } satisfies VmHandles,
    }));

  it('every accepted plan, for a VM with or without a guest_memfd mapping', () => {
    fc.assert(
      fc.property(
        arbHandles,
        fc.constantFrom(...ALL_INTENTS),
        fc.constantFrom(...ALL_KERNELS),
        ({ shape, handles }, intent, k) => {
          const result = planFor(intent, k, shape, intent.action === 'boot' ? undefined : handles);
          if (!result.ok) return;
          assert.deepEqual(unboundHandles(result.plan), []);
        },
      ),
      { numRuns: 300 },
    );
  });

  // Found by the property above: the reuse plan unmapped `old.map.0` even when the old
  // guest_memfd had no userspace mapping, and the runner stopped with UnboundHandleError.
  for (const k of [kernel('v4', true), kernel('aug2025', true)]) {
    it(`reuse on ${kernelLabel(k)} of a VM whose guest_memfd is not mapped has no unmap step`, () => {
      const unmapped: VmHandles = {
        ...FAKE_HANDLES,
        guestMemfds: FAKE_HANDLES.guestMemfds.map((m) => ({ ...m, map: null })),
      };
      const plan = mustPlan(REUSE, k, unmapped);
      assert.deepEqual(unboundHandles(plan), []);
      assert.equal(stepNames(plan).includes('unmap-old-guest-memfd'), false);
      assert.ok(stepNames(plan).includes('close-old-guest-memfd'));
    });
  }
});

describe('reuse keeps the old guest memory, so the new VM must fit it exactly', () => {
  const k = kernel('aug2025', true);
  const old: VmHandles = {
    vm: 3,
    vcpus: [7, 8],
    guestMemfds: [{ fd: 4, map: 1, slot: 0, gpa: 0, bytes: 2 * GIB_BYTES, offset: 0 }],
  };
  const mismatched: Array<[string, VmShape, VmHandles]> = [
    // Larger: the memslot would not fit the old inode, and the run would fail after the old
    // VM had been terminated and destroyed.
    ['more memory than the old VM had', shapeOfGiB(2, 3), old],
    // Smaller: half of the old memory would stay allocated behind the new VM, unused.
    ['less memory than the old VM had', shapeOfGiB(2, 1), old],
    // Two old guest_memfds: the plan links only one, the other would leak with the old VM.
    [
      'an old VM with two guest_memfds',
      shapeOfGiB(2, 2),
      {
        ...old,
        guestMemfds: [
          { fd: 4, map: 1, slot: 0, gpa: 0, bytes: GIB_BYTES, offset: 0 },
          { fd: 5, map: 2, slot: 1, gpa: GIB_BYTES, bytes: GIB_BYTES, offset: 0 },
        ],
      },
    ],
  ];
  for (const [name, shape, handles] of mismatched) {
    it(`refuses ${name} before any step (INVALID_VM_SHAPE)`, () => {
      const result = planFor(REUSE, k, shape, handles);
      assert.equal(result.ok, false);
      assert.ok(!result.ok);
      assert.equal(result.refusal.code, 'INVALID_VM_SHAPE');
      assert.match(result.refusal.message, /reuse/);
    });
  }

  it('handles without guest_memfds (a kernel-only pre-check) are not refused for layout', () => {
    const placeholder: VmHandles = { vm: 0, vcpus: [], guestMemfds: [] };
    assert.equal(planFor(REUSE, k, shapeOfGiB(2, 3), placeholder).ok, true);
    const refused = planFor(REUSE, kernel('v4', false), shapeOfGiB(2, 3), placeholder);
    assert.ok(!refused.ok);
    assert.equal(refused.refusal.code, 'KERNEL_FEATURE_MISSING');
  });

  it('accepts the same shape, and other strategies accept a new size', () => {
    assert.equal(planFor(REUSE, k, shapeOfGiB(4, 2), old).ok, true, 'vCPUs may change');
    assert.equal(planFor(COLD, k, shapeOfGiB(2, 3), old).ok, true);
    assert.equal(planFor(TERMINATE_REBOOT, k, shapeOfGiB(2, 1), old).ok, true);
  });
});

describe('declared strategies', () => {
  const callsOf = (plan: Plan): object[] => plan.steps.flatMap((s) => s.calls.map((c) => c.call));

  for (const strategy of REBOOT_STRATEGIES) {
    it(`reboot ${strategy}: each kernel gets steps of its own, the same kernel shares them`, () => {
      const intent: Intent = { action: 'reboot', strategy };
      const kernels = ALL_KERNELS.filter((k) => runnableStrategies('reboot', k).includes(strategy));
      const built = kernels.map((k) => callsOf(mustPlan(intent, k)));
      kernels.forEach((k, i) => {
        const once = callsOf(mustPlan(intent, k));
        const again = callsOf(mustPlan(intent, k));
        assert.ok(
          again.every((call, j) => call === once[j]),
          `${kernelLabel(k)} planned twice`,
        );
        kernels.forEach((other, o) => {
          if (o === i) return;
          // Built before this kernel's: calls it shared would be these very objects.
          const shared = new Set(built[o]);
          assert.ok(
            !again.some((call) => shared.has(call)),
            `${kernelLabel(k)} shares steps with ${kernelLabel(other)}`,
          );
        });
      });
    });
  }

  it('runnableStrategies lists exactly the strategies planFor accepts, in declared order', () => {
    for (const k of ALL_KERNELS) {
      const planned = (intents: Intent[]) =>
        intents
          .filter((intent) => planFor(intent, k, SHAPE, FAKE_HANDLES).ok)
          .map((intent) => (intent.action === 'boot' ? 'boot' : intent.strategy));
      assert.deepEqual(
        runnableStrategies('reboot', k),
        planned(REBOOT_STRATEGIES.map((strategy) => ({ action: 'reboot', strategy }))),
      );
      assert.deepEqual(
        runnableStrategies('terminate', k),
        planned(TERMINATE_STRATEGIES.map((strategy) => ({ action: 'terminate', strategy }))),
      );
    }
  });
});

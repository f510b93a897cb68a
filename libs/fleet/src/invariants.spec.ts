/**
 * Random fleets: sequences of creates, reboots, terminates and cancels on one to three hosts,
 * with workers advancing random operations over random stretches of fake time. Every committed
 * document must be sound, and once everything has run and settled the hosts hold exactly what
 * the running VMs need.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type KernelFeatures, PAGE_BYTES, checkInvariants } from '#tdx-sim';
import { REBOOT_STRATEGIES, TERMINATE_STRATEGIES } from '#vmm';
import { FleetError, InvalidRequestError } from './errors.js';
import { advanceHost } from './executor.js';
import { settleDue } from './host-document.js';
import type { HostDocument, OperationRecord } from './model.js';
import { createVm, pagesNeeded, requestCancel, submitOperation } from './operations.js';
import {
  ALL_KERNELS,
  MIB,
  type RunOptions,
  at,
  driveAll,
  kernelLabel,
  makeHost,
} from './testing/driver.js';
import { hostView, jobView, vmView } from './views.js';

type Command =
  | { kind: 'create'; host: number; vcpus: number; memoryMiB: number }
  | { kind: 'reboot'; vm: number; strategy: (typeof REBOOT_STRATEGIES)[number] }
  | { kind: 'terminate'; vm: number; strategy: (typeof TERMINATE_STRATEGIES)[number] }
  | { kind: 'cancel'; op: number }
  | { kind: 'advance'; op: number }
  | { kind: 'advanceBatch'; host: number; ops: number }
  | { kind: 'work'; host: number; ms: number }
  | { kind: 'tick'; ms: number };

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant('create' as const),
      host: fc.nat(2),
      vcpus: fc.integer({ min: 1, max: 4 }),
      memoryMiB: fc.constantFrom(64, 128, 256, 512, 1024),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('reboot' as const),
      vm: fc.nat(),
      strategy: fc.constantFrom(...REBOOT_STRATEGIES),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('terminate' as const),
      vm: fc.nat(),
      strategy: fc.constantFrom(...TERMINATE_STRATEGIES),
    }),
    weight: 1,
  },
  { arbitrary: fc.record({ kind: fc.constant('cancel' as const), op: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('advance' as const), op: fc.nat() }), weight: 4 },
  {
    arbitrary: fc.record({
      kind: fc.constant('advanceBatch' as const),
      host: fc.nat(2),
      ops: fc.nat(),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('work' as const),
      host: fc.nat(2),
      ms: fc.integer({ min: 0, max: 40 }),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('tick' as const),
      ms: fc.integer({ min: 0, max: 10 }),
    }),
    weight: 2,
  },
);

const hostSpec = fc.record({
  kernel: fc.constantFrom(...ALL_KERNELS),
  memoryGiB: fc.integer({ min: 1, max: 4 }),
  hkids: fc.integer({ min: 1, max: 4 }),
});

const runOptions: fc.Arbitrary<RunOptions> = fc.record({
  timeScale: fc.constantFrom(0, 1000, 20_000),
  hostConcurrency: fc.integer({ min: 1, max: 3 }),
  maxWaitMs: fc.constantFrom(3, 30, 300),
  pollMs: fc.constantFrom(2, 10),
});

/** What must hold in every document the store could hold. */
function checkDocument(doc: HostDocument, nowMs: number, where: string): void {
  assert.deepEqual(checkInvariants(doc.sim), [], `${where}: host invariants`);
  for (const pending of doc.releases) {
    assert.ok(pending.at > doc.clock, `${where}: a release due by the clock was returned`);
  }
  for (const vm of Object.values(doc.vms)) {
    const label = `${where}: VM ${vm.id} (${vm.state})`;
    assert.equal(vm.hostId, doc.id);
    if (vm.activeJob !== null) {
      const op = doc.ops[vm.activeJob];
      assert.ok(op, `${label}: its active job ${vm.activeJob} is in the document`);
      assert.equal(op.vmId, vm.id);
      assert.ok(['booting', 'rebooting', 'terminating'].includes(vm.state), label);
    } else {
      assert.ok(['running', 'stopped', 'terminated'].includes(vm.state), label);
    }
    if (vm.state === 'running') {
      const handles = vm.handles;
      assert.ok(handles, `${label}: a running VM has handles`);
      const vmFile = doc.sim.files[handles.vm];
      assert.ok(vmFile?.kind === 'vm', `${label}: VM fd ${handles.vm} is open`);
      const simVm = doc.sim.vms[vmFile.vm];
      assert.ok(simVm && !simVm.dead && simVm.hkid !== null, `${label}: the TD is alive`);
      assert.equal(simVm.tdState, 'RUNNABLE', label);
      assert.equal(handles.vcpus.length, vm.vcpus);
      for (const fd of handles.vcpus) {
        const file = doc.sim.files[fd];
        assert.ok(file?.kind === 'vcpu' && file.vm === vmFile.vm, `${label}: vCPU fd ${fd}`);
      }
      for (const memfd of handles.guestMemfds) {
        const file = doc.sim.files[memfd.fd];
        assert.ok(
          file?.kind === 'gmem' && file.fdOpen && file.vm === vmFile.vm,
          `${label}: guest_memfd fd ${memfd.fd} is open`,
        );
      }
      assert.equal(vm.guestMemfds.length, handles.guestMemfds.length);
    }
    if ((vm.state === 'stopped' || vm.state === 'terminated') && vm.activeJob === null) {
      assert.equal(vm.handles, null, `${label}: holds no fds`);
      assert.deepEqual(vm.guestMemfds, []);
    }
    const view = vmView(doc, vm);
    assert.equal(view.state, vm.state);
  }
  for (const op of Object.values(doc.ops)) {
    assert.equal(op.hostId, doc.id);
    assert.equal(doc.vms[op.vmId]?.activeJob, op.id, `${where}: op ${op.id} is its VM's job`);
    assert.ok(op.state === 'queued' || op.state === 'running', `${where}: op ${op.id} ${op.state}`);
    jobView(op, nowMs);
  }
  const usage = hostView(doc, nowMs).usage.memory;
  assert.equal(
    usage.freeBytes +
      usage.privateBytes +
      usage.retainedBytes +
      usage.orphanedBytes +
      usage.controlBytes +
      usage.inFlightBytes,
    doc.sim.config.memoryBytes,
    `${where}: the host view accounts for every byte`,
  );
}

/** Once nothing runs and every release is back: the hosts hold the running VMs and nothing else. */
function checkQuiescent(doc: HostDocument, where: string): void {
  const settled = settleDue(doc, Number.POSITIVE_INFINITY);
  assert.deepEqual(settled.releases, []);
  assert.deepEqual(settled.sim.inFlight, [], `${where}: nothing left in flight`);
  assert.deepEqual(Object.keys(settled.ops), []);
  const running = Object.values(settled.vms).filter((vm) => vm.state === 'running');
  const view = hostView(settled, Number.MAX_SAFE_INTEGER);
  const memory = view.usage.memory;
  assert.equal(memory.orphanedBytes, 0, `${where}: no orphaned guest memory`);
  assert.equal(memory.retainedBytes, 0, `${where}: no guest memory kept for a reuse`);
  assert.equal(memory.inFlightBytes, 0);
  assert.equal(
    memory.privateBytes,
    running.reduce((sum, vm) => sum + vm.memoryBytes, 0),
    `${where}: private memory is the running VMs' memory`,
  );
  const metadata = running.reduce(
    (sum, vm) => sum + (pagesNeeded(vm.vcpus, vm.memoryBytes) * PAGE_BYTES - vm.memoryBytes),
    0,
  );
  assert.ok(memory.controlBytes <= metadata, `${where}: TDX metadata of running VMs only`);
  assert.equal(memory.controlBytes > 0, running.length > 0);
  assert.equal(
    memory.freeBytes + memory.privateBytes + memory.controlBytes,
    view.capacity.memoryBytes,
  );
  assert.deepEqual(view.usage.hkids, {
    used: running.length,
    total: view.capacity.hkids,
    zombies: 0,
    leaked: 0,
  });
  // Every fd on the host belongs to a running VM; every running VM's fds are there.
  const held = new Set<number>();
  for (const vm of running) {
    const handles = vm.handles;
    assert.ok(handles);
    held.add(handles.vm);
    for (const fd of handles.vcpus) held.add(fd);
    for (const m of handles.guestMemfds) held.add(m.fd);
  }
  assert.deepEqual(
    Object.keys(settled.sim.files)
      .map(Number)
      .sort((a, b) => a - b),
    [...held].sort((a, b) => a - b),
    `${where}: no leaked fds`,
  );
  assert.equal(Object.keys(settled.sim.vms).length, running.length);
  assert.deepEqual(checkInvariants(settled.sim), []);
}

/** The result of one random fleet run, for the properties to look at. */
interface FleetRun {
  docs: HostDocument[];
  finished: OperationRecord[];
  refusals: Map<string, number>;
}

function runFleet(
  hosts: Array<{ kernel: KernelFeatures; memoryGiB: number; hkids: number }>,
  run: RunOptions,
  commands: readonly Command[],
): FleetRun {
  const docs = hosts.map((spec, i) =>
    makeHost(spec.kernel, { id: `h${i}`, memoryGiB: spec.memoryGiB, hkids: spec.hkids }),
  );
  const vmHost = new Map<string, number>();
  const finished: OperationRecord[] = [];
  const refusals = new Map<string, number>();
  let now = 0;
  let ids = 0;

  const store = (i: number, doc: HostDocument, where: string): void => {
    const current = docs[i];
    assert.ok(current);
    const next = { ...doc, version: current.version + 1 };
    checkDocument(next, now, where);
    docs[i] = next;
  };
  const refuse = (i: number, fn: () => void): void => {
    const before = structuredClone(docs[i]);
    try {
      fn();
    } catch (error) {
      if (!(error instanceof FleetError)) throw error;
      assert.ok(!(error instanceof InvalidRequestError) || error.message.includes('exists'));
      refusals.set(error.code, (refusals.get(error.code) ?? 0) + 1);
      assert.deepEqual(docs[i], before, `a refused ${error.code} changes nothing`);
    }
  };
  const activeOps = (): Array<[number, string]> =>
    docs.flatMap((doc, i) => Object.keys(doc.ops).map((id): [number, string] => [i, id]));
  const vmIds = [...vmHost.keys()];

  for (const [n, cmd] of commands.entries()) {
    const where = `command ${n} ${JSON.stringify(cmd)}`;
    switch (cmd.kind) {
      case 'create': {
        const i = cmd.host % docs.length;
        const doc = docs[i];
        assert.ok(doc);
        const vmId = `vm${ids++}`;
        refuse(i, () => {
          const created = createVm(doc, {
            vmId,
            opId: `op${ids++}`,
            vcpus: cmd.vcpus,
            memoryBytes: cmd.memoryMiB * MIB,
            nowMs: now,
          });
          store(i, created.doc, where);
          vmHost.set(vmId, i);
          vmIds.push(vmId);
        });
        break;
      }
      case 'reboot':
      case 'terminate': {
        const vmId = vmIds[cmd.vm % Math.max(1, vmIds.length)];
        if (vmId === undefined) break;
        const i = vmHost.get(vmId) ?? 0;
        const doc = docs[i];
        assert.ok(doc);
        refuse(i, () => {
          const submitted = submitOperation(doc, {
            opId: `op${ids++}`,
            vmId,
            action: cmd.kind,
            strategy: cmd.strategy,
            nowMs: now,
          });
          store(i, submitted.doc, where);
        });
        break;
      }
      case 'cancel': {
        const ops = activeOps();
        const picked = ops[cmd.op % Math.max(1, ops.length)];
        if (picked === undefined) break;
        const [i, opId] = picked;
        const doc = docs[i];
        assert.ok(doc);
        const cancelled = requestCancel(doc, opId, now);
        if (cancelled.doc !== doc) store(i, cancelled.doc, where);
        if (cancelled.finished) {
          assert.equal(cancelled.op.state, 'cancelled');
          finished.push(cancelled.op);
        }
        break;
      }
      case 'advance': {
        // A worker advances the host of one of its operations: every operation on it moves.
        const ops = activeOps();
        const picked = ops[cmd.op % Math.max(1, ops.length)];
        if (picked === undefined) break;
        const [i] = picked;
        const doc = docs[i];
        assert.ok(doc);
        const advance = advanceHost(doc, at(now, run));
        if (advance.changed) {
          store(i, advance.doc, where);
          finished.push(...advance.finished);
        }
        if (advance.wakeAtMs !== null) assert.ok(advance.wakeAtMs >= now, `${where}: wakes later`);
        break;
      }
      case 'advanceBatch': {
        // Advancing is pure: the document read is left as it was, and the same advance again
        // gives the same document.
        const i = cmd.host % docs.length;
        const doc = docs[i];
        assert.ok(doc);
        if (Object.keys(doc.ops).length === 0) break;
        const before = structuredClone(doc);
        const advance = advanceHost(doc, at(now, run));
        assert.deepEqual(doc, before, `${where}: advanceHost leaves its input unchanged`);
        assert.deepEqual(advanceHost(doc, at(now, run)), advance, `${where}: deterministic`);
        // In place (the offline engine's way) on a copy given up: the same advance.
        const inPlace = advanceHost(structuredClone(doc), { ...at(now, run), inPlace: true });
        assert.deepEqual(inPlace, advance, `${where}: in place, the same advance`);
        if (advance.changed) {
          store(i, advance.doc, where);
          finished.push(...advance.finished);
        }
        break;
      }
      case 'work': {
        const i = cmd.host % docs.length;
        const doc = docs[i];
        assert.ok(doc);
        const driven = driveAll(doc, Object.keys(doc.ops), now, {
          run,
          untilMs: now + cmd.ms,
          onCommit: (c) => checkDocument(c.doc, c.atMs, `${where} at ${c.atMs}`),
        });
        docs[i] = driven.doc;
        finished.push(...Object.values(driven.finished));
        now += cmd.ms;
        break;
      }
      case 'tick':
        now += cmd.ms;
        break;
    }
  }

  // Every worker runs until nothing is left.
  docs.forEach((doc, i) => {
    const driven = driveAll(doc, Object.keys(doc.ops), now, {
      run,
      onCommit: (c) => checkDocument(c.doc, c.atMs, `final drive at ${c.atMs}`),
    });
    docs[i] = driven.doc;
    finished.push(...Object.values(driven.finished));
  });
  return { docs, finished, refusals };
}

describe('random fleets', () => {
  it('every committed document is sound, and a quiet fleet holds exactly its running VMs', () => {
    fc.assert(
      fc.property(
        fc.array(hostSpec, { minLength: 1, maxLength: 3 }),
        runOptions,
        fc.array(command, { minLength: 5, maxLength: 60, size: 'max' }),
        (hosts, run, commands) => {
          const { docs, finished } = runFleet(hosts, run, commands);
          docs.forEach((doc, i) =>
            checkQuiescent(doc, `host ${i} (${kernelLabel(hosts[i]!.kernel)})`),
          );
          for (const op of finished) {
            const view = jobView(op, Number.MAX_SAFE_INTEGER);
            assert.ok(['succeeded', 'failed', 'cancelled'].includes(view.state));
            assert.equal(view.result !== undefined, view.state === 'succeeded');
            assert.equal(view.error !== undefined, view.state !== 'succeeded');
            if (view.state === 'succeeded') {
              assert.ok(
                view.steps.every((s) => s.state === 'done'),
                `${op.id} all done`,
              );
            }
          }
          // A VM's generation is its successful boots.
          const boots = new Map<string, number>();
          for (const op of finished) {
            if (op.state === 'succeeded' && op.intent.action !== 'terminate') {
              boots.set(op.vmId, (boots.get(op.vmId) ?? 0) + 1);
            }
          }
          for (const doc of docs) {
            for (const vm of Object.values(doc.vms)) {
              assert.equal(vm.generation, boots.get(vm.id) ?? 0, `generation of ${vm.id}`);
            }
          }
        },
      ),
      { numRuns: Number(process.env.FLEET_RUNS ?? 300) },
    );
  });

  it('the random fleets exercise waits, timeouts, cancels and refusals', () => {
    // A guard on the generator: the property above is only as good as what it reaches.
    const seen = new Map<string, number>();
    const count = (key: string): void => void seen.set(key, (seen.get(key) ?? 0) + 1);
    fc.assert(
      fc.property(
        fc.array(hostSpec, { minLength: 1, maxLength: 3 }),
        runOptions,
        fc.array(command, { minLength: 5, maxLength: 60, size: 'max' }),
        (hosts, run, commands) => {
          const { finished, refusals } = runFleet(hosts, run, commands);
          for (const code of refusals.keys()) count(`refused ${code}`);
          for (const op of finished) {
            count(`${op.action} ${op.strategy ?? ''} ${op.state}`);
            if (op.error) count(`error ${op.error.code}`);
            if (op.steps.some((s) => s.waitedMs > 0)) count('waited');
            if (op.steps.some((s) => s.cleanup === true)) count('cleanup');
          }
        },
      ),
      { numRuns: 200, seed: 42 },
    );
    for (const key of [
      'reboot cold succeeded',
      'reboot terminate succeeded',
      'reboot reuse succeeded',
      'terminate close succeeded',
      'terminate terminate succeeded',
      'error cancelled',
      'error wait_timeout',
      'waited',
      'cleanup',
      'refused vm_busy',
      'refused kernel_feature_missing',
      'refused no_capacity',
      'refused vm_state_conflict',
    ]) {
      assert.ok((seen.get(key) ?? 0) > 0, `the generator reaches "${key}"`);
    }
  });
});

describe('punctual workers', () => {
  it('every job took as long in wall time as its virtual time says, waits included', () => {
    fc.assert(
      fc.property(
        hostSpec,
        fc.integer({ min: 1, max: 4 }),
        fc.array(
          fc.record({
            vcpus: fc.integer({ min: 1, max: 4 }),
            memoryMiB: fc.constantFrom(64, 256, 1024),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        fc.array(
          fc.oneof(
            fc.record({
              action: fc.constant('reboot' as const),
              strategy: fc.constantFrom(...REBOOT_STRATEGIES),
            }),
            fc.record({
              action: fc.constant('terminate' as const),
              strategy: fc.constantFrom(...TERMINATE_STRATEGIES),
            }),
          ),
          { maxLength: 5 },
        ),
        (spec, hostConcurrency, vms, actions) => {
          const run: RunOptions = { timeScale: 1000, hostConcurrency, maxWaitMs: 1000, pollMs: 5 };
          let doc = makeHost(spec.kernel, { memoryGiB: spec.memoryGiB, hkids: spec.hkids });
          const boots: string[] = [];
          vms.forEach((vm, i) => {
            try {
              doc = createVm(doc, {
                vmId: `vm${i}`,
                opId: `boot${i}`,
                vcpus: vm.vcpus,
                memoryBytes: vm.memoryMiB * MIB,
                nowMs: 0,
              }).doc;
              boots.push(`boot${i}`);
            } catch (error) {
              if (!(error instanceof FleetError)) throw error;
            }
          });
          const booted = driveAll(doc, boots, 0, { run });
          doc = booted.doc;
          const ops: string[] = [];
          actions.forEach((a, i) => {
            const vmId = `vm${i % vms.length}`;
            try {
              doc = submitOperation(doc, {
                opId: `op${i}`,
                vmId,
                action: a.action,
                strategy: a.strategy,
                nowMs: booted.nowMs,
              }).doc;
              ops.push(`op${i}`);
            } catch (error) {
              if (!(error instanceof FleetError)) throw error;
            }
          });
          const driven = driveAll(doc, ops, booted.nowMs, { run });
          const finished = [...Object.values(booted.finished), ...Object.values(driven.finished)];
          for (const op of finished) {
            if (op.result === null) continue;
            const wall = (op.finishedAtMs ?? 0) - (op.startedAtMs ?? 0);
            assert.ok(
              Math.abs(op.result.totalSeconds - wall) < 1e-6 * Math.max(1, wall),
              `${op.id} ${op.action} ${op.strategy}: ${op.result.totalSeconds} s virtual, ${wall} ms`,
            );
          }
          checkQuiescent(driven.doc, 'after the storm');
        },
      ),
      { numRuns: 200 },
    );
  });
});

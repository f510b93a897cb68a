/**
 * The step executor as the daemon's users see it: jobs, VMs and hosts through their views, with
 * a fake clock standing in for the workers' sleeps (see testing/driver.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GIB_BYTES, type KernelFeatures, applyCall, checkInvariants } from '#tdx-sim';
import { REBOOT_STRATEGIES, type RebootStrategy, TERMINATE_STRATEGIES, runPlan } from '#vmm';
import { advanceHost, advanceOperation } from './executor.js';
import { settleDue } from './host-document.js';
import type { HostDocument, OperationRecord, Strategy } from './model.js';
import {
  createVm,
  hostCapacity,
  planOperation,
  requestCancel,
  submitOperation,
} from './operations.js';
import {
  AUG_LINK_2M,
  type CommitRecord,
  type DriveResult,
  type RunOptions,
  MAINLINE,
  V4,
  V4_LINK,
  at,
  canReboot,
  canTerminate,
  docAt,
  drive,
  driveAll,
  finishedOp,
  hostWithVms,
  kernelLabel,
  makeHost,
} from './testing/driver.js';
import { type JobView, hostView, jobView, vmView } from './views.js';

const KERNELS: readonly KernelFeatures[] = [MAINLINE, V4, V4_LINK, AUG_LINK_2M];

function submit(
  doc: HostDocument,
  vmId: string,
  action: 'reboot' | 'terminate',
  strategy: Strategy,
  nowMs: number,
  opId = `${action}-${vmId}-${strategy}`,
): HostDocument {
  return submitOperation(doc, { opId, vmId, action, strategy, nowMs }).doc;
}

function vmOf(doc: HostDocument, vmId: string) {
  const vm = doc.vms[vmId];
  assert.ok(vm, `VM ${vmId} is in the document`);
  return vmView(doc, vm);
}

function stepOf(op: OperationRecord, name: string, nth = 0) {
  const step = op.steps.filter((s) => s.name === name)[nth];
  assert.ok(step, `operation ${op.id} has a step ${name}`);
  return step;
}

/** Nothing of any VM is left on the host once every release has come back. */
function assertHostEmpty(doc: HostDocument): void {
  const view = hostView(doc, Number.MAX_SAFE_INTEGER);
  assert.deepEqual(view.usage.memory, {
    freeBytes: view.capacity.memoryBytes,
    privateBytes: 0,
    retainedBytes: 0,
    orphanedBytes: 0,
    controlBytes: 0,
    inFlightBytes: 0,
    leakedBytes: 0,
  });
  assert.equal(view.usage.hkids.used, 0);
  const sim = settleDue(doc, Number.MAX_SAFE_INTEGER).sim;
  assert.deepEqual(checkInvariants(sim), []);
  assert.deepEqual(Object.keys(sim.vms), []);
  assert.deepEqual(Object.keys(sim.files), []);
  assert.deepEqual(Object.keys(sim.inodes), []);
}

/** Every step done, progress complete. */
function assertAllDone(job: JobView): void {
  assert.deepEqual(
    job.steps.filter((s) => s.state !== 'done').map((s) => `${s.name}:${s.state}`),
    [],
  );
  assert.equal(job.progress.fraction, 1);
  assert.equal(job.progress.stepsDone, job.steps.length);
}

describe('boot, reboot and terminate', () => {
  for (const kernel of KERNELS) {
    for (const strategy of REBOOT_STRATEGIES.filter((s) => canReboot(kernel, s))) {
      it(`boots, then reboots with ${strategy} (${kernelLabel(kernel)})`, () => {
        const memoryBytes = 2 * GIB_BYTES;
        const booted = hostWithVms(makeHost(kernel), 1, { vcpus: 4, memoryBytes });
        const nowMs = booted.nowMs;
        let doc = booted.doc;
        const before = vmOf(doc, 'vm1');
        assert.equal(before.state, 'running');
        assert.equal(before.generation, 1);
        assert.notEqual(before.hkid, null);
        assert.equal(before.guestMemfds.length, 1);
        assert.equal(before.guestMemfds[0]?.firstBootGeneration, 1);

        doc = submit(doc, 'vm1', 'reboot', strategy, nowMs, 'reboot');
        assert.equal(vmOf(doc, 'vm1').state, 'rebooting');
        assert.equal(vmOf(doc, 'vm1').activeJob, 'reboot');
        const driven = drive(doc, 'reboot', nowMs);
        const job = jobView(finishedOp(driven, 'reboot'), driven.nowMs);
        assert.equal(job.state, 'succeeded');
        assert.equal(job.strategy, strategy);
        assertAllDone(job);
        assert.equal(job.error, undefined);

        const after = vmOf(driven.doc, 'vm1');
        assert.equal(after.state, 'running');
        assert.equal(after.generation, 2);
        assert.equal(after.activeJob, null);
        assert.notEqual(after.hkid, null);
        assert.deepEqual(
          after.memslots.map((m) => [m.slot, m.gpa, m.bytes]),
          [[0, 0, memoryBytes]],
        );
        assert.equal(after.guestMemfds.length, 1);
        const [oldMemfd, newMemfd] = [before.guestMemfds[0], after.guestMemfds[0]];
        assert.equal(newMemfd?.allocatedBytes, memoryBytes);
        assert.equal(after.memslots[0]?.guestMemfd, newMemfd?.id);
        const result = job.result;
        assert.ok(result);
        if (strategy === 'reuse') {
          assert.equal(newMemfd?.id, oldMemfd?.id, 'reuse keeps the guest_memfd');
          assert.equal(newMemfd?.firstBootGeneration, 1);
          assert.equal(result.bytesAllocated, 0);
          assert.equal(result.bytesReused, memoryBytes);
        } else {
          assert.notEqual(newMemfd?.id, oldMemfd?.id, `${strategy} allocates a new guest_memfd`);
          assert.equal(newMemfd?.firstBootGeneration, 2);
          assert.equal(result.bytesAllocated, memoryBytes);
          assert.equal(result.bytesReused, 0);
        }

        // Once the reboot's releases are back, the host holds exactly the one running VM.
        const host = hostView(driven.doc, driven.nowMs);
        assert.equal(host.usage.memory.privateBytes, memoryBytes);
        assert.equal(host.usage.memory.retainedBytes, 0);
        assert.equal(host.usage.memory.orphanedBytes, 0);
        assert.equal(host.usage.memory.inFlightBytes, 0);
        assert.deepEqual(host.usage.hkids, { used: 1, total: 8, zombies: 0, leaked: 0 });
        assert.equal(host.activeJobs, 0);
        assert.deepEqual(checkInvariants(driven.doc.sim), []);
      });
    }

    for (const strategy of TERMINATE_STRATEGIES.filter((s) => canTerminate(kernel, s))) {
      it(`boots, then terminates with ${strategy} (${kernelLabel(kernel)})`, () => {
        const { doc: booted, nowMs } = hostWithVms(makeHost(kernel), 1);
        const doc = submit(booted, 'vm1', 'terminate', strategy, nowMs, 'terminate');
        assert.equal(vmOf(doc, 'vm1').state, 'terminating');
        const driven = drive(doc, 'terminate', nowMs);
        const job = jobView(finishedOp(driven, 'terminate'), driven.nowMs);
        assert.equal(job.state, 'succeeded');
        assertAllDone(job);
        assert.equal(job.result?.bytesAllocated, 0);
        assert.ok((job.result?.bytesFreed ?? 0) >= GIB_BYTES);

        const vm = vmOf(driven.doc, 'vm1');
        assert.equal(vm.state, 'terminated');
        assert.equal(vm.hkid, null);
        assert.deepEqual(vm.memslots, []);
        assert.deepEqual(vm.guestMemfds, []);
        assert.equal(vm.activeJob, null);
        assert.equal(vm.generation, 1);
        assert.equal(hostView(driven.doc, driven.nowMs).vms, 0);
        assertHostEmpty(driven.doc);

        // A terminated VM stays terminated.
        assert.throws(
          () => submit(driven.doc, 'vm1', 'reboot', 'cold', driven.nowMs),
          (e: Error) => e.name === 'VmStateConflictError',
        );
      });
    }
  }

  it('counts boots: the generation goes up by one per reboot, reuse keeps the first boot', () => {
    let { doc, nowMs } = hostWithVms(makeHost(V4_LINK), 1);
    const sequence: Array<[RebootStrategy, number]> = [
      ['reuse', 1],
      ['cold', 3],
      ['reuse', 3],
      ['terminate', 5],
      ['reuse', 5],
      ['reuse', 5],
    ];
    sequence.forEach(([strategy, firstBoot], i) => {
      doc = submit(doc, 'vm1', 'reboot', strategy, nowMs, `r${i}`);
      const driven = drive(doc, `r${i}`, nowMs);
      assert.equal(finishedOp(driven, `r${i}`).state, 'succeeded');
      ({ doc, nowMs } = driven);
      const vm = vmOf(doc, 'vm1');
      assert.equal(vm.generation, i + 2, `generation after reboot ${i + 1} (${strategy})`);
      assert.equal(vm.guestMemfds[0]?.firstBootGeneration, firstBoot, `after ${strategy}`);
    });
  });

  it('reports the same virtual totals as the vmm runner, at any time scale', () => {
    for (const strategy of REBOOT_STRATEGIES) {
      const booted = hostWithVms(makeHost(AUG_LINK_2M), 1, {
        vcpus: 8,
        memoryBytes: 4 * GIB_BYTES,
      });
      const doc = submit(booted.doc, 'vm1', 'reboot', strategy, booted.nowMs, 'r');
      const vm = doc.vms.vm1;
      assert.ok(vm);
      const plan = planOperation(doc, vm, { action: 'reboot', strategy });
      const expected = runPlan(doc.sim, plan).summary;
      for (const timeScale of [0, 1000]) {
        const driven = drive(doc, 'r', booted.nowMs, { run: { timeScale } });
        const result = finishedOp(driven, 'r').result;
        assert.ok(result);
        for (const key of Object.keys(expected) as Array<keyof typeof expected>) {
          assert.ok(
            Math.abs(result[key] - expected[key]) <= 1e-6 * Math.max(1, expected[key]),
            `${strategy} at ${timeScale}x: ${key} ${result[key]} vs runner ${expected[key]}`,
          );
        }
      }
    }
  });
});

describe('time scale', () => {
  for (const strategy of REBOOT_STRATEGIES) {
    it(`at 1000x a ${strategy} reboot takes its virtual seconds in milliseconds`, () => {
      const booted = hostWithVms(makeHost(V4_LINK), 1, { vcpus: 4, memoryBytes: 4 * GIB_BYTES });
      const doc = submit(booted.doc, 'vm1', 'reboot', strategy, booted.nowMs, 'r');
      const driven = drive(doc, 'r', booted.nowMs, { run: { timeScale: 1000 } });
      const op = finishedOp(driven, 'r');
      const job = jobView(op, driven.nowMs);
      for (const step of job.steps) {
        assert.equal(step.wallMs, Math.round(step.virtualSeconds), `${step.name} wallMs`);
      }
      for (const step of op.steps) {
        assert.ok(step.startedAtMs !== null && step.endsAtMs !== null);
        assert.ok(Math.abs(step.endsAtMs - step.startedAtMs - step.virtualSeconds) < 1e-6);
      }
      const total = job.result?.totalSeconds ?? 0;
      assert.ok(total > 4, `a 4 GiB ${strategy} reboot takes seconds (${total})`);
      // The driver slept exactly as long as the virtual time says, divided by 1000.
      const elapsed = driven.nowMs - booted.nowMs;
      assert.ok(Math.abs(elapsed - total) < 0.01, `elapsed ${elapsed} ms for ${total} s`);
      assert.ok(Math.abs((op.finishedAtMs ?? 0) - (op.startedAtMs ?? 0) - total) < 0.01);
      assert.ok(driven.commits.length > 1, 'a slow step is committed before it ends');
    });

    it(`at 0x a ${strategy} reboot commits once and never waits`, () => {
      const booted = hostWithVms(makeHost(V4_LINK), 1, { vcpus: 4, memoryBytes: 4 * GIB_BYTES });
      const doc = submit(booted.doc, 'vm1', 'reboot', strategy, booted.nowMs, 'r');
      const advance = advanceOperation(doc, 'r', at(booted.nowMs, { timeScale: 0 }));
      assert.equal(advance.kind, 'commit');
      assert.equal(advance.finished?.state, 'succeeded');
      assert.equal(advance.finished.finishedAtMs, booted.nowMs);
      assert.ok(advance.doc.ops.r === undefined);
      assert.equal(advance.doc.vms.vm1?.generation, 2);
      for (const step of jobView(advance.finished, booted.nowMs).steps) {
        assert.equal(step.wallMs, 0);
        assert.equal(step.state, 'done');
      }
      const driven = drive(doc, 'r', booted.nowMs, { run: { timeScale: 0 } });
      assert.equal(driven.commits.length, 1);
      assert.equal(driven.nowMs, booted.nowMs);
    });
  }

  it('at 0x a boot and a terminate each commit once', () => {
    const created = createVm(makeHost(V4), {
      vmId: 'vm1',
      opId: 'boot',
      vcpus: 2,
      memoryBytes: GIB_BYTES,
      nowMs: 7,
    });
    const boot = drive(created.doc, 'boot', 7, { run: { timeScale: 0 } });
    assert.equal(boot.commits.length, 1);
    assert.equal(finishedOp(boot, 'boot').state, 'succeeded');
    assert.equal(vmOf(boot.doc, 'vm1').state, 'running');
    for (const strategy of TERMINATE_STRATEGIES) {
      const doc = submit(boot.doc, 'vm1', 'terminate', strategy, 7, 't');
      const terminate = drive(doc, 't', 7, { run: { timeScale: 0 } });
      assert.equal(terminate.commits.length, 1);
      assert.equal(terminate.nowMs, 7);
      assert.equal(vmOf(terminate.doc, 'vm1').state, 'terminated');
      assertHostEmpty(terminate.doc);
    }
  });

  it('the results are the same at every time scale, however late the worker wakes', () => {
    const booted = hostWithVms(makeHost(MAINLINE, { hkids: 2 }), 2, {
      vcpus: 4,
      memoryBytes: 4 * GIB_BYTES,
    });
    let doc = submit(booted.doc, 'vm1', 'reboot', 'cold', booted.nowMs, 'r1');
    doc = submit(doc, 'vm2', 'reboot', 'cold', booted.nowMs, 'r2');
    const results = (run: Partial<RunOptions>, lateMs: number) => {
      let current = doc;
      let nowMs = booted.nowMs;
      const finished: Record<string, OperationRecord> = {};
      for (let i = 0; i < 10_000 && Object.keys(finished).length < 2; i += 1) {
        const advance = advanceHost(current, at(nowMs, run));
        if (advance.changed) current = advance.doc;
        for (const op of advance.finished) finished[op.id] = op;
        // A busy machine: the worker wakes later than asked.
        nowMs = Math.max(nowMs + 1, (advance.wakeAtMs ?? nowMs) + lateMs);
      }
      return ['r1', 'r2'].map((id) => ({
        result: finished[id]?.result,
        steps: finished[id]?.steps.map((s) => [s.name, s.virtualStart, s.waitedSeconds]),
      }));
    };
    const exact = results({ timeScale: 0 }, 0);
    assert.ok(
      exact[1]?.steps?.some(([, , waited]) => (waited as number) > 0),
      'r2 waited',
    );
    assert.deepEqual(results({ timeScale: 1000 }, 0), exact);
    assert.deepEqual(results({ timeScale: 1000 }, 7), exact);
    assert.deepEqual(results({ timeScale: 20 }, 3), exact);
  });
});

describe('what a step frees comes back when its virtual time has passed', () => {
  it('during a cold reboot at 1000x, the old memory is not free until close-guest-memfd ends', () => {
    const memoryBytes = 4 * GIB_BYTES;
    const booted = hostWithVms(makeHost(MAINLINE), 1, { vcpus: 4, memoryBytes });
    const doc = submit(booted.doc, 'vm1', 'reboot', 'cold', booted.nowMs, 'r');
    const driven = drive(doc, 'r', booted.nowMs);
    const op = finishedOp(driven, 'r');
    const close = stepOf(op, 'close-guest-memfd');
    assert.ok(close.startedAtMs !== null && close.endsAtMs !== null);
    assert.ok(close.endsAtMs - close.startedAtMs > 10, 'closing 4 GiB takes over 10 s virtual');

    const viewAt = (t: number) => hostView(docAt(doc, driven.commits, t), t);
    const capacity = viewAt(close.startedAtMs).capacity.memoryBytes;
    for (const t of [
      close.startedAtMs,
      (close.startedAtMs + close.endsAtMs) / 2,
      close.endsAtMs - 0.001,
    ]) {
      const memory = viewAt(t).usage.memory;
      assert.ok(
        memory.inFlightBytes >= memoryBytes,
        `at +${t - close.startedAtMs} ms the old memory is in flight`,
      );
      assert.ok(memory.freeBytes <= capacity - memoryBytes);
      const running = docAt(doc, driven.commits, t).ops.r;
      assert.ok(running, 'the reboot is still in the document');
      const stepView = jobView(running, t).steps.find((s) => s.name === 'close-guest-memfd');
      assert.equal(stepView?.state, 'running');
    }
    const before = viewAt(close.endsAtMs - 0.001).usage.memory;
    const after = viewAt(close.endsAtMs).usage.memory;
    assert.ok(
      after.freeBytes - before.freeBytes >= memoryBytes,
      'the old memory is free at its end',
    );
    assert.ok(after.inFlightBytes < memoryBytes);
    // hostCapacity counts memory in flight back to the host as available for placement.
    const capacityDuring = hostCapacity(docAt(doc, driven.commits, close.startedAtMs));
    assert.ok(capacityDuring.freePages * 4096 >= viewAt(close.startedAtMs).usage.memory.freeBytes);
  });

  it('releasing HKIDs is serialised per host: two terminate reboots do not overlap', () => {
    const booted = hostWithVms(makeHost(V4), 2);
    let doc = submit(booted.doc, 'vm1', 'reboot', 'terminate', booted.nowMs, 'r1');
    doc = submit(doc, 'vm2', 'reboot', 'terminate', booted.nowMs, 'r2');
    const driven = driveAll(doc, ['r1', 'r2'], booted.nowMs);
    const [a, b] = [finishedOp(driven, 'r1'), finishedOp(driven, 'r2')];
    assert.equal(a.state, 'succeeded');
    assert.equal(b.state, 'succeeded');
    // Both started at once (host concurrency 4): the two terminate-vm steps were ready together.
    assert.equal(a.startedAtMs, booted.nowMs);
    assert.equal(b.startedAtMs, booted.nowMs);
    const [ta, tb] = [stepOf(a, 'terminate-vm'), stepOf(b, 'terminate-vm')];
    const [first, second] = (ta.startedAtMs ?? 0) <= (tb.startedAtMs ?? 0) ? [ta, tb] : [tb, ta];
    assert.ok(first.endsAtMs !== null && second.startedAtMs !== null);
    assert.ok(
      second.startedAtMs >= first.endsAtMs,
      `second terminate-vm starts at ${second.startedAtMs}, first ends at ${first.endsAtMs}`,
    );
    // Other steps of the two VMs did run side by side.
    assert.ok(
      (stepOf(a, 'stop-vcpus').startedAtMs ?? -1) === (stepOf(b, 'stop-vcpus').startedAtMs ?? -2),
    );
    assert.deepEqual(checkInvariants(driven.doc.sim), []);
    assert.equal(hostView(driven.doc, driven.nowMs).usage.hkids.used, 2);
  });

  it('a reboot that waited for the HKID lock reports the wait in its job and its downtime', () => {
    const booted = hostWithVms(makeHost(V4), 2);
    let doc = submit(booted.doc, 'vm1', 'reboot', 'terminate', booted.nowMs, 'r1');
    doc = submit(doc, 'vm2', 'reboot', 'terminate', booted.nowMs, 'r2');
    const driven = driveAll(doc, ['r1', 'r2'], booted.nowMs);
    const ops = [finishedOp(driven, 'r1'), finishedOp(driven, 'r2')];
    const waited = ops.find((op) => (stepOf(op, 'terminate-vm').startedAtMs ?? 0) > booted.nowMs);
    const other = ops.find((op) => op !== waited);
    assert.ok(waited && other);
    const lockWaitMs = (stepOf(waited, 'terminate-vm').startedAtMs ?? 0) - booted.nowMs;
    assert.ok(lockWaitMs > 2, `it waited ${lockWaitMs} ms for the other VM's HKID release`);
    const view = jobView(waited, driven.nowMs);
    const terminateStep = view.steps.find((s) => s.name === 'terminate-vm');
    assert.equal(terminateStep?.waitedMs, Math.round(lockWaitMs));
    // Virtual time and wall time agree: the VM was down for the wait too.
    const wallSeconds = (waited.finishedAtMs ?? 0) - (waited.startedAtMs ?? 0);
    assert.ok(
      Math.abs((waited.result?.totalSeconds ?? 0) - wallSeconds) < 0.01,
      `total ${waited.result?.totalSeconds} s vs ${wallSeconds} ms of wall time at 1000x`,
    );
    assert.ok(
      Math.abs(
        (waited.result?.downtimeSeconds ?? 0) - (other.result?.downtimeSeconds ?? 0) - lockWaitMs,
      ) < 0.01,
      'the downtime includes the lock wait',
    );
  });
});

describe('a reboot storm on one host', () => {
  it('HKID releases never overlap, and every job took as long as its virtual time says', () => {
    const strategies: RebootStrategy[] = [
      'terminate',
      'cold',
      'reuse',
      'terminate',
      'cold',
      'reuse',
    ];
    const booted = hostWithVms(makeHost(V4_LINK, { hkids: 8 }), strategies.length, {
      vcpus: 2,
      memoryBytes: GIB_BYTES,
    });
    let doc = booted.doc;
    const ids = strategies.map((strategy, i) => {
      doc = submit(doc, `vm${i + 1}`, 'reboot', strategy, booted.nowMs, `r${i + 1}`);
      return `r${i + 1}`;
    });
    const driven = driveAll(doc, ids, booted.nowMs, {
      run: { hostConcurrency: strategies.length },
      onCommit: (c) => assert.deepEqual(checkInvariants(c.doc.sim), []),
    });
    const releases: Array<[number, number, string]> = [];
    for (const id of ids) {
      const op = finishedOp(driven, id);
      assert.equal(op.state, 'succeeded', id);
      // The step that gives the old HKID back: TERMINATE_VM, or closing the VM fd (cold).
      const release = stepOf(op, op.strategy === 'cold' ? 'close-vm' : 'terminate-vm');
      // In the host's virtual time (whole microseconds: exact).
      const start = op.startedAt + Math.round((release.virtualStart ?? NaN) * 1e6);
      releases.push([start, start + Math.round(release.virtualSeconds * 1e6), id]);
      const wall = (op.finishedAtMs ?? 0) - (op.startedAtMs ?? 0);
      assert.ok(
        Math.abs((op.result?.totalSeconds ?? 0) - wall) < 0.01,
        `${id} (${op.strategy}): ${op.result?.totalSeconds} s virtual, ${wall} ms wall`,
      );
    }
    releases.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < releases.length; i++) {
      const [prev, next] = [releases[i - 1]!, releases[i]!];
      assert.ok(
        next[0] >= prev[1],
        `${next[2]} releases at ${next[0]}, ${prev[2]} until ${prev[1]}`,
      );
    }
    // The later ones waited for the lock, and say so.
    const waits = ids.map((id) => jobView(finishedOp(driven, id), driven.nowMs));
    assert.ok(
      waits.filter((j) => j.steps.some((s) => s.waitedMs > 0)).length >= strategies.length - 1,
    );
    assert.equal(hostView(driven.doc, driven.nowMs).usage.hkids.used, strategies.length);
  });
});

describe('events', () => {
  it('a job reports its start, each step, any wait, its end and the VM state', () => {
    const booted = hostWithVms(makeHost(MAINLINE, { hkids: 1 }), 1);
    const doc = submit(booted.doc, 'vm1', 'reboot', 'cold', booted.nowMs, 'r');
    const driven = drive(doc, 'r', booted.nowMs);
    const events = driven.commits.flatMap((c) => c.events);
    assert.ok(events.every((e) => e.jobId === 'r' && e.vmId === 'vm1' && e.hostId === 'h1'));
    assert.equal(events[0]?.type, 'job.started');
    const op = finishedOp(driven, 'r');
    assert.deepEqual(
      events
        .filter((e) => e.type === 'job.step')
        .map((e) => e.step)
        .sort(),
      op.steps.map((s) => s.name).sort(),
    );
    const waiting = events.filter((e) => e.type === 'job.waiting');
    assert.deepEqual(
      waiting.map((e) => [e.step, e.errno]),
      [['init-vm', 'ENOSPC']],
    );
    assert.deepEqual(
      events.slice(-2).map((e) => [e.type, e.state]),
      [
        ['job.finished', 'succeeded'],
        ['vm.state', 'running'],
      ],
    );
    for (const e of events) assert.ok(e.atMs >= booted.nowMs && e.atMs <= driven.nowMs);
  });
});

describe('host concurrency', () => {
  it('with hostConcurrency 1 a second operation waits (host_busy) until the first finishes', () => {
    const booted = hostWithVms(makeHost(V4), 2);
    let doc = submit(booted.doc, 'vm1', 'reboot', 'terminate', booted.nowMs, 'r1');
    doc = submit(doc, 'vm2', 'reboot', 'cold', booted.nowMs, 'r2');
    const seen: string[] = [];
    const driven = driveAll(doc, ['r1', 'r2'], booted.nowMs, {
      run: { hostConcurrency: 1 },
      onCommit: (c: CommitRecord) => {
        const running = Object.values(c.doc.ops).filter((o) => o.state === 'running');
        assert.ok(running.length <= 1, 'at most one operation runs on the host');
        const queued = c.doc.ops.r2;
        if (queued !== undefined && c.doc.ops.r1 !== undefined) {
          seen.push(jobView(queued, c.atMs).state);
        }
      },
    });
    const [a, b] = [finishedOp(driven, 'r1'), finishedOp(driven, 'r2')];
    assert.equal(a.state, 'succeeded');
    assert.equal(b.state, 'succeeded');
    assert.ok((b.startedAtMs ?? 0) >= (a.finishedAtMs ?? Infinity));
    // In virtual time, the second starts the moment the first ends.
    assert.equal(b.startedAt, a.endsAt);
    assert.equal(b.startedAt - a.startedAt, (a.result?.totalSeconds ?? NaN) * 1e6);
    assert.ok(seen.length > 0 && seen.every((s) => s === 'queued'));
    assert.equal(vmOf(driven.doc, 'vm2').generation, 2);
  });

  it('with hostConcurrency 2 both run at once', () => {
    const booted = hostWithVms(makeHost(V4), 2);
    let doc = submit(booted.doc, 'vm1', 'reboot', 'cold', booted.nowMs, 'r1');
    doc = submit(doc, 'vm2', 'reboot', 'cold', booted.nowMs, 'r2');
    const driven = driveAll(doc, ['r1', 'r2'], booted.nowMs, { run: { hostConcurrency: 2 } });
    assert.equal(finishedOp(driven, 'r1').startedAtMs, booted.nowMs);
    assert.equal(finishedOp(driven, 'r2').startedAtMs, booted.nowMs);
    assert.equal(finishedOp(driven, 'r1').startedAt, finishedOp(driven, 'r2').startedAt);
  });
});

describe('waiting for an HKID', () => {
  it('a step refused with ENOSPC waits, then runs once another VM frees its HKID', () => {
    // Two HKIDs, two VMs: a cold reboot needs a third while its old VM still holds one.
    const booted = hostWithVms(makeHost(V4, { hkids: 2 }), 2);
    let doc = submit(booted.doc, 'vm1', 'reboot', 'cold', booted.nowMs, 'reboot');
    const partial = drive(doc, 'reboot', booted.nowMs, {
      stopWhen: (c) => c.doc.ops.reboot?.steps.some((s) => s.state === 'waiting') === true,
    });
    doc = partial.doc;
    const waiting = doc.ops.reboot;
    assert.ok(waiting);
    const view = jobView(waiting, partial.nowMs);
    assert.equal(view.state, 'running');
    const initVm = view.steps.find((s) => s.name === 'init-vm');
    assert.equal(initVm?.state, 'waiting');
    assert.equal(initVm?.errno, 'ENOSPC');
    assert.equal(vmOf(doc, 'vm1').state, 'rebooting');

    // vm2 goes away with TERMINATE_VM: its HKID comes back long before vm1's own.
    doc = submit(doc, 'vm2', 'terminate', 'terminate', partial.nowMs, 'terminate');
    const driven = driveAll(doc, ['reboot', 'terminate'], partial.nowMs);
    const reboot = finishedOp(driven, 'reboot');
    const terminate = finishedOp(driven, 'terminate');
    assert.equal(reboot.state, 'succeeded');
    assert.equal(terminate.state, 'succeeded');
    const started = stepOf(reboot, 'init-vm').startedAtMs ?? 0;
    assert.ok(started >= (stepOf(terminate, 'terminate-vm').endsAtMs ?? Infinity));
    assert.ok(started < (stepOf(reboot, 'close-vm').endsAtMs ?? 0), "before vm1's own release");
    const done = jobView(reboot, driven.nowMs).steps.find((s) => s.name === 'init-vm');
    assert.equal(done?.state, 'done');
    assert.ok((done?.waitedMs ?? 0) > 0);
    assert.equal(vmOf(driven.doc, 'vm1').state, 'running');
    assert.equal(vmOf(driven.doc, 'vm1').generation, 2);
    assert.equal(vmOf(driven.doc, 'vm2').state, 'terminated');
    assert.deepEqual(checkInvariants(driven.doc.sim), []);
  });

  it('a cold reboot on a one-HKID host waits for its own old HKID', () => {
    const booted = hostWithVms(makeHost(MAINLINE, { hkids: 1 }), 1);
    const doc = submit(booted.doc, 'vm1', 'reboot', 'cold', booted.nowMs, 'r');
    const driven = drive(doc, 'r', booted.nowMs);
    const op = finishedOp(driven, 'r');
    assert.equal(op.state, 'succeeded');
    assert.ok((stepOf(op, 'init-vm').startedAtMs ?? 0) >= (stepOf(op, 'close-vm').endsAtMs ?? 0));
    assert.equal(vmOf(driven.doc, 'vm1').generation, 2);
  });

  it('an HKID that never comes back: past maxWaitMs it fails with wait_timeout, nothing held', () => {
    const submitted = createVm(makeHost(MAINLINE, { hkids: 1 }), {
      vmId: 'vm1',
      opId: 'r',
      vcpus: 2,
      memoryBytes: GIB_BYTES,
      nowMs: 0,
    }).doc;
    const booted = { nowMs: 0 };
    // Once the boot is queued, a VM the fleet does not manage takes the host's only HKID for
    // good: the boot's init-vm waits with nothing known to give one back.
    const created = applyCall(submitted.sim, { op: 'KVM_CREATE_VM' });
    assert.ok(created.outcome.ok && created.outcome.value.fd !== undefined);
    const held = applyCall(created.state, { op: 'KVM_TDX_INIT_VM', vm: created.outcome.value.fd });
    assert.ok(held.outcome.ok);
    const doc = { ...submitted, sim: held.state };
    const driven = drive(doc, 'r', booted.nowMs, {
      run: { maxWaitMs: 2 },
      onCommit: (c) => assert.deepEqual(checkInvariants(c.doc.sim), []),
    });
    const op = finishedOp(driven, 'r');
    const job = jobView(op, driven.nowMs);
    assert.equal(job.state, 'failed');
    assert.equal(job.error?.code, 'wait_timeout');
    assert.equal(job.error?.errno, 'ENOSPC');
    assert.equal(job.error?.step, 'init-vm');
    assert.equal(job.result, undefined);
    const initVm = job.steps.find((s) => s.name === 'init-vm');
    assert.equal(initVm?.state, 'failed');
    assert.equal(initVm?.errno, 'ENOSPC');
    assert.ok(job.steps.some((s) => s.state === 'skipped'));
    const cleanup = job.steps.filter((s) => s.cleanup === true);
    assert.ok(cleanup.length > 0, 'cleanup steps closed what was left');
    assert.ok(cleanup.every((s) => s.state === 'done'));

    const vm = vmOf(driven.doc, 'vm1');
    assert.equal(vm.state, 'stopped');
    assert.equal(vm.hkid, null);
    assert.deepEqual(vm.guestMemfds, []);
    assert.equal(vm.activeJob, null);
    assert.equal(driven.doc.vms.vm1?.handles, null);
    const view = hostView(driven.doc, driven.nowMs);
    assert.equal(view.usage.hkids.used, 1, 'only the unmanaged VM holds an HKID');
    assert.deepEqual(checkInvariants(driven.doc.sim), []);
  });
});

describe('cancellation', () => {
  function cancelled(driven: DriveResult, opId: string): JobView {
    const job = jobView(finishedOp(driven, opId), driven.nowMs);
    assert.equal(job.state, 'cancelled');
    assert.equal(job.error?.code, 'cancelled');
    assert.equal(job.cancelRequested, true);
    return job;
  }

  it('a queued operation is cancelled at once and the VM is as it was', () => {
    const booted = hostWithVms(makeHost(V4_LINK), 1);
    const before = booted.doc;
    const doc = submit(before, 'vm1', 'reboot', 'reuse', booted.nowMs, 'r');
    const { doc: after, op, finished } = requestCancel(doc, 'r', booted.nowMs + 5);
    assert.equal(finished, true);
    const job = jobView(op, booted.nowMs + 5);
    assert.equal(job.state, 'cancelled');
    assert.equal(job.error?.code, 'cancelled');
    assert.ok(job.steps.every((s) => s.state === 'skipped'));
    assert.equal(after.ops.r, undefined);
    assert.deepEqual(after.sim, before.sim);
    const { updatedAt: _a, ...vmBefore } = vmOf(before, 'vm1');
    const { updatedAt: _b, ...vmAfter } = vmOf(after, 'vm1');
    assert.deepEqual(vmAfter, vmBefore);
    assert.equal(after.vms.vm1?.state, 'running');
    // The VM takes a new operation straight away.
    assert.doesNotThrow(() => submit(after, 'vm1', 'reboot', 'cold', booted.nowMs + 6, 'r2'));
  });

  it('a queued operation behind a busy host is cancelled while the other one runs', () => {
    const booted = hostWithVms(makeHost(V4), 2);
    let doc = submit(booted.doc, 'vm1', 'reboot', 'terminate', booted.nowMs, 'r1');
    doc = submit(doc, 'vm2', 'reboot', 'cold', booted.nowMs, 'r2');
    const partial = driveAll(doc, ['r1', 'r2'], booted.nowMs, {
      run: { hostConcurrency: 1 },
      stopWhen: (c) => c.doc.ops.r1?.state === 'running',
    });
    assert.equal(partial.doc.ops.r2?.state, 'queued');
    const vm2Before = vmOf(booted.doc, 'vm2');
    const cancel = requestCancel(partial.doc, 'r2', partial.nowMs);
    assert.equal(cancel.finished, true);
    assert.equal(cancel.op.state, 'cancelled');
    assert.equal(cancel.doc.vms.vm2?.state, 'running');
    assert.equal(vmOf(cancel.doc, 'vm2').hkid, vm2Before.hkid);
    assert.deepEqual(vmOf(cancel.doc, 'vm2').guestMemfds, vm2Before.guestMemfds);
    const driven = drive({ ...cancel.doc, version: partial.doc.version + 1 }, 'r1', partial.nowMs, {
      run: { hostConcurrency: 1 },
    });
    assert.equal(finishedOp(driven, 'r1').state, 'succeeded');
  });

  it('cancelling a queued boot leaves a stopped VM and gives its capacity back', () => {
    const host = makeHost(MAINLINE, { memoryGiB: 16 });
    const empty = hostCapacity(host);
    const created = createVm(host, {
      vmId: 'vm1',
      opId: 'boot',
      vcpus: 2,
      memoryBytes: 8 * GIB_BYTES,
      nowMs: 0,
    });
    assert.ok(hostCapacity(created.doc).freePages < empty.freePages);
    const cancel = requestCancel(created.doc, 'boot', 1);
    assert.equal(cancel.finished, true);
    assert.equal(cancel.doc.vms.vm1?.state, 'stopped');
    assert.equal(cancel.doc.vms.vm1?.generation, 0);
    assert.deepEqual(hostCapacity(cancel.doc), empty);
  });

  for (const strategy of REBOOT_STRATEGIES) {
    it(`a running ${strategy} reboot stops at the next step, cleans up, and leaves the VM stopped`, () => {
      const booted = hostWithVms(makeHost(V4_LINK), 1, { vcpus: 2, memoryBytes: 2 * GIB_BYTES });
      let doc = submit(booted.doc, 'vm1', 'reboot', strategy, booted.nowMs, 'r');
      // The first advance runs the quick steps and commits with a slow step in flight.
      const first = drive(doc, 'r', booted.nowMs, { stopWhen: () => true });
      assert.equal(first.commits.length, 1);
      const running = first.doc.ops.r;
      assert.ok(running);
      const inFlight = running.steps.filter(
        (s) => s.state === 'done' && (s.endsAtMs ?? 0) > first.nowMs,
      );
      assert.ok(inFlight.length > 0, 'a step is still running');
      const asked = requestCancel(first.doc, 'r', first.nowMs);
      assert.equal(asked.finished, false);
      assert.equal(asked.op.cancelRequested, true);
      assert.equal(jobView(asked.op, first.nowMs).state, 'running');
      // Asking twice changes nothing.
      assert.equal(requestCancel(asked.doc, 'r', first.nowMs).doc, asked.doc);
      doc = { ...asked.doc, version: first.doc.version + 1 };

      const driven = drive(doc, 'r', first.nowMs, {
        onCommit: (c) => assert.deepEqual(checkInvariants(c.doc.sim), []),
      });
      const job = cancelled(driven, 'r');
      const op = finishedOp(driven, 'r');
      const original = op.steps.filter((s) => s.cleanup !== true);
      const doneBefore = new Set(running.steps.flatMap((s, i) => (s.state === 'done' ? [i] : [])));
      original.forEach((s, i) => {
        assert.equal(s.state, doneBefore.has(i) ? 'done' : 'skipped', `${s.name} (${i})`);
      });
      const cleanup = job.steps.filter((s) => s.cleanup === true);
      assert.ok(cleanup.length > 0);
      assert.ok(cleanup.every((s) => s.state === 'done'));
      // Cleanup starts once the step in flight has ended.
      const lastEnd = Math.max(...inFlight.map((s) => s.endsAtMs ?? 0));
      for (const s of op.steps.filter((x) => x.cleanup === true)) {
        assert.ok((s.startedAtMs ?? 0) >= lastEnd);
      }

      const vm = vmOf(driven.doc, 'vm1');
      assert.equal(vm.state, 'stopped');
      assert.equal(vm.generation, 1);
      assert.equal(vm.hkid, null);
      assert.deepEqual(vm.guestMemfds, []);
      assert.equal(vm.activeJob, null);
      assertHostEmpty(driven.doc);

      // A stopped VM boots again with a reboot...
      const rebooted = drive(
        submit(
          driven.doc,
          'vm1',
          'reboot',
          strategy === 'reuse' ? 'cold' : strategy,
          driven.nowMs,
          'again',
        ),
        'again',
        driven.nowMs,
      );
      assert.equal(finishedOp(rebooted, 'again').state, 'succeeded');
      const again = vmOf(rebooted.doc, 'vm1');
      assert.equal(again.state, 'running');
      assert.equal(again.generation, 2);
      assert.equal(again.guestMemfds[0]?.firstBootGeneration, 2);
      assert.equal(hostView(rebooted.doc, rebooted.nowMs).usage.hkids.used, 1);

      // ... or goes away with a terminate, in one commit.
      const terminate = drive(
        submit(driven.doc, 'vm1', 'terminate', 'terminate', driven.nowMs, 'end'),
        'end',
        driven.nowMs,
      );
      assert.equal(terminate.commits.length, 1);
      assert.equal(finishedOp(terminate, 'end').state, 'succeeded');
      assert.equal(vmOf(terminate.doc, 'vm1').state, 'terminated');
      assertHostEmpty(terminate.doc);
    });
  }

  it('a running boot cancelled leaves a stopped VM with nothing on the host', () => {
    const host = makeHost(MAINLINE);
    const created = createVm(host, {
      vmId: 'vm1',
      opId: 'boot',
      vcpus: 2,
      memoryBytes: 4 * GIB_BYTES,
      nowMs: 0,
    });
    const first = drive(created.doc, 'boot', 0, { stopWhen: () => true });
    assert.ok(first.doc.ops.boot);
    const asked = requestCancel(first.doc, 'boot', first.nowMs);
    const driven = drive({ ...asked.doc, version: 2 }, 'boot', first.nowMs);
    cancelled(driven, 'boot');
    const vm = vmOf(driven.doc, 'vm1');
    assert.equal(vm.state, 'stopped');
    assert.equal(vm.generation, 0);
    assertHostEmpty(driven.doc);
    assert.deepEqual(hostCapacity(settleDue(driven.doc, Infinity)), {
      freePages: host.sim.freePages,
      freeHkids: 8,
    });
  });

  it('a running terminate cancelled leaves the VM stopped, and it can be terminated later', () => {
    const booted = hostWithVms(makeHost(V4), 1);
    const doc = submit(booted.doc, 'vm1', 'terminate', 'terminate', booted.nowMs, 't');
    const first = drive(doc, 't', booted.nowMs, { stopWhen: () => true });
    const asked = requestCancel(first.doc, 't', first.nowMs);
    const driven = drive(asked.doc, 't', first.nowMs);
    cancelled(driven, 't');
    assert.equal(vmOf(driven.doc, 'vm1').state, 'stopped');
    assertHostEmpty(driven.doc);
    const again = drive(
      submit(driven.doc, 'vm1', 'terminate', 'close', driven.nowMs, 't2'),
      't2',
      driven.nowMs,
    );
    assert.equal(vmOf(again.doc, 'vm1').state, 'terminated');
  });

  it('a cancel that comes after the operation finished is refused as not found', () => {
    const booted = hostWithVms(makeHost(MAINLINE), 1);
    assert.throws(
      () => requestCancel(booted.doc, 'boot-vm1', booted.nowMs),
      (e: Error) => e.name === 'NotFoundError',
    );
  });
});

describe('resuming', () => {
  it('a worker that re-reads the document after every commit gets the same end as one that does not', () => {
    // The executor is pure: advancing from a stored copy of a committed document (a new worker
    // picking up a stalled job) gives the same result as the worker that committed it.
    const booted = hostWithVms(makeHost(V4_LINK), 1, { vcpus: 4, memoryBytes: 2 * GIB_BYTES });
    const doc = submit(booted.doc, 'vm1', 'reboot', 'reuse', booted.nowMs, 'r');
    const straight = drive(doc, 'r', booted.nowMs);
    let current = doc;
    let now = booted.nowMs;
    for (let i = 0; i < 1000; i++) {
      const advance = advanceOperation(structuredClone(current), 'r', at(now));
      if (advance.kind === 'wait') {
        now = Math.max(now + 1, advance.untilMs ?? now + 1);
        continue;
      }
      current = JSON.parse(
        JSON.stringify({ ...advance.doc, version: current.version + 1 }),
      ) as HostDocument;
      if (advance.finished !== null) {
        assert.deepEqual(
          JSON.parse(JSON.stringify(advance.finished)),
          JSON.parse(JSON.stringify(finishedOp(straight, 'r'))),
        );
        break;
      }
      now = Math.max(now, advance.wakeAtMs ?? now + 1);
    }
    assert.deepEqual(current, JSON.parse(JSON.stringify(straight.doc)));
  });
});

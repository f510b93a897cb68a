/**
 * One operation engine, one virtual clock: every engine that can run a scenario gives the same
 * per-operation results. The engines: the pure runner (`sim reboot`'s `runPlan`) for an operation
 * alone on its host, the offline fleet engine (`runFleet`), and the daemon's executor driven with
 * a fake clock at TIME_SCALE=0 and at 1000 with workers that wake late (seeded). Results are
 * compared exactly: the engine counts whole microseconds, so nothing is left to rounding.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ALL_KERNELS, type KernelFeatures, gibToBytes, kernelLabel } from '#tdx-sim';
import {
  type Intent,
  type RebootStrategy,
  type TerminateStrategy,
  type Micros,
  REBOOT_STRATEGIES,
  TERMINATE_STRATEGIES,
  handlesAfter,
  planBoot,
  planFor,
  runPlan,
  runnableStrategies,
  toMicros,
  toSeconds,
} from '#vmm';
import { FleetError } from './errors.js';
import { advanceHost } from './executor.js';
import { createHostDocument, hostTimeAt, realTimeOf } from './host-document.js';
import type {
  HostDocument,
  JobState,
  OperationRecord,
  OperationResult,
  Strategy,
} from './model.js';
import {
  type OfflineHostSpec,
  type OfflineInput,
  type OfflineOutput,
  type OfflineRequest,
  type OfflineVmSpec,
  runFleet,
} from './offline-engine.js';
import { createVm, requestCancel, submitOperation } from './operations.js';
import { seededRandom } from './seeded-random.js';

// ---------------------------------------------------------------------------------------------
// What every engine reports of one operation.

/** One operation as an engine ended it: the figures every engine must agree on. */
interface Outcome {
  /** `<arrival s>:<vm>:<action>`: an operation's identity in every engine. */
  key: string;
  state: JobState;
  result: OperationResult | null;
  /** The sum of its steps' waits, in whole microseconds (so the order of the sum is moot). */
  waitedMicros: Micros;
  errorCode: string | null;
}

/** A request refused before anything changed. */
interface Refusal {
  key: string;
  code: string;
}

interface EngineRun {
  outcomes: Outcome[];
  refusals: Refusal[];
}

const byKey = (a: { key: string }, b: { key: string }): number =>
  a.key < b.key ? -1 : a.key > b.key ? 1 : 0;

function outcomeOfRecord(op: OperationRecord): Outcome {
  let waited = 0;
  for (const step of op.steps) waited += toMicros(step.waitedSeconds);
  return {
    key: `${toSeconds(op.arrivedAt)}:${op.vmId}:${op.action}`,
    state: op.state,
    result: op.result,
    waitedMicros: waited,
    errorCode: op.error?.code ?? null,
  };
}

function offlineRun(output: OfflineOutput): EngineRun {
  const outcomes = output.operations.map((op): Outcome => {
    let waited = 0;
    for (const w of op.waits) waited += toMicros(w.seconds);
    return {
      key: `${op.arrivedAt ?? op.requestedAt}:${op.vmId}:${op.action}`,
      state: op.state,
      result: op.result,
      waitedMicros: waited,
      errorCode: op.error?.code ?? null,
    };
  });
  const refusals = output.refusals.map((r) => ({
    key: `${r.at}:${r.vmId ?? '-'}:${r.action}`,
    code: r.code,
  }));
  return { outcomes: outcomes.sort(byKey), refusals: refusals.sort(byKey) };
}

// ---------------------------------------------------------------------------------------------
// The daemon's executor, driven the way its workers drive a host, with a fake clock.

/** Something asked of a VM at a virtual time (seconds), as the offline engine takes requests. */
type TimedRequest = OfflineRequest;

/** How the fake workers run a host. */
interface DriveMode {
  timeScale: 0 | 1000;
  /** Real milliseconds a worker may wake late, drawn from `random` (1000x only). */
  lateMs?: number;
  random?: () => number;
}

const HOST_CONCURRENCY = 4;

/**
 * The requests of one host, each applied to its document at its virtual time, the host advanced
 * by the executor in between as the daemon's workers would.
 *
 * At TIME_SCALE=0 a worker runs a host to the end of what can happen, so the host is stopped at
 * each request's time with `untilVirtual` and its clock set there (as the offline engine does):
 * the request arrives then. At 1000x the fake clock is real time: each worker wakes when the
 * host asks (late by up to `lateMs`), never past the real time at which the host's clock reaches
 * the next request, where one advance brings the clock to it exactly and the request is
 * submitted at that real time.
 */
function driveHost(
  spec: OfflineHostSpec,
  vms: readonly OfflineVmSpec[],
  requests: readonly TimedRequest[],
  mode: DriveMode,
): EngineRun {
  let doc: HostDocument = createHostDocument(spec, 0);
  let nowMs = 0;
  const outcomes: Outcome[] = [];
  const refusals: Refusal[] = [];
  const options = (untilVirtual?: Micros) => ({
    nowMs,
    timeScale: mode.timeScale,
    hostConcurrency: HOST_CONCURRENCY,
    // The offline engine's 600000 virtual seconds, in real time at the scale.
    maxWaitMs: mode.timeScale === 0 ? Infinity : 600_000,
    pollMs: 50,
    ...(untilVirtual === undefined ? {} : { untilVirtual }),
  });
  let wakeAtMs: number | null = null;
  const step = (untilVirtual?: Micros): void => {
    const advance = advanceHost(doc, options(untilVirtual));
    if (advance.changed) doc = { ...advance.doc, version: doc.version + 1 };
    for (const op of advance.finished) outcomes.push(outcomeOfRecord(op));
    wakeAtMs = advance.wakeAtMs;
  };
  const apply = (request: TimedRequest): void => {
    const key = `${request.at}:${request.vmId}:${request.action}`;
    try {
      if (request.action === 'cancel') {
        const opId = doc.vms[request.vmId]?.activeJob ?? null;
        if (opId === null) {
          refusals.push({ key, code: 'job_finished' });
          return;
        }
        const cancelled = requestCancel(doc, opId, nowMs);
        doc = cancelled.doc;
        if (cancelled.finished) outcomes.push(outcomeOfRecord(cancelled.op));
      } else if (request.action === 'boot') {
        const vm = vms.find((v) => v.id === request.vmId);
        if (vm === undefined) throw new Error(`no VM ${request.vmId}`);
        doc = createVm(doc, {
          vmId: vm.id,
          opId: `${key}`,
          vcpus: vm.vcpus,
          memoryBytes: gibToBytes(vm.memoryGiB),
          nowMs,
          timeScale: mode.timeScale,
        }).doc;
      } else {
        doc = submitOperation(doc, {
          opId: key,
          vmId: request.vmId,
          action: request.action,
          strategy: request.strategy ?? (request.action === 'reboot' ? 'cold' : 'close'),
          nowMs,
          timeScale: mode.timeScale,
        }).doc;
      }
    } catch (error) {
      if (!(error instanceof FleetError)) throw error;
      refusals.push({ key, code: error.code });
    }
  };

  let guard = 0;
  const tick = (): void => {
    guard += 1;
    if (guard > 200_000) throw new Error(`host ${spec.id}: the drive does not end`);
  };
  if (mode.timeScale === 0) {
    for (const [i, request] of requests.entries()) {
      tick();
      const at = toMicros(request.at);
      // Requests of the same time arrive together, before the host is advanced at that time.
      if (i === 0 || (requests[i - 1] as TimedRequest).at !== request.at) {
        step(at);
        doc = { ...doc, clock: Math.max(doc.clock, at) };
      }
      apply(request);
    }
    while (Object.keys(doc.ops).length > 0) {
      tick();
      const before = doc;
      step();
      if (doc === before) throw new Error(`host ${spec.id}: operations left with nothing to do`);
    }
    return { outcomes, refusals };
  }

  const random = mode.random ?? (() => 0);
  const lateMs = mode.lateMs ?? 0;
  let next = 0;
  for (;;) {
    tick();
    const request = requests[next];
    const requestMs =
      request === undefined ? Infinity : realTimeOf(doc, toMicros(request.at), 1000);
    const wake: number = wakeAtMs ?? Infinity;
    const late = wake + random() * lateMs;
    if (request !== undefined && late >= requestMs) {
      // The request comes at the real time at which the host's clock reaches its virtual time.
      // Requests of the same time arrive together (all submitted before a worker advances the
      // host). A submission arrives at the host's paced time whether or not a worker has brought
      // the document up to it (the worker catches up in virtual order), so a late worker is left
      // late at random. Not when what the request meets depends on it: a cancel stops the
      // operation at its next step boundary after the document's clock, and an operation of a
      // VM still busy in the document, or stopped (its capacity is checked), is refused or not
      // by what the document says: the host is brought up to the request's time first then, as
      // the offline engine's one clock has it.
      nowMs = Math.max(nowMs, requestMs);
      const group = requests.filter((r) => r.at === request.at);
      const meetsState = group.some((r) => {
        const target = doc.vms[r.vmId];
        return r.action !== 'reboot' && r.action !== 'terminate'
          ? true
          : target === undefined || target.activeJob !== null || target.handles === null;
      });
      if (meetsState || random() < 0.5) step();
      assert.equal(hostTimeAt(doc, nowMs, 1000), toMicros(request.at), 'the clock at the request');
      for (; requests[next]?.at === request.at; next += 1) {
        apply(requests[next] as TimedRequest);
      }
      // New jobs: a worker takes them at once.
      step();
      continue;
    }
    if (request === undefined && Object.keys(doc.ops).length === 0) break;
    if (!Number.isFinite(late)) throw new Error(`host ${spec.id}: nothing to wake for`);
    nowMs = late > nowMs ? late : nowMs + 1;
    step();
  }
  return { outcomes, refusals };
}

/** The executor over a fleet: each host driven on its own (hosts share nothing but requests). */
function driveFleet(input: OfflineInput, mode: DriveMode): EngineRun {
  const hostOf = new Map(input.vms.map((vm) => [vm.id, vm.hostId]));
  const runs = input.hosts.map((host) => {
    const requests = (input.requests ?? []).filter((r) => hostOf.get(r.vmId) === host.id);
    const sorted = requests.map((r, i) => ({ r, i })).sort((a, b) => a.r.at - b.r.at || a.i - b.i);
    return driveHost(
      host,
      input.vms.filter((vm) => vm.hostId === host.id),
      sorted.map((x) => x.r),
      mode,
    );
  });
  return {
    outcomes: runs.flatMap((r) => r.outcomes).sort(byKey),
    refusals: runs.flatMap((r) => r.refusals).sort(byKey),
  };
}

// ---------------------------------------------------------------------------------------------
// The pure runner: an operation alone on its host, its VMs booted one after another first.

/**
 * `sim reboot` for each host of a scenario that has at most one operation: the host's VMs booted
 * by `runPlan` in their order (each alone, everything it freed back before the next, as in the
 * other engines where boots are a gap apart), then the operation's plan. Null when a host has
 * more than one operation, or a cancel: the runner has no such thing.
 */
function runnerRun(input: OfflineInput): EngineRun | null {
  const outcomes: Outcome[] = [];
  const requests = input.requests ?? [];
  if (requests.some((r) => r.action === 'cancel')) return null;
  for (const host of input.hosts) {
    let sim = createHostDocument(host, 0).sim;
    const mine = requests.filter(
      (r) => input.vms.find((vm) => vm.id === r.vmId)?.hostId === host.id,
    );
    if (mine.filter((r) => r.action !== 'boot').length > 1) return null;
    const bindings = new Map<string, ReturnType<typeof runPlan>['bindings']>();
    for (const request of mine) {
      const vm = input.vms.find((v) => v.id === request.vmId);
      if (vm === undefined) throw new Error(`no VM ${request.vmId}`);
      const shape = { vcpus: vm.vcpus, memoryBytes: gibToBytes(vm.memoryGiB) };
      let intent: Intent;
      if (request.action === 'boot') intent = { action: 'boot' };
      else if (request.action === 'reboot')
        intent = { action: 'reboot', strategy: request.strategy as RebootStrategy };
      else intent = { action: 'terminate', strategy: request.strategy as TerminateStrategy };
      let plan;
      if (intent.action === 'boot') plan = planBoot(shape);
      else {
        const booted = bindings.get(vm.id);
        assert.ok(booted, `${vm.id} booted before its ${intent.action}`);
        const planned = planFor(intent, host.kernel, shape, handlesAfter(shape, booted));
        assert.ok(planned.ok);
        plan = planned.plan;
      }
      const run = runPlan(sim, plan);
      sim = run.state;
      bindings.set(vm.id, run.bindings);
      let waited = 0;
      for (const entry of run.timeline) waited += toMicros(entry.waitedSeconds);
      outcomes.push({
        key: `${request.at}:${vm.id}:${request.action}`,
        state: run.ok ? 'succeeded' : 'failed',
        result: run.ok ? run.summary : null,
        waitedMicros: waited,
        errorCode: run.ok ? null : 'step_failed',
      });
    }
  }
  return { outcomes: outcomes.sort(byKey), refusals: [] };
}

// ---------------------------------------------------------------------------------------------
// The table of scenarios.

/** An operation of a scenario: every one arrives at the same virtual time. */
interface ScenarioOp {
  vmId: string;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
}

interface Scenario {
  name: string;
  hosts: OfflineHostSpec[];
  /** Booted first, one after another, `BOOT_GAP` apart. */
  vms: OfflineVmSpec[];
  /** Arrive together at `opsAt`, once every boot has ended. */
  ops: ScenarioOp[];
  /** A cancel of the VM's operation, `afterSeconds` after the operations arrived. */
  cancel?: { vmId: string; afterSeconds: number };
  /** What must hold of the scenario itself (so that it tests what it says). */
  check?: (output: OfflineOutput) => void;
}

/** Virtual seconds between boots: each ends, and gives back what it freed, before the next. */
const BOOT_GAP = 1000;

function opsAt(scenario: Pick<Scenario, 'vms'>): number {
  return (scenario.vms.length + 1) * BOOT_GAP;
}

/** The scenario as the offline engine takes it: boots, then the operations, then any cancel. */
function scenarioInput(scenario: Scenario): OfflineInput {
  const at = opsAt(scenario);
  const requests: OfflineRequest[] = [
    ...scenario.vms.map((vm, i): OfflineRequest => ({
      at: (i + 1) * BOOT_GAP,
      action: 'boot',
      vmId: vm.id,
    })),
    ...scenario.ops.map((op): OfflineRequest => ({ at, ...op })),
  ];
  if (scenario.cancel !== undefined) {
    requests.push({
      at: at + scenario.cancel.afterSeconds,
      action: 'cancel',
      vmId: scenario.cancel.vmId,
    });
  }
  return {
    hosts: scenario.hosts,
    vms: scenario.vms,
    requests,
    limits: { hostConcurrency: HOST_CONCURRENCY },
  };
}

function host(
  id: string,
  kernel: KernelFeatures,
  spec: Partial<OfflineHostSpec> = {},
): OfflineHostSpec {
  return { id, memoryGiB: 64, hkids: 8, packages: 2, cpus: 16, kernel, ...spec };
}

function vm(id: string, vcpus: number, memoryGiB: number, hostId = 'h1'): OfflineVmSpec {
  return { id, vcpus, memoryGiB, hostId };
}

function waitsOf(output: OfflineOutput, vmId: string, action = 'reboot') {
  const op = output.operations.find((o) => o.vmId === vmId && o.action === action);
  assert.ok(op, `an operation ${action} of ${vmId}`);
  return op;
}

/** A kernel that runs `strategy` of `action`, the first in declaration order. */
function kernelFor(action: 'reboot' | 'terminate', strategy: Strategy): KernelFeatures {
  const kernel = ALL_KERNELS.find((k) =>
    (runnableStrategies(action as 'reboot', k) as readonly Strategy[]).includes(strategy),
  );
  assert.ok(kernel, `a kernel that can ${action} with ${strategy}`);
  return kernel;
}

/** Room for one VM of 4 GiB and its metadata, and 32 MiB more: not for two. */
const TIGHT_GIB = 4 + 1 / 32;

const SCENARIOS: Scenario[] = [
  // Every strategy on every kernel that allows it: a VM alone, then the same at full HKID
  // capacity (a cold reboot's new VM waits for its own old HKID: ENOSPC), then with memory for
  // one VM only (the new VM waits for the old one's memory: ENOMEM).
  ...ALL_KERNELS.flatMap((kernel): Scenario[] => [
    ...runnableStrategies('reboot', kernel).flatMap((strategy): Scenario[] => [
      {
        name: `reboot ${strategy} on ${kernelLabel(kernel)}`,
        hosts: [host('h1', kernel)],
        vms: [vm('a', 4, 4), vm('b', 2, 2)],
        ops: [{ vmId: 'a', action: 'reboot', strategy }],
      },
      {
        name: `reboot ${strategy} at full HKID capacity on ${kernelLabel(kernel)}`,
        hosts: [host('h1', kernel, { hkids: 2 })],
        vms: [vm('small', 1, 0.25), vm('a', 8, 6)],
        ops: [{ vmId: 'a', action: 'reboot', strategy }],
        check: (output) => {
          const waits = waitsOf(output, 'a').waits;
          if (strategy === 'cold') {
            assert.ok(
              waits.some((w) => w.step === 'init-vm' && w.errno === 'ENOSPC' && w.seconds > 0),
              JSON.stringify(waits),
            );
          }
        },
      },
      {
        name: `reboot ${strategy} with memory for one VM on ${kernelLabel(kernel)}`,
        hosts: [host('h1', kernel, { memoryGiB: TIGHT_GIB })],
        vms: [vm('a', 4, 4)],
        ops: [{ vmId: 'a', action: 'reboot', strategy }],
        check: (output) => {
          const waits = waitsOf(output, 'a').waits;
          if (strategy !== 'reuse') {
            assert.ok(
              waits.some((w) => w.errno === 'ENOMEM' && w.seconds > 0),
              JSON.stringify(waits),
            );
          }
        },
      },
    ]),
    ...runnableStrategies('terminate', kernel).map((strategy): Scenario => ({
      name: `terminate ${strategy} on ${kernelLabel(kernel)}`,
      hosts: [host('h1', kernel)],
      vms: [vm('a', 4, 4), vm('b', 2, 2)],
      ops: [{ vmId: 'a', action: 'terminate', strategy }],
    })),
  ]),
  {
    name: 'two cold reboots with memory for two VMs: both new VMs wait for memory (ENOMEM)',
    hosts: [host('h1', kernelFor('reboot', 'cold'), { memoryGiB: 2 * TIGHT_GIB })],
    vms: [vm('a', 4, 4), vm('b', 4, 4)],
    ops: [
      { vmId: 'a', action: 'reboot', strategy: 'cold' },
      { vmId: 'b', action: 'reboot', strategy: 'cold' },
    ],
    check: (output) => {
      for (const id of ['a', 'b']) {
        assert.ok(
          waitsOf(output, id).waits.some((w) => w.errno === 'ENOMEM'),
          id,
        );
      }
    },
  },
  {
    // The cold reboot's VM is small: its old VM is destroyed (and its HKID released) while the
    // first one's KVM_TDX_TERMINATE_VM still holds the lock.
    name: 'three reboots on one host queue for the HKID release lock',
    hosts: [host('h1', kernelFor('reboot', 'terminate'))],
    vms: [vm('a', 2, 2), vm('b', 2, 0.25), vm('c', 2, 2)],
    ops: [
      { vmId: 'a', action: 'reboot', strategy: 'terminate' },
      { vmId: 'b', action: 'reboot', strategy: 'cold' },
      { vmId: 'c', action: 'reboot', strategy: 'terminate' },
    ],
    check: (output) => {
      assert.deepEqual(waitsOf(output, 'a').waits, []);
      const lockWaits = ['b', 'c'].map((id) => {
        const op = waitsOf(output, id);
        assert.equal(op.state, 'succeeded');
        const lock = op.waits.filter((w) => w.errno === null);
        assert.ok(lock.length > 0 && lock.every((w) => w.seconds > 0), `${id} waited for the lock`);
        return op.waitedSeconds;
      });
      // The last in the queue waits for both releases before it.
      assert.ok((lockWaits[1] ?? 0) > (lockWaits[0] ?? 0), JSON.stringify(lockWaits));
    },
  },
  {
    name: 'a cancel in the middle of a teardown',
    hosts: [host('h1', kernelFor('reboot', 'terminate'))],
    vms: [vm('a', 4, 8), vm('b', 2, 2)],
    ops: [{ vmId: 'a', action: 'reboot', strategy: 'cold' }],
    cancel: { vmId: 'a', afterSeconds: 5 },
    check: (output) => {
      const op = waitsOf(output, 'a');
      assert.equal(op.state, 'cancelled');
      assert.equal(op.error?.code, 'cancelled');
      // It had started, and stopped at a step boundary after the cancel.
      assert.equal(op.startedAt, opsAt({ vms: [vm('a', 4, 8), vm('b', 2, 2)] }));
      assert.ok((op.finishedAt ?? 0) > (op.startedAt ?? 0) + 5, `finished at ${op.finishedAt}`);
    },
  },
  {
    name: 'a cancel of a reboot waiting for the HKID release lock',
    hosts: [host('h1', kernelFor('reboot', 'terminate'))],
    vms: [vm('a', 2, 2), vm('b', 2, 2), vm('c', 2, 2)],
    ops: [
      { vmId: 'a', action: 'reboot', strategy: 'terminate' },
      { vmId: 'b', action: 'reboot', strategy: 'terminate' },
      { vmId: 'c', action: 'reboot', strategy: 'terminate' },
    ],
    cancel: { vmId: 'c', afterSeconds: 1 },
    check: (output) => {
      assert.equal(waitsOf(output, 'c').state, 'cancelled');
      assert.equal(waitsOf(output, 'b').state, 'succeeded');
    },
  },
];

// Every strategy the declarations name is in the table, on some kernel.
for (const strategy of REBOOT_STRATEGIES) {
  assert.ok(
    SCENARIOS.some((s) => s.ops.some((o) => o.action === 'reboot' && o.strategy === strategy)),
  );
}
for (const strategy of TERMINATE_STRATEGIES) {
  assert.ok(
    SCENARIOS.some((s) => s.ops.some((o) => o.action === 'terminate' && o.strategy === strategy)),
  );
}

/** What every engine must give alike, with a readable difference when one does not. */
function assertSameRuns(actual: EngineRun, expected: EngineRun, engine: string): void {
  assert.deepEqual(actual.refusals, expected.refusals, `${engine}: refusals`);
  assert.deepEqual(
    actual.outcomes.map((o) => o.key),
    expected.outcomes.map((o) => o.key),
    `${engine}: operations`,
  );
  for (const [i, outcome] of actual.outcomes.entries()) {
    assert.deepEqual(outcome, expected.outcomes[i], `${engine}: ${outcome.key}`);
  }
}

describe('agreement: every engine that can run a scenario gives the same per-operation results', () => {
  for (const [index, scenario] of SCENARIOS.entries()) {
    it(scenario.name, () => {
      const input = scenarioInput(scenario);
      const output = runFleet(input);
      scenario.check?.(output);
      const offline = offlineRun(output);
      assert.equal(
        offline.outcomes.length,
        scenario.vms.length + scenario.ops.length,
        'every operation ran',
      );
      assert.deepEqual(offline.refusals, []);
      const runner = runnerRun(input);
      if (runner !== null) assertSameRuns(runner, offline, 'runPlan');
      assertSameRuns(driveFleet(input, { timeScale: 0 }), offline, 'executor at TIME_SCALE=0');
      for (const seed of [1, 2]) {
        const random = seededRandom(1000 * index + seed);
        assertSameRuns(
          driveFleet(input, { timeScale: 1000, lateMs: 7, random }),
          offline,
          `executor at TIME_SCALE=1000, late wake-ups (seed ${seed})`,
        );
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// A batch of maxConcurrency 2 over 20 VMs.
//
// The daemon's side of a batch is its batch runner: a BullMQ job that polls the store in real
// time and submits a member when a slot frees. It is not pure, so it cannot be driven with a fake
// clock. What a batch decides is only when each member is submitted; the operations themselves
// run through the executor like any other. So the batch is checked in two parts: the offline
// engine runs it deterministically (twice, the same output), with never more than 2 in flight;
// and the same operations submitted one by one at the times the offline engine reports give the
// same per-operation results, in the offline engine and in the executor at both time scales.

describe('agreement: a batch of maxConcurrency 2 over 20 VMs', () => {
  for (const [index, strategy] of REBOOT_STRATEGIES.entries()) {
    it(`reboot ${strategy}: the members' results are those of the same operations submitted alone`, () => {
      const kernels = ALL_KERNELS.filter((k) => runnableStrategies('reboot', k).includes(strategy));
      const hosts = kernels.map((kernel, i) => host(`h${i + 1}`, kernel));
      const vms = Array.from({ length: 20 }, (_, i) =>
        vm(
          `vm-${String(i + 1).padStart(2, '0')}`,
          1 + (i % 3),
          1 + (i % 2),
          `h${(i % hosts.length) + 1}`,
        ),
      );
      const boots = vms.map((v, i): OfflineRequest => ({
        at: (i + 1) * BOOT_GAP,
        action: 'boot',
        vmId: v.id,
      }));
      const batchAt = opsAt({ vms });
      const input: OfflineInput = {
        hosts,
        vms,
        requests: boots,
        batches: [
          { at: batchAt, selector: { all: true }, action: 'reboot', strategy, maxConcurrency: 2 },
        ],
        limits: { hostConcurrency: HOST_CONCURRENCY },
      };
      const output = runFleet(input);
      assert.deepEqual(runFleet(input), output, 'the same input, the same output');
      assert.equal(output.batches[0]?.peakInFlight, 2);
      const members = output.operations.filter((op) => op.batchId !== null);
      assert.equal(members.length, 20);
      assert.ok(members.every((op) => op.state === 'succeeded'));
      // Later members went as slots freed: not all at once.
      assert.ok(new Set(members.map((op) => op.arrivedAt)).size > 2);

      const alone: OfflineInput = {
        hosts,
        vms,
        requests: [
          ...boots,
          ...members.map((op): OfflineRequest => ({
            at: op.arrivedAt as number,
            action: 'reboot',
            vmId: op.vmId,
            strategy,
          })),
        ],
        limits: { hostConcurrency: HOST_CONCURRENCY },
      };
      const batch = offlineRun(output);
      assertSameRuns(offlineRun(runFleet(alone)), batch, 'offline, one by one');
      assertSameRuns(driveFleet(alone, { timeScale: 0 }), batch, 'executor at TIME_SCALE=0');
      assertSameRuns(
        driveFleet(alone, { timeScale: 1000, lateMs: 7, random: seededRandom(7000 + index) }),
        batch,
        'executor at TIME_SCALE=1000, late wake-ups',
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Random fleets and requests: the offline engine equals the executor driven step by step.

const vmArb = fc.record({
  vcpus: fc.integer({ min: 1, max: 4 }),
  memoryGiB: fc.constantFrom(0.25, 0.5, 1, 2),
});

const hostArb = fc.record({
  kernel: fc.constantFrom(...ALL_KERNELS),
  vms: fc.array(vmArb, { minLength: 1, maxLength: 4 }),
  /** GiB beyond the VMs' memory: tight (waits for memory) to roomy. */
  slackGiB: fc.constantFrom(0.125, 0.5, 8),
  /** HKIDs beyond one per VM: none (a cold reboot waits for its own) to some. */
  spareHkids: fc.constantFrom(0, 1, 3),
});

const requestArb = fc.record({
  vm: fc.nat(),
  kind: fc.constantFrom('reboot', 'reboot', 'terminate', 'cancel'),
  strategy: fc.nat(),
  /** On a grid of 2.5 s: operations meet, and cancels land inside them. */
  slot: fc.integer({ min: 0, max: 12 }),
});

const fleetArb = fc.record({
  hosts: fc.array(hostArb, { minLength: 1, maxLength: 3 }),
  requests: fc.array(requestArb, { maxLength: 10 }),
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

type FleetCase = typeof fleetArb extends fc.Arbitrary<infer T> ? T : never;

function fleetInput(c: FleetCase): OfflineInput {
  const hosts: OfflineHostSpec[] = [];
  const vms: (OfflineVmSpec & { kernel: KernelFeatures })[] = [];
  c.hosts.forEach((h, i) => {
    const id = `h${i + 1}`;
    const memoryGiB = h.vms.reduce((sum, v) => sum + v.memoryGiB, 0) + h.slackGiB;
    hosts.push(host(id, h.kernel, { memoryGiB, hkids: h.vms.length + h.spareHkids }));
    h.vms.forEach((v, j) =>
      vms.push({ id: `${id}-vm${j + 1}`, hostId: id, kernel: h.kernel, ...v }),
    );
  });
  const requests: OfflineRequest[] = vms.map((v) => ({ at: 0, action: 'boot', vmId: v.id }));
  for (const r of c.requests) {
    const target = vms[r.vm % vms.length];
    assert.ok(target);
    const at = 100 + 2.5 * r.slot;
    if (r.kind === 'cancel') {
      requests.push({ at, action: 'cancel', vmId: target.id });
      continue;
    }
    const allowed: readonly Strategy[] =
      r.kind === 'reboot'
        ? runnableStrategies('reboot', target.kernel)
        : runnableStrategies('terminate', target.kernel);
    requests.push({
      at,
      action: r.kind,
      vmId: target.id,
      strategy: allowed[r.strategy % allowed.length] ?? null,
    });
  }
  return {
    hosts,
    vms: vms.map(({ kernel: _kernel, ...v }) => v),
    requests: requests.sort((a, b) => a.at - b.at),
    limits: { hostConcurrency: HOST_CONCURRENCY },
  };
}

describe('agreement: random fleets and requests', () => {
  it('runFleet equals the executor driven step by step, at TIME_SCALE=0 and 1000', () => {
    fc.assert(
      fc.property(fleetArb, (c) => {
        const input = fleetInput(c);
        const output = runFleet(input);
        // A step that waits with nothing known to change times out after a real-time wait,
        // which a fake clock at scale 0 never reaches: such fleets are not comparable here.
        fc.pre(output.operations.every((op) => op.error?.code !== 'wait_timeout'));
        const offline = offlineRun(output);
        assertSameRuns(driveFleet(input, { timeScale: 0 }), offline, 'executor at TIME_SCALE=0');
        assertSameRuns(
          driveFleet(input, { timeScale: 1000, lateMs: 5, random: seededRandom(c.seed) }),
          offline,
          'executor at TIME_SCALE=1000, late wake-ups',
        );
      }),
      { numRuns: Number(process.env.AGREEMENT_RUNS ?? 50), includeErrorInReport: true },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// HKID release faults: a host's setting fails the same releases in every engine.

describe('agreement: HKID release faults fail the same releases in every engine', () => {
  const MAINLINE = kernelFor('reboot', 'cold');
  const TERMINATE = kernelFor('terminate', 'terminate');
  const leakedAtEnd = (output: OfflineOutput): number =>
    output.series.fleet.at(-1)?.hkidsLeaked ?? -1;
  const engines = (input: OfflineInput, scales: ReadonlyArray<0 | 1000>): OfflineOutput => {
    const output = runFleet(input);
    const offline = offlineRun(output);
    for (const timeScale of scales) {
      const mode: DriveMode =
        timeScale === 0 ? { timeScale } : { timeScale, lateMs: 7, random: seededRandom(12) };
      assertSameRuns(driveFleet(input, mode), offline, `executor at TIME_SCALE=${timeScale}`);
    }
    return output;
  };

  it('a failed FREEID leaks the HKID for good: a boot at full HKID capacity is refused until another release', () => {
    const input: OfflineInput = {
      hosts: [host('h1', MAINLINE, { hkids: 2, hkidReleaseFaults: { FREEID: { failNext: 1 } } })],
      vms: [vm('a', 2, 2), vm('b', 1, 0.25), vm('c', 2, 2)],
      requests: [
        { at: 1000, action: 'boot', vmId: 'a' },
        { at: 2000, action: 'boot', vmId: 'b' },
        { at: 3000, action: 'terminate', vmId: 'a', strategy: 'close' },
        { at: 4000, action: 'boot', vmId: 'c' },
        { at: 5000, action: 'terminate', vmId: 'b', strategy: 'close' },
        { at: 6000, action: 'boot', vmId: 'c' },
      ],
      limits: { hostConcurrency: HOST_CONCURRENCY },
    };
    const output = engines(input, [0, 1000]);
    // The kernel only logs the failure: the terminate ends, and the host has an HKID less.
    assert.equal(waitsOf(output, 'a', 'terminate').state, 'succeeded');
    assert.deepEqual(
      output.refusals.map((r) => `${r.at}:${r.vmId}:${r.code}`),
      ['4000:c:no_capacity'],
    );
    // The second release's FREEID succeeds (only the next one was to fail): c boots then.
    assert.equal(waitsOf(output, 'c', 'boot').state, 'succeeded');
    assert.equal(leakedAtEnd(output), 1);
    assert.equal(output.series.fleet.at(-1)?.hkidsInUse, 1);
  });

  it('a cold reboot at full HKID capacity whose old HKID leaks waits for it, then fails', () => {
    const input: OfflineInput = {
      hosts: [host('h1', MAINLINE, { hkids: 2, hkidReleaseFaults: { FREEID: { everyNth: 1 } } })],
      vms: [vm('small', 1, 0.25), vm('a', 8, 6)],
      requests: [
        { at: 1000, action: 'boot', vmId: 'small' },
        { at: 2000, action: 'boot', vmId: 'a' },
        { at: 3000, action: 'reboot', vmId: 'a', strategy: 'cold' },
      ],
      limits: { hostConcurrency: HOST_CONCURRENCY },
    };
    // Only at 1000x: at TIME_SCALE=0 the daemon's wait limit is real time, which never passes.
    const output = engines(input, [1000]);
    const reboot = waitsOf(output, 'a');
    assert.equal(reboot.state, 'failed');
    // Its new VM waited for an HKID that never came back.
    assert.deepEqual(
      [reboot.error?.code, reboot.error?.step, reboot.error?.errno],
      ['wait_timeout', 'init-vm', 'ENOSPC'],
    );
    assert.equal(leakedAtEnd(output), 1);
  });

  it('a failed VPFLUSHDONE keeps the HKID: KVM_TDX_TERMINATE_VM ends, and the release at close succeeds', () => {
    const input = (faults?: OfflineHostSpec['hkidReleaseFaults']): OfflineInput => ({
      hosts: [host('h1', TERMINATE, faults === undefined ? {} : { hkidReleaseFaults: faults })],
      vms: [vm('a', 4, 4)],
      requests: [
        { at: 1000, action: 'boot', vmId: 'a' },
        { at: 2000, action: 'terminate', vmId: 'a', strategy: 'terminate' },
      ],
      limits: { hostConcurrency: HOST_CONCURRENCY },
    });
    const faulty = engines(input({ VPFLUSHDONE: { failNext: 1 } }), [0, 1000]);
    const clean = runFleet(input());
    const terminate = waitsOf(faulty, 'a', 'terminate');
    assert.equal(terminate.state, 'succeeded');
    assert.equal(leakedAtEnd(faulty), 0);
    // The HKID was held until the VM was closed: longer than when the terminate released it.
    const held = (output: OfflineOutput) =>
      waitsOf(output, 'a', 'terminate').result?.hkidHeldSeconds ?? 0;
    assert.ok(held(faulty) > held(clean), `${held(faulty)} > ${held(clean)}`);
  });

  it('every second FREEID fails: reboots leak every other HKID', () => {
    const input: OfflineInput = {
      hosts: [host('h1', MAINLINE, { hkids: 8, hkidReleaseFaults: { FREEID: { everyNth: 2 } } })],
      vms: [vm('a', 2, 2), vm('b', 2, 2)],
      requests: [
        { at: 1000, action: 'boot', vmId: 'a' },
        { at: 2000, action: 'boot', vmId: 'b' },
        ...[3000, 4000, 5000].flatMap((at): OfflineRequest[] => [
          { at, action: 'reboot', vmId: 'a', strategy: 'cold' },
          { at: at + 500, action: 'reboot', vmId: 'b', strategy: 'cold' },
        ]),
      ],
      limits: { hostConcurrency: HOST_CONCURRENCY },
    };
    const output = engines(input, [0, 1000]);
    assert.ok(output.operations.every((op) => op.state === 'succeeded'));
    assert.equal(leakedAtEnd(output), 3, 'six releases, every second one leaked');
  });
});

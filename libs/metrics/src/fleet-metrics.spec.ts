import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type HostDocument, submitOperation } from '#fleet';
import { REBOOT_STRATEGIES, STRATEGY_ACTIONS, strategiesOf } from '#vmm';
import {
  AUG_LINK_2M,
  GIB_BYTES,
  MAINLINE,
  drive,
  finishedOp,
  hostWithVms,
  makeHost,
} from '../../fleet/src/testing/driver.js';
import { FleetMetrics, type MetricsSources } from './fleet-metrics.js';

/** A family as `Registry.getMetricsAsJSON` gives it. */
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: string;
  readonly values: ReadonlyArray<{
    readonly value: number;
    readonly labels: Readonly<Record<string, string | number>>;
    readonly metricName?: string;
  }>;
}

/** Every family the daemon exports besides the default process metrics, and its type. */
const FAMILIES: Record<string, 'gauge' | 'counter' | 'histogram'> = {
  tdxfleet_vms: 'gauge',
  tdxfleet_hkids_in_use: 'gauge',
  tdxfleet_hkids: 'gauge',
  tdxfleet_zombie_hkids: 'gauge',
  tdxfleet_host_memory_bytes: 'gauge',
  tdxfleet_queue_jobs: 'gauge',
  tdxfleet_operations_total: 'counter',
  tdxfleet_errnos_total: 'counter',
  tdxfleet_reclaimed_bytes_total: 'counter',
  tdxfleet_reused_bytes_total: 'counter',
  tdxfleet_allocated_bytes_total: 'counter',
  tdxfleet_reclaim_duration_seconds: 'histogram',
  tdxfleet_reboot_downtime_seconds: 'histogram',
  tdxfleet_job_step_duration_seconds: 'histogram',
  tdxfleet_queue_wait_seconds: 'histogram',
  tdxfleet_queue_run_seconds: 'histogram',
  tdxfleet_queue_retries_total: 'counter',
  tdxfleet_queue_stalled_total: 'counter',
};
const SIMULATED = [
  'tdxfleet_reclaim_duration_seconds',
  'tdxfleet_reboot_downtime_seconds',
  'tdxfleet_job_step_duration_seconds',
];
const WALL = ['tdxfleet_queue_wait_seconds', 'tdxfleet_queue_run_seconds'];
/** Every label the daemon's families use: each takes a bounded set of values (never an id). */
const BOUNDED_LABELS = new Set([
  'state',
  'use',
  'host',
  'queue',
  'action',
  'strategy',
  'outcome',
  'operation',
  'errno',
  'path',
  'step',
  'le',
]);

const QUEUE_COUNTS = {
  operations: { waiting: 2, active: 1, completed: 7, failed: 0 },
  batches: { waiting: 0, active: 0, completed: 1, failed: 0 },
};

/** The hosts `docs()`, with `terminated[id]` VMs terminated on host `id` within 7 days. */
function sources(
  docs: () => HostDocument[],
  terminated: Record<string, number> = {},
): MetricsSources {
  return {
    hosts: () => Promise.resolve(docs()),
    terminatedVmCounts: (hostIds) => Promise.resolve(hostIds.map((id) => terminated[id] ?? 0)),
    queueCounts: () => Promise.resolve(QUEUE_COUNTS),
  };
}

async function families(metrics: FleetMetrics): Promise<Map<string, Family>> {
  const all = (await metrics.registry.getMetricsAsJSON()) as unknown as Family[];
  return new Map(all.map((family) => [family.name, family]));
}

function family(all: Map<string, Family>, name: string): Family {
  const found = all.get(name);
  assert.ok(found, `${name} is exported`);
  return found;
}

/** The value of the sample of `name` whose labels are exactly `labels`. */
function sample(
  all: Map<string, Family>,
  name: string,
  labels: Record<string, string | number> = {},
  metricName = name,
): number | undefined {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const found = family(all, base).values.find(
    (v) =>
      (v.metricName ?? base) === metricName &&
      JSON.stringify(Object.entries(v.labels).sort()) ===
        JSON.stringify(Object.entries(labels).sort()),
  );
  return found?.value;
}

function count(all: Map<string, Family>, name: string, labels: Record<string, string>): number {
  return sample(all, name, labels, `${name}_count`) ?? Number.NaN;
}

describe('FleetMetrics', () => {
  it('has every family with samples from the first scrape, on an empty fleet', async () => {
    const all = await families(
      new FleetMetrics(
        sources(() => []),
        { hostLabel: false },
      ),
    );
    for (const [name, type] of Object.entries(FAMILIES)) {
      const found = family(all, name);
      assert.equal(found.type, type, name);
      assert.ok(found.values.length > 0, `${name} has samples`);
    }
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'running' }), 0);
    assert.equal(sample(all, 'tdxfleet_host_memory_bytes', { use: 'orphaned' }), 0);
    for (const state of ['free', 'owned', 'in_flight', 'leaked']) {
      assert.equal(sample(all, 'tdxfleet_hkids', { state }), 0, state);
    }
    assert.equal(count(all, 'tdxfleet_reboot_downtime_seconds', { strategy: 'reuse' }), 0);
    assert.equal(
      sample(all, 'tdxfleet_errnos_total', { operation: 'KVM_TDX_INIT_VM', errno: 'ENOSPC' }),
      0,
    );
  });

  it('has a series at zero for every declared action and strategy, and no other', async () => {
    const all = await families(
      new FleetMetrics(
        sources(() => []),
        { hostLabel: false },
      ),
    );
    const kinds = [
      'boot none',
      ...STRATEGY_ACTIONS.flatMap((action) => strategiesOf(action).map((s) => `${action} ${s}`)),
    ];
    const operations = family(all, 'tdxfleet_operations_total').values;
    for (const outcome of ['succeeded', 'failed', 'cancelled']) {
      const seen = operations
        .filter((v) => v.labels['outcome'] === outcome)
        .map((v) => `${String(v.labels['action'])} ${String(v.labels['strategy'])}`);
      assert.deepEqual(seen, kinds, outcome);
    }
    const downtime = family(all, 'tdxfleet_reboot_downtime_seconds').values.filter(
      (v) => v.metricName === 'tdxfleet_reboot_downtime_seconds_count',
    );
    assert.deepEqual(
      downtime.map((v) => v.labels['strategy']),
      [...REBOOT_STRATEGIES],
    );
    for (const strategy of REBOOT_STRATEGIES) {
      assert.equal(count(all, 'tdxfleet_reboot_downtime_seconds', { strategy }), 0, strategy);
    }
  });

  it('follows the naming rules: one prefix, _total only on counters, base units', async () => {
    const all = await families(
      new FleetMetrics(
        sources(() => []),
        { hostLabel: false },
      ),
    );
    for (const found of all.values()) {
      assert.match(found.name, /^(tdxfleet|process|nodejs)_[a-z0-9_]+$/, found.name);
      if (found.name.endsWith('_total')) assert.equal(found.type, 'counter', found.name);
      if (found.type === 'counter') assert.match(found.name, /_total$/, found.name);
      assert.doesNotMatch(found.name, /_(milliseconds|ms|kib|mib|gib|kilobytes)(_|$)/, found.name);
      if (!found.name.startsWith('tdxfleet_')) continue;
      assert.ok(found.help.length > 20, `${found.name} has a HELP text`);
      for (const value of found.values) {
        for (const label of Object.keys(value.labels)) {
          assert.ok(BOUNDED_LABELS.has(label), `${found.name} has a bounded label, not ${label}`);
        }
      }
    }
    for (const name of SIMULATED) assert.match(family(all, name).help, /^Simulated seconds/, name);
    for (const name of WALL) assert.match(family(all, name).help, /^Wall seconds/, name);
  });

  it('reads the fleet and the queues when scraped, summed over hosts', async () => {
    let docs: HostDocument[] = [];
    const metrics = new FleetMetrics(
      sources(() => docs, { a: 4, b: 1 }),
      { hostLabel: false },
    );
    const a = hostWithVms(makeHost(MAINLINE, { id: 'a', hkids: 8 }), 2).doc;
    const b = hostWithVms(makeHost(AUG_LINK_2M, { id: 'b', hkids: 4 }), 1).doc;
    docs = [a, b];
    let all = await families(metrics);
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'running' }), 3);
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'stopped' }), 0);
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'terminated' }), 5);
    assert.equal(sample(all, 'tdxfleet_hkids', { state: 'free' }), 9);
    assert.equal(sample(all, 'tdxfleet_hkids', { state: 'owned' }), 3);
    assert.equal(sample(all, 'tdxfleet_hkids', { state: 'leaked' }), 0);
    assert.equal(sample(all, 'tdxfleet_hkids_in_use'), 3);
    assert.equal(sample(all, 'tdxfleet_zombie_hkids'), 0);
    const memory = (use: string) => sample(all, 'tdxfleet_host_memory_bytes', { use }) ?? 0;
    assert.ok(memory('guest_private') > 0);
    const total = [
      'free',
      'guest_private',
      'retained',
      'orphaned',
      'control',
      'in_flight',
      'leaked',
    ]
      .map(memory)
      .reduce((x, y) => x + y, 0);
    assert.equal(total, 2 * 64 * GIB_BYTES, 'the uses add up to the hosts memory');
    assert.equal(sample(all, 'tdxfleet_queue_jobs', { queue: 'operations', state: 'waiting' }), 2);
    assert.equal(sample(all, 'tdxfleet_queue_jobs', { queue: 'batches', state: 'completed' }), 1);

    docs = [a];
    all = await new Promise((resolve) => setTimeout(resolve, 300)).then(() => families(metrics));
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'running' }), 2, 'read again per scrape');
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'terminated' }), 4);
  });

  it('counts an HKID a failed KEY.FREEID leaked apart, and the memory its TD kept', async () => {
    const host = makeHost(MAINLINE, { hkids: 4, hkidReleaseFaults: { FREEID: { failNext: 1 } } });
    const { doc, nowMs } = hostWithVms(host, 2);
    const opId = 'terminate-close';
    const submitted = submitOperation(doc, {
      opId,
      vmId: 'vm1',
      action: 'terminate',
      strategy: 'close',
      nowMs,
    }).doc;
    const driven = drive(submitted, opId, nowMs);
    // The kernel only logs the failure: the terminate ends, and the host has an HKID less.
    assert.equal(finishedOp(driven, opId).state, 'succeeded');
    const all = await families(
      new FleetMetrics(
        sources(() => [driven.doc]),
        { hostLabel: false },
      ),
    );
    const hkids = (state: string) => sample(all, 'tdxfleet_hkids', { state });
    assert.deepEqual(
      ['free', 'owned', 'in_flight', 'leaked'].map(hkids),
      [2, 1, 0, 1],
      'the states add up to the pool',
    );
    assert.equal(sample(all, 'tdxfleet_hkids_in_use'), 1, 'a leaked HKID is not in use');
    assert.equal(sample(all, 'tdxfleet_zombie_hkids'), 0, 'nor a zombie');
    const memory = (use: string) => sample(all, 'tdxfleet_host_memory_bytes', { use }) ?? 0;
    assert.ok(memory('leaked') > 0, 'the BLOCKED TD keeps its pages');
  });

  it('labels the fleet gauges by host only when asked to', async () => {
    const a = hostWithVms(makeHost(MAINLINE, { id: 'a', hkids: 8 }), 2).doc;
    const b = hostWithVms(makeHost(AUG_LINK_2M, { id: 'b', hkids: 4 }), 1).doc;
    const all = await families(
      new FleetMetrics(
        sources(() => [a, b]),
        { hostLabel: true },
      ),
    );
    assert.equal(sample(all, 'tdxfleet_hkids_in_use', { host: 'a' }), 2);
    assert.equal(sample(all, 'tdxfleet_hkids_in_use', { host: 'b' }), 1);
    assert.equal(sample(all, 'tdxfleet_hkids', { state: 'free', host: 'b' }), 3);
    assert.equal(sample(all, 'tdxfleet_hkids', { state: 'owned', host: 'b' }), 1);
    assert.equal(sample(all, 'tdxfleet_vms', { state: 'running', host: 'a' }), 2);
    assert.equal(sample(all, 'tdxfleet_zombie_hkids', { host: 'a' }), 0);
    assert.ok((sample(all, 'tdxfleet_host_memory_bytes', { use: 'free', host: 'b' }) ?? 0) > 0);
    for (const name of ['tdxfleet_operations_total', 'tdxfleet_reboot_downtime_seconds']) {
      for (const value of family(all, name).values) assert.equal(value.labels['host'], undefined);
    }
    const unlabelled = await families(
      new FleetMetrics(
        sources(() => [a, b]),
        { hostLabel: false },
      ),
    );
    for (const value of family(unlabelled, 'tdxfleet_vms').values) {
      assert.equal(value.labels['host'], undefined);
    }
  });

  it('counts what finished operations did: outcomes, downtime by strategy, bytes, steps', async () => {
    const metrics = new FleetMetrics(
      sources(() => []),
      { hostLabel: false },
    );
    let { doc, nowMs } = hostWithVms(makeHost(AUG_LINK_2M), 1);
    const downtime: Record<string, number> = {};
    let reused = 0;
    let allocated = 0;
    for (const strategy of REBOOT_STRATEGIES) {
      const opId = `reboot-${strategy}`;
      doc = submitOperation(doc, { opId, vmId: 'vm1', action: 'reboot', strategy, nowMs }).doc;
      const driven = drive(doc, opId, nowMs);
      for (const commit of driven.commits) {
        metrics.observeEvents(commit.events);
        for (const finished of commit.finished) metrics.observeFinished(finished);
      }
      const op = finishedOp(driven, opId);
      assert.equal(op.state, 'succeeded');
      downtime[strategy] = op.result?.downtimeSeconds ?? Number.NaN;
      reused += op.result?.bytesReused ?? 0;
      allocated += op.result?.bytesAllocated ?? 0;
      doc = driven.doc;
      nowMs = driven.nowMs;
    }
    metrics.observeJobWait('operations', 0.02);
    metrics.observeJobWait('operations', null);
    metrics.observeJobRun('operations', 0.5);
    metrics.jobRetried('operations');
    metrics.jobStalled('batches');

    const all = await families(metrics);
    for (const strategy of REBOOT_STRATEGIES) {
      const labels = { action: 'reboot', strategy, outcome: 'succeeded' };
      assert.equal(sample(all, 'tdxfleet_operations_total', labels), 1, strategy);
      assert.equal(count(all, 'tdxfleet_reboot_downtime_seconds', { strategy }), 1, strategy);
      assert.equal(
        sample(
          all,
          'tdxfleet_reboot_downtime_seconds',
          { strategy },
          'tdxfleet_reboot_downtime_seconds_sum',
        ),
        downtime[strategy],
      );
    }
    assert.ok(reused > 0, 'the reuse reboot kept its memory');
    assert.equal(sample(all, 'tdxfleet_reused_bytes_total'), reused);
    assert.equal(sample(all, 'tdxfleet_allocated_bytes_total'), allocated);
    assert.ok((sample(all, 'tdxfleet_reclaimed_bytes_total') ?? 0) > 0);
    assert.ok(count(all, 'tdxfleet_reclaim_duration_seconds', { path: 'teardown' }) >= 2);
    assert.equal(count(all, 'tdxfleet_job_step_duration_seconds', { step: 'terminate-vm' }), 2);
    assert.equal(count(all, 'tdxfleet_job_step_duration_seconds', { step: 'link-guest-memfd' }), 1);
    assert.equal(count(all, 'tdxfleet_queue_wait_seconds', { queue: 'operations' }), 1);
    assert.equal(count(all, 'tdxfleet_queue_run_seconds', { queue: 'operations' }), 1);
    assert.equal(sample(all, 'tdxfleet_queue_retries_total', { queue: 'operations' }), 1);
    assert.equal(sample(all, 'tdxfleet_queue_stalled_total', { queue: 'batches' }), 1);
    const buckets = family(all, 'tdxfleet_reboot_downtime_seconds').values.filter(
      (v) => v.metricName === 'tdxfleet_reboot_downtime_seconds_bucket',
    );
    assert.ok(buckets.some((v) => v.labels['le'] === '+Inf'));
  });

  it('counts the errnos of steps that had to wait', async () => {
    const metrics = new FleetMetrics(
      sources(() => []),
      { hostLabel: false },
    );
    // One HKID: the new VM of a cold reboot waits (ENOSPC) until the old one gives its HKID back.
    const { doc, nowMs } = hostWithVms(makeHost(MAINLINE, { hkids: 1 }), 1);
    const opId = 'reboot-cold';
    const submitted = submitOperation(doc, {
      opId,
      vmId: 'vm1',
      action: 'reboot',
      strategy: 'cold',
      nowMs,
    }).doc;
    const driven = drive(submitted, opId, nowMs);
    assert.equal(finishedOp(driven, opId).state, 'succeeded');
    let waits = 0;
    for (const commit of driven.commits) {
      metrics.observeEvents(commit.events);
      waits += commit.events.filter((e) => e.type === 'job.waiting' && e.errno === 'ENOSPC').length;
    }
    assert.ok(waits > 0, 'the reboot waited for an HKID');
    const all = await families(metrics);
    assert.equal(
      sample(all, 'tdxfleet_errnos_total', { operation: 'KVM_TDX_INIT_VM', errno: 'ENOSPC' }),
      waits,
    );
  });
});

// Benchmark of the offline fleet engine: boot a fleet (every boot at virtual time 0), then a
// reboot storm (every VM rebooted at once), every kernel across the hosts and every strategy each
// host's kernel allows. Prints wall seconds of each phase, events per second, peak RSS and the heap
// held per VM at the end (after a GC when run with `node --expose-gc`).
//   npm run -s bench:offline -- [--vms N] [--hosts N] [--seed N] [--json]
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import {
  type OfflineHostSpec,
  type OfflineOutput,
  type OfflineRequest,
  type OfflineVmSpec,
  type Strategy,
  OfflineFleet,
  seededRandom,
} from '#fleet';
import { ALL_KERNELS, type KernelFeatures } from '#tdx-sim';
import { REBOOT_STRATEGIES, type RebootStrategy, kernelRefusal } from '#vmm';

/** VM sizes, small to large, and how often each occurs (out of 100). */
const SIZES = [
  { vcpus: 4, memoryGiB: 4, weight: 40 },
  { vcpus: 8, memoryGiB: 16, weight: 25 },
  { vcpus: 16, memoryGiB: 64, weight: 20 },
  { vcpus: 32, memoryGiB: 128, weight: 10 },
  { vcpus: 64, memoryGiB: 400, weight: 5 },
] as const;

function allowedStrategies(kernel: KernelFeatures): RebootStrategy[] {
  return REBOOT_STRATEGIES.filter(
    (strategy) => kernelRefusal({ action: 'reboot', strategy }, kernel) === null,
  );
}

function count(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) {
    process.stderr.write(`bench:offline: --${name} must be a positive integer, got "${value}"\n`);
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    vms: { type: 'string' },
    hosts: { type: 'string' },
    seed: { type: 'string' },
    json: { type: 'boolean' },
  },
});
const vmCount = count(values.vms, 'vms', 100_000);
const hostCount = count(values.hosts, 'hosts', 3_000);
const seed = count(values.seed, 'seed', 1);

// The fleet: VMs dealt to hosts in turn; each host big enough for its VMs plus four of its
// largest side by side (a cold reboot boots the new VM before the old one is gone).
const next = seededRandom(seed);
const totalWeight = SIZES.reduce((sum, s) => sum + s.weight, 0);
const vms: OfflineVmSpec[] = [];
const perHost = Array.from({ length: hostCount }, () => ({ memoryGiB: 0, largest: 0, vms: 0 }));
for (let i = 0; i < vmCount; i += 1) {
  let pick = next() * totalWeight;
  const size = SIZES.find((s) => (pick -= s.weight) < 0) ?? SIZES[0];
  const host = i % hostCount;
  const load = perHost[host] as (typeof perHost)[0];
  load.memoryGiB += size.memoryGiB;
  load.largest = Math.max(load.largest, size.memoryGiB);
  load.vms += 1;
  vms.push({
    id: `vm-${String(i).padStart(7, '0')}`,
    vcpus: size.vcpus,
    memoryGiB: size.memoryGiB,
    hostId: `h-${String(host).padStart(5, '0')}`,
  });
}
const hosts: OfflineHostSpec[] = perHost.map((load, i) => ({
  id: `h-${String(i).padStart(5, '0')}`,
  memoryGiB: Math.ceil(1.05 * (load.memoryGiB + 4 * load.largest) + 16),
  hkids: Math.max(63, load.vms + 8),
  packages: 2,
  cpus: 128,
  kernel: ALL_KERNELS[i % ALL_KERNELS.length] as KernelFeatures,
}));

const boots: OfflineRequest[] = vms.map((vm) => ({ at: 0, action: 'boot', vmId: vm.id }));
let lastProgress = performance.now();
const progress = (phase: string) => (p: { virtualTime: number; events: number }) => {
  const now = performance.now();
  if (now - lastProgress < 3000) return;
  lastProgress = now;
  process.stderr.write(
    `bench:offline: ${phase}: virtual ${p.virtualTime.toFixed(0)} s, ${p.events} events\n`,
  );
};

const rssPeak = { bytes: 0 };
const watchRss = () => (rssPeak.bytes = Math.max(rssPeak.bytes, process.memoryUsage.rss()));

let start = performance.now();
const fleet = new OfflineFleet({ hosts, vms, requests: boots, sampleEverySeconds: 3600 });
fleet.run({ onProgress: progress('boot'), progressEvery: 500 });
const bootSeconds = (performance.now() - start) / 1000;
watchRss();
const afterBoot = fleet.output();
const bootEvents = afterBoot.totals.events;

const stormAt = fleet.virtualTime;
const hostKernel = new Map(hosts.map((h) => [h.id, h.kernel]));
const reboots: OfflineRequest[] = vms.map((vm, i) => {
  const allowed = allowedStrategies(hostKernel.get(vm.hostId ?? '') as KernelFeatures);
  const strategy: Strategy = allowed[i % allowed.length] as Strategy;
  return { at: stormAt, action: 'reboot', vmId: vm.id, strategy };
});
fleet.schedule(reboots);
start = performance.now();
fleet.run({ onProgress: progress('storm'), progressEvery: 500 });
const stormSeconds = (performance.now() - start) / 1000;
watchRss();
const output: OfflineOutput = fleet.output();
const stormEvents = output.totals.events - bootEvents;
const states = output.totals.byState;
const makespan = output.totals.makespan - stormAt;

// What stays on the heap at the end: the fleet (its hosts and VMs) and its output.
const gc = (globalThis as { gc?: () => void }).gc;
gc?.();
const heapBytesPerVm = Math.round(process.memoryUsage().heapUsed / vmCount);

const report = {
  vms: vmCount,
  hosts: hostCount,
  bootSeconds: Number(bootSeconds.toFixed(3)),
  stormSeconds: Number(stormSeconds.toFixed(3)),
  totalSeconds: Number((bootSeconds + stormSeconds).toFixed(3)),
  bootEventsPerSecond: Math.round(bootEvents / bootSeconds),
  stormEventsPerSecond: Math.round(stormEvents / stormSeconds),
  stormVirtualSeconds: Number(makespan.toFixed(1)),
  operations: states,
  peakRssBytes: rssPeak.bytes,
  heapBytesPerVm,
  heapAfterGc: gc !== undefined,
};

if (values.json === true) {
  process.stdout.write(`${JSON.stringify(report)}\n`);
} else {
  const mib = (b: number) => `${(b / 1024 ** 2).toFixed(0)} MiB`;
  process.stdout.write(
    [
      `offline fleet: ${vmCount} VMs on ${hostCount} hosts, ${ALL_KERNELS.length} kernels, every strategy each kernel allows`,
      `boot  (all at t=0):     ${report.bootSeconds.toFixed(2)} s wall, ${report.bootEventsPerSecond} events/s`,
      `storm (all reboots):    ${report.stormSeconds.toFixed(2)} s wall, ${report.stormEventsPerSecond} events/s, ${report.stormVirtualSeconds} s virtual`,
      `boot + storm:           ${report.totalSeconds.toFixed(2)} s wall`,
      `operations:             ${JSON.stringify(states)}`,
      `peak RSS:               ${mib(report.peakRssBytes)}`,
      `heap per VM at the end: ${heapBytesPerVm} bytes${gc === undefined ? ' (no GC first: run node with --expose-gc)' : ' (after a GC)'}`,
      'targets: storm <= 3 s, boot + storm <= 6 s, <= 1024 heap bytes per VM; 1,000,000 VMs storm <= 40 s',
    ].join('\n') + '\n',
  );
}
// The fleet is held until here so that the heap measure counts it.
void fleet.virtualTime;

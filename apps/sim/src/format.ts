import type { FleetSample, OfflineInput, OfflineOutput } from '#fleet';
import { type CostModelName, type KernelFeatures, kernelSwitchesText } from '#tdx-sim';
import type { PlanSummary, TimelineEntry } from '#vmm';
import type { ExecReport } from './exec-script.js';
import { type ReclaimResult, type ReclaimTableRow, formatGiB } from './experiments.js';

function pad(value: string, width: number): string {
  return value.padStart(width);
}

function diff(simulated: number, seed: number): string {
  const percent = ((simulated - seed) / seed) * 100;
  return `${percent >= 0 ? '+' : ''}${percent.toFixed(1)}%`;
}

/** The text form of `sim reclaim-table`. */
export function formatReclaimTable(table: {
  model: CostModelName;
  rows: ReclaimTableRow[];
}): string {
  const lines = [
    `Reclaim seconds at VM shutdown: seed (TERMINATE_VM V4 commit) vs simulated (model: ${table.model})`,
    '',
    `${pad('vCPUs', 5)} ${pad('GiB', 5)} | ${pad('before: seed', 12)} ${pad('simulated', 10)} ${pad('diff', 7)} | ${pad('after: seed', 11)} ${pad('simulated', 10)} ${pad('diff', 7)}`,
  ];
  for (const row of table.rows) {
    lines.push(
      `${pad(String(row.vcpus), 5)} ${pad(String(row.memoryGiB), 5)} | ${pad(String(row.seed.beforeSeconds), 12)} ${pad(row.simulated.beforeSeconds.toFixed(1), 10)} ${pad(diff(row.simulated.beforeSeconds, row.seed.beforeSeconds), 7)} | ${pad(String(row.seed.afterSeconds), 11)} ${pad(row.simulated.afterSeconds.toFixed(1), 10)} ${pad(diff(row.simulated.afterSeconds, row.seed.afterSeconds), 7)}`,
    );
  }
  lines.push(
    '',
    'before: every private page removed by Dynamic Page Removal while the TD is RUNNABLE (close everything)',
    'after:  KVM_TDX_TERMINATE_VM releases the HKID first, then each page is reclaimed in TEARDOWN',
  );
  return lines.join('\n');
}

/** The text form of `sim reclaim`. */
export function formatReclaim(
  vcpus: number,
  memoryGiB: number,
  model: CostModelName,
  result: ReclaimResult,
): string {
  const speedup = result.beforeSeconds / result.afterSeconds;
  return [
    `${vcpus} vCPUs, ${memoryGiB} GiB (model: ${model})`,
    `before (close everything, Dynamic Page Removal): ${result.beforeSeconds.toFixed(1)} s`,
    `after  (KVM_TDX_TERMINATE_VM, TEARDOWN reclaim): ${result.afterSeconds.toFixed(1)} s`,
    `speed-up: ${speedup.toFixed(1)}x`,
  ].join('\n');
}

/** What `sim reboot` reports. */
export interface RebootReport {
  strategy: string;
  vcpus: number;
  memoryGiB: number;
  /** Whether the VMM preallocated the guest memory. */
  preallocate: boolean;
  kernel: KernelFeatures;
  ok: boolean;
  timeline: TimelineEntry[];
  summary: PlanSummary;
  failure?: { step: string; errno: string; message: string };
}

function seconds(value: number): string {
  return value.toFixed(3);
}

/** The text form of `sim reboot`: the step timeline, then the summary. */
export function formatReboot(report: RebootReport): string {
  const k = report.kernel;
  const lines = [
    `reboot ${report.strategy}: ${report.vcpus} vCPUs, ${report.memoryGiB} GiB${report.preallocate ? ' preallocated' : ''}; kernel ${kernelSwitchesText(k)}`,
    '',
    `${'step'.padEnd(22)} ${'track'.padEnd(8)} ${pad('start s', 10)} ${pad('end s', 10)} ${pad('cost s', 10)} ${pad('waited s', 10)}  note`,
  ];
  for (const r of report.timeline) {
    const note =
      r.state === 'failed'
        ? `FAILED ${r.errno ?? ''}: ${r.message ?? ''}`
        : r.errno
          ? `waited on ${r.errno}`
          : '';
    lines.push(
      `${r.name.padEnd(22)} ${r.track.padEnd(8)} ${pad(seconds(r.startSeconds), 10)} ${pad(seconds(r.endSeconds), 10)} ${pad(seconds(r.virtualSeconds), 10)} ${pad(seconds(r.waitedSeconds), 10)}  ${note}`.trimEnd(),
    );
  }
  const s = report.summary;
  lines.push(
    '',
    `downtime ${s.downtimeSeconds.toFixed(2)} s | reclaim ${s.reclaimSeconds.toFixed(2)} s | HKID held ${s.hkidHeldSeconds.toFixed(2)} s | total ${s.totalSeconds.toFixed(2)} s`,
    `reclaimed ${formatGiB(s.bytesReclaimed)} | freed to host ${formatGiB(s.bytesFreed)} | reused ${formatGiB(s.bytesReused)} | newly allocated ${formatGiB(s.bytesAllocated)}`,
  );
  if (report.failure !== undefined) {
    lines.push(
      `failed at ${report.failure.step}: ${report.failure.errno} ${report.failure.message}`,
    );
  }
  return lines.join('\n');
}

function describeCall(call: object): string {
  const args = Object.entries(call)
    .filter(([key]) => key !== 'op')
    .map(
      ([key, value]) =>
        `${key}=${typeof value === 'number' || typeof value === 'boolean' ? String(value) : JSON.stringify(value)}`,
    );
  return [String((call as { op?: unknown }).op), ...args].join(' ');
}

/** The text form of `sim exec`: one line per call, then the host's memory and HKIDs. */
export function formatExec(report: ExecReport): string {
  const h = report.host;
  const lines = [
    `host: ${h.packages} packages, ${h.cpus} CPUs, ${formatGiB(h.memoryBytes)}, ${h.hkids} HKIDs; ${kernelSwitchesText(h.kernel)}; model ${h.costModel}`,
    '',
  ];
  for (const r of report.results) {
    const value =
      r.value === undefined
        ? ''
        : Object.entries(r.value)
            .map(([k, v]) => ` ${k}=${String(v)}`)
            .join('');
    const failed =
      r.hkidReleaseFailure === undefined
        ? ''
        : ` (${r.hkidReleaseFailure} failed${r.leakedHkid === undefined ? ': HKID kept' : `: HKID ${r.leakedHkid} leaked`})`;
    const exit =
      r.exit === undefined
        ? ''
        : ` exit ${r.exit.reason} gpa=0x${r.exit.gpa.toString(16)} size=${r.exit.size}`;
    const result = r.ok ? `ok${value}${failed}` : `${r.errno ?? ''}${exit} (${r.message ?? ''})`;
    const expectation = r.expectationMet === false ? `  <-- expected ${r.expect ?? ''}` : '';
    lines.push(
      `${pad(String(r.index), 3)} ${pad(r.at.toFixed(3), 10)} s  ${describeCall(r.call).padEnd(58)} -> ${result} [${r.seconds.toFixed(4)} s]${expectation}`,
    );
  }
  const m = report.memory;
  lines.push(
    '',
    `memory: free ${formatGiB(m.free)}, private ${formatGiB(m.private)}, retained ${formatGiB(m.retained)}, orphaned ${formatGiB(m.orphaned)}, control ${formatGiB(m.control)}, S-EPT ${formatGiB(m.sept)}${m.leaked > 0 ? `, leaked ${formatGiB(m.leaked)}` : ''}`,
    `HKIDs: ${report.hkids.owned} owned, ${report.hkids.free} free of ${report.hkids.total} (zombies ${report.hkids.zombies}, leaked ${report.hkids.leaked})`,
  );
  if (report.failedExpectations > 0)
    lines.push(`${report.failedExpectations} expectation(s) not met`);
  return lines.join('\n');
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: readonly number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1] ?? NaN;
}

/** The text form of `sim fleet`: operations by state, downtime by strategy, makespan, memory. */
export function formatFleet(input: OfflineInput, output: OfflineOutput): string {
  const t = output.totals;
  const lines = [
    `fleet: ${input.hosts.length} hosts, ${input.vms.length} VMs; ${t.operations} operations, ${t.refusals} refused; makespan ${t.makespan.toFixed(1)} s (virtual)`,
    `operations: ${Object.entries(t.byState)
      .map(([state, n]) => `${state} ${n}`)
      .join(', ')}`,
  ];
  const downtimes = new Map<string, number[]>();
  for (const op of output.operations) {
    if (op.state !== 'succeeded' || op.result === null) continue;
    const key = op.strategy === null ? op.action : `${op.action} ${op.strategy}`;
    const list = downtimes.get(key) ?? [];
    list.push(op.result.downtimeSeconds);
    downtimes.set(key, list);
  }
  if (downtimes.size > 0) {
    lines.push(
      '',
      `${'downtime, virtual s'.padEnd(20)} ${pad('n', 7)} ${pad('p50', 9)} ${pad('p95', 9)} ${pad('p99', 9)}`,
    );
    for (const [key, values] of [...downtimes].sort(([a], [b]) => a.localeCompare(b))) {
      const sorted = [...values].sort((a, b) => a - b);
      lines.push(
        `${key.padEnd(20)} ${pad(String(sorted.length), 7)} ${[50, 95, 99].map((p) => pad(percentile(sorted, p).toFixed(1), 9)).join(' ')}`,
      );
    }
  }
  const series = output.series.fleet;
  if (series.length > 0) {
    let low = series[0] as FleetSample;
    let peakHkids = 0;
    let peakRunning = 0;
    let peakWaiting = 0;
    for (const s of series) {
      if (s.freeBytes < low.freeBytes) low = s;
      peakHkids = Math.max(peakHkids, s.hkidsInUse);
      peakRunning = Math.max(peakRunning, s.running);
      peakWaiting = Math.max(peakWaiting, s.waiting);
    }
    lines.push(
      '',
      `min free memory: ${formatGiB(low.freeBytes)} at ${low.t} s; peak HKIDs in use ${peakHkids}; peak running ${peakRunning}, waiting ${peakWaiting} (sampled every ${output.series.everySeconds} s)`,
    );
  }
  if (output.refusals.length > 0) {
    const byCode = new Map<string, number>();
    for (const r of output.refusals) byCode.set(r.code, (byCode.get(r.code) ?? 0) + 1);
    lines.push(
      `refused: ${[...byCode]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([code, n]) => `${code} ${n}`)
        .join(', ')}`,
    );
  }
  return lines.join('\n');
}

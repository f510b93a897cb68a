import { type OfflineHostSpec, runFleet } from '#fleet';
import { type CostModelName, type KernelFeatures } from '#tdx-sim';

// A live run's recording as a fleet file `tdx-fleet sim fleet` runs: the hosts and the VMs that
// lived at the start (booted at 0 on their hosts), then every recorded request on one clock that
// starts once the offline boots are done. Pure: the recorder gathers, this decides the file.

/** A host as recorded: what `POST /v1/hosts` took of it. */
export interface RecordedHost {
  id: string;
  memoryGiB: number;
  hkids: number;
  packages: number;
  cpus: number;
  hkidCgroupLimit: number | null;
  kernel: KernelFeatures;
  costModel: CostModelName;
}

/** A VM as recorded: its spec, and its state when the recording started (null: born during it). */
export interface RecordedVm {
  id: string;
  hostId: string;
  vcpus: number;
  memoryGiB: number;
  state: string | null;
}

/** A finished job of the recording: the request it answered, and when it arrived. */
export interface RecordedJob {
  id: string;
  vmId: string;
  hostId: string;
  action: 'boot' | 'reboot' | 'terminate';
  strategy: string | null;
  /** On its host's virtual clock, seconds. */
  virtualArrivedAt: number;
  /** Wall time of its submission, ms since the epoch (the daemon's clock). */
  createdAtMs: number;
}

export interface Recording {
  /** The daemon's TIME_SCALE: 0 means every host keeps a clock of its own. */
  timeScale: number;
  hostConcurrency: number;
  /** Wall time the recording started, ms since the epoch. */
  startedAtMs: number;
  hosts: readonly RecordedHost[];
  /** Every VM the file needs: those alive at the start and those the jobs name. */
  vms: readonly RecordedVm[];
  jobs: readonly RecordedJob[];
}

/** A request of the fleet file. */
export interface FleetFileRequest {
  at: number;
  action: RecordedJob['action'];
  vmId: string;
  strategy?: string;
}

/** The fleet file a recording gives (the shape `fleetInput` reads). */
export interface RecordedFleetFile {
  hosts: RecordedHost[];
  vms: Array<{
    id: string;
    vcpus: number;
    memoryGiB: number;
    hostId: string;
    bootAt: number | null;
  }>;
  requests: FleetFileRequest[];
  limits: { hostConcurrency: number; globalConcurrency: null };
  sampleEverySeconds: number;
}

/** Samples over the replayed span: about this many, at least one second apart. */
const SAMPLES_OVER_SPAN = 1000;

/** Virtual seconds rounded to whole microseconds, the hosts' clock grain. */
const micros = (seconds: number): number => Math.round(seconds * 1e6) / 1e6;

/**
 * The fleet file of a recording. Requests are ordered by their time on the file's clock, then by
 * submission, so that requests that arrived together keep the order they were sent in.
 */
export function recordedFleetFile(recording: Recording): RecordedFleetFile {
  const bootedByRequest = new Set(
    recording.jobs.filter((job) => job.action === 'boot').map((job) => job.vmId),
  );
  const bootHost = new Map(
    recording.jobs.filter((job) => job.action === 'boot').map((job) => [job.vmId, job.hostId]),
  );
  const vms = recording.vms.map((vm) => ({
    id: vm.id,
    vcpus: vm.vcpus,
    memoryGiB: vm.memoryGiB,
    // A VM booted during the recording boots where its boot job ran.
    hostId: bootHost.get(vm.id) ?? vm.hostId,
    // A stopped VM holds nothing; one the recording boots waits for its request.
    bootAt: bootedByRequest.has(vm.id) || vm.state === 'stopped' ? null : 0,
  }));
  const hosts = recording.hosts.map((host) => ({ ...host, kernel: { ...host.kernel } }));
  const limits = { hostConcurrency: recording.hostConcurrency, globalConcurrency: null };
  const bootSeconds = bootTime(hosts, vms, limits.hostConcurrency);
  const at = clockOf(recording, bootSeconds);
  const requests = [...recording.jobs]
    .map((job) => ({ job, at: at(job) }))
    .sort(
      (a, b) =>
        a.at - b.at || a.job.createdAtMs - b.job.createdAtMs || a.job.id.localeCompare(b.job.id),
    )
    .map(({ job, at: time }) => ({
      at: time,
      action: job.action,
      vmId: job.vmId,
      ...(job.strategy === null ? {} : { strategy: job.strategy }),
    }));
  const last = requests.reduce((latest, r) => Math.max(latest, r.at), bootSeconds);
  return {
    hosts,
    vms,
    requests,
    limits,
    sampleEverySeconds: Math.max(1, Math.ceil((last - bootSeconds) / SAMPLES_OVER_SPAN)),
  };
}

/**
 * When the offline fleet has booted the VMs that lived at the start, in whole seconds: the
 * recorded requests come after it, on a fleet at rest as the daemon's was.
 */
function bootTime(
  hosts: readonly OfflineHostSpec[],
  vms: RecordedFleetFile['vms'],
  hostConcurrency: number,
): number {
  const booted = vms.filter((vm) => vm.bootAt !== null);
  if (booted.length === 0) return 0;
  const output = runFleet({
    hosts,
    vms: booted,
    requests: booted.map((vm) => ({ at: 0, action: 'boot', vmId: vm.id })),
    limits: { hostConcurrency },
    sampleEverySeconds: 1e9,
  });
  const end = output.operations.reduce((latest, op) => Math.max(latest, op.finishedAt ?? 0), 0);
  return Math.ceil(end);
}

/**
 * A job's time on the file's clock. With a time scale the hosts' clocks follow the wall clock,
 * so the submission's wall time places it; at TIME_SCALE 0 each host's clock is its own, so a job
 * is placed by its arrival after the first recorded arrival on its host.
 */
function clockOf(recording: Recording, bootSeconds: number): (job: RecordedJob) => number {
  if (recording.timeScale > 0) {
    return (job) =>
      micros(
        bootSeconds +
          Math.max(0, ((job.createdAtMs - recording.startedAtMs) / 1000) * recording.timeScale),
      );
  }
  const firstArrival = new Map<string, number>();
  for (const job of recording.jobs) {
    const first = firstArrival.get(job.hostId);
    if (first === undefined || job.virtualArrivedAt < first) {
      firstArrival.set(job.hostId, job.virtualArrivedAt);
    }
  }
  return (job) =>
    micros(bootSeconds + job.virtualArrivedAt - (firstArrival.get(job.hostId) as number));
}

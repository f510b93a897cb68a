// `tdx-fleet experiment record`: snapshots a live daemon's hosts and VMs, follows its events for
// a while (or until SIGINT/SIGTERM) and writes what was asked of it as a fleet file that
// `tdx-fleet sim fleet` and `tdx-fleet experiment replay` run offline.
import { rename, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ExperimentError } from '#experiments';
import { stringify as toYaml } from 'yaml';
import { DaemonClient } from './daemon-client.js';
import { EventRecorder } from './event-recorder.js';
import { type ListedVm, RecordingClient } from './recording-client.js';
import { type RecordedVm, type RecordedFleetFile, recordedFleetFile } from './recording.js';

/** A line on stderr this often while recording. */
const PROGRESS_EVERY_MS = 5000;

interface RecordOptions {
  api: string;
  token: string | null;
  seconds: number | null;
  hostPrefix: string;
  out: string;
}

function recordOptions(args: string[]): RecordOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        api: { type: 'string' },
        token: { type: 'string' },
        seconds: { type: 'string' },
        'host-prefix': { type: 'string' },
        out: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new ExperimentError((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
  if (values.out === undefined) throw new ExperimentError('--out FILE is required');
  let seconds: number | null = null;
  if (values.seconds !== undefined) {
    seconds = Number(values.seconds);
    if (!(seconds > 0) || !Number.isFinite(seconds)) {
      throw new ExperimentError(`--seconds: expected a number > 0, got "${values.seconds}"`);
    }
  }
  return {
    api: values.api ?? 'http://127.0.0.1:3000',
    token: values.token ?? process.env.API_TOKEN ?? null,
    seconds,
    hostPrefix: values['host-prefix'] ?? '',
    out: values.out,
  };
}

/** Runs `record`; resolves to the exit code. */
export async function recordCommand(args: string[], name: string): Promise<number> {
  const options = recordOptions(args);
  const client = new DaemonClient(options.api, options.token);
  const reader = new RecordingClient(options.api, options.token);
  const info = await client.info();

  // Set by the recorder's callback: the stream lost for good, or a job that could not be read.
  const lost: { error: Error | null } = { error: null };
  let wake: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (wake = resolve));
  const recorder = new EventRecorder(client, reader, options.hostPrefix, (error) => {
    lost.error ??= error instanceof Error ? error : new Error(String(error));
    wake();
  });
  await recorder.open();
  const [hosts, listed] = await Promise.all([reader.hosts(), reader.vms()]).catch(
    async (error: unknown) => {
      await recorder.stop();
      throw error;
    },
  );
  const recordedHosts = hosts.filter((host) => host.id.startsWith(options.hostPrefix));
  const atStart = listed.filter(
    (vm) => vm.state !== 'terminated' && recordedHosts.some((host) => host.id === vm.hostId),
  );
  recorder.underWay(atStart.flatMap((vm) => (vm.activeJob === null ? [] : [vm.activeJob])));

  const startedMs = performance.now();
  process.stderr.write(
    `${name}: recording ${recordedHosts.length} hosts and ${atStart.length} VMs of ${options.api} ` +
      `(TIME_SCALE ${info.timeScale})${options.seconds === null ? ' until SIGINT or SIGTERM' : ` for ${options.seconds} s`}\n`,
  );
  const onSignal = () => wake();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const timer =
    options.seconds === null ? null : setTimeout(onSignal, options.seconds * 1000).unref();
  const progress = setInterval(() => {
    const elapsed = Math.round((performance.now() - startedMs) / 1000);
    process.stderr.write(`${name}: ${recorder.endedCount} requests recorded (${elapsed} s)\n`);
  }, PROGRESS_EVERY_MS).unref();
  try {
    await done;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (timer !== null) clearTimeout(timer);
    clearInterval(progress);
    await recorder.stop();
  }

  const { jobs, skipped } = recorder.recorded();
  // Hosts and VMs born during the recording are read now, as they are at its end.
  const knownHosts = new Set(recordedHosts.map((host) => host.id));
  const missingHosts = jobs.some((job) => !knownHosts.has(job.hostId));
  const allHosts = missingHosts
    ? (await reader.hosts()).filter((host) => host.id.startsWith(options.hostPrefix))
    : recordedHosts;
  const vms = new Map<string, RecordedVm>(atStart.map((vm) => [vm.id, specOf(vm, vm.state)]));
  for (const job of jobs) {
    if (!vms.has(job.vmId)) vms.set(job.vmId, specOf(await reader.vm(job.vmId), null));
  }
  const file = recordedFleetFile({
    timeScale: info.timeScale,
    hostConcurrency: info.hostConcurrency,
    startedAtMs: recorder.startedAtMs,
    hosts: allHosts,
    vms: [...vms.values()],
    jobs,
  });
  await writeFleetFile(options.out, file);
  const clock = info.timeScale > 0 ? `TIME_SCALE ${info.timeScale}` : 'TIME_SCALE 0';
  const notes = [
    skipped > 0 ? `${skipped} jobs that began before the recording left out` : '',
    recorder.reconnections > 0
      ? `the event stream dropped ${recorder.reconnections} time(s): jobs that ended then are missing`
      : '',
  ].filter((note) => note !== '');
  process.stdout.write(
    `wrote ${options.out}: ${file.hosts.length} hosts, ${file.vms.length} VMs, ` +
      `${file.requests.length} requests (${clock})${notes.length > 0 ? `; ${notes.join('; ')}` : ''}\n`,
  );
  if (lost.error !== null) {
    throw new ExperimentError(
      `the recording stopped early (${lost.error.message}); ${options.out} holds what it had`,
    );
  }
  return 0;
}

function specOf(vm: ListedVm, state: string | null): RecordedVm {
  return { id: vm.id, hostId: vm.hostId, vcpus: vm.vcpus, memoryGiB: vm.memoryGiB, state };
}

/** Writes the file whole or not at all: JSON, or YAML when its name ends in .yaml or .yml. */
async function writeFleetFile(path: string, file: RecordedFleetFile): Promise<void> {
  const text = /\.ya?ml$/i.test(path) ? toYaml(file) : `${JSON.stringify(file, null, 2)}\n`;
  const partial = `${path}.partial`;
  await writeFile(partial, text);
  await rename(partial, path);
}

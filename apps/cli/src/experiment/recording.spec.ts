// The fleet file of a recording, without a daemon: which VMs boot when, and the one clock of
// its requests at a time scale and at TIME_SCALE 0.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAINLINE_KERNEL } from '#tdx-sim';
import { fleetInput } from '../../../sim/src/fleet-file.js';
import { type RecordedJob, type Recording, recordedFleetFile } from './recording.js';

const HOST = {
  memoryGiB: 64,
  hkids: 8,
  packages: 2,
  cpus: 128,
  hkidCgroupLimit: null,
  kernel: MAINLINE_KERNEL,
  costModel: 'calibrated',
} as const;

const START_MS = Date.parse('2026-01-01T00:00:00Z');

function job(
  id: string,
  vmId: string,
  hostId: string,
  virtualArrivedAt: number,
  afterMs: number,
  action: RecordedJob['action'] = 'reboot',
): RecordedJob {
  return {
    id,
    vmId,
    hostId,
    action,
    strategy: action === 'boot' ? null : 'cold',
    virtualArrivedAt,
    createdAtMs: START_MS + afterMs,
  };
}

function recording(timeScale: number, jobs: RecordedJob[]): Recording {
  return {
    timeScale,
    hostConcurrency: 4,
    startedAtMs: START_MS,
    hosts: [
      { id: 'a', ...HOST, kernel: { ...HOST.kernel } },
      { id: 'b', ...HOST, kernel: { ...HOST.kernel } },
    ],
    vms: [
      { id: 'vm-1', hostId: 'a', vcpus: 4, memoryGiB: 8, state: 'running' },
      { id: 'vm-2', hostId: 'b', vcpus: 4, memoryGiB: 8, state: 'running' },
      { id: 'vm-3', hostId: 'b', vcpus: 4, memoryGiB: 8, state: 'stopped' },
      { id: 'vm-4', hostId: 'a', vcpus: 2, memoryGiB: 4, state: null },
    ],
    jobs,
  };
}

describe('recordedFleetFile', () => {
  it('boots the live VMs at 0, not a stopped one, and one born during the recording by its request', () => {
    const file = recordedFleetFile(recording(0, [job('j1', 'vm-4', 'a', 500, 10, 'boot')]));
    assert.deepEqual(
      file.vms.map((vm) => [vm.id, vm.bootAt]),
      [
        ['vm-1', 0],
        ['vm-2', 0],
        ['vm-3', null],
        ['vm-4', null],
      ],
    );
    const [boot] = file.requests;
    assert.deepEqual(boot, { at: boot?.at, action: 'boot', vmId: 'vm-4' });
    assert.ok(Number.isInteger(boot?.at) && (boot?.at ?? 0) > 0, 'at the boot time');
    // `sim fleet` reads it as it is.
    assert.equal(fleetInput(file).requests?.length, 2 + 1);
  });

  it("at TIME_SCALE 0, places each host's arrivals after its first, from the boot time", () => {
    const file = recordedFleetFile(
      recording(0, [
        job('j1', 'vm-1', 'a', 1000.25, 0),
        job('j2', 'vm-2', 'b', 40, 5),
        job('j3', 'vm-1', 'a', 1010.5, 9000),
        job('j4', 'vm-2', 'b', 40.000001, 9000),
      ]),
    );
    const boot = file.requests[0]?.at ?? NaN;
    assert.ok(boot > 0 && Number.isInteger(boot), `boot time ${boot}`);
    assert.deepEqual(
      file.requests.map((r) => [r.vmId, Math.round((r.at - boot) * 1e6)]),
      [
        ['vm-1', 0],
        ['vm-2', 0],
        ['vm-2', 1],
        ['vm-1', 10_250_000],
      ],
    );
  });

  it("at a time scale, places requests by their submission's wall time", () => {
    const file = recordedFleetFile(
      recording(1000, [job('j2', 'vm-2', 'b', 7, 2500), job('j1', 'vm-1', 'a', 99, 1500)]),
    );
    const boot = recordedFleetFile(recording(0, [job('j', 'vm-1', 'a', 0, 0)])).requests[0]?.at;
    assert.deepEqual(
      file.requests.map((r) => [r.vmId, r.at]),
      [
        ['vm-1', (boot ?? NaN) + 1500],
        ['vm-2', (boot ?? NaN) + 2500],
      ],
    );
  });
});

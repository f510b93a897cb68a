import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { FleetEvent } from '#fleet';
import { encodeFleetEvents, parseFleetEvents } from './fleet-events.js';

const event: fc.Arbitrary<FleetEvent> = fc.record(
  {
    type: fc.constantFrom(
      'job.started' as const,
      'job.step' as const,
      'job.waiting' as const,
      'job.finished' as const,
      'vm.state' as const,
    ),
    atMs: fc.constantFrom(1000, 1001),
    virtualTime: fc.constantFrom(0, 2.5),
    hostId: fc.constantFrom('h1', 'h2'),
    vmId: fc.constantFrom('vm-1', 'vm-2'),
    jobId: fc.constantFrom('job-1', 'job-2'),
    step: fc.constantFrom('create-vm', 'run'),
    state: fc.constantFrom('running', 'succeeded'),
    errno: fc.constantFrom('ENOSPC' as const, 'ENOMEM' as const),
    call: fc.constantFrom('KVM_CREATE_VM'),
  },
  {
    requiredKeys: ['type', 'atMs', 'virtualTime', 'hostId', 'vmId', 'jobId'],
    noNullPrototype: true,
  },
);

describe('event messages', () => {
  it('a commit’s events come out of the message as they went in, in order', () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 30 }), (events) => {
        assert.deepEqual(parseFleetEvents(encodeFleetEvents(events)), events);
      }),
    );
  });

  it('a job’s events share one header: a reboot’s message is less than half the plain list', () => {
    // A reboot commits about sixteen step events at once.
    const events: FleetEvent[] = Array.from({ length: 16 }, (_, i) => ({
      type: 'job.step',
      atMs: 1_790_000_000_000,
      virtualTime: i * 2.5,
      hostId: 'host-1',
      vmId: 'vm-1',
      jobId: 'reboot-vm-1',
      step: `step-${i}`,
    }));
    assert.ok(encodeFleetEvents(events).length < JSON.stringify(events).length / 2);
  });

  it('reads the plain list earlier versions sent, and leaves out what is not an event', () => {
    const plain: FleetEvent = {
      type: 'job.finished',
      atMs: 5,
      virtualTime: 1,
      hostId: 'h',
      vmId: 'v',
      jobId: 'j',
      state: 'succeeded',
    };
    assert.deepEqual(parseFleetEvents(JSON.stringify([plain, { type: 'nope' }, 3])), [plain]);
    assert.deepEqual(parseFleetEvents('not json'), []);
    assert.deepEqual(parseFleetEvents('{"events": []}'), []);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FleetMetrics } from './fleet-metrics.js';

describe('a scrape while Redis does not answer', () => {
  it('still serves the process metrics, and the fleet gauges have no samples rather than zeros', async () => {
    const down = () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379'));
    const metrics = new FleetMetrics(
      { hosts: down, terminatedVmCounts: down, queueCounts: down },
      { hostLabel: false },
    );
    const { body } = await metrics.text();
    assert.match(body, /^process_cpu_seconds_total /m);
    assert.match(body, /^tdxfleet_operations_total\{/m);
    assert.doesNotMatch(body, /^tdxfleet_vms\{/m);
    assert.doesNotMatch(body, /^tdxfleet_host_memory_bytes\{/m);
    assert.doesNotMatch(body, /^tdxfleet_queue_jobs\{/m);
  });
});

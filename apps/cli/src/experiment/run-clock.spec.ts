import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RunClock, onRunClock } from './run-clock.js';

describe("the run's clock", () => {
  it('at TIME_SCALE 0 does not follow real time, and nothing arrives late', () => {
    const clock = new RunClock(100, 5000, 0);
    assert.equal(clock.at(9000), 100);
    assert.equal(clock.realMsOf(250), 5000);
    assert.equal(clock.lagSeconds(100, 9000), 0);
  });

  it('at TIME_SCALE 1000 runs a virtual second per real millisecond', () => {
    const clock = new RunClock(100, 5000, 1000);
    assert.equal(clock.at(5030), 130);
    assert.equal(clock.realMsOf(130), 5030);
    // Meant for 130 s (5030 ms), sent at 5042 ms: 12 s late.
    assert.equal(clock.lagSeconds(130, 5042), 12);
    // Sent before it was due (a clock running ahead): not late, never early.
    assert.equal(clock.lagSeconds(130, 5020), 0);
  });

  it("puts a job's host times after its arrival on the run's clock, exactly", () => {
    const job = {
      virtualArrivedAt: 10.502069,
      virtualStartedAt: 12.1,
      virtualFinishedAt: 43.134915,
    };
    const times = onRunClock(0.3, job);
    assert.equal(times.startedAt, 0.3 + 1.597931);
    assert.equal(times.finishedAt, 0.3 + 32.632846);
    assert.deepEqual(
      onRunClock(7, { virtualArrivedAt: 1, virtualStartedAt: null, virtualFinishedAt: null }),
      { startedAt: null, finishedAt: null },
    );
  });
});

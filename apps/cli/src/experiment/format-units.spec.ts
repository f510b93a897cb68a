import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatBytes,
  formatCount,
  formatFraction,
  formatMetric,
  formatSeconds,
} from './format-units.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

describe('format-units', () => {
  it('seconds keep about three significant digits', () => {
    assert.equal(formatSeconds(517.2), '517 s');
    assert.equal(formatSeconds(1084.4), '1,084 s');
    assert.equal(formatSeconds(12.34), '12.3 s');
    assert.equal(formatSeconds(1.23), '1.2 s');
    assert.equal(formatSeconds(60), '60 s');
    assert.equal(formatSeconds(0.0456), '0.046 s');
    assert.equal(formatSeconds(0), '0 s');
  });

  it('bytes read in binary units, GiB at most', () => {
    assert.equal(formatBytes(1.5 * GIB), '1.5 GiB');
    assert.equal(formatBytes(256 * GIB), '256 GiB');
    assert.equal(formatBytes(1556 * GIB), '1,556 GiB');
    assert.equal(formatBytes(512 * MIB), '512 MiB');
    assert.equal(formatBytes(-2.25 * GIB), '-2.25 GiB');
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(100), '100 B');
  });

  it('fractions read as percentages, counts as integers (a mean of counts keeps a decimal)', () => {
    assert.equal(formatFraction(0.123), '12.3%');
    assert.equal(formatFraction(0.1), '10%');
    assert.equal(formatFraction(0.00012), '0.012%');
    assert.equal(formatCount(1024), '1,024');
    assert.equal(formatCount(2.5), '2.5');
  });

  it('a metric reads in the unit METRICS declares; a missing value reads n/a', () => {
    assert.equal(formatMetric('downtime.p99', 171.44), '171 s');
    assert.equal(formatMetric('memory.headroomBytes', 3 * GIB), '3 GiB');
    assert.equal(formatMetric('memory.free.minFraction', 0.185), '18.5%');
    assert.equal(formatMetric('operations.failed', 4), '4');
    assert.equal(formatMetric('no.such.metric', 1.5), '1.5');
    assert.equal(formatMetric('downtime.p99', null), 'n/a');
  });
});

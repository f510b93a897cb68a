import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from './config-error.js';
import { isLoopbackHost, loadConfig } from './load-config.js';

describe('loadConfig', () => {
  it('applies the documented defaults to an empty environment', () => {
    const config = loadConfig({});
    assert.deepEqual(config, {
      port: 3000,
      workerPort: 3001,
      host: '127.0.0.1',
      redisUrl: undefined,
      localRedisUrl: 'redis://127.0.0.1:6379',
      timeScale: 1000,
      apiToken: undefined,
      workerConcurrency: 32,
      hostConcurrency: 4,
      globalConcurrency: undefined,
      stepWaitTimeoutMs: 600000,
      jobLockMs: 30000,
      keyPrefix: 'tdxfleet',
      shutdownTimeoutMs: 10000,
      logLevel: 'info',
      metricsHostLabel: false,
      dataDir: '.data',
    });
    assert.ok(Object.isFrozen(config));
  });

  it('ignores variables it does not know', () => {
    assert.equal(loadConfig({ PATH: '/bin', HOME: '/root' }).port, 3000);
  });

  const accepted: Array<[string, Record<string, string>, Record<string, unknown>]> = [
    ['a port', { PORT: '8080' }, { port: 8080 }],
    ['port 0 (any free port)', { PORT: '0' }, { port: 0 }],
    ['a worker port', { WORKER_PORT: '4001' }, { workerPort: 4001 }],
    ['an empty value as unset', { PORT: '' }, { port: 3000 }],
    ['localhost', { HOST: 'localhost' }, { host: 'localhost' }],
    ['IPv6 loopback', { HOST: '::1' }, { host: '::1' }],
    [
      'any address with a token',
      { HOST: '0.0.0.0', API_TOKEN: 's3cret' },
      { host: '0.0.0.0', apiToken: 's3cret' },
    ],
    ['a Redis URL', { REDIS_URL: 'redis://db:6380/2' }, { redisUrl: 'redis://db:6380/2' }],
    ['a TLS Redis URL', { REDIS_URL: 'rediss://db:6380' }, { redisUrl: 'rediss://db:6380' }],
    [
      'a local Redis address',
      { LOCAL_REDIS_URL: 'redis://127.0.0.1:1' },
      { localRedisUrl: 'redis://127.0.0.1:1' },
    ],
    ['TIME_SCALE 0 (no waiting)', { TIME_SCALE: '0' }, { timeScale: 0 }],
    ['a fractional TIME_SCALE', { TIME_SCALE: '0.5' }, { timeScale: 0.5 }],
    ['worker concurrency', { WORKER_CONCURRENCY: '64' }, { workerConcurrency: 64 }],
    ['host concurrency', { HOST_CONCURRENCY: '1' }, { hostConcurrency: 1 }],
    ['a global concurrency', { GLOBAL_CONCURRENCY: '100' }, { globalConcurrency: 100 }],
    ['a step wait timeout', { STEP_WAIT_TIMEOUT_MS: '0' }, { stepWaitTimeoutMs: 0 }],
    ['a job lock', { JOB_LOCK_MS: '5000' }, { jobLockMs: 5000 }],
    ['a key prefix', { KEY_PREFIX: 'fleet_A-1' }, { keyPrefix: 'fleet_A-1' }],
    ['a shutdown timeout', { SHUTDOWN_TIMEOUT_MS: '500' }, { shutdownTimeoutMs: 500 }],
    ['log level debug', { LOG_LEVEL: 'debug' }, { logLevel: 'debug' }],
    ['log level silent', { LOG_LEVEL: 'silent' }, { logLevel: 'silent' }],
    ['METRICS_HOST_LABEL=true', { METRICS_HOST_LABEL: 'true' }, { metricsHostLabel: true }],
    ['METRICS_HOST_LABEL=1', { METRICS_HOST_LABEL: '1' }, { metricsHostLabel: true }],
    ['METRICS_HOST_LABEL=FALSE', { METRICS_HOST_LABEL: 'FALSE' }, { metricsHostLabel: false }],
    ['METRICS_HOST_LABEL=0', { METRICS_HOST_LABEL: '0' }, { metricsHostLabel: false }],
    ['a data directory', { DATA_DIR: '/var/lib/fleet' }, { dataDir: '/var/lib/fleet' }],
  ];
  for (const [name, env, expected] of accepted) {
    it(`accepts ${name}`, () => {
      const config = loadConfig(env);
      for (const [key, value] of Object.entries(expected)) {
        assert.deepEqual(config[key as keyof typeof config], value, key);
      }
    });
  }

  // [what, env, variable the error names, text the message must contain]
  const refused: Array<[string, Record<string, string>, string, string[]]> = [
    ['a non-numeric port', { PORT: 'http' }, 'PORT', ['PORT="http"', 'integer']],
    ['a port above 65535', { PORT: '70000' }, 'PORT', ['PORT="70000"']],
    ['a negative port', { PORT: '-1' }, 'PORT', ['PORT="-1"']],
    ['a fractional port', { PORT: '80.5' }, 'PORT', ['PORT="80.5"']],
    ['a bad worker port', { WORKER_PORT: 'x' }, 'WORKER_PORT', ['WORKER_PORT="x"']],
    ['a host with spaces', { HOST: 'a b' }, 'HOST', ['HOST="a b"']],
    ['a public HOST without a token', { HOST: '0.0.0.0' }, 'HOST', ['HOST="0.0.0.0"', 'API_TOKEN']],
    ['a LAN HOST without a token', { HOST: '192.168.1.5' }, 'HOST', ['HOST="192.168.1.5"']],
    ['a non-URL REDIS_URL', { REDIS_URL: 'localhost:6379' }, 'REDIS_URL', ['REDIS_URL=']],
    ['an http REDIS_URL', { REDIS_URL: 'http://db:6379' }, 'REDIS_URL', ['"http://db:6379"']],
    [
      'a bad REDIS_URL without echoing its password',
      { REDIS_URL: 'http://user:hunter2@db:6379' },
      'REDIS_URL',
      ['REDIS_URL=', '***'],
    ],
    ['a bad LOCAL_REDIS_URL', { LOCAL_REDIS_URL: 'nope' }, 'LOCAL_REDIS_URL', ['"nope"']],
    ['a negative TIME_SCALE', { TIME_SCALE: '-1' }, 'TIME_SCALE', ['TIME_SCALE="-1"']],
    ['a non-numeric TIME_SCALE', { TIME_SCALE: 'fast' }, 'TIME_SCALE', ['"fast"']],
    ['an infinite TIME_SCALE', { TIME_SCALE: 'Infinity' }, 'TIME_SCALE', ['"Infinity"']],
    ['a token with whitespace', { API_TOKEN: 'a b' }, 'API_TOKEN', ['API_TOKEN']],
    ['zero worker concurrency', { WORKER_CONCURRENCY: '0' }, 'WORKER_CONCURRENCY', ['"0"']],
    ['a bad host concurrency', { HOST_CONCURRENCY: 'many' }, 'HOST_CONCURRENCY', ['"many"']],
    ['zero global concurrency', { GLOBAL_CONCURRENCY: '0' }, 'GLOBAL_CONCURRENCY', ['"0"']],
    ['a bad step wait timeout', { STEP_WAIT_TIMEOUT_MS: 'x' }, 'STEP_WAIT_TIMEOUT_MS', ['"x"']],
    ['a job lock under 1 s', { JOB_LOCK_MS: '10' }, 'JOB_LOCK_MS', ['JOB_LOCK_MS="10"']],
    ['a key prefix with braces', { KEY_PREFIX: '{x}' }, 'KEY_PREFIX', ['KEY_PREFIX="{x}"']],
    ['a key prefix with a colon', { KEY_PREFIX: 'a:b' }, 'KEY_PREFIX', ['"a:b"']],
    ['a zero shutdown timeout', { SHUTDOWN_TIMEOUT_MS: '0' }, 'SHUTDOWN_TIMEOUT_MS', ['"0"']],
    ['an unknown log level', { LOG_LEVEL: 'loud' }, 'LOG_LEVEL', ['"loud"', 'info']],
    ['a boolean spelled yes', { METRICS_HOST_LABEL: 'yes' }, 'METRICS_HOST_LABEL', ['"yes"']],
  ];
  for (const [name, env, variable, fragments] of refused) {
    it(`refuses ${name}`, () => {
      assert.throws(
        () => loadConfig(env),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.variable, variable);
          for (const fragment of fragments)
            assert.ok(error.message.includes(fragment), error.message);
          return true;
        },
      );
    });
  }

  it('never echoes the API token', () => {
    assert.throws(
      () => loadConfig({ API_TOKEN: 'top secret' }),
      (error: unknown) => error instanceof ConfigError && !error.message.includes('top secret'),
    );
  });
});

describe('isLoopbackHost', () => {
  const cases: Array<[string, boolean]> = [
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['::1', true],
    ['[::1]', true],
    ['::ffff:127.0.0.1', true],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.1', false],
    ['128.0.0.1', false],
    ['127.0.0.256', false],
    ['example.com', false],
  ];
  for (const [host, expected] of cases) {
    it(`${host} -> ${expected}`, () => assert.equal(isLoopbackHost(host), expected));
  }
});

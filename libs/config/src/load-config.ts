import { type AppConfig, LOG_LEVELS, type LogLevel } from './app-config.js';
import { ConfigError } from './config-error.js';

type Env = Readonly<Record<string, string | undefined>>;

/** The environment variables read by `loadConfig`, with their defaults as written in the README. */
export const CONFIG_DEFAULTS = {
  PORT: '3000',
  WORKER_PORT: '3001',
  HOST: '127.0.0.1',
  LOCAL_REDIS_URL: 'redis://127.0.0.1:6379',
  TIME_SCALE: '1000',
  WORKER_CONCURRENCY: '32',
  HOST_CONCURRENCY: '4',
  STEP_WAIT_TIMEOUT_MS: '600000',
  JOB_LOCK_MS: '30000',
  KEY_PREFIX: 'tdxfleet',
  SHUTDOWN_TIMEOUT_MS: '10000',
  LOG_LEVEL: 'info',
  METRICS_HOST_LABEL: 'false',
  DATA_DIR: '.data',
} as const;

/** Variables whose value is a secret: errors name them but never echo the value. */
const SECRET_VARIABLES = new Set(['API_TOKEN']);

/** Reads one variable; an empty string counts as unset. */
function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

function shown(name: string, value: string): string {
  if (SECRET_VARIABLES.has(name)) return `${name} (value hidden)`;
  return `${name}=${JSON.stringify(redactUrlPassword(value))}`;
}

function redactUrlPassword(value: string): string {
  try {
    const url = new URL(value);
    if (url.password === '') return value;
    url.password = '***';
    return url.toString();
  } catch {
    return value;
  }
}

function invalid(name: string, value: string, expected: string): ConfigError {
  return new ConfigError(name, `${shown(name, value)} is invalid: expected ${expected}`);
}

function integer(env: Env, name: keyof typeof CONFIG_DEFAULTS, min: number, max: number): number {
  const value = raw(env, name) ?? CONFIG_DEFAULTS[name];
  const expected = `an integer from ${min} to ${max}`;
  if (!/^\d+$/.test(value)) throw invalid(name, value, expected);
  const parsed = Number(value);
  if (parsed < min || parsed > max) throw invalid(name, value, expected);
  return parsed;
}

function nonNegativeNumber(env: Env, name: keyof typeof CONFIG_DEFAULTS): number {
  const value = raw(env, name) ?? CONFIG_DEFAULTS[name];
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed) || parsed < 0) {
    throw invalid(name, value, 'a non-negative number');
  }
  return parsed;
}

function redisUrl(name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(name, value, 'a URL such as redis://127.0.0.1:6379');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw invalid(name, value, 'a redis:// or rediss:// URL');
  }
  if (url.hostname === '') throw invalid(name, value, 'a URL with a host name');
  return value;
}

function boolean(env: Env, name: keyof typeof CONFIG_DEFAULTS): boolean {
  const value = raw(env, name) ?? CONFIG_DEFAULTS[name];
  switch (value.toLowerCase()) {
    case 'true':
    case '1':
      return true;
    case 'false':
    case '0':
      return false;
    default:
      throw invalid(name, value, 'true, false, 1 or 0');
  }
}

function logLevel(env: Env): LogLevel {
  const value = raw(env, 'LOG_LEVEL') ?? CONFIG_DEFAULTS.LOG_LEVEL;
  const level = LOG_LEVELS.find((candidate) => candidate === value);
  if (level === undefined) throw invalid('LOG_LEVEL', value, `one of ${LOG_LEVELS.join(', ')}`);
  return level;
}

function globalConcurrency(env: Env): number | undefined {
  const value = raw(env, 'GLOBAL_CONCURRENCY');
  if (value === undefined) return undefined;
  const expected = 'an integer from 1 to 100000';
  if (!/^\d+$/.test(value)) throw invalid('GLOBAL_CONCURRENCY', value, expected);
  const parsed = Number(value);
  if (parsed < 1 || parsed > 100_000) throw invalid('GLOBAL_CONCURRENCY', value, expected);
  return parsed;
}

function keyPrefix(env: Env): string {
  const value = raw(env, 'KEY_PREFIX') ?? CONFIG_DEFAULTS.KEY_PREFIX;
  if (!/^[A-Za-z0-9_-]+$/.test(value)) {
    throw invalid('KEY_PREFIX', value, 'letters, digits, "_" or "-" only');
  }
  return value;
}

function apiToken(env: Env): string | undefined {
  const value = raw(env, 'API_TOKEN');
  if (value !== undefined && /\s/.test(value)) {
    throw invalid('API_TOKEN', value, 'a token without whitespace');
  }
  return value;
}

function host(env: Env): string {
  const value = raw(env, 'HOST') ?? CONFIG_DEFAULTS.HOST;
  if (/\s/.test(value)) throw invalid('HOST', value, 'an address or host name without whitespace');
  return value;
}

/**
 * Whether `host` only accepts connections from this machine: `localhost`, 127.0.0.0/8 or ::1.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = (
    host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  ).toLowerCase();
  if (bare === 'localhost' || bare === '::1' || bare === '0:0:0:0:0:0:0:1') return true;
  const ipv4 = bare.startsWith('::ffff:') ? bare.slice('::ffff:'.length) : bare;
  const octets = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ipv4);
  if (octets === null) return false;
  const numbers = octets.slice(1).map(Number);
  return numbers.every((octet) => octet <= 255) && numbers[0] === 127;
}

/**
 * Validates the environment into a frozen `AppConfig`.
 * @throws ConfigError naming the first variable whose value cannot be used.
 */
export function loadConfig(env: NodeJS.ProcessEnv): AppConfig {
  const configuredRedisUrl = raw(env, 'REDIS_URL');
  const config: AppConfig = {
    port: integer(env, 'PORT', 0, 65535),
    workerPort: integer(env, 'WORKER_PORT', 0, 65535),
    host: host(env),
    redisUrl:
      configuredRedisUrl === undefined ? undefined : redisUrl('REDIS_URL', configuredRedisUrl),
    localRedisUrl: redisUrl(
      'LOCAL_REDIS_URL',
      raw(env, 'LOCAL_REDIS_URL') ?? CONFIG_DEFAULTS.LOCAL_REDIS_URL,
    ),
    timeScale: nonNegativeNumber(env, 'TIME_SCALE'),
    apiToken: apiToken(env),
    workerConcurrency: integer(env, 'WORKER_CONCURRENCY', 1, 10000),
    hostConcurrency: integer(env, 'HOST_CONCURRENCY', 1, 10000),
    globalConcurrency: globalConcurrency(env),
    stepWaitTimeoutMs: integer(env, 'STEP_WAIT_TIMEOUT_MS', 0, 86_400_000),
    jobLockMs: integer(env, 'JOB_LOCK_MS', 1000, 600_000),
    keyPrefix: keyPrefix(env),
    shutdownTimeoutMs: integer(env, 'SHUTDOWN_TIMEOUT_MS', 1, 3_600_000),
    logLevel: logLevel(env),
    metricsHostLabel: boolean(env, 'METRICS_HOST_LABEL'),
    dataDir: raw(env, 'DATA_DIR') ?? CONFIG_DEFAULTS.DATA_DIR,
  };
  if (config.apiToken === undefined && !isLoopbackHost(config.host)) {
    throw new ConfigError(
      'HOST',
      `HOST=${JSON.stringify(config.host)} is not a loopback address and API_TOKEN is unset: ` +
        'set API_TOKEN to require a bearer token on mutating calls, or bind HOST to 127.0.0.1',
    );
  }
  return Object.freeze(config);
}

/** Pino's level names, lowest noise last. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The validated configuration of every process; built once at boot by `loadConfig`. */
export interface AppConfig {
  /** HTTP port of the API (and of fleetd). 0 picks a free port. */
  readonly port: number;
  /** HTTP port of a stand-alone worker process (health and metrics). */
  readonly workerPort: number;
  /** Address the HTTP servers bind to. */
  readonly host: string;
  /** Redis to use; undefined means: the local default, else a private redis-server. */
  readonly redisUrl: string | undefined;
  /** The Redis probed when `redisUrl` is unset. */
  readonly localRedisUrl: string;
  /** Real seconds waited per virtual second is 1 / timeScale; 0 means no waiting. */
  readonly timeScale: number;
  /** Bearer token required on mutating calls; undefined disables auth (loopback only). */
  readonly apiToken: string | undefined;
  /** Maximum concurrent operations in one worker process. */
  readonly workerConcurrency: number;
  /** Maximum concurrent operations on one simulated host. */
  readonly hostConcurrency: number;
  /** Fleet-wide maximum of running operations (all workers together); undefined for none. */
  readonly globalConcurrency: number | undefined;
  /** How long a step may wait for an HKID or memory before its operation fails (real ms). */
  readonly stepWaitTimeoutMs: number;
  /** A job's lock: a worker that dies holding a job is noticed within about this long. */
  readonly jobLockMs: number;
  /** Prefix of every Redis key and queue, used inside a `{...}` hash tag. */
  readonly keyPrefix: string;
  /** Time allowed for a graceful shutdown before the process exits non-zero. */
  readonly shutdownTimeoutMs: number;
  readonly logLevel: LogLevel;
  /** Whether metrics carry a host id label (bounded by the number of hosts). */
  readonly metricsHostLabel: boolean;
  /** Directory for local state, such as the private redis-server's files. */
  readonly dataDir: string;
}

/** Injection token under which the Nest modules provide the `AppConfig`. */
export const APP_CONFIG = Symbol('APP_CONFIG');

import { type AppConfig, ConfigError, loadConfig } from '#config';
import { createLogger } from '#logging';
import { resolveRedis, type ResolvedRedis } from '#redis';
import { type NestFastifyApplication } from '@nestjs/platform-fastify';
import { type Logger } from 'pino';
import { createHttpApp, type FeatureModules } from './http-app.js';
import { type OpenApiOptions } from './openapi.js';

/** One of the daemon's processes: its name, port and modules. */
export interface ServiceSpec {
  readonly name: string;
  readonly port: (config: AppConfig) => number;
  readonly imports?: FeatureModules;
  readonly openApi?: OpenApiOptions;
}

/** Exit code of a process refused because of its configuration. */
export const EXIT_CONFIG_ERROR = 2;
/** Exit code of a process that could not start, or did not stop in time. */
export const EXIT_FAILURE = 1;

const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Nest runs the shutdown itself on the first signal (and exits 0 when it is done); this only
 * bounds it: past the deadline the process exits non-zero, whatever is still pending.
 */
function armShutdownDeadline(timeoutMs: number, log: Logger): void {
  let armed = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (armed) return;
    armed = true;
    log.info({ signal, timeoutMs }, 'shutting down');
    setTimeout(() => {
      log.error({ timeoutMs }, 'shutdown did not finish within SHUTDOWN_TIMEOUT_MS; exiting');
      process.exit(EXIT_FAILURE);
    }, timeoutMs);
  };
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, onSignal);
}

async function failStart(log: Logger, error: unknown, what: string): Promise<never> {
  log.fatal({ err: error }, what);
  process.stderr.write(`${what}: ${messageOf(error)}\n`);
  // Let the logger's stream drain before exiting.
  await new Promise<void>((resolve) => log.flush(() => resolve()));
  process.exit(EXIT_FAILURE);
}

/**
 * Runs a process: validates the configuration (exit 2 with one line on error), resolves Redis
 * (starting a private server if needed), starts the Nest app, and shuts it all down in order on
 * SIGINT or SIGTERM within SHUTDOWN_TIMEOUT_MS.
 */
export async function runService(spec: ServiceSpec): Promise<void> {
  let config: AppConfig;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${spec.name}: configuration error: ${error.message}\n`);
    process.exit(EXIT_CONFIG_ERROR);
  }
  const log = createLogger(config, spec.name);
  let redis: ResolvedRedis;
  try {
    redis = await resolveRedis(config, log);
  } catch (error) {
    return failStart(log, error, `${spec.name}: could not start`);
  }
  let app: NestFastifyApplication | undefined;
  try {
    app = await createHttpApp({
      config,
      logger: log,
      redis,
      ...(spec.imports === undefined ? {} : { imports: spec.imports }),
      ...(spec.openApi === undefined ? {} : { openApi: spec.openApi }),
    });
    app.enableShutdownHooks([...SHUTDOWN_SIGNALS], { useProcessExit: true });
    armShutdownDeadline(config.shutdownTimeoutMs, log);
    await app.listen(spec.port(config), config.host);
  } catch (error) {
    // Closing the app closes Redis and stops a private server; without an app, stop it here.
    await (app === undefined ? redis.stop() : app.close()).catch(() => undefined);
    return failStart(log, error, `${spec.name}: could not start`);
  }
  log.info({ url: await app.getUrl(), redis: redis.source }, `${spec.name} is listening`);
}

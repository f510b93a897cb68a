import { type AppConfig } from '#config';
import { type DestinationStream, type Logger, pino } from 'pino';

/** Injection token of the process's pino logger. */
export const LOGGER = Symbol('LOGGER');

/**
 * The process's logger: JSON lines on stdout (or `destination`), one `service` field naming the
 * process, ISO timestamps.
 */
export function createLogger(
  config: Pick<AppConfig, 'logLevel'>,
  service: string,
  destination?: DestinationStream,
): Logger {
  const options = {
    level: config.logLevel,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

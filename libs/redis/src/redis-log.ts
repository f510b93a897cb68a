/** The part of a structured logger (pino's, for one) that the Redis helpers write to. */
export interface RedisLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** A logger that drops everything, for callers that do not care. */
export const silentRedisLog: RedisLog = {
  info: () => undefined,
  warn: () => undefined,
};

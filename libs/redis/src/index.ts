export { findFreePort } from './free-port.js';
export { type PingResult, pingRedis, redactRedisUrl } from './ping-redis.js';
export { RedisConnection, RESOLVED_REDIS } from './redis-connection.js';
export {
  RedisServerNotFoundError,
  RedisServerStartError,
  RedisUnavailableError,
} from './redis-errors.js';
export { type RedisLog, silentRedisLog } from './redis-log.js';
export { RedisModule } from './redis.module.js';
export {
  DEFAULT_REDIS_SERVER_BINARY,
  isAlive,
  isExecutableAvailable,
  type RedisServerHandle,
  type RedisServerOptions,
  startRedisServer,
} from './redis-server.js';
export {
  type RedisSource,
  type ResolvedRedis,
  type ResolveRedisOptions,
  resolveRedis,
} from './resolve-redis.js';

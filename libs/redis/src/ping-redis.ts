import { Redis } from 'ioredis';

/** The outcome of one PING: `ok`, or the reason the server did not answer. */
export type PingResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Connects once to `url`, sends PING and disconnects; never retries, never throws.
 */
export async function pingRedis(url: string, timeoutMs = 1000): Promise<PingResult> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  });
  // The socket error (ECONNREFUSED, ...) says more than the rejection ("Connection is closed").
  let socketError: string | undefined;
  client.on('error', (error: Error) => (socketError ??= error.message));
  try {
    await client.connect();
    await client.ping();
    return { ok: true };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, reason: socketError ?? reason };
  } finally {
    client.disconnect();
  }
}

/** Removes the password from a Redis URL before it goes into a log line or a message. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return url;
  }
}

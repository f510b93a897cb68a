import { Injectable, type OnModuleInit } from '@nestjs/common';
import { RedisConnection } from '#redis';

/** One dependency's answer: ok, or why not. */
export type CheckResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** A named readiness check; modules add theirs (workers running, ...) in `onModuleInit`. */
export type ReadinessCheck = () => Promise<CheckResult>;

export interface Readiness {
  readonly ready: boolean;
  readonly checks: Readonly<Record<string, string>>;
}

/** What `/readyz` asks: Redis answers PING, plus every check other modules registered. */
@Injectable()
export class ReadinessService implements OnModuleInit {
  private readonly checks = new Map<string, ReadinessCheck>();

  constructor(private readonly redis: RedisConnection) {}

  onModuleInit(): void {
    this.register('redis', () => this.redis.ping());
  }

  register(name: string, check: ReadinessCheck): void {
    if (this.checks.has(name)) throw new Error(`readiness check "${name}" registered twice`);
    this.checks.set(name, check);
  }

  async check(): Promise<Readiness> {
    const names = [...this.checks.keys()];
    const results = await Promise.all(
      [...this.checks.values()].map((check) =>
        check().catch((error: unknown): CheckResult => ({
          ok: false,
          reason: error instanceof Error ? error.message : String(error),
        })),
      ),
    );
    const checks: Record<string, string> = {};
    results.forEach((result, index) => {
      checks[names[index] ?? `check-${index}`] = result.ok ? 'ok' : result.reason;
    });
    return { ready: results.every((result) => result.ok), checks };
  }
}

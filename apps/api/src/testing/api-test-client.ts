import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { type z } from 'zod';
import { startTestApp, type TestApp } from '../../../../test/support/http-app.js';
import { WorkerModule } from '../../../worker/src/worker.module.js';
import { ApiModule } from '../api.module.js';
import { batchViewSchema } from '../batch.dto.js';
import { type EventStreamOptions } from '../event-stream.service.js';
import { jobViewSchema } from '../job.dto.js';
import { API_OPENAPI_INFO } from '../openapi-info.js';

/** An HTTP answer: status, headers and the parsed JSON body (or the text). */
export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: unknown;
}

/** The one error shape, as a test reads it. */
export interface ErrorAnswer {
  readonly code: string;
  readonly message: string;
  readonly details?: Record<string, unknown>;
}

/** A job and a batch as the documented schemas describe them. */
export type JobAnswer = z.output<typeof jobViewSchema>;
export type BatchAnswer = z.output<typeof batchViewSchema>;

const FINAL_JOB_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/** Calls the API the way a client does: JSON over HTTP, with an optional bearer token. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  async request(
    method: string,
    path: string,
    options: { body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...options.headers };
    if (this.token !== undefined) headers['authorization'] ??= `Bearer ${this.token}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) body = JSON.stringify(options.body);
    if (body !== undefined) headers['content-type'] ??= 'application/json';
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body }),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, headers: response.headers, body: parsed };
  }

  get(path: string): Promise<Answer> {
    return this.request('GET', path);
  }

  post(path: string, body?: unknown, headers?: Record<string, string>): Promise<Answer> {
    return this.request('POST', path, {
      ...(body === undefined ? {} : { body }),
      ...(headers === undefined ? {} : { headers }),
    });
  }

  delete(path: string): Promise<Answer> {
    return this.request('DELETE', path);
  }

  /** A successful answer's body, checked against the documented schema. */
  async expect<S extends z.ZodType>(
    answer: Answer | Promise<Answer>,
    status: number,
    schema: S,
  ): Promise<z.output<S>> {
    const { status: actual, body } = await answer;
    assert.equal(actual, status, JSON.stringify(body));
    const parsed = schema.safeParse(body);
    assert.ok(parsed.success, `${parsed.error?.message ?? ''}\n${JSON.stringify(body)}`);
    return parsed.data;
  }

  /** Polls a job until `done(job)` (by default: it has ended). */
  async waitForJob(
    jobId: string,
    done: (job: JobAnswer) => boolean = (job) => FINAL_JOB_STATES.has(job.state),
    timeoutMs = 15_000,
  ): Promise<JobAnswer> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const job = await this.expect(this.get(`/v1/jobs/${jobId}`), 200, jobViewSchema);
      if (done(job)) return job;
      if (performance.now() > deadline) {
        assert.fail(`job ${jobId} still ${job.state} after ${timeoutMs} ms`);
      }
      await sleep(20);
    }
  }

  async waitForBatch(batchId: string, timeoutMs = 15_000): Promise<BatchAnswer> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const batch = await this.expect(this.get(`/v1/batches/${batchId}`), 200, batchViewSchema);
      if (batch.state === 'done') return batch;
      if (performance.now() > deadline) assert.fail(`batch ${batchId} still running`);
      await sleep(50);
    }
  }
}

/** Asserts an answer in the one error shape; returns its error. */
export function assertError(answer: Answer, status: number, code: string): ErrorAnswer {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  const body = answer.body as { error?: ErrorAnswer };
  assert.deepEqual(Object.keys(body), ['error'], JSON.stringify(body));
  assert.equal(body.error?.code, code, JSON.stringify(body));
  assert.equal(typeof body.error.message, 'string');
  return body.error;
}

/** What an API app under test runs. */
export interface ApiAppOptions {
  readonly redisUrl: string;
  /** A key prefix of its own, so test files and apps sharing a Redis do not meet. */
  readonly keyPrefix: string;
  /** Run the workers in the same process (fleetd) or not (api: jobs stay queued). */
  readonly workers: boolean;
  readonly env?: Record<string, string>;
  readonly eventStream?: Partial<EventStreamOptions>;
}

/** Starts the API (and the workers) in process, on a free loopback port. */
export function startApiApp(options: ApiAppOptions): Promise<TestApp> {
  const api =
    options.eventStream === undefined ? ApiModule : ApiModule.withEventStream(options.eventStream);
  return startTestApp({
    redisUrl: options.redisUrl,
    env: { KEY_PREFIX: options.keyPrefix, ...options.env },
    imports: options.workers ? [api, WorkerModule] : [api],
    openApi: API_OPENAPI_INFO,
  });
}

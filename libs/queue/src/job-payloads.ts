import { z } from 'zod';

/** The queue of VM operations (boot, reboot, terminate). */
export const OPERATIONS_QUEUE = 'operations';
/** The queue of batches (each job drives one batch). */
export const BATCHES_QUEUE = 'batches';

/** An operation job's payload: the operation lives in its host's document. */
export const operationJobSchema = z
  .object({ opId: z.string().min(1), hostId: z.string().min(1) })
  .strict();
export type OperationJobData = z.infer<typeof operationJobSchema>;

/** A batch job's payload. */
export const batchJobSchema = z.object({ batchId: z.string().min(1) }).strict();
export type BatchJobData = z.infer<typeof batchJobSchema>;

/** A payload read from Redis that is not what this code writes: the job fails for good. */
export class InvalidJobPayloadError extends Error {
  constructor(queue: string, jobId: string | undefined, reason: string) {
    super(`${queue} job ${jobId ?? '?'}: invalid payload: ${reason}`);
    this.name = 'InvalidJobPayloadError';
  }
}

/** Parses a job payload (untrusted input read from Redis). */
export function parseJobData<T>(
  schema: z.ZodType<T>,
  queue: string,
  jobId: string | undefined,
  data: unknown,
): T {
  const parsed = schema.safeParse(data);
  if (!parsed.success)
    throw new InvalidJobPayloadError(queue, jobId, parsed.error.issues[0]?.message ?? 'invalid');
  return parsed.data;
}

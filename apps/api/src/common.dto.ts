import { z } from 'zod';

/**
 * An id a client chooses for a host or VM. Ids end up inside Redis keys and hash tags, so braces,
 * colons and whitespace are refused.
 */
export const resourceIdSchema = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/,
    'must be 1 to 100 letters, digits, ".", "_" or "-", starting with a letter or digit',
  );

/** An id as a reference to something that may exist (a filter, a selector). */
export const idReferenceSchema = z.string().min(1).max(200);

export const timestampSchema = z.iso.datetime().describe('ISO 8601 time');

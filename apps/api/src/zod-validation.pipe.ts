import { type ArgumentMetadata, Injectable, type PipeTransform } from '@nestjs/common';
import { ApiError } from '#http';
import { type z } from 'zod';

/** One problem with a request: where (body, query, header), which field, and what. */
export interface FieldIssue {
  readonly location: string;
  readonly field: string;
  readonly message: string;
}

function fieldIssues(location: string, issues: readonly z.core.$ZodIssue[]): FieldIssue[] {
  return issues.flatMap((issue) => {
    const path = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({
        location,
        field: [...path, key].join('.'),
        message: 'unknown field',
      }));
    }
    return [{ location, field: path.join('.'), message: issue.message }];
  });
}

/** The 400 of a request that failed validation; its message names every field at fault. */
export function invalidRequest(location: string, issues: readonly z.core.$ZodIssue[]): ApiError {
  const listed = fieldIssues(location, issues);
  const summary = listed
    .map((i) => `${i.field === '' ? i.location : `${i.location}.${i.field}`}: ${i.message}`)
    .join('; ');
  return new ApiError(400, 'invalid_request', `invalid request: ${summary}`, { issues: listed });
}

/** Validates (and applies the defaults of) a body, query or param with a zod schema. */
@Injectable()
export class ZodValidationPipe<S extends z.ZodType> implements PipeTransform<unknown, z.output<S>> {
  constructor(private readonly schema: S) {}

  transform(value: unknown, metadata: ArgumentMetadata): z.output<S> {
    const result = this.schema.safeParse(value);
    if (result.success) return result.data;
    throw invalidRequest(
      metadata.type === 'custom' ? 'request' : metadata.type,
      result.error.issues,
    );
  }
}

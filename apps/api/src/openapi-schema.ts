import { type SchemaObject } from '@nestjs/swagger';
import { z } from 'zod';

/**
 * The OpenAPI schema of a zod schema: the documents are generated from the schemas the API
 * validates with (requests) or checks its views against (responses), so the two cannot drift.
 */
export function openApiSchema(schema: z.ZodType, io: 'input' | 'output' = 'input'): SchemaObject {
  const { $schema: _dialect, ...json } = z.toJSONSchema(schema, { target: 'openapi-3.0', io });
  return json as SchemaObject;
}

/**
 * Compiles only when every value of `View` is one the documented response schema describes:
 * a field renamed or retyped in a view breaks the build until its documentation follows.
 */
export type Documents<Schema extends z.ZodType, View extends z.output<Schema>> = View;

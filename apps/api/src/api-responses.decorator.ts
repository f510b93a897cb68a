import { applyDecorators } from '@nestjs/common';
import { ApiHeader, ApiResponse } from '@nestjs/swagger';
import { ERROR_BODY_SCHEMA } from '#http';
import { IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER } from './idempotency.decorator.js';

const ERROR_DESCRIPTIONS: Readonly<Record<number, string>> = {
  400: 'Invalid input (the message and details name the field): code invalid_request',
  401: 'A mutating call without a valid bearer token (when the server has API_TOKEN)',
  404: 'No such host, VM, job or batch: code not_found',
  409: 'Conflict',
  422: 'No host can take the VM: code no_capacity',
  503: 'Redis does not answer',
};

/** Documents the error answers of a route, all in the one error shape. */
export function ApiErrors(...answers: Array<number | [number, string]>): MethodDecorator {
  return applyDecorators(
    ...answers.map((answer) => {
      const [status, description] =
        typeof answer === 'number' ? [answer, ERROR_DESCRIPTIONS[answer] ?? 'Error'] : answer;
      return ApiResponse({ status, description, schema: ERROR_BODY_SCHEMA });
    }),
  );
}

/** Documents the Idempotency-Key of a route that creates a job, and its replay header. */
export function ApiIdempotent(): MethodDecorator {
  return applyDecorators(
    ApiHeader({
      name: IDEMPOTENCY_KEY_HEADER,
      required: false,
      description:
        'Makes the request safe to retry (1 to 200 printable characters): the same key with the ' +
        `same request answers the first job again, with ${IDEMPOTENT_REPLAYED_HEADER}: true; ` +
        'with another request it is a 409 idempotency_conflict',
    }),
  );
}

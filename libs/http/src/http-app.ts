import { type DynamicModule, Module, type ModuleMetadata } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type FastifyError, type FastifyReply, type FastifyRequest } from 'fastify';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { NestPinoLogger } from '#logging';
import { ApiError } from './api-error.js';
import { CoreModule, type ProcessContext } from './core.module.js';
import { toErrorResponse } from './error-response.js';
import { type OpenApiOptions, setupOpenApi } from './openapi.js';

export type FeatureModules = NonNullable<ModuleMetadata['imports']>;

export interface HttpAppOptions extends ProcessContext {
  /** The app's own modules (API controllers, queue processors, ...). */
  readonly imports?: FeatureModules;
  /** Serve `/docs` and `/docs-json` with this document description. */
  readonly openApi?: OpenApiOptions;
}

@Module({})
class ServiceRootModule {}

/** Errors Fastify raises before routing (a malformed URL) never reach Nest's filters. */
function answerFrameworkError(
  error: FastifyError,
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  const status = error.statusCode !== undefined && error.statusCode < 500 ? error.statusCode : 400;
  const { body } = toErrorResponse(new ApiError(status, 'bad_request', error.message));
  void reply.code(status).send(body);
}

function rootModule(options: HttpAppOptions): DynamicModule {
  return {
    module: ServiceRootModule,
    imports: [CoreModule.forRoot(options), ...(options.imports ?? [])],
  };
}

/**
 * Builds and initialises (but does not start listening) a Nest application on Fastify with the
 * shared core: health endpoints, error shape, bearer-token guard, pino logging, optional OpenAPI.
 */
export async function createHttpApp(options: HttpAppOptions): Promise<NestFastifyApplication> {
  const app = await NestFactory.create<NestFastifyApplication>(
    rootModule(options),
    new FastifyAdapter({
      bodyLimit: 1024 * 1024,
      frameworkErrors: answerFrameworkError,
    }),
    { logger: new NestPinoLogger(options.logger), abortOnError: false },
  );
  if (options.openApi !== undefined) setupOpenApi(app, options.openApi);
  await app.init();
  return app;
}

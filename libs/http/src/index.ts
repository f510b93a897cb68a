export { ApiError, type ErrorBody, NotReadyError } from './api-error.js';
export { BearerTokenGuard } from './bearer-token.guard.js';
export { CoreModule, type ProcessContext } from './core.module.js';
export { ErrorResponseFilter } from './error-response.filter.js';
export { type ErrorResponse, STATUS_BY_ERROR_CODE, toErrorResponse } from './error-response.js';
export { HealthController } from './health.controller.js';
export { createHttpApp, type FeatureModules, type HttpAppOptions } from './http-app.js';
export { HttpModule } from './http.module.js';
export { ERROR_BODY_SCHEMA, type OpenApiOptions, setupOpenApi } from './openapi.js';
export {
  type CheckResult,
  type Readiness,
  type ReadinessCheck,
  ReadinessService,
} from './readiness.service.js';
export { EXIT_CONFIG_ERROR, EXIT_FAILURE, runService, type ServiceSpec } from './run-service.js';

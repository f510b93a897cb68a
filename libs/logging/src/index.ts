export { createLogger, LOGGER } from './create-logger.js';
export { LoggingModule } from './logging.module.js';
export { NestPinoLogger } from './nest-pino-logger.js';

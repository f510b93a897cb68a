export { APP_CONFIG, type AppConfig, LOG_LEVELS, type LogLevel } from './app-config.js';
export { ConfigError } from './config-error.js';
export { CONFIG_DEFAULTS, isLoopbackHost, loadConfig } from './load-config.js';

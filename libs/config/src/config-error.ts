/** A configuration value that cannot be used; the message names the variable and the value. */
export class ConfigError extends Error {
  readonly code = 'config_invalid';

  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

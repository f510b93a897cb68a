import { type OpenApiOptions } from '#http';

/** The description of the API's OpenAPI document, shared by `api` and `fleetd`. */
export const API_OPENAPI_INFO: OpenApiOptions = {
  title: 'tdx-fleet',
  description:
    'Fleets of simulated Intel TDX confidential VMs: hosts, VMs, queued reboot and terminate ' +
    'operations, batches. Mutating calls need a bearer token when the server has API_TOKEN set.',
  version: '0.1.0',
};

/**
 * The API offers exactly the kernel switches and strategies the core declares: its published
 * document lists them, and it accepts every declared value and every combination of switches.
 * A declaration and the API cannot drift apart without one of these failing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  ALL_KERNELS,
  COST_MODELS,
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  MAINLINE_KERNEL,
  isFlagSwitch,
  kernelLabel,
} from '#tdx-sim';
import {
  ALL_STRATEGIES,
  REBOOT_STRATEGIES,
  STRATEGIES,
  STRATEGY_ACTIONS,
  TERMINATE_STRATEGIES,
  strategiesOf,
} from '#vmm';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { hostViewSchema } from './host.dto.js';
import { ApiClient, assertError, startApiApp } from './testing/api-test-client.js';

/** The part of a JSON schema these tests read. */
interface Schema {
  type?: string;
  enum?: unknown[];
  default?: unknown;
  description?: string;
  nullable?: boolean;
  properties?: Record<string, Schema>;
  required?: string[];
  allOf?: Schema[];
  anyOf?: Schema[];
  items?: Schema;
  $ref?: string;
}

interface OpenApiDocument {
  paths: Record<
    string,
    Record<
      string,
      {
        requestBody?: { content: Record<string, { schema: Schema }> };
        responses: Record<string, { content?: Record<string, { schema: Schema }> }>;
      }
    >
  >;
}

/** The property at `path` of `schema`. */
function at(schema: Schema | undefined, ...path: string[]): Schema {
  let current = schema;
  for (const key of path) {
    current = current?.properties?.[key];
    assert.ok(current !== undefined, `a property ${path.join('.')}`);
  }
  assert.ok(current !== undefined);
  return current;
}

describe('the API derives its kernel switches and strategies from the declarations', () => {
  let redis: TestRedis;
  let app: TestApp;
  let api: ApiClient;
  let document: OpenApiDocument;

  before(async () => {
    redis = await startTestRedis();
    app = await startApiApp({ redisUrl: redis.url, keyPrefix: 'api-decl', workers: false });
    api = new ApiClient(app.baseUrl);
    const answer = await api.get('/docs-json');
    assert.equal(answer.status, 200);
    document = answer.body as OpenApiDocument;
  });
  after(async () => {
    await app?.close();
    await redis?.stop();
  });

  const body = (path: string): Schema => {
    const schema = document.paths[path]?.['post']?.requestBody?.content['application/json']?.schema;
    assert.ok(schema !== undefined, `POST ${path} documents its body`);
    return schema;
  };
  const answer = (path: string, method: string, status: string): Schema => {
    const schema =
      document.paths[path]?.[method]?.responses[status]?.content?.['application/json']?.schema;
    assert.ok(schema !== undefined, `${method} ${path} documents its ${status}`);
    return schema;
  };

  const strategyEnums: Array<[string, () => Schema, readonly string[]]> = [
    ['the reboot body', () => at(body('/v1/vms/{id}/reboot'), 'strategy'), REBOOT_STRATEGIES],
    [
      'the terminate body',
      () => at(body('/v1/vms/{id}/terminate'), 'strategy'),
      TERMINATE_STRATEGIES,
    ],
    ['the batch body', () => at(body('/v1/batches'), 'strategy'), ALL_STRATEGIES],
    [
      'the batch view',
      () => at(answer('/v1/batches/{id}', 'get', '200'), 'spec', 'strategy'),
      ALL_STRATEGIES,
    ],
    ['the job view', () => at(answer('/v1/jobs/{id}', 'get', '200'), 'strategy'), ALL_STRATEGIES],
  ];
  for (const [where, schema, declared] of strategyEnums) {
    it(`${where} documents the declared strategies, in order`, () => {
      assert.deepEqual(
        schema().enum?.filter((v) => v !== null),
        [...declared],
      );
    });
  }

  it('the reboot and terminate bodies describe each declared strategy', () => {
    for (const action of STRATEGY_ACTIONS) {
      const description = at(body(`/v1/vms/{id}/${action}`), 'strategy').description ?? '';
      const declared: Record<string, { description: string }> = STRATEGIES[action];
      for (const [strategy, { description: what }] of Object.entries(declared)) {
        assert.ok(description.includes(`${strategy}: ${what}`), `${action} ${strategy}`);
      }
    }
  });

  it('the batch body documents the declared actions', () => {
    assert.deepEqual(at(body('/v1/batches'), 'action').enum, [...STRATEGY_ACTIONS]);
  });

  const kernelDocuments: Array<[string, () => Schema, boolean]> = [
    ['the host body', () => at(body('/v1/hosts'), 'kernel'), true],
    ['the host view', () => at(answer('/v1/hosts/{id}', 'get', '200'), 'kernel'), false],
  ];
  for (const [where, schema, withDefaults] of kernelDocuments) {
    it(`${where} documents every declared kernel switch with its values`, () => {
      const kernel = schema();
      assert.deepEqual(Object.keys(kernel.properties ?? {}), [...KERNEL_SWITCH_NAMES]);
      for (const name of KERNEL_SWITCH_NAMES) {
        const property = at(kernel, name);
        const { values, description, mainline } = KERNEL_SWITCHES[name];
        if (isFlagSwitch(name)) assert.equal(property.type, 'boolean', name);
        else assert.deepEqual(property.enum, [...values], name);
        assert.equal(property.description, description, name);
        if (withDefaults) assert.equal(property.default, mainline, name);
      }
    });
  }

  it('the host body documents the declared cost models', () => {
    assert.deepEqual(at(body('/v1/hosts'), 'costModel').enum, [...COST_MODELS]);
  });

  for (const kernel of ALL_KERNELS) {
    it(`creates a host on every declared kernel (${kernelLabel(kernel)})`, async () => {
      const id = `h-${kernelLabel(kernel).replaceAll(/[^a-z0-9]+/gi, '-')}`;
      const created = await api.expect(
        api.post('/v1/hosts', { id, memoryGiB: 8, kernel }),
        201,
        hostViewSchema,
      );
      assert.deepEqual(created.kernel, kernel);
    });
  }

  it('a host created without a kernel runs mainline', async () => {
    const created = await api.expect(
      api.post('/v1/hosts', { id: 'h-default', memoryGiB: 8 }),
      201,
      hostViewSchema,
    );
    assert.deepEqual(created.kernel, MAINLINE_KERNEL);
  });

  for (const name of KERNEL_SWITCH_NAMES) {
    it(`refuses a ${name} the declaration does not have`, async () => {
      const wrong = isFlagSwitch(name) ? 'yes' : 'not-a-value';
      const refused = assertError(
        await api.post('/v1/hosts', { memoryGiB: 8, kernel: { [name]: wrong } }),
        400,
        'invalid_request',
      );
      const issues = (refused.details as { issues: Array<{ location: string; field: string }> })
        .issues;
      assert.ok(
        issues.some((i) => `${i.location}.${i.field}` === `body.kernel.${name}`),
        JSON.stringify(issues),
      );
    });
  }

  for (const action of STRATEGY_ACTIONS) {
    for (const strategy of strategiesOf(action)) {
      it(`takes a ${action} with strategy ${strategy} (an unknown VM: 404, not 400)`, async () => {
        assertError(await api.post(`/v1/vms/nope/${action}`, { strategy }), 404, 'not_found');
      });
    }
  }
});

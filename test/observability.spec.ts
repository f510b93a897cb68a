// What ops see, checked with the real tools: the daemon's processes (api + worker on one fleet,
// fleetd on another) run reboots of every strategy; promtool checks their /metrics text; a real
// Prometheus scrapes them and answers the dashboard's queries; the compose, Prometheus and Grafana
// files parse and name only metrics the daemon exports; headless Chromium opens the queue
// dashboard. promtool, prometheus and chromium come from Debian's packages (.ci/run installs
// them); a missing one fails the test that needs it, with a message saying so.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { findFreePort } from '#redis';
import { REBOOT_STRATEGIES } from '#vmm';
import { parse as parseYaml } from 'yaml';
import { startTestRedis, type TestRedis } from './support/redis.js';
import {
  type ServiceProcess,
  spawnCommand,
  spawnService,
  waitForStatus,
} from './support/service-process.js';
import { makeTempDir } from './support/temp-dir.js';

const TOKEN = 'observability-token-7d1f';
/** The strategies as sorted label values come back from a query. */
const SORTED_STRATEGIES = [...REBOOT_STRATEGIES].sort();
const START_MS = 20_000;
const JOB_MS = 20_000;

/** Every family the issue asks for, besides prom-client's default process metrics. */
const FAMILIES = [
  'tdxfleet_vms',
  'tdxfleet_hkids_in_use',
  'tdxfleet_hkids',
  'tdxfleet_zombie_hkids',
  'tdxfleet_host_memory_bytes',
  'tdxfleet_queue_jobs',
  'tdxfleet_operations_total',
  'tdxfleet_errnos_total',
  'tdxfleet_reclaimed_bytes_total',
  'tdxfleet_reused_bytes_total',
  'tdxfleet_allocated_bytes_total',
  'tdxfleet_reclaim_duration_seconds',
  'tdxfleet_reboot_downtime_seconds',
  'tdxfleet_job_step_duration_seconds',
  'tdxfleet_queue_wait_seconds',
  'tdxfleet_queue_run_seconds',
  'tdxfleet_queue_retries_total',
  'tdxfleet_queue_stalled_total',
  'process_cpu_seconds_total',
  'process_resident_memory_bytes',
  'nodejs_heap_size_used_bytes',
  'nodejs_eventloop_lag_seconds',
  'nodejs_gc_duration_seconds',
];

/** Fails with what to install when a tool is missing. */
function requireTool(command: string, debianPackage: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  if (found.status !== 0) {
    assert.fail(
      `${command} is not on the PATH: it comes from Debian's ${debianPackage} package, which ` +
        `.ci/run installs when missing (apt-get install ${debianPackage})`,
    );
  }
}

function run(
  command: string,
  args: readonly string[],
  input?: string,
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      command,
      args,
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

// --- the Prometheus text format, as far as these checks need it ---

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

interface Scrape {
  readonly text: string;
  /** Family name to its TYPE. */
  readonly types: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
}

function parseScrape(text: string): Scrape {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type?.[1] !== undefined && type[2] !== undefined) types.set(type[1], type[2]);
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    assert.ok(match?.[1] !== undefined && match[3] !== undefined, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      if (pair[1] !== undefined) labels[pair[1]] = pair[2] ?? '';
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return { text, types, samples };
}

/** The family a sample belongs to (a histogram's _bucket, _sum and _count are its own). */
function familyOf(scrape: Scrape, name: string): string | undefined {
  if (scrape.types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const type = scrape.types.get(base);
  return base !== name && (type === 'histogram' || type === 'summary') ? base : undefined;
}

function total(scrape: Scrape, name: string, labels: Record<string, string> = {}): number {
  return scrape.samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

async function scrapeMetrics(baseUrl: string): Promise<Scrape> {
  const response = await fetch(`${baseUrl}/metrics`);
  const text = await response.text();
  assert.equal(response.status, 200, `GET ${baseUrl}/metrics: ${text.slice(0, 300)}`);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseScrape(text);
}

// --- the daemon, through its HTTP API ---

interface DaemonProcess extends ServiceProcess {
  readonly name: string;
  readonly baseUrl: string;
  readonly port: number;
}

async function startDaemon(
  name: 'api' | 'worker' | 'fleetd',
  env: Record<string, string>,
): Promise<DaemonProcess> {
  const port = await findFreePort();
  const portVariable = name === 'worker' ? 'WORKER_PORT' : 'PORT';
  const proc = spawnService(`dist/apps/${name}/src/main.js`, {
    ...env,
    [portVariable]: String(port),
    TIME_SCALE: '0',
    LOG_LEVEL: 'warn',
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  try {
    await waitForStatus(`${baseUrl}/readyz`, 200, START_MS, () => proc.child.exitCode === null);
  } catch (error) {
    proc.killGroup();
    throw new Error(`${name} did not get ready: ${String(error)}\n${proc.stderr()}`, {
      cause: error,
    });
  }
  return { ...proc, name, baseUrl, port };
}

async function stopDaemon(daemon: DaemonProcess | undefined): Promise<void> {
  if (daemon === undefined) return;
  daemon.child.kill('SIGTERM');
  await daemon.exited(10_000).catch(() => undefined);
  daemon.killGroup();
}

async function call(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<unknown> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text) as unknown;
}

interface JobAnswer {
  readonly id: string;
  readonly state: string;
}

async function waitForJob(baseUrl: string, jobId: string): Promise<JobAnswer> {
  const deadline = performance.now() + JOB_MS;
  for (;;) {
    const job = (await call(baseUrl, 'GET', `/v1/jobs/${jobId}`)) as JobAnswer;
    if (['succeeded', 'failed', 'cancelled'].includes(job.state)) return job;
    if (performance.now() > deadline) assert.fail(`job ${jobId} still ${job.state}`);
    await sleep(20);
  }
}

/**
 * On a host with the August 2025 TERMINATE_VM and guest_memfd linking (every strategy) and one
 * HKID (so the cold reboot's new VM waits for it: an errno), boots a VM and reboots it with each
 * strategy in turn.
 */
async function rebootEveryStrategy(baseUrl: string, vmId: string, token?: string): Promise<void> {
  const hostId = `${vmId}-host`;
  await call(
    baseUrl,
    'POST',
    '/v1/hosts',
    {
      id: hostId,
      memoryGiB: 16,
      hkids: 1,
      kernel: { terminateVm: 'aug2025', linkGuestMemfd: true },
    },
    token,
  );
  const created = (await call(
    baseUrl,
    'POST',
    '/v1/vms',
    { id: vmId, hostId, vcpus: 2, memoryGiB: 2 },
    token,
  )) as { job: JobAnswer };
  assert.equal((await waitForJob(baseUrl, created.job.id)).state, 'succeeded');
  await rebootAgain(baseUrl, vmId, token);
}

async function rebootAgain(baseUrl: string, vmId: string, token?: string): Promise<void> {
  for (const strategy of REBOOT_STRATEGIES) {
    const { job } = (await call(
      baseUrl,
      'POST',
      `/v1/vms/${vmId}/reboot`,
      { strategy },
      token,
    )) as { job: JobAnswer };
    assert.equal((await waitForJob(baseUrl, job.id)).state, 'succeeded', `${strategy} reboot`);
  }
}

// --- the dashboard's queries ---

interface DashboardPanel {
  readonly title?: string;
  readonly type: string;
  readonly targets?: ReadonlyArray<{ readonly expr?: string }>;
  readonly panels?: readonly DashboardPanel[];
}

async function dashboardQueries(): Promise<Array<{ panel: string; expr: string }>> {
  const dashboard = JSON.parse(
    await readFile('deploy/grafana/dashboards/tdx-fleet.json', 'utf8'),
  ) as { uid: string; title: string; panels: DashboardPanel[] };
  assert.equal(dashboard.uid, 'tdx-fleet');
  const queries: Array<{ panel: string; expr: string }> = [];
  const visit = (panels: readonly DashboardPanel[]): void => {
    for (const panel of panels) {
      if (panel.type !== 'row') assert.ok((panel.targets?.length ?? 0) > 0, panel.title);
      for (const target of panel.targets ?? []) {
        assert.ok(target.expr !== undefined && target.expr !== '', `${panel.title} has a query`);
        queries.push({ panel: panel.title ?? '?', expr: target.expr });
      }
      visit(panel.panels ?? []);
    }
  };
  visit(dashboard.panels);
  return queries;
}

/** The metric names a PromQL expression mentions (the daemon's prefixes only). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(?:tdxfleet|process|nodejs)_[a-zA-Z0-9_]+\b/g)].map((m) => m[0]);
}

// --- Prometheus ---

async function promQuery(
  baseUrl: string,
  expr: string,
): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const response = await fetch(`${baseUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await response.json()) as {
    status: string;
    error?: string;
    data?: {
      resultType: string;
      result: Array<{ metric: Record<string, string>; value: [number, string] }>;
    };
  };
  assert.equal(body.status, 'success', `${expr}: ${body.error ?? ''}`);
  return body.data?.resultType === 'vector' ? (body.data.result ?? []) : [];
}

async function eventually<T>(
  what: string,
  ms: number,
  attempt: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = performance.now() + ms;
  let last = '';
  for (;;) {
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (error) {
      last = `: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (performance.now() > deadline) assert.fail(`${what} within ${ms} ms${last}`);
    await sleep(250);
  }
}

// --- Chromium ---

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  // Nothing but loopback: any other name resolves to nowhere.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
  '--window-size=1280,800',
  // Let the page's scripts fetch the queues before the DOM or the screenshot is taken.
  '--virtual-time-budget=10000',
];

async function chromium(profileDir: string, args: readonly string[]): Promise<string> {
  const result = await run('chromium', [
    ...CHROMIUM_FLAGS,
    `--user-data-dir=${profileDir}`,
    ...args,
  ]);
  assert.equal(result.code, 0, `chromium ${args.join(' ')}: ${result.stderr.slice(-2000)}`);
  return result.stdout;
}

function visibleText(html: string): string {
  return html
    .replace(/<script\b[\s\S]*?<\/script>/gi, ' ')
    .replace(/<style\b[\s\S]*?<\/style>/gi, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ');
}

describe('observability', () => {
  let redis: TestRedis;
  let api: DaemonProcess | undefined;
  let worker: DaemonProcess | undefined;
  let fleetd: DaemonProcess | undefined;
  let temp: Awaited<ReturnType<typeof makeTempDir>>;

  before(async () => {
    temp = await makeTempDir('observability');
    redis = await startTestRedis();
    // The compose topology (API and a worker apart, with a token) and the embedded default
    // (fleetd, with per-host gauges), each on its own fleet.
    const split = { REDIS_URL: redis.url, KEY_PREFIX: 'obs-split', API_TOKEN: TOKEN };
    [api, worker, fleetd] = await Promise.all([
      startDaemon('api', split),
      startDaemon('worker', split),
      startDaemon('fleetd', {
        REDIS_URL: redis.url,
        KEY_PREFIX: 'obs-embedded',
        METRICS_HOST_LABEL: 'true',
      }),
    ]);
    await Promise.all([
      rebootEveryStrategy(api.baseUrl, 'vm-split', TOKEN),
      rebootEveryStrategy(fleetd.baseUrl, 'vm-embedded'),
    ]);
  });

  after(async () => {
    await Promise.all([stopDaemon(api), stopDaemon(worker), stopDaemon(fleetd)]);
    await redis?.stop();
    await temp?.remove();
  });

  function daemons(): DaemonProcess[] {
    assert.ok(api && worker && fleetd, 'the daemon processes started');
    return [api, worker, fleetd];
  }

  it('promtool check metrics passes on the /metrics of api, worker and fleetd', async () => {
    requireTool('promtool', 'prometheus');
    for (const daemon of daemons()) {
      const scrape = await scrapeMetrics(daemon.baseUrl);
      const checked = await run('promtool', ['check', 'metrics'], scrape.text);
      assert.equal(
        checked.code,
        0,
        `promtool check metrics on ${daemon.name}: ${checked.stdout}${checked.stderr}`,
      );
    }
  });

  it('every family is there with samples in every process, fed where the workers run', async () => {
    // A job's record says succeeded a moment before its worker reports the end of the job to the
    // queue and to the metrics: the scrapes are read again until they agree.
    await eventually('the scrapes show the run', 10_000, async () => {
      const scrapes = new Map<string, Scrape>();
      for (const daemon of daemons()) scrapes.set(daemon.name, await scrapeMetrics(daemon.baseUrl));
      for (const [name, scrape] of scrapes) {
        for (const family of FAMILIES) {
          assert.ok(scrape.types.has(family), `${name} exports ${family}`);
          assert.ok(
            scrape.samples.some((s) => familyOf(scrape, s.name) === family),
            `${name} has samples of ${family}`,
          );
        }
      }
      for (const name of ['worker', 'fleetd']) {
        const scrape = scrapes.get(name);
        assert.ok(scrape);
        for (const strategy of REBOOT_STRATEGIES) {
          assert.equal(
            total(scrape, 'tdxfleet_reboot_downtime_seconds_count', { strategy }),
            1,
            `${name}: one ${strategy} reboot timed`,
          );
          assert.equal(
            total(scrape, 'tdxfleet_operations_total', {
              action: 'reboot',
              strategy,
              outcome: 'succeeded',
            }),
            1,
          );
        }
        assert.ok(total(scrape, 'tdxfleet_reused_bytes_total') > 0, `${name}: reuse kept memory`);
        assert.ok(total(scrape, 'tdxfleet_allocated_bytes_total') > 0);
        assert.ok(total(scrape, 'tdxfleet_reclaimed_bytes_total') > 0);
        assert.ok(total(scrape, 'tdxfleet_reclaim_duration_seconds_count') > 0);
        assert.ok(
          total(scrape, 'tdxfleet_errnos_total', {
            operation: 'KVM_TDX_INIT_VM',
            errno: 'ENOSPC',
          }) > 0,
          `${name}: the cold reboot waited for the one HKID`,
        );
        assert.ok(total(scrape, 'tdxfleet_queue_wait_seconds_count', { queue: 'operations' }) >= 4);
        assert.ok(total(scrape, 'tdxfleet_queue_run_seconds_count', { queue: 'operations' }) >= 4);
      }
      // The API runs no operation: its counters stay at zero, its gauges read the fleet.
      const apiScrape = scrapes.get('api');
      assert.ok(apiScrape);
      assert.equal(total(apiScrape, 'tdxfleet_operations_total'), 0);
      assert.equal(total(apiScrape, 'tdxfleet_vms', { state: 'running' }), 1);
      assert.equal(total(apiScrape, 'tdxfleet_hkids'), 1);
      assert.equal(total(apiScrape, 'tdxfleet_hkids_in_use'), 1);
      assert.ok(total(apiScrape, 'tdxfleet_host_memory_bytes', { use: 'guest_private' }) > 0);
      assert.equal(
        total(apiScrape, 'tdxfleet_queue_jobs', { queue: 'operations', state: 'completed' }),
        4,
      );
      assert.ok(apiScrape.samples.every((s) => s.labels['host'] === undefined));
      // fleetd has METRICS_HOST_LABEL=true: its fleet gauges are per host, nothing else is.
      const fleetdScrape = scrapes.get('fleetd');
      assert.ok(fleetdScrape);
      assert.equal(total(fleetdScrape, 'tdxfleet_hkids_in_use', { host: 'vm-embedded-host' }), 1);
      for (const sample of fleetdScrape.samples) {
        const family = familyOf(fleetdScrape, sample.name) ?? sample.name;
        const perHost = [
          'tdxfleet_vms',
          'tdxfleet_hkids_in_use',
          'tdxfleet_hkids',
          'tdxfleet_zombie_hkids',
          'tdxfleet_host_memory_bytes',
        ].includes(family);
        assert.equal(sample.labels['host'] !== undefined, perHost, `${sample.name} host label`);
      }
      return true;
    });
  });

  it('the Prometheus config passes promtool check config and finds api and workers', async () => {
    requireTool('promtool', 'prometheus');
    const checked = await run('promtool', ['check', 'config', 'deploy/prometheus.yml']);
    assert.equal(checked.code, 0, `${checked.stdout}${checked.stderr}`);
    const config = parseYaml(await readFile('deploy/prometheus.yml', 'utf8')) as {
      scrape_configs: Array<{
        job_name: string;
        static_configs?: Array<{ targets: string[] }>;
        dns_sd_configs?: Array<{ names: string[]; type: string; port: number }>;
      }>;
    };
    const jobs = new Map(config.scrape_configs.map((c) => [c.job_name, c]));
    assert.deepEqual(jobs.get('tdxfleet-api')?.static_configs?.[0]?.targets, ['api:3000']);
    assert.deepEqual(jobs.get('tdxfleet-worker')?.dns_sd_configs, [
      { names: ['worker'], type: 'A', port: 3001, refresh_interval: '15s' },
    ]);
  });

  it('the compose file runs redis, api, scalable workers, prometheus and grafana, publishing only the API and Grafana on loopback', async () => {
    const compose = parseYaml(await readFile('docker-compose.yml', 'utf8'), { merge: true }) as {
      services: Record<
        string,
        {
          image?: string;
          build?: unknown;
          command?: string[];
          environment?: Record<string, string>;
          ports?: string[];
          container_name?: string;
          volumes?: string[];
        }
      >;
    };
    const services = compose.services;
    assert.deepEqual(Object.keys(services).sort(), [
      'api',
      'grafana',
      'prometheus',
      'redis',
      'worker',
    ]);
    assert.deepEqual(services['redis']?.command?.slice(1), [
      '--appendonly',
      'yes',
      '--maxmemory-policy',
      'noeviction',
    ]);
    const published = Object.entries(services)
      .filter(([, s]) => (s.ports ?? []).length > 0)
      .map(([name, s]) => [name, s.ports]);
    assert.deepEqual(published, [
      ['api', ['${API_BIND:-127.0.0.1}:${API_PORT:-3000}:3000']],
      ['grafana', ['${GRAFANA_BIND:-127.0.0.1}:${GRAFANA_PORT:-3300}:3000']],
    ]);
    for (const name of ['api', 'worker']) {
      const service = services[name];
      assert.ok(service?.build !== undefined, `${name} is built from the Dockerfile`);
      assert.equal(service.environment?.['HOST'], '0.0.0.0');
      assert.equal(service.environment?.['REDIS_URL'], 'redis://redis:6379');
      // 0.0.0.0 needs a token: compose refuses to start without one.
      assert.match(service.environment?.['API_TOKEN'] ?? '', /^\$\{API_TOKEN:\?/);
    }
    assert.deepEqual(services['api']?.command, ['node', 'dist/apps/api/src/main.js']);
    assert.deepEqual(services['worker']?.command, ['node', 'dist/apps/worker/src/main.js']);
    assert.equal(services['worker']?.environment?.['WORKER_PORT'], '3001');
    assert.equal(services['worker']?.container_name, undefined, 'workers scale');
    // What the containers mount from the repository exists.
    for (const service of Object.values(services)) {
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0] ?? '';
        if (source.startsWith('./')) await stat(source);
      }
    }
    assert.ok((await stat('Dockerfile')).isFile());
  });

  it('the Grafana provisioning parses and points at Prometheus and the dashboards', async () => {
    const datasources = parseYaml(
      await readFile('deploy/grafana/provisioning/datasources/prometheus.yml', 'utf8'),
    ) as { apiVersion: number; datasources: Array<Record<string, unknown>> };
    assert.equal(datasources.apiVersion, 1);
    assert.deepEqual(
      datasources.datasources.map((d) => [d['type'], d['uid'], d['url']]),
      [['prometheus', 'prometheus', 'http://prometheus:9090']],
    );
    const providers = parseYaml(
      await readFile('deploy/grafana/provisioning/dashboards/tdx-fleet.yml', 'utf8'),
    ) as { apiVersion: number; providers: Array<{ type: string; options: { path: string } }> };
    assert.equal(providers.apiVersion, 1);
    assert.deepEqual(
      providers.providers.map((p) => [p.type, p.options.path]),
      [['file', '/etc/grafana/dashboards']],
    );
    const dashboard = JSON.parse(
      await readFile('deploy/grafana/dashboards/tdx-fleet.json', 'utf8'),
    ) as { panels: Array<{ datasource?: { uid?: string }; type: string }> };
    for (const panel of dashboard.panels.filter((p) => p.type !== 'row')) {
      assert.equal(panel.datasource?.uid, 'prometheus');
    }
  });

  it('every dashboard query names only metrics the daemon exports', async () => {
    const scrapes = await Promise.all(daemons().map((d) => scrapeMetrics(d.baseUrl)));
    const queries = await dashboardQueries();
    assert.ok(queries.length >= 20, `${queries.length} queries`);
    const mentioned = new Set<string>();
    for (const { panel, expr } of queries) {
      const names = metricNames(expr);
      assert.ok(names.length > 0, `${panel}: ${expr} names a metric of the daemon`);
      for (const name of names) {
        mentioned.add(name);
        assert.ok(
          scrapes.some((scrape) => familyOf(scrape, name) !== undefined),
          `${panel}: ${name} is not exported by the daemon (${expr})`,
        );
      }
    }
    for (const family of FAMILIES.filter((f) => f.startsWith('tdxfleet_'))) {
      assert.ok(
        [...mentioned].some((name) => name === family || name.startsWith(`${family}_`)),
        `the dashboard shows ${family}`,
      );
    }
  });

  it('a real Prometheus scrapes the daemon and answers the dashboard and downtime queries', async () => {
    requireTool('prometheus', 'prometheus');
    const [apiProcess, workerProcess, fleetdProcess] = daemons();
    assert.ok(apiProcess && workerProcess && fleetdProcess);
    const port = await findFreePort();
    const dir = join(temp.path, 'prometheus');
    const config = join(temp.path, 'prometheus.yml');
    const target = (d: DaemonProcess) => `'127.0.0.1:${d.port}'`;
    await writeFile(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: tdxfleet-api',
        `    static_configs: [{ targets: [${target(apiProcess)}] }]`,
        '  - job_name: tdxfleet-worker',
        `    static_configs: [{ targets: [${target(workerProcess)}] }]`,
        '  - job_name: tdxfleet-fleetd',
        `    static_configs: [{ targets: [${target(fleetdProcess)}] }]`,
        '',
      ].join('\n'),
    );
    const server = spawnCommand(
      'prometheus',
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${dir}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      {},
    );
    const baseUrl = `http://127.0.0.1:${port}`;
    try {
      await waitForStatus(
        `${baseUrl}/-/ready`,
        200,
        START_MS,
        () => server.child.exitCode === null,
      );
      await eventually('every target is scraped', 20_000, async () => {
        const up = await promQuery(baseUrl, 'up');
        return up.length === 3 && up.every((s) => s.value[1] === '1') ? up : undefined;
      });
      // More reboots while Prometheus watches, so that rates and quantiles have data.
      await Promise.all([
        rebootAgain(apiProcess.baseUrl, 'vm-split', TOKEN),
        rebootAgain(fleetdProcess.baseUrl, 'vm-embedded'),
      ]);
      const downtime = await eventually('reboot downtime by strategy', 20_000, async () => {
        const series = await promQuery(
          baseUrl,
          'sum by (job, strategy) (tdxfleet_reboot_downtime_seconds_count)',
        );
        const seen = series.filter((s) => Number(s.value[1]) === 2);
        return seen.length === REBOOT_STRATEGIES.length * 2 ? series : undefined;
      });
      const byJob = (job: string) =>
        downtime
          .filter((s) => s.metric['job'] === job)
          .map((s) => s.metric['strategy'])
          .sort();
      assert.deepEqual(byJob('tdxfleet-worker'), SORTED_STRATEGIES);
      assert.deepEqual(byJob('tdxfleet-fleetd'), SORTED_STRATEGIES);
      assert.deepEqual(byJob('tdxfleet-api'), SORTED_STRATEGIES, 'at zero');
      const fleetWide = await promQuery(
        baseUrl,
        'sum by (strategy) (tdxfleet_reboot_downtime_seconds_count)',
      );
      assert.deepEqual(
        fleetWide.map((s) => [s.metric['strategy'], s.value[1]]).sort(),
        SORTED_STRATEGIES.map((strategy) => [strategy, '4']),
      );
      // Every query of the dashboard is valid PromQL and has data.
      for (const { panel, expr } of await dashboardQueries()) {
        const series = await promQuery(baseUrl, expr.replaceAll('$__rate_interval', '1m'));
        assert.ok(series.length > 0, `${panel}: ${expr} returns no series`);
      }
      const p50 = await promQuery(
        baseUrl,
        'histogram_quantile(0.5, sum by (strategy, le) (rate(tdxfleet_reboot_downtime_seconds_bucket[1m])))',
      );
      assert.deepEqual(p50.map((s) => s.metric['strategy']).sort(), SORTED_STRATEGIES);
      for (const s of p50) assert.ok(Number(s.value[1]) > 0, `p50 ${s.metric['strategy']}`);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited(10_000).catch(() => server.killGroup());
      server.killGroup();
    }
  });

  it('the queue dashboard lists the daemon queues in headless Chromium, and refuses without the token', async () => {
    requireTool('chromium', 'chromium');
    const [apiProcess] = daemons();
    assert.ok(apiProcess);
    const refused = await fetch(`${apiProcess.baseUrl}/admin/queues`);
    assert.equal(refused.status, 401);
    const refusal = (await refused.json()) as { error: { code: string } };
    assert.equal(refusal.error.code, 'unauthorized');

    const page = `${apiProcess.baseUrl}/admin/queues`;
    const anonymous = visibleText(
      await chromium(join(temp.path, 'chromium-anonymous'), ['--dump-dom', page]),
    );
    assert.match(anonymous, /"code":\s*"unauthorized"/);
    assert.doesNotMatch(anonymous, /operations/);

    const profile = join(temp.path, 'chromium');
    const dom = visibleText(await chromium(profile, ['--dump-dom', `${page}?token=${TOKEN}`]));
    assert.match(dom, /\boperations\b/, dom.slice(0, 2000));
    assert.match(dom, /\bbatches\b/, dom.slice(0, 2000));
    assert.doesNotMatch(dom, /unauthorized/);
    const screenshot = join(temp.path, 'queue-dashboard.png');
    await chromium(profile, [
      `--screenshot=${screenshot}`,
      `${page}/queue/operations?token=${TOKEN}`,
    ]);
    const png = await readFile(screenshot);
    assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
    // OBSERVABILITY_SCREENSHOT=docs/queue-dashboard.png keeps the picture (for the README).
    const keep = process.env['OBSERVABILITY_SCREENSHOT'];
    if (keep !== undefined && keep !== '') await copyFile(screenshot, keep);
  });
});

// Checks of deploy/ (issue 9) with the real tools: nginx -t, systemd-analyze verify, promtool,
// kubernetes-validate (Kubernetes JSON schemas bundled in the PyPI package, offline),
// check-jsonschema (the compose-spec schema) and hadolint. The Python tools come from
// scripts/deploy-tools (./scripts/test runs it); nginx, promtool and systemd-analyze from
// Debian's packages (scripts/setup installs them). A missing tool fails the check, never skips it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, relative } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { BINARY } from './gateway.js';
import { nginxBinary, ROOT, SHIPPED_NGINX_CONF, testNginxConf } from './nginx.js';

const DEPLOY = join(ROOT, 'deploy');
const TOOLS = process.env.STATGATE_DEPLOY_TOOLS ?? join(ROOT, 'target', 'deploy-tools', 'venv', 'bin');

const scratch = mkdtempSync(join(tmpdir(), 'statgate-deploy-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function pythonTool(name: string): string {
  const path = join(TOOLS, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: run scripts/deploy-tools (./scripts/test does)`);
  return path;
}

function systemTool(name: string, debianPackage: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin'];
  const found = dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
  if (found === undefined) throw new Error(`${name} is missing: apt-get install ${debianPackage} (./scripts/setup installs it as root)`);
  return found;
}

function run(command: string, args: string[], cwd = ROOT): { status: number | null; output: string } {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  if (result.error) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

function yamlFile(path: string): any {
  return parse(readFileSync(path, 'utf8'), { merge: true });
}

/** The value of `name` in a Kubernetes container's env list. */
function envValue(container: any, name: string): string | undefined {
  return container.env.find((entry: { name: string }) => entry.name === name)?.value;
}

/** A duration such as `30s` or `20s` in seconds. */
function seconds(duration: string): number {
  const match = /^(\d+)s$/.exec(duration);
  if (!match) throw new Error(`unexpected duration ${duration}`);
  return Number(match[1]);
}

test('every YAML and JSON file under deploy/ parses', () => {
  const files = walk(DEPLOY);
  const yamls = files.filter((file) => /\.ya?ml$/.test(file));
  const jsons = files.filter((file) => file.endsWith('.json'));
  expect(yamls.length).toBeGreaterThanOrEqual(12);
  expect(jsons.length).toBeGreaterThanOrEqual(1);
  for (const file of yamls) {
    const documents = parseAllDocuments(readFileSync(file, 'utf8'), { merge: true });
    const list = Array.isArray(documents) ? documents : [documents];
    expect(list.length, relative(ROOT, file)).toBeGreaterThan(0);
    for (const document of list) {
      expect(document.errors.map(String), relative(ROOT, file)).toEqual([]);
      expect(document.toJS(), relative(ROOT, file)).toBeTypeOf('object');
    }
  }
  for (const file of jsons) expect(() => JSON.parse(readFileSync(file, 'utf8')), relative(ROOT, file)).not.toThrow();
});

describe('nginx', () => {
  test('nginx -t passes on the shipped config (its upstream hosts swapped for loopback ports)', () => {
    nginxBinary();
    // The shipped upstreams are compose service names, which do not resolve here; the
    // rendered copy changes only those, the listen address and the temp paths.
    const { status, output } = testNginxConf([18081, 18082]);
    expect(output).toContain('test is successful');
    expect(status, output).toBe(0);
  });

  test('its upstream servers are the statgate services of compose.yaml', () => {
    const upstreams = [...readFileSync(SHIPPED_NGINX_CONF, 'utf8').matchAll(/^\s*server ([\w-]+):8080\b/gm)].map((m) => m[1]);
    const compose = yamlFile(join(DEPLOY, 'compose.yaml'));
    const statgates = Object.keys(compose.services).filter((name) => compose.services[name].image === 'statgate:local');
    expect(upstreams.sort()).toEqual(statgates.sort());
    expect(upstreams.length).toBe(2);
    expect(compose.services.nginx.volumes).toContain('./nginx/nginx.conf:/etc/nginx/nginx.conf:ro');
  });
});

test('systemd-analyze verify passes on the unit', () => {
  const systemdAnalyze = systemTool('systemd-analyze', 'systemd');
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: cargo build --bin statgate`);
  // verify checks that ExecStart is executable: point it at the built binary, since
  // /usr/local/bin/statgate is where an installation puts it, not this machine.
  const shipped = readFileSync(join(DEPLOY, 'systemd', 'statgate.service'), 'utf8');
  expect(shipped).toMatch(/^ExecStart=\/usr\/local\/bin\/statgate serve$/m);
  const dir = join(scratch, 'systemd');
  mkdirSync(dir, { recursive: true });
  const unit = join(dir, 'statgate.service');
  writeFileSync(unit, shipped.replace(/^ExecStart=\/usr\/local\/bin\/statgate /m, `ExecStart=${BINARY} `));
  const { status, output } = run(systemdAnalyze, ['verify', unit]);
  expect(output.split('\n').filter((line) => line.includes('statgate'))).toEqual([]);
  expect(status, output).toBe(0);
});

describe('Prometheus and Grafana', () => {
  test('promtool accepts the scrape config and the alert rules, and the rules pass their unit tests', () => {
    const promtool = systemTool('promtool', 'prometheus');
    const cwd = join(DEPLOY, 'prometheus');
    for (const args of [
      ['check', 'config', 'prometheus.yml'],
      ['check', 'rules', 'alerts.yml'],
      ['test', 'rules', 'alerts.test.yml'],
    ]) {
      const { status, output } = run(promtool, args, cwd);
      expect(status, `promtool ${args.join(' ')}\n${output}`).toBe(0);
    }
  });

  test('every query of the Grafana dashboard is valid PromQL', () => {
    const promtool = systemTool('promtool', 'prometheus');
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana', 'statgate-dashboard.json'), 'utf8'));
    const exprs: string[] = dashboard.panels.flatMap((panel: { targets?: Array<{ expr: string }> }) =>
      (panel.targets ?? []).map((target) => target.expr),
    );
    expect(exprs.length).toBeGreaterThanOrEqual(20);
    // promtool parses recording rules' expressions; Grafana's variables become literals.
    const rules = exprs.map((expr, i) => ({
      record: `dashboard:query_${i}`,
      expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*').replaceAll('$instance', '.*'),
    }));
    const file = join(scratch, 'dashboard-rules.yml');
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
    const { status, output } = run(promtool, ['check', 'rules', file]);
    expect(status, output).toBe(0);
  });
});

describe('Kubernetes', () => {
  const dir = join(DEPLOY, 'kubernetes');

  test('the manifests validate against the Kubernetes 1.37 and 1.29 schemas (kubernetes-validate --strict)', () => {
    const validate = pythonTool('kubernetes-validate');
    const kustomization = yamlFile(join(dir, 'kustomization.yaml'));
    const manifests: string[] = [...kustomization.resources, 'secret.example.yaml'];
    for (const file of manifests) expect(existsSync(join(dir, file)), file).toBe(true);
    // Every manifest here is validated, except the kustomization itself and the PodMonitor
    // (a Prometheus Operator CRD, for which the tool has no schema).
    const others = readdirSync(dir).filter((f) => f.endsWith('.yaml') && !manifests.includes(f));
    expect(others.sort()).toEqual(['kustomization.yaml', 'podmonitor.yaml']);
    for (const version of ['1.37.0', '1.29.0']) {
      const { status, output } = run(validate, ['--strict', '-k', version, ...manifests], dir);
      expect(status, output).toBe(0);
      expect(output.match(/passed for resource/g)?.length, output).toBe(manifests.length);
    }
  }, 60_000);

  test('probes and shutdown timings match the gateway: readiness /readyz, liveness /healthz, grace > preStop + drain', () => {
    const deployment = yamlFile(join(dir, 'deployment.yaml'));
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    expect(container.livenessProbe.httpGet.path).toBe('/healthz');
    const preStop: string[] = container.lifecycle.preStop.exec.command;
    expect(preStop[0]).toBe('sleep');
    const drain = Number(envValue(container, 'STATGATE_SHUTDOWN_GRACE_SECS'));
    expect(drain).toBeGreaterThan(0);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(Number(preStop[1]) + drain + 5);

    const compose = yamlFile(join(DEPLOY, 'compose.yaml'));
    for (const name of ['statgate-1', 'statgate-2']) {
      const service = compose.services[name];
      expect(seconds(service.stop_grace_period)).toBeGreaterThanOrEqual(Number(service.environment.STATGATE_SHUTDOWN_GRACE_SECS) + 5);
    }
    const unit = readFileSync(join(DEPLOY, 'systemd', 'statgate.service'), 'utf8');
    const unitDrain = Number(/^Environment=STATGATE_SHUTDOWN_GRACE_SECS=(\d+)$/m.exec(unit)?.[1]);
    expect(unitDrain).toBeGreaterThan(0);
    expect(seconds(/^TimeoutStopSec=(\S+)$/m.exec(unit)?.[1] ?? '')).toBeGreaterThanOrEqual(unitDrain + 5);
  });

  test('the registry ConfigMap holds examples/blog/queries/, and the init container lays it out as statgate loads it', () => {
    const queriesDir = join(ROOT, 'examples', 'blog', 'queries');
    const queries = new Map(
      walk(queriesDir)
        .filter((file) => file.endsWith('.toml'))
        .map((file) => [relative(queriesDir, file), readFileSync(file, 'utf8')]),
    );
    const configMap = yamlFile(join(dir, 'registry-configmap.yaml'));
    const data = new Map<string, string>(Object.entries(configMap.data));
    const stale = 'deploy/kubernetes/registry-configmap.yaml differs from examples/blog/queries/: run deploy/kubernetes/sync-registry';
    // A block scalar keeps one final newline.
    const normal = (text: string) => text.replace(/\n*$/, '\n');
    expect([...data.keys()].sort(), stale).toEqual([...queries.keys()].map((path) => path.replaceAll('/', '__')).sort());
    for (const [path, text] of queries) expect(normal(data.get(path.replaceAll('/', '__')) ?? ''), `${stale} (${path})`).toBe(normal(text));

    // Run the init container's own script on a copy of the ConfigMap volume.
    const deployment = yamlFile(join(dir, 'deployment.yaml'));
    const [init] = deployment.spec.template.spec.initContainers;
    expect(init.command).toEqual(['/bin/sh', '-c']);
    const source = join(scratch, 'registry-src');
    const target = join(scratch, 'registry');
    mkdirSync(source, { recursive: true });
    mkdirSync(target, { recursive: true });
    for (const [key, text] of data) writeFileSync(join(source, key), text);
    const script: string = init.args[0].replaceAll('/registry-src', source).replaceAll('/registry/', `${target}/`);
    const { status, output } = run('/bin/sh', ['-c', script]);
    expect(status, output).toBe(0);
    const laidOut = walk(target).map((file) => relative(target, file)).sort();
    expect(laidOut).toEqual([...queries.keys()].sort());
    for (const path of laidOut) expect(normal(readFileSync(join(target, path), 'utf8'))).toBe(normal(queries.get(path) ?? ''));
    const [container] = deployment.spec.template.spec.containers;
    expect(envValue(container, 'STATGATE_QUERIES')).toBe(
      container.volumeMounts.find((mount: { name: string }) => mount.name === 'registry').mountPath,
    );
  });
});

test('compose.yaml validates against the compose-spec schema, and both nodes share image, secrets and limits', () => {
  const checkJsonschema = pythonTool('check-jsonschema');
  const { status, output } = run(checkJsonschema, ['--builtin-schema', 'vendor.compose-spec', join(DEPLOY, 'compose.yaml')]);
  expect(status, output).toBe(0);
  const compose = yamlFile(join(DEPLOY, 'compose.yaml'));
  const [one, two] = [compose.services['statgate-1'], compose.services['statgate-2']];
  expect(one).toEqual(two);
  for (const name of ['DATABASE_URL', 'STATGATE_JWT_SECRET', 'STATGATE_TOKEN_SECRET']) expect(one.environment[name], name).toMatch(/\$\{\w+:\?/);
  expect(one.environment.STATGATE_LISTEN).toBe('0.0.0.0:8080');
  expect(one.healthcheck.test.join(' ')).toContain('/readyz');
});

test('the Dockerfile passes hadolint, and .dockerignore keeps what the build needs', () => {
  const hadolint = pythonTool('hadolint');
  const { status, output } = run(hadolint, ['--no-color', join(DEPLOY, 'Dockerfile')]);
  expect(status, output).toBe(0);
  const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  expect(dockerfile).toMatch(/^USER 10001:10001$/m);
  expect(dockerfile).toMatch(/^HEALTHCHECK .*\n\s+CMD .*\/healthz/m);
  expect(dockerfile).toContain('STATGATE_LISTEN=0.0.0.0:8080');
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'));
  expect(ignored).toEqual(expect.arrayContaining(['target/', '.statgate/', '**/node_modules/']));
  // The crate's build reads these (Cargo.toml names the benches, tests and the bench/ workspace member; build.rs; sqlx::migrate!
  // reads migrations/; the image copies examples/blog/queries/; sqlx::migrate! reads examples/blog/migrations/).
  for (const needed of ['src', 'migrations', 'examples', 'benches', 'bench', 'build.rs', 'tests', 'Cargo.toml', 'Cargo.lock']) {
    expect(ignored.filter((pattern) => pattern.replace(/\/$/, '') === needed), needed).toEqual([]);
  }
});

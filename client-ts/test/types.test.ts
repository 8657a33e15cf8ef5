import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';

const run = promisify(execFile);
const here = import.meta.dirname;

test('a wrong query name or arg fails tsc --noEmit on a fixture file', async () => {
  const tsc = resolve(here, '..', 'node_modules', 'typescript', 'bin', 'tsc');
  const fixture = resolve(here, 'types', 'fail-wrong-arg.ts');
  const failure = await run(process.execPath, [
    tsc, '--noEmit', '--strict', '--skipLibCheck', '--target', 'ES2022', '--module', 'ESNext',
    '--moduleResolution', 'Bundler', '--lib', 'ES2022,DOM', '--types', 'node', fixture,
  ]).then(
    () => undefined,
    (error: { stdout: string }) => error.stdout,
  );
  expect(failure, 'the fixture compiled, so wrong calls are not caught').toBeDefined();
  expect(failure).toMatch(/fail-wrong-arg\.ts\(6,.*'post_id' does not exist/);
  expect(failure).toMatch(/fail-wrong-arg\.ts\(7,.*"posts\/stats\/nope"/);
}, 60_000);

test("the demo page's bundle is the current build of the client", () => {
  const built = readFileSync(resolve(here, '..', 'dist', 'statgate-client.browser.js'), 'utf8');
  const served = readFileSync(resolve(here, '..', '..', 'src', 'demo', 'assets', 'statgate-client.js'), 'utf8');
  expect(served, 'src/demo/assets/statgate-client.js is stale: run `npm run bundle` in client-ts').toBe(built);
});

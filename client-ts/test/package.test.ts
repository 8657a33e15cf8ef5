// The published package, as a user gets it: `npm pack` of a copy of this folder (its prepack
// script builds), installed into a fresh project, then used from Node (import and require,
// against the real gateway), type-checked by tsc from an ES module and a CommonJS file, and
// its browser bundle run in headless Chromium (/usr/bin/chromium, or CHROMIUM=...).
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Gateway, mintJwt } from './gateway.js';

const run = promisify(execFile);
const HERE = resolve(import.meta.dirname, '..');
const MODULES = join(HERE, 'node_modules');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

let scratch: string;
let consumer: string;
let packed: { files: Array<{ path: string }>; filename: string; size: number; unpackedSize: number };
let gateway: Gateway;
let post: number;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'statgate-package-'));
  // A copy of the sources (no dist/), so the pack proves its own build and leaves ours alone.
  const source = join(scratch, 'client-ts');
  for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsup.config.ts', 'README.md', 'src']) {
    cpSync(join(HERE, entry), join(source, entry), { recursive: true });
  }
  symlinkSync(MODULES, join(source, 'node_modules'));
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', scratch], { cwd: source });
  // The prepack build prints to the same stdout; the JSON report comes last.
  const report = stdout.slice(stdout.search(/^\[$/m));
  packed = (JSON.parse(report) as (typeof packed)[])[0] as typeof packed;

  consumer = join(scratch, 'consumer');
  mkdirSync(consumer);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(scratch, packed.filename)], { cwd: consumer });
  // The consumer's own dependencies: React (an optional peer) and its types, ws for Node 20.
  for (const name of ['react', '@types/react', 'ws']) {
    mkdirSync(join(consumer, 'node_modules', name, '..'), { recursive: true });
    symlinkSync(join(MODULES, name), join(consumer, 'node_modules', name));
  }
  cpSync(join(HERE, 'generated', 'example-queries.d.ts'), join(consumer, 'statgate-queries.d.ts'));

  gateway = await Gateway.start();
  const db = await gateway.db();
  const inserted = await db.query("insert into posts (title, author_id) values ('package test', 'test') returning id");
  post = Number(inserted.rows[0].id);
  await db.query("insert into comments (post_id, author_id, body) values ($1, 'test', 'one')", [post]);
  await db.end();
}, 240_000);

afterAll(async () => {
  await gateway?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test('the tarball holds the builds, their declarations and the README, nothing else', () => {
  const files = packed.files.map((file) => file.path).sort();
  const chunks = files.filter((file) => /^dist\/chunk-[\w-]+\.js$/.test(file));
  expect(files.filter((file) => !chunks.includes(file))).toEqual([
    'README.md',
    'dist/index.cjs',
    'dist/index.d.cts',
    'dist/index.d.ts',
    'dist/index.js',
    'dist/react.cjs',
    'dist/react.d.cts',
    'dist/react.d.ts',
    'dist/react.js',
    'dist/statgate-client.browser.js',
    'package.json',
  ]);
  const manifest = JSON.parse(readFileSync(join(consumer, 'node_modules', '@statgate', 'client', 'package.json'), 'utf8'));
  expect(manifest.sideEffects).toBe(false);
  expect(manifest.scripts.prepack).toBeDefined();
  expect(manifest.peerDependenciesMeta.react.optional).toBe(true);
  expect(manifest.dependencies).toBeUndefined();
});

/** A script in the consumer that subscribes through the installed package and prints the value. */
const program = (load: string) => `${load}
const client = createClient({ url: process.env.GATEWAY, getAuthToken: () => process.env.JWT, WebSocket });
const value = await client.subscribe('posts/stats/commentCount', { postId: Number(process.env.POST) }).ready;
client.close();
console.log(JSON.stringify({ value, useStat: typeof useStat }));
`;

test.each([
  [
    'import',
    'esm.mjs',
    program(`import { createClient } from '@statgate/client';
import { useStat } from '@statgate/client/react';
import WebSocket from 'ws';`),
  ],
  [
    'require',
    'cjs.cjs',
    `(async () => {${program(`const { createClient } = require('@statgate/client');
const { useStat } = require('@statgate/client/react');
const WebSocket = require('ws');`)}})().catch((error) => { console.error(error); process.exit(1); });`,
  ],
])('%s: the installed package subscribes under Node', async (_how, file, text) => {
  writeFileSync(join(consumer, file), text);
  const { stdout } = await run(process.execPath, [file], {
    cwd: consumer,
    env: { ...process.env, GATEWAY: gateway.url, JWT: mintJwt('u1'), POST: String(post) },
    timeout: 30_000,
  });
  expect(JSON.parse(stdout)).toEqual({ value: 1, useStat: 'function' });
}, 60_000);

test('tsc --noEmit accepts a typed example as an ES module and as CommonJS, and catches a wrong arg', async () => {
  const example = `import { createClient, type Subscription } from '@statgate/client';
import { useStat, type StatState } from '@statgate/client/react';
import type { StatgateQueries } from './statgate-queries.js';

const client = createClient<StatgateQueries>({ url: 'https://stats.example.com', getAuthToken: () => 'jwt' });
const comments: Subscription<number | null> = client.subscribe('posts/stats/commentCount', { postId: 1 });
export const first: Promise<number | null> = comments.ready;
export function useComments(postId: number): StatState<number | null> {
  return useStat(client, 'posts/stats/commentCount', { postId });
}
// @ts-expect-error the generated types reach through the package: postId is a number
client.subscribe('posts/stats/commentCount', { postId: true });
`;
  writeFileSync(join(consumer, 'example.mts'), example);
  writeFileSync(join(consumer, 'example.cts'), example);
  writeFileSync(
    join(consumer, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { module: 'node16', moduleResolution: 'node16', target: 'es2022', strict: true, noEmit: true, lib: ['es2022', 'dom'], types: [] },
      files: ['example.mts', 'example.cts'],
    }),
  );
  const tsc = join(MODULES, 'typescript', 'bin', 'tsc');
  const result = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: consumer }).then(
    () => 'ok',
    (error: { stdout: string }) => error.stdout,
  );
  expect(result).toBe('ok');
}, 60_000);

test('the browser bundle subscribes in headless Chromium', async () => {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`).toBe(true);
  const bundle = readFileSync(createRequire(join(consumer, 'x.js')).resolve('@statgate/client/browser'), 'utf8');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      // A routed page has no address of its own, so Chromium treats it as public and blocks
      // its socket to the loopback gateway; the demo page (served by the gateway) needs no such flag.
      '--disable-features=LocalNetworkAccessChecks',
    ],
  });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(String(error)));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    // The page and the bundle are served as if by the gateway (same origin), from the package.
    await page.route(`${gateway.url}/package-test/**`, (route) => {
      const script = route.request().url().endsWith('.js');
      return route.fulfill({
        contentType: script ? 'text/javascript' : 'text/html',
        body: script
          ? bundle
          : `<!doctype html><script type="module">
import { createClient } from './statgate-client.js';
const client = createClient({ url: location.origin, getAuthToken: () => ${JSON.stringify(mintJwt('u1'))} });
window.value = await client.subscribe('posts/stats/commentCount', { postId: ${post} }).ready;
</script>`,
      });
    });
    await page.goto(`${gateway.url}/package-test/index.html`);
    await page
      .waitForFunction(() => (window as { value?: unknown }).value !== undefined, null, { timeout: 20_000 })
      .catch((error: Error) => {
        throw new Error(`${error.message}; page errors: ${problems.join('; ') || 'none'}`);
      });
    expect(await page.evaluate(() => (window as { value?: unknown }).value)).toBe(1);
  } finally {
    await browser.close();
  }
}, 60_000);

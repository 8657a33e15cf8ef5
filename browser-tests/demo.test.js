// End-to-end test of the demo page in headless Chromium (issue 4): the real gateway binary in
// demo mode with its own embedded PostgreSQL, driven through the page exactly as a user would.
//
// Needs: the gateway binary (run `cargo build` first; this script builds nothing; found through
// STATGATE_BIN or CARGO_TARGET_DIR, else target/debug/statgate),
// PostgreSQL server binaries, and Chromium at /usr/bin/chromium (or CHROMIUM=...).
// Leaves: artifacts/demo.png (screenshot) and artifacts/gateway.log.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..');
// STATGATE_BIN, else the debug build under CARGO_TARGET_DIR (as cargo resolves it), else target/.
const BINARY = process.env.STATGATE_BIN
  || path.join(path.resolve(ROOT, process.env.CARGO_TARGET_DIR || 'target'), 'debug', 'statgate');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(__dirname, 'artifacts');
const COUNTER_WAIT_MS = 10_000;
const READY_WAIT_MS = 90_000;

let gateway;
let gatewayExited;
let listen;
let workDir;
let dataDir;
let baseUrl;
let browser;
let page;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitUntilReady(url, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (gateway.exitCode !== null) {
      throw new Error(`the gateway exited with ${gateway.exitCode}; see artifacts/gateway.log`);
    }
    try {
      const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (response.ok) return;
      last = `HTTP ${response.status}`;
    } catch (err) {
      last = err.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`the gateway was not ready within ${deadlineMs} ms (${last})`);
}

/** The embedded server's port, from line 4 of postmaster.pid. */
function postgresPort() {
  const lines = fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
  const port = Number(lines[3]);
  assert.ok(Number.isInteger(port) && port > 0, `postmaster.pid names a port (got ${lines[3]})`);
  return port;
}

function psqlBinary() {
  const candidates = ['/usr/bin/psql'];
  try {
    for (const version of fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a))) {
      candidates.push(`/usr/lib/postgresql/${version}/bin/psql`);
    }
  } catch { /* no versioned install */ }
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  return found || 'psql';
}

/** Runs SQL in another process (psql), as any application writing to the database would. */
function psql(sql) {
  return execFileSync(psqlBinary(), [
    '-h', '127.0.0.1', '-p', String(postgresPort()), '-U', 'postgres', '-d', 'postgres',
    '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-c', sql,
  ], { encoding: 'utf8', timeout: 15_000 }).trim();
}

async function stopGateway() {
  if (!gateway || gateway.exitCode !== null || gateway.signalCode !== null) return;
  gateway.kill('SIGTERM');
  let timer;
  const stopped = await Promise.race([
    gatewayExited.then(() => true),
    new Promise((resolve) => { timer = setTimeout(() => resolve(false), 30_000); }),
  ]);
  clearTimeout(timer);
  if (!stopped) {
    gateway.kill('SIGKILL');
    await gatewayExited;
  }
}

/** Starts the gateway binary in demo mode on `listen`, with its own embedded PostgreSQL. */
function startGateway(logMode) {
  const env = { ...process.env, STATGATE_DATA_DIR: dataDir, STATGATE_LISTEN: listen,
    STATGATE_DEMO: 'true', STATGATE_QUERIES: path.join(ROOT, 'examples', 'blog', 'queries'), NO_COLOR: '1' };
  delete env.DATABASE_URL; // the embedded server, as on a fresh machine
  const log = fs.openSync(path.join(ARTIFACTS, 'gateway.log'), logMode);
  gateway = spawn(BINARY, ['serve'], { cwd: ROOT, env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  gatewayExited = new Promise((resolve) => gateway.once('exit', resolve));
}

// Should this process die without running `after`, do not leave the gateway running.
process.once('exit', () => { if (gateway && gateway.exitCode === null) gateway.kill('SIGTERM'); });

before(async () => {
  assert.ok(fs.existsSync(BINARY), `${BINARY} is missing: run \`cargo build\` first`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'statgate-browser-'));
  // As root PostgreSQL runs as `postgres`, which must be able to enter the directory.
  fs.chmodSync(workDir, 0o755);
  dataDir = path.join(workDir, 'pgdata');
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;

  listen = `127.0.0.1:${port}`;
  startGateway('w');
  await waitUntilReady(baseUrl, READY_WAIT_MS);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('console', (message) => {
    if (message.type() === 'error') console.error(`[page] ${message.text()}`);
  });
});

after(async () => {
  if (page) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'demo.png'), fullPage: true }).catch(() => {});
  }
  if (browser) await browser.close();
  await stopGateway();
  if (dataDir) {
    // A clean stop removes postmaster.pid: no postgres process is left behind.
    assert.equal(fs.existsSync(path.join(dataDir, 'postmaster.pid')), false,
      'the embedded PostgreSQL was stopped with the gateway');
  }
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
});

/** The counter's current value, as the page shows it. */
async function counter(selector) {
  const value = await page.locator(selector).getAttribute('data-value');
  return Number(value);
}

/** Waits (bounded) until the counter shows more than `than`; returns the new value. */
async function counterAbove(selector, than) {
  await page.waitForFunction(
    ([sel, min]) => {
      const el = document.querySelector(sel);
      return el && el.dataset.value !== undefined && Number(el.dataset.value) > min;
    },
    [selector, than],
    { timeout: COUNTER_WAIT_MS },
  );
  return counter(selector);
}

test('the demo page shows live counters that follow the page\'s and other processes\' writes', async () => {
  const subscribeRequests = [];
  const sockets = [];
  const countRequest = (request) => {
    const { pathname } = new URL(request.url());
    if (pathname.startsWith('/realtime/subscribe')) subscribeRequests.push(`${request.method()} ${pathname}`);
  };
  const countSocket = (socket) => sockets.push(new URL(socket.url()).pathname);
  page.on('request', countRequest);
  page.on('websocket', countSocket);
  const clientBundle = page.waitForResponse((r) => r.url().endsWith('/demo/assets/statgate-client.js'));
  await page.goto(`${baseUrl}/`);
  assert.equal((await clientBundle).status(), 200, 'the page loads @statgate/client\'s browser bundle');
  await page.waitForSelector('#connection[data-state="connected"]', { timeout: 20_000 });
  await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
  page.off('request', countRequest);
  page.off('websocket', countSocket);
  // Every counter of the page (two per post, three for alice, the rollups) in one request.
  assert.deepEqual(subscribeRequests, ['POST /realtime/subscribe/batch'], 'the page opens with one subscribe request');
  assert.deepEqual(sockets, ['/realtime/ws'], 'and one socket');

  const postId = await page.locator('#posts li').first().getAttribute('data-post');
  assert.match(postId, /^\d+$/);
  const comments = `#post-${postId}-comments`;
  const start = await counter(comments);
  assert.ok(Number.isInteger(start), `the counter shows a number (got ${start})`);
  assert.equal(String(start), psql(`select comment_count from post_stats where post_id = ${postId}`),
    'the counter matches the database');

  // A click on "add comment" goes through the demo endpoint; the count comes back over the socket.
  const written = await counter('#user-comments');
  await page.click(`#post-${postId}-add-comment`);
  const afterClick = await counterAbove(comments, start);
  assert.equal(afterClick, start + 1);
  // The comment is alice's: the declared per-author counter (users/activity/commentsWritten) moves too.
  assert.equal(await counterAbove('#user-comments', written), written + 1);
  assert.ok(await page.locator(comments).evaluate((el) => el.classList.contains('flash')),
    'a changed counter flashes');

  // Another process writes with SQL; the page follows.
  psql(`insert into comments (post_id, author_id, body) values (${postId}, 'bob', 'from psql')`);
  const afterSql = await counterAbove(comments, afterClick);
  assert.equal(afterSql, afterClick + 1);

  // The rollup panel shows alice's steps, and logging a walk moves it.
  const readings = await counter('#rollup-today-readings');
  await page.click('#add-steps');
  assert.equal(await counterAbove('#rollup-today-readings', readings), readings + 1);

  // The traffic switch makes the server write on its own; switching it off stops it.
  await page.fill('#traffic-rate', '20');
  await page.check('#traffic-switch');
  await page.waitForFunction(() => Number(document.querySelector('#traffic-writes').dataset.writes) > 0,
    null, { timeout: COUNTER_WAIT_MS });
  await page.uncheck('#traffic-switch');
  await page.waitForFunction(async () => !(await (await fetch('/demo/api/traffic')).json()).enabled,
    null, { timeout: COUNTER_WAIT_MS });

  assert.equal(await page.locator('#connection').getAttribute('data-state'), 'connected');
});

test('the page shows "reconnecting" while the gateway is away and comes back live', async () => {
  const comments = '#posts li:first-child .counter[data-counter="comments"]';
  const before = await counter(comments);
  await stopGateway();
  assert.equal(fs.existsSync(path.join(dataDir, 'postmaster.pid')), false, 'postgres stopped too');
  await page.waitForSelector('#connection[data-state="reconnecting"]', { timeout: COUNTER_WAIT_MS });

  startGateway('a'); // same data directory: the second run reuses it
  await waitUntilReady(baseUrl, READY_WAIT_MS);
  await page.waitForSelector('#connection[data-state="connected"]', { timeout: 20_000 });
  const postId = await page.locator('#posts li').first().getAttribute('data-post');
  psql(`insert into comments (post_id, author_id, body) values (${postId}, 'carol', 'after restart')`);
  assert.equal(await counterAbove(comments, before), before + 1);
});

// A real statgate process for the client tests: the gateway binary (built by `cargo build`)
// in demo mode with its own embedded PostgreSQL, data directory and port; or, given a
// database URL, in production mode on that database (a second node of a cluster).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';

const ROOT = resolve(import.meta.dirname, '..', '..');
/** The gateway binary `cargo build` made: `STATGATE_BIN`, else under `CARGO_TARGET_DIR`, else `target/`. */
export const BINARY =
  process.env.STATGATE_BIN ?? join(resolve(ROOT, process.env.CARGO_TARGET_DIR ?? 'target'), 'debug', 'statgate');
const JWT_SECRET = 'client-ts-test-jwt-secret-0123456789abcdef';
// Every gateway of these tests signs subscription tokens with this key, as the nodes of one
// cluster must, so a token minted by one is accepted by another.
const TOKEN_SECRET = 'client-ts-test-token-secret-0123456789abcdef';

export interface GatewayOptions {
  /** Serve this PostgreSQL in production mode instead of an embedded one in demo mode. */
  databaseUrl?: string;
  /** More settings, e.g. `{ STATGATE_MAX_BATCH_SUBSCRIPTIONS: '10' }`. */
  env?: Record<string, string>;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

/** Polls `check` every 50 ms until it returns true; throws after `withinMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, withinMs: number, what: string): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** An HS256 JWT for `sub`, valid for `ttlSeconds`. */
export function mintJwt(sub: string, ttlSeconds = 3600): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const head = encode({ alg: 'HS256', typ: 'JWT' });
  const now = Math.floor(Date.now() / 1000);
  const body = encode({ sub, iat: now, exp: now + ttlSeconds });
  const mac = createHmac('sha256', JWT_SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${mac}`;
}

export class Gateway {
  readonly dir: string;
  readonly port: number;
  private readonly options: GatewayOptions;
  private child: ChildProcess | undefined;

  private constructor(dir: string, port: number, options: GatewayOptions) {
    this.dir = dir;
    this.port = port;
    this.options = options;
  }

  static async start(options: GatewayOptions = {}): Promise<Gateway> {
    const dir = mkdtempSync(join(tmpdir(), 'statgate-client-'));
    // As root the embedded server runs as `postgres`, which must be able to enter this folder.
    chmodSync(dir, 0o755);
    const gateway = new Gateway(dir, await freePort(), options);
    await gateway.spawn();
    return gateway;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async spawn(): Promise<void> {
    const log = openSync(join(this.dir, 'gateway.log'), 'a');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      STATGATE_LISTEN: `127.0.0.1:${this.port}`,
      STATGATE_DATA_DIR: join(this.dir, 'pgdata'),
      STATGATE_JWT_SECRET: JWT_SECRET,
      STATGATE_TOKEN_SECRET: TOKEN_SECRET,
      STATGATE_QUERIES: join(ROOT, 'examples', 'blog', 'queries'),
      STATGATE_DEMO: 'on',
      STATGATE_SHUTDOWN_GRACE_SECS: '2',
      ...this.options.env,
    };
    delete env.DATABASE_URL;
    if (this.options.databaseUrl !== undefined) {
      env.DATABASE_URL = this.options.databaseUrl;
      env.STATGATE_DEMO = 'off';
    }
    this.child = spawn(BINARY, ['serve'], { env, stdio: ['ignore', log, log] });
    await eventually(async () => {
      if (this.child?.exitCode !== null) throw new Error(`the gateway exited early; see ${this.dir}/gateway.log`);
      try {
        return (await fetch(`${this.url}/readyz`)).ok;
      } catch {
        return false;
      }
    }, 60_000, 'the gateway to become ready');
  }

  /** Ends the process; SIGKILL leaves its PostgreSQL running, as a crash would. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((done) => child.once('exit', done));
    child.kill(signal);
    await exited;
    this.child = undefined;
  }

  /** Sends SIGHUP: the gateway reloads its registry. */
  reload(): void {
    this.child?.kill('SIGHUP');
  }

  /** The database this gateway serves: the given URL, or the embedded server's (its port is
   * in postmaster.pid, line 4; the gateway uses the `postgres` database as `postgres`). */
  databaseUrl(): string {
    if (this.options.databaseUrl !== undefined) return this.options.databaseUrl;
    const lines = readFileSync(join(this.dir, 'pgdata', 'postmaster.pid'), 'utf8').split('\n');
    return `postgres://postgres@127.0.0.1:${Number(lines[3])}/postgres`;
  }

  /** A connection to the database this gateway serves. */
  async db(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.databaseUrl() });
    // A restart of the server ends this connection; the test opens a new one then.
    client.on('error', () => {});
    await client.connect();
    return client;
  }

  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    if (!line) throw new Error(`${name} missing from /metrics`);
    return Number(line.slice(name.length + 1));
  }

  async stop(): Promise<void> {
    await this.kill('SIGTERM');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function commentCount(db: pg.Client, post: number): Promise<number> {
  const result = await db.query('select comment_count from post_stats where post_id = $1', [post]);
  return Number(result.rows[0]?.comment_count ?? 0);
}

export async function addComment(db: pg.Client, post: number): Promise<void> {
  await db.query("insert into comments (post_id, author_id, body) values ($1, 'test', 'hi')", [post]);
}

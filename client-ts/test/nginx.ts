// A real nginx (Debian's package) running the shipped deploy/nginx/nginx.conf in front of
// gateways on loopback: a child process in the foreground, with its prefix, temp paths, pid
// file and logs in its own temporary folder.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { eventually, freePort } from './gateway.js';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const SHIPPED_NGINX_CONF = join(ROOT, 'deploy', 'nginx', 'nginx.conf');

/** The nginx binary; throws (never skips) when it is missing, since CI installs it. */
export function nginxBinary(): string {
  const candidates = [
    process.env.NGINX_BIN,
    '/usr/sbin/nginx',
    ...(process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, 'nginx')),
  ];
  const found = candidates.find((path) => path !== undefined && path !== '' && existsSync(path));
  if (found === undefined) {
    throw new Error(
      'nginx is not installed: the multi-node test and the deploy checks run a real nginx ' +
        '(apt-get install nginx; ./scripts/setup installs it as root)',
    );
  }
  return found;
}

function replaceExactly(text: string, pattern: RegExp, replacement: (...groups: string[]) => string, count: number, what: string): string {
  let seen = 0;
  const out = text.replace(pattern, (...args: unknown[]) => {
    seen += 1;
    return replacement(...(args.slice(0, -2) as string[]));
  });
  if (seen !== count) {
    throw new Error(`deploy/nginx/nginx.conf: expected ${count} ${what}, found ${seen}; update client-ts/test/nginx.ts`);
  }
  return out;
}

/**
 * The shipped config as it runs here: its upstream servers (`statgate-1:8080`, … — compose
 * service names, which do not resolve on this machine) become 127.0.0.1 ports, it listens on
 * a loopback port, and its temp paths live in `dir`. Everything else is the shipped text.
 */
export function renderNginxConf(upstreamPorts: number[], listenPort: number, dir: string): string {
  const shipped = readFileSync(SHIPPED_NGINX_CONF, 'utf8');
  let next = 0;
  let conf = replaceExactly(
    shipped,
    /^(\s*)server statgate-\d+:8080\b([^;]*);$/gm,
    (_match, indent, params) => `${indent}server 127.0.0.1:${upstreamPorts[next++]}${params};`,
    upstreamPorts.length,
    'upstream servers',
  );
  conf = replaceExactly(conf, /^(\s*)listen 8080;$/gm, (_match, indent) => `${indent}listen 127.0.0.1:${listenPort};`, 1, 'listen directive');
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((kind) => `    ${kind}_temp_path ${join(dir, `${kind}_temp`)};`)
    .join('\n');
  conf = replaceExactly(conf, /^http \{$/gm, () => `http {\n${temp}`, 1, 'http block');
  return conf;
}

/** Arguments that keep nginx's files in `dir` and it in the foreground. */
export function nginxArgs(dir: string, conf: string): string[] {
  return ['-p', `${dir}/`, '-e', join(dir, 'error.log'), '-c', conf, '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`];
}

/** `nginx -t` on a rendered copy of the shipped config; returns nginx's verdict. */
export function testNginxConf(upstreamPorts: number[]): { status: number | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'statgate-nginx-t-'));
  try {
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, renderNginxConf(upstreamPorts, 8080, dir));
    // Output to a file, as when nginx runs: the config opens /dev/stdout, which fails on the
    // socket node would otherwise give it.
    const out = join(dir, 'nginx-t.log');
    const fd = openSync(out, 'a');
    try {
      const result = spawnSync(nginxBinary(), ['-t', ...nginxArgs(dir, conf)], { stdio: ['ignore', fd, fd] });
      if (result.error) throw result.error;
      return { status: result.status, output: readFileSync(out, 'utf8') };
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export class Nginx {
  readonly dir: string;
  readonly port: number;
  private readonly child: ChildProcess;

  private constructor(dir: string, port: number, child: ChildProcess) {
    this.dir = dir;
    this.port = port;
    this.child = child;
  }

  static async start(upstreamPorts: number[]): Promise<Nginx> {
    const binary = nginxBinary();
    const dir = mkdtempSync(join(tmpdir(), 'statgate-nginx-'));
    // As root, nginx's workers run as `nobody` and must reach the temp paths in here.
    chmodSync(dir, 0o755);
    const port = await freePort();
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, renderNginxConf(upstreamPorts, port, dir));
    const log = openSync(join(dir, 'nginx.log'), 'a');
    const child = spawn(binary, nginxArgs(dir, conf), { stdio: ['ignore', log, log] });
    const nginx = new Nginx(dir, port, child);
    await eventually(async () => {
      if (child.exitCode !== null) {
        throw new Error(`nginx exited early: ${readFileSync(join(dir, 'error.log'), 'utf8')}${readFileSync(join(dir, 'nginx.log'), 'utf8')}`);
      }
      try {
        return (await fetch(`${nginx.url}/healthz`)).ok;
      } catch {
        return false;
      }
    }, 20_000, 'nginx to answer');
    return nginx;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** What nginx logged (start-up errors, then its stderr and access log), for failure messages. */
  logs(): string {
    const read = (file: string) => (existsSync(join(this.dir, file)) ? readFileSync(join(this.dir, file), 'utf8') : '');
    return `${read('error.log')}${read('nginx.log')}`;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((done) => this.child.once('exit', done));
      this.child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

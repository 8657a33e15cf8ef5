// Two statgate nodes on one PostgreSQL behind a real nginx running the shipped
// deploy/nginx/nginx.conf (issue 9): node A in demo mode with its embedded PostgreSQL, node B
// in production mode on A's database (DATABASE_URL), both with the same secrets, as the nodes
// of one cluster. Clients are the real @statgate/client, through nginx.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import WebSocket from 'ws';
import type pg from 'pg';
import { createClient, type Status, type StatgateClient, type WebSocketConstructor } from '../src/index.js';
import type { StatgateQueries } from '../generated/example-queries.js';
import { addComment, commentCount, eventually, Gateway, mintJwt } from './gateway.js';
import { Nginx, nginxBinary, ROOT } from './nginx.js';

let a: Gateway | undefined;
let b: Gateway | undefined;
let nginx: Nginx | undefined;
let db: pg.Client;
const closers: Array<() => void> = [];

function nodes(): { a: Gateway; b: Gateway; nginx: Nginx } {
  if (!a || !b || !nginx) throw new Error('the cluster did not start');
  return { a, b, nginx };
}

beforeAll(async () => {
  // Fails the file, rather than skipping it, when nginx is missing.
  nginxBinary();
  a = await Gateway.start();
  b = await Gateway.start({ databaseUrl: a.databaseUrl() });
  nginx = await Nginx.start([a.port, b.port]);
  db = await a.db();
}, 120_000);

afterAll(async () => {
  for (const close of closers) close();
  await db?.end().catch(() => {});
  await nginx?.stop();
  // B first: A's process owns the PostgreSQL that B uses.
  await b?.stop();
  await a?.stop();
}, 60_000);

async function newPosts(n: number): Promise<number[]> {
  const result = await db.query(
    "insert into posts (title, author_id) select 'multinode ' || i, 'test' from generate_series(1, $1) i returning id",
    [n],
  );
  return result.rows.map((row: { id: string }) => Number(row.id));
}

interface SubscribeReply {
  token: string;
  signature: string;
  websocket: { url: string; protocol: string };
}

async function subscribe(baseUrl: string, post: number, jwt: string): Promise<SubscribeReply> {
  const response = await fetch(`${baseUrl}/realtime/subscribe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ queryName: 'posts/stats/commentCount', args: { postId: post }, authToken: jwt }),
  });
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as SubscribeReply;
}

/** A raw WebSocket to one node, collecting the values of `query:update` frames. */
async function watch(port: number, reply: SubscribeReply, jwt: string): Promise<{ values: unknown[]; socket: WebSocket }> {
  const url = `ws://127.0.0.1:${port}/realtime/ws?token=${encodeURIComponent(reply.token)}&authToken=${encodeURIComponent(jwt)}`;
  const socket = new WebSocket(url, reply.websocket.protocol);
  closers.push(() => socket.close());
  const values: unknown[] = [];
  socket.on('message', (data) => {
    const frame = JSON.parse(String(data)) as { event: string; payload: { signature: string; data: unknown } };
    if (frame.event === 'query:update' && frame.payload.signature === reply.signature) values.push(frame.payload.data);
  });
  await new Promise<void>((open, fail) => {
    socket.once('open', () => open());
    socket.once('unexpected-response', (_request, response) => fail(new Error(`upgrade refused: ${response.statusCode}`)));
    socket.once('error', fail);
  });
  return { values, socket };
}

test('a subscription token minted by one node is accepted by the other', async () => {
  const { a: nodeA, b: nodeB } = nodes();
  const [post] = await newPosts(1);
  if (post === undefined) throw new Error('post');
  const jwt = mintJwt('u1');
  for (const [minter, server] of [
    [nodeA, nodeB],
    [nodeB, nodeA],
  ] as const) {
    const reply = await subscribe(minter.url, post, jwt);
    const { values, socket } = await watch(server.port, reply, jwt);
    const before = await commentCount(db, post);
    await eventually(() => values.at(-1) === before, 10_000, `the snapshot on port ${server.port}`);
    await addComment(db, post);
    await eventually(() => values.at(-1) === before + 1, 10_000, `an update on port ${server.port}`);
    socket.close();
  }
}, 60_000);

interface Tracked {
  client: StatgateClient<StatgateQueries>;
  statuses: Status[];
  values: Map<number, number | null>;
}

function trackedClient(url: string, posts: number[]): Tracked {
  const statuses: Status[] = [];
  const client = createClient<StatgateQueries>({
    url,
    getAuthToken: () => mintJwt('u1'),
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onStatus: (status) => statuses.push(status),
    reconnectBaseMs: 100,
    reconnectMaxMs: 500,
  });
  closers.push(() => client.close());
  const values = new Map<number, number | null>();
  for (const post of posts) client.subscribe('posts/stats/commentCount', { postId: post }, (count) => values.set(post, count));
  return { client, statuses, values };
}

async function databaseCounts(posts: number[]): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const post of posts) counts.set(post, await commentCount(db, post));
  return counts;
}

function converged(clients: Tracked[], counts: Map<number, number>): boolean {
  return clients.every(({ values }) => [...counts].every(([post, count]) => values.get(post) === count));
}

test('clients through nginx land on both nodes, get every update, and move to A when B is killed', async () => {
  const { a: nodeA, b: nodeB, nginx: proxy } = nodes();
  const open = async () => (await nodeA.metric('statgate_connections')) + (await nodeB.metric('statgate_connections'));
  await eventually(async () => (await open()) === 0, 10_000, 'the earlier test\'s sockets to close');

  // nginx passes Host through, so the subscribe reply sends clients back to nginx.
  const [probe] = await newPosts(1);
  if (probe === undefined) throw new Error('post');
  expect((await subscribe(proxy.url, probe, mintJwt('u1'))).websocket.url).toBe(`ws://127.0.0.1:${proxy.port}/realtime/ws`);

  const posts = await newPosts(3);
  // Clients join one at a time until each node holds at least two sockets (least_conn
  // alternates, but a client's subscribe requests race its socket, so not strictly).
  const clients: Tracked[] = [];
  let onA = 0;
  let onB = 0;
  while (clients.length < 12 && (onA < 2 || onB < 2)) {
    const tracked = trackedClient(proxy.url, posts);
    clients.push(tracked);
    await eventually(
      () => tracked.client.status === 'open' && posts.every((post) => tracked.values.get(post) === 0),
      20_000,
      `client ${clients.length}'s snapshots`,
    );
    onA = await nodeA.metric('statgate_connections');
    onB = await nodeB.metric('statgate_connections');
    expect(onA + onB).toBe(clients.length);
  }
  expect(onA, proxy.logs()).toBeGreaterThanOrEqual(2);
  expect(onB, proxy.logs()).toBeGreaterThanOrEqual(2);

  // Writes reach every client, whichever node holds its socket: B LISTENs on A's database.
  for (const post of posts) await addComment(db, post);
  let counts = await databaseCounts(posts);
  await eventually(() => converged(clients, counts), 15_000, 'every client to get the first writes');

  // B dies without a goodbye; writes go on while its clients find their way to A.
  await nodeB.kill('SIGKILL');
  for (const post of posts) {
    await addComment(db, post);
    await addComment(db, post);
  }
  counts = await databaseCounts(posts);
  await eventually(
    () => clients.every(({ client }) => client.status === 'open') && converged(clients, counts),
    30_000,
    'every client to reconnect and converge',
  );
  expect(await nodeA.metric('statgate_connections')).toBe(clients.length);
  // Exactly the clients that were on B went through a reconnect; A's clients kept their socket.
  expect(clients.filter(({ statuses }) => statuses.includes('reconnecting')).length).toBe(onB);

  // A alone keeps every client current.
  const [first] = posts;
  if (first === undefined) throw new Error('posts');
  await addComment(db, first);
  counts = await databaseCounts(posts);
  await eventually(() => converged(clients, counts), 15_000, 'every client to get a write made after the failover');

  // The access log (format `statgate`) names the WebSocket path but not its tokens.
  const accessLines = proxy.logs().split('\n').filter((line) => line.includes(' upstream='));
  expect(accessLines.some((line) => line.includes('/realtime/ws'))).toBe(true);
  expect(accessLines.filter((line) => line.includes('authToken') || line.includes('token='))).toEqual([]);
}, 120_000);

test('every statgate metric named in deploy/prometheus and deploy/grafana is one the gateway exports', async () => {
  const { a: nodeA } = nodes();
  const exposition = await (await fetch(`${nodeA.url}/metrics`)).text();
  const exported = new Set(
    exposition
      .split('\n')
      .filter((line) => line.startsWith('statgate_'))
      .map((line) => line.split(/[{ ]/)[0]),
  );
  const files = [
    ...readdirSync(join(ROOT, 'deploy', 'prometheus')).map((f) => join(ROOT, 'deploy', 'prometheus', f)),
    ...readdirSync(join(ROOT, 'deploy', 'grafana')).map((f) => join(ROOT, 'deploy', 'grafana', f)),
  ];
  const used = new Set(files.flatMap((file) => readFileSync(file, 'utf8').match(/\bstatgate_[a-z_]+/g) ?? []));
  expect(used.size).toBeGreaterThan(10);
  // A labelled family (recompute errors by query) has no line until its first sample; those
  // names must at least be registered by src/telemetry.rs.
  const telemetry = readFileSync(join(ROOT, 'src', 'telemetry.rs'), 'utf8');
  const unknown = [...used].filter((name) => {
    if (exported.has(name)) return false;
    const base = name.replace(/^statgate_/, '').replace(/_(total|bucket|sum|count)$/, '');
    return !new RegExp(`register\\(\\s*"${base}"`).test(telemetry);
  });
  expect(unknown).toEqual([]);
}, 30_000);

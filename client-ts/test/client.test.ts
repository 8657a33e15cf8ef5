// The client against a real statgate process and its real PostgreSQL.
import { expect, test } from 'vitest';
import WebSocket from 'ws';
import { createClient, type Status, type WebSocketConstructor } from '../src/index.js';
import type { StatgateQueries } from '../generated/example-queries.js';
import { BlackHoleProxy } from './proxy.js';
import { addComment, commentCount, eventually, mintJwt, sleep } from './gateway.js';
import { cleanups, client, gateway, newPosts } from './harness.js';

test('values arrive and update; unsubscribe stops them; 100 subscriptions share one socket', async () => {
  const { gateway: gw, db } = await gateway();
  const { client: c } = client(gw.url);
  const posts = await newPosts(db, 100);
  const values = new Map<number, number | null>();
  const handles = posts.map((post) =>
    c.subscribe('posts/stats/commentCount', { postId: post }, (count) => values.set(post, count)),
  );
  await eventually(() => posts.every((post) => values.get(post) === 0), 20_000, 'every snapshot');
  expect(await gw.metric('statgate_connections')).toBe(1);
  expect(await gw.metric('statgate_subscriptions')).toBe(100);

  await db.query("insert into comments (post_id, author_id, body) select unnest($1::int8[]), 't', 'x'", [posts]);
  await eventually(() => posts.every((post) => values.get(post) === 1), 20_000, 'every update');
  expect(handles[0]?.value).toBe(1);

  const [gone, kept] = posts;
  if (gone === undefined || kept === undefined) throw new Error('posts');
  let summaries = 0;
  const summary = c.subscribe('posts/stats/summary', { postId: gone }, () => (summaries += 1));
  await eventually(() => summaries === 1, 10_000, 'the summary snapshot');
  summary.unsubscribe();
  await eventually(async () => (await gw.metric('statgate_subscriptions')) === 100, 10_000, 'the unsubscribe');
  await addComment(db, gone);
  await addComment(db, kept);
  // The kept subscription's update proves the gone one had its chance to arrive.
  await eventually(() => values.get(gone) === 2 && values.get(kept) === 2, 10_000, 'the later updates');
  expect(summaries).toBe(1);
}, 60_000);

test('after the gateway is killed and started again, the client reconnects and converges', async () => {
  const { gateway: gw, db: firstDb } = await gateway();
  const { client: c, statuses } = client(gw.url, { reconnectBaseMs: 200, reconnectMaxMs: 1000 });
  const posts = await newPosts(firstDb, 5);
  const values = new Map<number, number | null>();
  for (const post of posts) c.subscribe('posts/stats/commentCount', { postId: post }, (n) => values.set(post, n));
  await eventually(() => posts.every((post) => values.get(post) === 0), 20_000, 'every snapshot');

  await gw.kill('SIGKILL');
  await eventually(() => c.status === 'reconnecting', 10_000, 'status reconnecting');
  // Writes while the gateway is down (its PostgreSQL outlived it, as after a crash).
  for (const post of posts) await addComment(firstDb, post);
  await sleep(500);
  expect(c.status).toBe('reconnecting');

  await gw.spawn();
  const db = await gw.db();
  cleanups.push(() => db.end().catch(() => {}));
  for (const post of posts.slice(0, 2)) await addComment(db, post);
  const expected = new Map<number, number>();
  for (const post of posts) expected.set(post, await commentCount(db, post));
  await eventually(() => posts.every((post) => values.get(post) === expected.get(post)), 30_000, 'convergence');
  expect(c.status).toBe('open');
  expect(statuses).toContain('reconnecting');
}, 120_000);

test('a server that stops answering is detected by the heartbeat and the client reconnects', async () => {
  const { gateway: gw, db } = await gateway();
  const proxy = await BlackHoleProxy.start(gw.port);
  cleanups.push(() => proxy.close());
  const { client: c, statuses } = client(proxy.url, {
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 1000,
    reconnectBaseMs: 100,
    reconnectMaxMs: 500,
    requestTimeoutMs: 1000,
  });
  const [post] = await newPosts(db, 1);
  if (post === undefined) throw new Error('post');
  let value: number | null | undefined;
  c.subscribe('posts/stats/commentCount', { postId: post }, (n) => (value = n));
  await eventually(() => value === 0 && c.status === 'open', 20_000, 'the snapshot');

  proxy.blackHole();
  const silencedAt = Date.now();
  await eventually(() => statuses.includes('reconnecting'), 5_000, 'the dead socket to be noticed');
  const detectedAfter = Date.now() - silencedAt;
  expect(detectedAfter).toBeLessThan(500 + 1000 + 1000);
  await eventually(() => c.status === 'open', 10_000, 'a new connection');
  await addComment(db, post);
  await eventually(() => value === 1, 10_000, 'an update on the new connection');
}, 60_000);

test('a JWT about to expire is replaced through getAuthToken and the socket carries on', async () => {
  const { gateway: gw, db } = await gateway();
  let calls = 0;
  const { client: c, statuses } = client(gw.url, {
    getAuthToken: () => {
      calls += 1;
      return mintJwt('u1', 3);
    },
    authRefreshMarginMs: 1500,
  });
  const [post] = await newPosts(db, 1);
  if (post === undefined) throw new Error('post');
  let value: number | null | undefined;
  c.subscribe('posts/stats/commentCount', { postId: post }, (n) => (value = n));
  await eventually(() => value === 0, 20_000, 'the snapshot');

  // Well past the first JWT's expiry: the socket must still be the first one.
  await sleep(5_000);
  await addComment(db, post);
  await eventually(() => value === 1, 10_000, 'an update after the first JWT expired');
  expect(calls).toBeGreaterThanOrEqual(3);
  expect(statuses).not.toContain('reconnecting');
  expect(await gw.metric('statgate_connections')).toBe(1);
}, 60_000);

test('close() stops everything and leaves no timers behind', async () => {
  const { gateway: gw, db } = await gateway();
  const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
  const before = timers();
  const statuses: Status[] = [];
  const c = createClient<StatgateQueries>({
    url: gw.url,
    getAuthToken: () => mintJwt('u1', 120),
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onStatus: (status) => statuses.push(status),
  });
  const [post] = await newPosts(db, 1);
  if (post === undefined) throw new Error('post');
  let value: number | null | undefined;
  c.subscribe('posts/stats/commentCount', { postId: post }, (n) => (value = n));
  await eventually(() => value === 0, 20_000, 'the snapshot');
  expect(timers()).toBeGreaterThan(before);

  c.close();
  expect(c.status).toBe('closed');
  await eventually(() => timers() <= before, 5_000, 'every client timer to be cleared');
  await eventually(async () => (await gw.metric('statgate_connections')) === 0, 5_000, 'the socket to close');
  expect(() => c.subscribe('posts/stats/commentCount', { postId: post }, () => {})).toThrow(/closed/);
  expect(statuses.at(-1)).toBe('closed');
}, 60_000);

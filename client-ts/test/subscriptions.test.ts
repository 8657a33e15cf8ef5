// Batched subscribe requests, first values, async iteration and error routing, against the
// real gateway.
import { expect, test, vi } from 'vitest';
import { StatgateError, type Subscription } from '../src/index.js';
import { addComment, eventually } from './gateway.js';
import { client, countingFetch, gateway, newPosts } from './harness.js';

const BATCH = '/realtime/subscribe/batch';
const SINGLE = '/realtime/subscribe';

test('the subscriptions of one tick go in one batch request, and each refusal reaches its own subscription', async () => {
  const { gateway: gw, db } = await gateway();
  const counted = countingFetch();
  const { client: c } = client(gw.url, { fetch: counted.fetch });
  const posts = await newPosts(db, 30);
  const values = new Map<number, number | null>();
  for (const post of posts) c.subscribe('posts/stats/commentCount', { postId: post }, (n) => values.set(post, n));
  const errors: StatgateError[] = [];
  const refusals = [
    // An unknown query and bad args (as a caller without generated types could send them),
    // and another user's data.
    c.subscribe('posts/stats/nope' as 'posts/stats/commentCount', { postId: 1 }, undefined, { onError: (e) => errors.push(e) }),
    c.subscribe('posts/stats/commentCount', { postId: 'abc' as unknown as number }, undefined, { onError: (e) => errors.push(e) }),
    c.subscribe('measurements/rollups/dailyCount', { userId: 'bob', type: 'steps', from: '2026-01-01', to: '2026-01-08' }, undefined, {
      onError: (e) => errors.push(e),
    }),
  ];
  await eventually(() => posts.every((post) => values.get(post) === 0), 20_000, 'every snapshot');
  await eventually(() => errors.length === 3, 10_000, 'the three refusals');

  expect(counted.paths.filter((path) => path.startsWith(SINGLE))).toEqual([BATCH]);
  expect(errors.map((e) => [e.status, e.code])).toEqual([
    [404, 'unknown_query'],
    [400, 'invalid_args'],
    [403, 'forbidden'],
  ]);
  expect(refusals.map((r) => r.status)).toEqual(['error', 'error', 'error']);
  expect(await gw.metric('statgate_subscriptions')).toBe(30);
  expect(await gw.metric('statgate_connections')).toBe(1);
}, 60_000);

test('more subscriptions than the gateway takes per batch go in several batches', async () => {
  const { gateway: gw, db } = await gateway({ env: { STATGATE_MAX_BATCH_SUBSCRIPTIONS: '10' } });
  const counted = countingFetch();
  const { client: c } = client(gw.url, { fetch: counted.fetch });
  const posts = await newPosts(db, 25);
  const values = new Map<number, number | null>();
  for (const post of posts) c.subscribe('posts/stats/commentCount', { postId: post }, (n) => values.set(post, n));
  await eventually(() => posts.every((post) => values.get(post) === 0), 20_000, 'every snapshot');
  const batches = counted.paths.filter((path) => path === BATCH).length;
  // The first batch of 25 is refused as too large (400, maxSubscriptions 10); then 10 + 10 + 5.
  expect(batches).toBe(4);
}, 60_000);

test('a gateway without the batch route gets one request per subscription', async () => {
  const { gateway: gw, db } = await gateway();
  const paths: string[] = [];
  // The batch route is sent to a path this gateway has no route for: its answer is the
  // gateway's own 404, as a gateway from before the batch route answers.
  const olderGateway: typeof fetch = (input, init) => {
    const url = new URL(String(input));
    paths.push(url.pathname);
    if (url.pathname === BATCH) url.pathname = '/realtime/not-a-route';
    return fetch(url, init);
  };
  const { client: c } = client(gw.url, { fetch: olderGateway });
  const posts = await newPosts(db, 3);
  const values = new Map<number, number | null>();
  for (const post of posts) c.subscribe('posts/stats/commentCount', { postId: post }, (n) => values.set(post, n));
  await eventually(() => posts.every((post) => values.get(post) === 0), 20_000, 'every snapshot');
  expect(paths).toEqual([BATCH, SINGLE, SINGLE, SINGLE]);

  // Later subscriptions go straight to the single endpoint.
  const [later] = await newPosts(db, 1);
  if (later === undefined) throw new Error('post');
  expect(await c.subscribe('posts/stats/commentCount', { postId: later }).ready).toBe(0);
  expect(paths.slice(4)).toEqual([SINGLE]);
}, 60_000);

test('ready resolves with the first value, or rejects with the refusal', async () => {
  const { gateway: gw, db } = await gateway();
  const { client: c } = client(gw.url, { onError: () => {} });
  const [post] = await newPosts(db, 1);
  if (post === undefined) throw new Error('post');
  await addComment(db, post);
  const subscription = c.subscribe('posts/stats/commentCount', { postId: post });
  expect(subscription.status).toBe('subscribing');
  expect(await subscription.ready).toBe(1);
  expect(subscription.status).toBe('subscribed');
  expect(subscription.ready).toBe(subscription.ready);
  // A second subscription to the same value is ready at once, from the shared one.
  expect(await c.subscribe('posts/stats/commentCount', { postId: post }).ready).toBe(1);
  expect(await gw.metric('statgate_subscriptions')).toBe(1);

  const refused = c.subscribe('posts/stats/nope' as 'posts/stats/commentCount', { postId: post });
  const failure = await refused.ready.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(failure).toBeInstanceOf(StatgateError);
  expect(failure).toMatchObject({ code: 'unknown_query', status: 404 });
  expect(refused.error).toBe(failure);
  expect(refused.status).toBe('error');

  const ended = c.subscribe('posts/stats/reactionCount', { postId: post });
  ended.unsubscribe();
  await expect(ended.ready).rejects.toMatchObject({ code: 'unsubscribed' });
}, 60_000);

test('iterating a subscription yields its values; leaving the loop unsubscribes', async () => {
  const { gateway: gw, db } = await gateway();
  const { client: c } = client(gw.url);
  const [post] = await newPosts(db, 1);
  if (post === undefined) throw new Error('post');
  const seen: Array<number | null> = [];
  for await (const count of c.subscribe('posts/stats/commentCount', { postId: post })) {
    seen.push(count);
    if (count === 2) break;
    await addComment(db, post);
  }
  expect(seen).toEqual([0, 1, 2]);
  await eventually(async () => (await gw.metric('statgate_subscriptions')) === 0, 10_000, 'the unsubscribe');

  // A refused subscription's loop throws the refusal.
  const refused = c.subscribe('posts/stats/nope' as 'posts/stats/commentCount', { postId: post }, undefined, { onError: () => {} });
  const loop = async () => {
    for await (const _ of refused) throw new Error('no value was expected');
  };
  await expect(loop()).rejects.toMatchObject({ code: 'unknown_query' });
}, 60_000);

test("errors without onError go to the client's onError, else to console.error once per subscription", async () => {
  const { gateway: gw } = await gateway();
  const routed: Array<[string, string]> = [];
  const { client: withHandler } = client(gw.url, {
    onError: (error, subscription) => routed.push([error.code, subscription.queryName]),
  });
  const own: string[] = [];
  withHandler.subscribe('posts/stats/nope' as 'posts/stats/commentCount', { postId: 1 });
  withHandler.subscribe('posts/stats/commentCount', { postId: 'x' as unknown as number }, undefined, {
    onError: (error) => own.push(error.code),
  });
  await eventually(() => routed.length === 1 && own.length === 1, 10_000, 'both errors');
  expect(routed).toEqual([['unknown_query', 'posts/stats/nope']]);
  expect(own).toEqual(['invalid_args']);

  const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    const { client: bare } = client(gw.url);
    const failing: Array<Subscription<unknown>> = [
      bare.subscribe('posts/stats/nope' as 'posts/stats/commentCount', { postId: 1 }),
      bare.subscribe('posts/stats/nope2' as 'posts/stats/commentCount', { postId: 1 }),
    ];
    await eventually(() => failing.every((s) => s.status === 'error'), 10_000, 'both refusals');
    expect(logged).toHaveBeenCalledTimes(2);
    expect(String(logged.mock.calls[0]?.[0])).toContain('posts/stats/nope');
  } finally {
    logged.mockRestore();
  }
}, 60_000);

test('a client without a WebSocket (a server rendering a page) is created, and refuses to subscribe', () => {
  // Node 22 and later have a global WebSocket; a server without one is what is meant here.
  vi.stubGlobal('WebSocket', undefined);
  try {
    const { client: c } = client('http://127.0.0.1:9', { WebSocket: undefined });
    expect(c.status).toBe('connecting');
    expect(() => c.subscribe('posts/stats/commentCount', { postId: 1 })).toThrow(/WebSocket/);
  } finally {
    vi.unstubAllGlobals();
  }
});

test('a registry reload ends a removed query for the client, and a changed one goes on with its new value', async () => {
  const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const registry = mkdtempSync(join(tmpdir(), 'statgate-registry-'));
  const write = (text: string) => {
    mkdirSync(join(registry, 'posts'), { recursive: true });
    writeFileSync(join(registry, 'posts', 'live.toml'), text);
  };
  const query = (name: string, expression: string) =>
    `[${name}]\nsql = "SELECT ${expression} AS n FROM post_stats WHERE post_id = :postId"\nargs = { postId = "int8" }\nreturns = "value"\nwatch = [{ table = "post_stats", match = { post_id = ":postId" } }]\n`;
  write(query('count', 'comment_count') + query('gone', 'reaction_count'));
  try {
    const { gateway: gw, db } = await gateway({ env: { STATGATE_QUERIES: registry } });
    const { client: c } = client(gw.url);
    const [post] = await newPosts(db, 1);
    if (post === undefined) throw new Error('post');
    const counts: (number | null)[] = [];
    const errors: StatgateError[] = [];
    const live = c.subscribe('posts/live/count' as 'posts/stats/commentCount', { postId: post }, (n) => counts.push(n));
    const gone = c.subscribe('posts/live/gone' as 'posts/stats/commentCount', { postId: post }, undefined, {
      onError: (e) => errors.push(e),
    });
    await eventually(() => counts.length === 1 && gone.status === 'subscribed', 20_000, 'both snapshots');

    write(query('count', 'comment_count * 10'));
    gw.reload();
    await eventually(() => errors.length === 1, 20_000, 'the removed query ending');
    expect(errors[0]?.code).toBe('query_removed');
    expect(gone.status).toBe('error');
    await addComment(db, post);
    await eventually(() => counts.at(-1) === 10, 20_000, 'the changed query pushing its new value');
    expect(live.status).toBe('subscribed');
  } finally {
    rmSync(registry, { recursive: true, force: true });
  }
}, 60_000);

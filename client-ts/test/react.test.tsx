// @vitest-environment jsdom
// useStat in real React components (react-dom in jsdom, strict mode) against the real gateway.
import { StrictMode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { expect, test } from 'vitest';
import type { StatgateClient } from '../src/index.js';
import { useStat } from '../src/react.js';
import type { StatgateQueries } from '../generated/example-queries.js';
import { addComment, eventually } from './gateway.js';
import { cleanups, client, countingFetch, gateway, newPosts } from './harness.js';

type Client = StatgateClient<StatgateQueries>;

function Comments({ client: c, post, id }: { client: Client; post: number; id: string }) {
  const { value, status, error } = useStat(c, 'posts/stats/commentCount', { postId: post });
  return (
    <span id={id} data-status={status}>
      {error ? error.code : (value ?? '…')}
    </span>
  );
}

function Page({ client: c, post, both }: { client: Client; post: number; both: boolean }) {
  return (
    <StrictMode>
      <Comments client={c} post={post} id="first" />
      {both && <Comments client={c} post={post} id="second" />}
    </StrictMode>
  );
}

function mount(): { root: Root; text: (id: string) => string | undefined; status: (id: string) => string | undefined } {
  const container = document.createElement('div');
  document.body.append(container);
  const root = createRoot(container);
  cleanups.push(() => {
    root.unmount();
    container.remove();
  });
  return {
    root,
    text: (id) => container.querySelector(`#${id}`)?.textContent ?? undefined,
    status: (id) => container.querySelector(`#${id}`)?.getAttribute('data-status') ?? undefined,
  };
}

test('useStat renders the snapshot and every write; components on one signature share one subscription; unmount unsubscribes', async () => {
  const { gateway: gw, db } = await gateway();
  const counted = countingFetch();
  const { client: c } = client(gw.url, { fetch: counted.fetch });
  const [post] = await newPosts(db, 1);
  if (post === undefined) throw new Error('post');
  const { root, text, status } = mount();

  root.render(<Page client={c} post={post} both />);
  await eventually(() => text('first') === '0' && text('second') === '0', 20_000, 'the snapshot in both components');
  expect(status('first')).toBe('subscribed');
  // Two components, strict mode's double effects: one registration, one server subscription.
  expect(await gw.metric('statgate_subscriptions')).toBe(1);
  expect(counted.paths.filter((path) => path.startsWith('/realtime/subscribe'))).toHaveLength(1);

  await addComment(db, post);
  await eventually(() => text('first') === '1' && text('second') === '1', 10_000, 'the write in both components');

  root.render(<Page client={c} post={post} both={false} />);
  await eventually(() => text('second') === undefined, 5_000, 'the second component to unmount');
  await addComment(db, post);
  await eventually(() => text('first') === '2', 10_000, 'the next write');
  expect(await gw.metric('statgate_subscriptions')).toBe(1);

  root.render(<StrictMode />);
  await eventually(async () => (await gw.metric('statgate_subscriptions')) === 0, 10_000, 'the unsubscribe on unmount');
  expect(await gw.metric('statgate_connections')).toBe(1);
}, 60_000);

test('a refused subscription renders its error', async () => {
  const { gateway: gw } = await gateway();
  const { client: c } = client(gw.url);
  function Forbidden() {
    const { status, error } = useStat(c, 'measurements/rollups/dailyCount', {
      userId: 'bob',
      type: 'steps',
      from: '2026-01-01',
      to: '2026-01-08',
    });
    return <span id="stat" data-status={status}>{error?.code ?? '…'}</span>;
  }
  const { root, text, status } = mount();
  root.render(
    <StrictMode>
      <Forbidden />
    </StrictMode>,
  );
  await eventually(() => text('stat') === 'forbidden', 10_000, 'the refusal');
  expect(status('stat')).toBe('error');
}, 60_000);

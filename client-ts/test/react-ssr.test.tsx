// useStat on a server: renderToString renders the placeholder and opens nothing.
import { renderToString } from 'react-dom/server';
import { expect, test, vi } from 'vitest';
import WebSocket from 'ws';
import { createClient, type WebSocketConstructor } from '../src/index.js';
import { useStat } from '../src/react.js';
import type { StatgateQueries } from '../generated/example-queries.js';
import { countingFetch, gateway } from './harness.js';

test('server rendering subscribes to nothing: no token, no request, no socket', async () => {
  const { gateway: gw } = await gateway();
  const counted = countingFetch();
  const getAuthToken = vi.fn(() => 'never asked for');
  // A client able to connect (it has a WebSocket): only useStat's restraint keeps it idle.
  const client = createClient<StatgateQueries>({
    url: gw.url,
    getAuthToken,
    fetch: counted.fetch,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
  });
  function Comments() {
    const { value, status } = useStat(client, 'posts/stats/commentCount', { postId: 1 });
    return <span data-status={status}>{value ?? '…'}</span>;
  }
  expect(renderToString(<Comments />)).toBe('<span data-status="subscribing">…</span>');
  // Both a subscribe request and a socket start by asking for the JWT (after a microtask,
  // long past once the metrics below have made a round trip).
  expect(await gw.metric('statgate_connections')).toBe(0);
  client.close();
  expect(getAuthToken).not.toHaveBeenCalled();
  expect(counted.paths).toEqual([]);
  expect(await gw.metric('statgate_connections')).toBe(0);
  expect(await gw.metric('statgate_subscriptions')).toBe(0);
}, 60_000);

// What the client test files share: a gateway per test, clients that close after it, posts
// to subscribe to. Importing this registers the clean-up hook in the importing file.
import { afterEach } from 'vitest';
import WebSocket from 'ws';
import type pg from 'pg';
import { createClient, type ClientOptions, type Status, type StatgateClient, type WebSocketConstructor } from '../src/index.js';
import type { StatgateQueries } from '../generated/example-queries.js';
import { Gateway, mintJwt, type GatewayOptions } from './gateway.js';

export const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** A gateway of its own (stopped after the test) and a connection to its database. */
export async function gateway(options: GatewayOptions = {}): Promise<{ gateway: Gateway; db: pg.Client }> {
  const started = await Gateway.start(options);
  cleanups.push(() => started.stop());
  const db = await started.db();
  cleanups.push(() => db.end().catch(() => {}));
  return { gateway: started, db };
}

/** A client of `url` as user u1 over the `ws` package, closed after the test. */
export function client(url: string, options: Partial<ClientOptions> = {}): {
  client: StatgateClient<StatgateQueries>;
  statuses: Status[];
} {
  const statuses: Status[] = [];
  const created = createClient<StatgateQueries>({
    url,
    getAuthToken: () => mintJwt('u1'),
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    onStatus: (status) => statuses.push(status),
    ...options,
  });
  cleanups.push(() => created.close());
  return { client: created, statuses };
}

export async function newPosts(db: pg.Client, n: number): Promise<number[]> {
  const result = await db.query(
    "insert into posts (title, author_id) select 'client test ' || i, 'test' from generate_series(1, $1) i returning id",
    [n],
  );
  return result.rows.map((row: { id: string }) => Number(row.id));
}

/** `fetch` that records the path of every request the client makes. */
export function countingFetch(): { fetch: typeof fetch; paths: string[] } {
  const paths: string[] = [];
  return {
    paths,
    fetch: (input, init) => {
      paths.push(new URL(String(input)).pathname);
      return fetch(input, init);
    },
  };
}

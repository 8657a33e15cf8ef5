// Compiled by `npm run typecheck`: the generated registry types accept right calls and reject
// wrong ones (each @ts-expect-error line must be an error, or tsc fails).
import { createClient } from '../../src/index.js';
import type { StatgateQueries } from '../../generated/example-queries.js';

const client = createClient<StatgateQueries>({ url: 'http://localhost:8080', getAuthToken: () => 'jwt' });

client.subscribe('posts/stats/commentCount', { postId: 1 }, (count) => {
  const n: number | null = count;
  void n;
});
client.subscribe('posts/stats/counts', { postIds: [1, 2, '3'] }, (rows) => {
  const first: number | undefined = rows[0]?.commentCount;
  void first;
});
const summary = client.subscribe('posts/stats/summary', { postId: 1 }, () => {});
const total: number | undefined = summary.value?.commentCount;
void total;

// @ts-expect-error an unknown query name
client.subscribe('posts/stats/commentCuont', { postId: 1 }, () => {});
// @ts-expect-error a wrong arg name
client.subscribe('posts/stats/commentCount', { post: 1 }, () => {});
// @ts-expect-error a wrong arg type
client.subscribe('posts/stats/commentCount', { postId: true }, () => {});
// @ts-expect-error a missing arg
client.subscribe('measurements/rollups/dailySum', { userId: 'u1', type: 'steps', from: '2026-01-01' }, () => {});
client.subscribe('posts/stats/commentCount', { postId: 1 }, (count) => {
  // @ts-expect-error the result is a number, not a string
  const s: string = count;
  void s;
});

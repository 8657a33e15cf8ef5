// Must NOT compile (checked by test/types.test.ts): a wrong arg name and a wrong query name.
import { createClient } from '../../src/index.js';
import type { StatgateQueries } from '../../generated/example-queries.js';

const client = createClient<StatgateQueries>({ url: 'http://localhost:8080', getAuthToken: () => 'jwt' });
client.subscribe('posts/stats/commentCount', { post_id: 1 }, () => {});
client.subscribe('posts/stats/nope', { postId: 1 }, () => {});

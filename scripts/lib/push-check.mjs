// Used by scripts/image-smoke: one subscription through a running gateway, one write in the
// database, and the pushed update seen on the WebSocket.
//
//   node --experimental-websocket scripts/lib/push-check.mjs BASE_URL JWT POST_ID WRITE_SQL
//
// Subscribes to posts/stats/commentCount {postId: POST_ID} with POST /realtime/subscribe,
// opens the WebSocket the reply names (its URL, subprotocol and parameters), waits for the snapshot,
// runs WRITE_SQL with psql ($PSQL, else psql on PATH; PGHOST, PGPORT, PGUSER, PGDATABASE from the environment), and
// waits for a query:update carrying a different value. Exits 0 then; 1 on any error or
// after 30 s. Needs node >= 20 (the flag enables its WebSocket; it is built in from node 22).
import { execFileSync } from 'node:child_process';

const [baseUrl, jwt, postId, writeSql] = process.argv.slice(2);
if (!writeSql) {
  console.error('usage: push-check.mjs BASE_URL JWT POST_ID WRITE_SQL');
  process.exit(2);
}
const deadline = setTimeout(() => fail('no pushed update within 30 s'), 30_000);

function fail(message) {
  console.error(`push-check: ${message}`);
  process.exit(1);
}

const reply = await fetch(`${baseUrl}/realtime/subscribe`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ queryName: 'posts/stats/commentCount', args: { postId: Number(postId) }, authToken: jwt }),
});
const subscription = await reply.json();
if (!reply.ok) fail(`subscribe answered ${reply.status}: ${JSON.stringify(subscription)}`);
console.log(`subscribed: signature ${subscription.signature}`);

const { url: wsUrl, protocol, params } = subscription.websocket;
const url = new URL(wsUrl);
url.searchParams.set(params.tokenParam, subscription.token);
url.searchParams.set(params.authTokenParam, jwt);
const socket = new WebSocket(url, protocol);
let snapshot;
socket.addEventListener('error', () => fail('the WebSocket failed'));
socket.addEventListener('close', (event) => fail(`the WebSocket closed: ${event.code} ${event.reason}`));
socket.addEventListener('message', (event) => {
  const frame = JSON.parse(event.data);
  if (frame.event !== 'query:update') return;
  const { data, version } = frame.payload;
  if (snapshot === undefined) {
    snapshot = data;
    console.log(`snapshot: ${JSON.stringify(data)} (version ${version})`);
    execFileSync(process.env.PSQL ?? 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', writeSql], { stdio: 'inherit' });
    console.log(`wrote: ${writeSql}`);
    return;
  }
  if (JSON.stringify(data) === JSON.stringify(snapshot)) return;
  console.log(`pushed: ${JSON.stringify(data)} (version ${version})`);
  clearTimeout(deadline);
  process.exit(0);
});

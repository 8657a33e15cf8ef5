// The hand-written baseline statgate is measured against (`statgate-bench versus`, README.md).
//
// What a team would write by hand for one live counter: the database keeps post_stats exact
// with row-level triggers that also NOTIFY the post's id (schema.sql); this server LISTENs,
// answers each NOTIFY with one SELECT of that post's count, and sends the value to every
// socket that follows the post. No registry, no auth, no limits, no heartbeat, no reconnect
// to the database: the smallest server that delivers the same values.
//
// Protocol: connect to ws://HOST:PORT/?post=17 and receive {"post":17,"count":n} (text frames)
// once on connect and again after every change; `count` is null while the post has no
// post_stats row. Nothing is read from the client.
//
// Environment: DATABASE_URL (required), HOST (127.0.0.1), PORT (8090; 0 picks a free one).
// Prints `listening on <port>` once ready; exits on any database error.

import http from 'node:http';
import pg from 'pg';
import { WebSocket, WebSocketServer } from 'ws';

const CHANNEL = 'baseline_post_stats'; // the channel schema.sql's trigger notifies
const COUNT_SQL = 'SELECT comment_count FROM post_stats WHERE post_id = $1';

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  console.error('set DATABASE_URL');
  process.exit(2);
}
const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8090);

// post id (the decimal text NOTIFY carries) -> the sockets following that post.
const followers = new Map();

// Two connections: one only LISTENs; the other runs every SELECT. One connection for the
// SELECTs runs them one at a time, in the order they were asked, so the answers for one post
// leave in the order its NOTIFYs came: a socket never receives an older count after a newer.
const listener = new pg.Client({ connectionString: databaseUrl, application_name: 'baseline-listen' });
const reader = new pg.Client({ connectionString: databaseUrl, application_name: 'baseline-read' });

function die(err) {
  console.error('baseline:', err?.message ?? err);
  process.exit(1);
}
listener.on('error', die);
reader.on('error', die);

// One SELECT of a post's live count; a named statement, so it is parsed once per connection.
// Each waits for the one before (a promise chain): one at a time, in the order asked.
let previous = Promise.resolve();
function countOf(post) {
  const query = previous.then(() =>
    reader.query({ name: 'comment_count', text: COUNT_SQL, values: [post] }),
  );
  previous = query.catch(() => {});
  // bigint arrives as a string; counts stay far below 2^53.
  return query.then((result) =>
    result.rows.length === 0 ? null : Number(result.rows[0].comment_count),
  );
}

function frame(post, count) {
  return JSON.stringify({ post: Number(post), count });
}

function send(socket, text) {
  if (socket.readyState === WebSocket.OPEN) socket.send(text);
}

// A NOTIFY: one SELECT, then the same frame to every socket following the post at that time.
// A post nobody follows costs nothing.
function onNotification(message) {
  const post = message.payload;
  if (!followers.has(post)) return;
  countOf(post)
    .then((count) => {
      const text = frame(post, count);
      for (const socket of followers.get(post) ?? []) send(socket, text);
    })
    .catch(die);
}

// ws://HOST:PORT/?post=<id>: follow one post; its current count is sent first.
function onConnection(socket, request) {
  const post = new URL(request.url ?? '/', 'http://baseline').searchParams.get('post') ?? '';
  if (!/^[1-9][0-9]{0,17}$/.test(post)) {
    socket.close(1008, 'expected ?post=<positive id>');
    return;
  }
  let sockets = followers.get(post);
  if (!sockets) followers.set(post, (sockets = new Set()));
  sockets.add(socket);
  socket.on('error', () => {}); // a reset socket just closes
  socket.on('close', () => {
    sockets.delete(socket);
    if (sockets.size === 0 && followers.get(post) === sockets) followers.delete(post);
  });
  // Registered before the SELECT is queued: a change committed after this SELECT ran has its
  // NOTIFY answered by a later SELECT on the same connection, which this socket receives too.
  countOf(post)
    .then((count) => send(socket, frame(post, count)))
    .catch(die);
}

async function main() {
  await listener.connect();
  await reader.connect();
  listener.on('notification', onNotification);
  await listener.query(`LISTEN ${CHANNEL}`);

  const server = http.createServer((_request, response) => {
    response.writeHead(426, { 'content-type': 'text/plain' });
    response.end('websocket only: ws://HOST:PORT/?post=<id>\n');
  });
  const sockets = new WebSocketServer({ server, perMessageDeflate: false });
  sockets.on('connection', onConnection);
  server.listen(port, host, () => console.log(`listening on ${server.address().port}`));

  const stop = () => {
    sockets.clients.forEach((socket) => socket.terminate());
    server.close();
    Promise.allSettled([listener.end(), reader.end()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch(die);

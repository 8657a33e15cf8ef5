// statgate demo page: plain JavaScript, no build step. It does what any browser app does:
// POST /realtime/subscribe once per counter, then ONE WebSocket (subprotocol
// statgate.realtime.v1) carrying every subscription — the first token in the URL, the others
// as `subscribe` frames. When the socket drops it reconnects with backoff, fetching a fresh
// JWT and fresh subscription tokens. The /demo/api endpoints exist only in demo mode.
'use strict';

const PROTOCOL = 'statgate.realtime.v1';
// The gateway allows a number of client messages per second per socket; stay well below it.
const FRAMES_PER_SECOND = 40;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

const $ = (selector) => document.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let socket = null;
let attempt = 0;
/** signature -> { elements, format, version, value } */
let bySignature = new Map();

function showMessage(text) {
  const el = $('#message');
  el.textContent = text || '';
  el.hidden = !text;
}

function setConnection(state) {
  const el = $('#connection');
  el.dataset.state = state;
  el.textContent = { connecting: 'connecting…', connected: 'connected', reconnecting: 'reconnecting…' }[state];
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const json = await response.json().catch(() => null);
  if (!response.ok) {
    const message = json && json.error ? json.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return json;
}

// ---- dates for the rollup panel (buckets are UTC days) ----
function utcDay(offsetDays) {
  const d = new Date();
  d.setUTCHours(0, 0, 0, 0);
  d.setUTCDate(d.getUTCDate() + offsetDays);
  return d.toISOString().slice(0, 10);
}
function weekStartOffset() {
  const weekday = new Date().getUTCDay(); // 0 = Sunday
  return -((weekday + 6) % 7); // back to Monday
}

// ---- rendering ----
function renderPosts(posts) {
  const list = $('#posts');
  const template = $('#post-template');
  list.replaceChildren();
  for (const post of posts) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.post = post.id;
    item.id = `post-${post.id}`;
    item.querySelector('.title').textContent = post.title;
    for (const counter of item.querySelectorAll('.counter')) {
      counter.dataset.post = post.id;
      counter.id = `post-${post.id}-${counter.dataset.counter}`;
    }
    for (const button of item.querySelectorAll('button')) {
      button.dataset.post = post.id;
      button.id = `post-${post.id}-${button.dataset.action}`;
    }
    list.append(item);
  }
}

const formatCount = (value) => (value === null || value === undefined ? '–' : String(value));
const formatSteps = (value) => (value === null || value === undefined ? '–' : Math.round(Number(value)).toLocaleString('en-US'));

function subscriptionsFor(posts, user) {
  const specs = [];
  for (const post of posts) {
    specs.push({ queryName: 'posts/stats/commentCount', args: { postId: post.id }, element: `#post-${post.id}-comments`, format: formatCount });
    specs.push({ queryName: 'posts/stats/reactionCount', args: { postId: post.id }, element: `#post-${post.id}-reactions`, format: formatCount });
  }
  const tomorrow = utcDay(1);
  const ranges = { today: utcDay(0), week: utcDay(weekStartOffset()) };
  for (const [name, from] of Object.entries(ranges)) {
    const args = { userId: user, type: 'steps', from, to: tomorrow };
    specs.push({ queryName: 'measurements/rollups/dailySum', args, element: `#rollup-${name}-steps`, format: formatSteps });
    specs.push({ queryName: 'measurements/rollups/dailyCount', args, element: `#rollup-${name}-readings`, format: formatCount });
  }
  return specs;
}

function applyUpdate(payload) {
  const entry = bySignature.get(payload.signature);
  if (!entry) return;
  if (entry.version !== null && payload.version <= entry.version) return; // versions only grow
  const changed = entry.version !== null && JSON.stringify(entry.value) !== JSON.stringify(payload.data);
  entry.version = payload.version;
  entry.value = payload.data;
  for (const el of entry.elements) {
    el.textContent = entry.format(payload.data);
    el.dataset.value = payload.data === null ? '' : String(payload.data);
    el.dataset.version = String(payload.version);
    if (changed) {
      el.classList.remove('flash');
      void el.offsetWidth; // restart the animation
      el.classList.add('flash');
    }
  }
  if ([...bySignature.values()].every((e) => e.version !== null)) {
    document.body.dataset.ready = 'true';
  }
}

// ---- the connection: subscribe over HTTP, then one socket ----
async function subscribeAll(posts, user, jwt) {
  const specs = subscriptionsFor(posts, user);
  const replies = await Promise.all(specs.map((spec) =>
    api('POST', '/realtime/subscribe', { queryName: spec.queryName, args: spec.args, authToken: jwt })));
  const previous = bySignature;
  bySignature = new Map();
  specs.forEach((spec, i) => {
    const { signature } = replies[i];
    const old = previous.get(signature);
    const entry = bySignature.get(signature) || {
      elements: [], format: spec.format,
      // keep the last value across reconnects so a change while away still flashes
      version: null, value: old ? old.value : undefined,
    };
    const el = $(spec.element);
    if (el) entry.elements.push(el);
    bySignature.set(signature, entry);
  });
  // a new connection starts its versions afresh; compare values only
  for (const entry of bySignature.values()) {
    if (entry.value !== undefined) entry.version = -1;
  }
  return replies;
}

async function connect(posts) {
  setConnection(attempt === 0 ? 'connecting' : 'reconnecting');
  const { user, authToken } = await api('GET', '/demo/api/token');
  $('#user-name').textContent = user;
  const replies = await subscribeAll(posts, user, authToken);
  const [first, ...rest] = replies;
  const { url, protocol, params } = first.websocket;
  const target = new URL(url, location.href);
  if (location.protocol === 'https:') target.protocol = 'wss:';
  target.searchParams.set(params.tokenParam, first.token);
  target.searchParams.set(params.authTokenParam, authToken);

  const ws = new WebSocket(target.toString(), protocol || PROTOCOL);
  socket = ws;
  ws.addEventListener('open', async () => {
    attempt = 0;
    setConnection('connected');
    showMessage('');
    for (let i = 0; i < rest.length; i += FRAMES_PER_SECOND) {
      if (i > 0) await sleep(1050);
      if (ws.readyState !== WebSocket.OPEN) return;
      for (const reply of rest.slice(i, i + FRAMES_PER_SECOND)) {
        ws.send(JSON.stringify({ type: 'subscribe', token: reply.token }));
      }
    }
  });
  ws.addEventListener('message', (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    if (frame.event === 'query:update') applyUpdate(frame.payload);
    else if (frame.event === 'error') showMessage(`gateway: ${frame.payload.message}`);
  });
  ws.addEventListener('close', () => {
    if (socket === ws) scheduleReconnect(posts);
  });
}

function scheduleReconnect(posts) {
  socket = null;
  setConnection('reconnecting');
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  attempt += 1;
  const delay = base / 2 + Math.random() * base / 2;
  setTimeout(() => {
    connect(posts).catch((err) => {
      showMessage(`cannot reach statgate: ${err.message}`);
      scheduleReconnect(posts);
    });
  }, delay);
}

// ---- buttons and the traffic switch ----
const ACTIONS = {
  'add-comment': (post) => api('POST', `/demo/api/posts/${post}/comments`),
  'delete-comment': (post) => api('DELETE', `/demo/api/posts/${post}/comments`),
  'add-reaction': (post) => api('POST', `/demo/api/posts/${post}/reactions`),
  'delete-reaction': (post) => api('DELETE', `/demo/api/posts/${post}/reactions`),
  'add-steps': () => api('POST', '/demo/api/steps'),
};

document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const action = ACTIONS[button.dataset.action];
  if (!action) return;
  action(button.dataset.post).then(() => showMessage(''), (err) => showMessage(err.message));
});

let trafficPoll = null;
function showTraffic(status) {
  $('#traffic-switch').checked = status.enabled;
  $('#traffic-rate').value = status.rate;
  const writes = $('#traffic-writes');
  writes.dataset.writes = String(status.writes);
  writes.textContent = status.writes ? `${status.writes} writes so far` : '';
  clearInterval(trafficPoll);
  trafficPoll = status.enabled
    ? setInterval(() => api('GET', '/demo/api/traffic').then(showTraffic, () => {}), 2000)
    : null;
}
async function setTraffic() {
  const enabled = $('#traffic-switch').checked;
  const rate = Number($('#traffic-rate').value);
  try {
    showTraffic(await api('POST', '/demo/api/traffic', enabled ? { enabled, rate } : { enabled }));
    showMessage('');
  } catch (err) {
    showMessage(err.message);
    api('GET', '/demo/api/traffic').then(showTraffic, () => {});
  }
}
$('#traffic-switch').addEventListener('change', setTraffic);
$('#traffic-rate').addEventListener('change', () => { if ($('#traffic-switch').checked) setTraffic(); });

// ---- start ----
async function start() {
  try {
    const { posts } = await api('GET', '/demo/api/posts');
    renderPosts(posts);
    api('GET', '/demo/api/traffic').then(showTraffic, () => {});
    await connect(posts);
  } catch (err) {
    showMessage(`cannot start: ${err.message}`);
    setTimeout(start, 2000);
  }
}
start();

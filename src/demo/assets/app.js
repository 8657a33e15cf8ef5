// statgate demo page: plain JavaScript, no build step. It uses @statgate/client's browser
// bundle (client-ts/, copied to statgate-client.js) exactly as any browser app would: the
// counters subscribed in one tick go in ONE POST /realtime/subscribe/batch, then ONE WebSocket
// carries every subscription, with heartbeat, reconnect with jittered back-off and
// resubscription handled by the client.
// The /demo/api endpoints exist only in demo mode.
import { createClient } from './statgate-client.js';

const $ = (selector) => document.querySelector(selector);

function showMessage(text) {
  const el = $('#message');
  el.textContent = text || '';
  el.hidden = !text;
}

const CONNECTION = {
  connecting: ['connecting', 'connecting…'],
  open: ['connected', 'connected'],
  reconnecting: ['reconnecting', 'reconnecting…'],
  closed: ['reconnecting', 'closed'],
};
function setConnection(status) {
  const el = $('#connection');
  const [state, text] = CONNECTION[status];
  el.dataset.state = state;
  el.textContent = text;
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
  specs.push({ queryName: 'users/activity/commentsWritten', args: { userId: user }, element: '#user-comments', format: formatCount });
  const tomorrow = utcDay(1);
  const ranges = { today: utcDay(0), week: utcDay(weekStartOffset()) };
  for (const [name, from] of Object.entries(ranges)) {
    const args = { userId: user, type: 'steps', from, to: tomorrow };
    specs.push({ queryName: 'measurements/rollups/dailySum', args, element: `#rollup-${name}-steps`, format: formatSteps });
    specs.push({ queryName: 'measurements/rollups/dailyCount', args, element: `#rollup-${name}-readings`, format: formatCount });
  }
  return specs;
}

function render(spec, value) {
  const el = $(spec.element);
  if (!el) return;
  const changed = el.dataset.value !== undefined && el.dataset.value !== (value === null ? '' : String(value));
  el.textContent = spec.format(value);
  el.dataset.value = value === null ? '' : String(value);
  if (changed) {
    el.classList.remove('flash');
    void el.offsetWidth; // restart the animation
    el.classList.add('flash');
  }
}

// ---- the connection: the client does subscribe-over-HTTP, the socket and reconnects ----
const client = createClient({
  url: location.origin,
  getAuthToken: async () => {
    const { user, authToken } = await api('GET', '/demo/api/token');
    $('#user-name').textContent = user;
    return authToken;
  },
  onStatus: setConnection,
});

async function subscribeAll(posts) {
  const { user } = await api('GET', '/demo/api/token');
  const subscriptions = subscriptionsFor(posts, user).map((spec) =>
    client.subscribe(spec.queryName, spec.args, (value) => render(spec, value), {
      onError: (err) => showMessage(`gateway: ${err.message}`),
    }),
  );
  // Every counter shows its first value: the page is ready (tests wait for this).
  Promise.all(subscriptions.map((subscription) => subscription.ready)).then(
    () => { document.body.dataset.ready = 'true'; },
    () => {}, // shown by onError
  );
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
    await subscribeAll(posts);
  } catch (err) {
    showMessage(`cannot start: ${err.message}`);
    setTimeout(start, 2000);
  }
}
start();
